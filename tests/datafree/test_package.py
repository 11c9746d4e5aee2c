"""The data-free package's plug-in contract: one file per synthesizer, declared class attributes,
and a package that the CLI can import without torch."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
import torch

from freekd.datafree import synthesizers
from freekd.datafree.synthesizers import (
    INFRASTRUCTURE,
    SYNTHESIZERS,
    Synthesizer,
    SynthesizerBase,
)
from freekd.methods import METHODS
from tests.datafree.test_contract import SHAPE

NAMES = SYNTHESIZERS.names()


def test_the_registry_is_the_synthesizer_modules_present() -> None:
    """Adding a synthesizer is adding one file: ``import_plugins`` registers every module."""
    folder = Path(synthesizers.__file__).parent
    modules = {path.stem for path in folder.glob("*.py") if not path.stem.startswith("_")}
    assert set(NAMES) == modules - set(INFRASTRUCTURE)
    for name in NAMES:
        assert SYNTHESIZERS.get(name).__module__ == f"freekd.datafree.synthesizers.{name}"


@pytest.mark.parametrize("name", NAMES)
def test_every_synthesizer_declares_what_the_pipeline_reads(name: str) -> None:
    cls = SYNTHESIZERS.get(name)
    assert issubclass(cls, SynthesizerBase)
    assert isinstance(cls.needs_batchnorm, bool)
    assert cls.recommended_method in METHODS
    assert isinstance(cls.recommended_method_params, dict)
    assert isinstance(cls.recommended_synthesize_every, int)
    assert cls.recommended_synthesize_every >= 1
    assert cls.recommended_discrepancy_factor == 0 or cls.recommended_discrepancy_factor > 1
    synthesizer = cls(
        image_shape=SHAPE,
        num_classes=10,
        rng=torch.Generator().manual_seed(0),
        device=torch.device("cpu"),
    )
    assert isinstance(synthesizer, Synthesizer)
    assert (synthesizer.images_synthesized, synthesizer.teacher_queries) == (0, 0)


def test_the_contract_defaults_are_those_of_a_run_without_a_synthesizer() -> None:
    """A proxy-data run has no synthesizer and takes the contract's defaults: logit KD at T = 4
    on every step, no discrepancy check."""
    assert SynthesizerBase.recommended_method == "kd"
    assert SynthesizerBase.recommended_method_params == {"temperature": 4.0}
    assert SynthesizerBase.recommended_synthesize_every == 1
    assert SynthesizerBase.recommended_discrepancy_factor == 0.0
    assert SynthesizerBase.needs_batchnorm is False


def test_the_package_and_its_config_import_without_torch() -> None:
    code = (
        "import sys, freekd.datafree, freekd.datafree.config; "
        "assert 'torch' not in sys.modules, 'torch imported'; "
        "assert 'SyntheticSource' in dir(freekd.datafree)"
    )
    subprocess.run([sys.executable, "-c", code], check=True, cwd=Path(__file__).parents[2])
