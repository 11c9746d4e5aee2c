"""Every YAML under configs/ loads into its schema, with component kwargs checked."""

from __future__ import annotations

import dataclasses
import inspect
from pathlib import Path

import pytest

from freekd.audit.config import AuditPipelineConfig
from freekd.config import ComponentConfig, load_config
from freekd.crossmodal.config import CrossModalTeacherConfig
from freekd.data import AUGMENTATIONS
from freekd.datafree.config import DataFreeConfig
from freekd.datafree.synthesizers import SYNTHESIZERS
from freekd.distill.config import DistillConfig
from freekd.methods import METHODS
from freekd.models import MODELS
from freekd.pate.config import PateRunConfig
from freekd.runs import check_params
from freekd.supervised.config import TeacherTrainConfig
from freekd.train.optim import OPTIMIZERS, SCHEDULES

ROOT = Path(__file__).resolve().parents[1] / "configs"
FILES = sorted(ROOT.rglob("*.yaml"))

# Which schema each folder of configs/ holds.
CONFIG_KINDS: dict[str, type] = {
    "teacher": TeacherTrainConfig,
    "distill": DistillConfig,
    "datafree": DataFreeConfig,
    "pate": PateRunConfig,
    "audit": AuditPipelineConfig,
    "crossmodal": CrossModalTeacherConfig,
}


def test_there_are_configs() -> None:
    assert len(FILES) >= 4


@pytest.mark.parametrize("path", FILES, ids=lambda p: str(p.relative_to(ROOT)))
def test_config_is_valid(path: Path) -> None:
    kind = path.relative_to(ROOT).parts[0]
    assert kind in CONFIG_KINDS, f"{path}: put configs under one of {sorted(CONFIG_KINDS)}"
    loaded = load_config(CONFIG_KINDS[kind], path)
    # A multi-stage file (configs/pate/) holds one config per stage.
    stages = (
        [getattr(loaded, f.name) for f in dataclasses.fields(loaded)]
        if kind == "pate"
        else [loaded]
    )
    for config in stages:
        if hasattr(config, "trainer"):
            check_config(path, config)


def check_config(path: Path, config: object) -> None:
    trainer = config.trainer  # type: ignore[attr-defined]
    OPTIMIZERS.get(trainer.optimizer)
    SCHEDULES.get(trainer.scheduler)
    if trainer.augment != "auto":
        AUGMENTATIONS.get(trainer.augment)
    for field in ("arch", "student"):
        name = getattr(config, field, None)
        if name is not None:
            assert name in MODELS or ":" in name, f"{path}: unknown model {name}"
    method = getattr(config, "method", None)
    if isinstance(method, ComponentConfig):
        inspect.signature(METHODS.get(method.name)).bind(None, None, **method.params)
    synthesizer = getattr(config, "synthesizer", None)
    if isinstance(synthesizer, ComponentConfig):
        what = f"{path}: synthesizer {synthesizer.name!r}"
        check_params(SYNTHESIZERS.get(synthesizer.name), synthesizer.params, what=what)
