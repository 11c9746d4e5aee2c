"""Config of ``freekd online``: online knowledge distillation (DML's peers, ONE's branches)."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from freekd.config import Checks, ComponentConfig, TrainerConfig

#: Most peers DML trains from one architecture (the paper's are 2 to 4).
MAX_PEERS = 64


@dataclass(frozen=True)
class OnlineConfig:
    """``freekd online``: several networks trained together from scratch, teaching each other.

    Attributes:
        dataset: training data spec; ``validation_fraction`` of it is held out to choose the
            deployable network (``model.pt``) and is never trained on.
        eval_dataset: held-out test data spec; default: the ``test`` split of ``dataset``.
        data_root: torchvision-format root for datasets that need one.
        download: let torchvision download into ``data_root``.
        archs: the architectures trained: DML's peers (one per entry, or ``peers`` copies of a
            single entry), or the one network ONE branches.
        arch_kwargs: keyword arguments for every architecture.
        peers: with one architecture, how many peers DML trains (default: the method's, 2).
        method: ``dml`` or ``one`` with their parameters.
        validation_fraction: share of ``dataset`` held out for choosing the deployable network.
        baseline: also train each architecture alone with the same loop, data and seed
            (``OUT/baseline``), so the gain is measured in the same run.
        seed: seed for weights, the validation split, data order and augmentation.
        trainer: the training loop's settings.
    """

    dataset: str = "mnist"
    eval_dataset: str | None = None
    data_root: str | None = None
    download: bool = False
    archs: list[str] = field(default_factory=lambda: ["resnet8"])
    arch_kwargs: dict[str, Any] = field(default_factory=dict)
    peers: int | None = None
    method: ComponentConfig = field(default_factory=lambda: ComponentConfig(name="dml"))
    validation_fraction: float = 0.1
    baseline: bool = True
    seed: int = 0
    trainer: TrainerConfig = field(default_factory=lambda: TrainerConfig(epochs=10))

    def __post_init__(self) -> None:
        check = Checks(self)
        check.within("peers", 1, MAX_PEERS, closed="[]", optional=True)
        check.within("validation_fraction", 0, 0.5, closed="(]")
        if not 1 <= len(self.archs) <= MAX_PEERS:
            check.fail("archs", f"must name 1 to {MAX_PEERS} architectures (--arch)")


@dataclass(frozen=True)
class BaselineConfig:
    """One architecture trained alone beside an online run (``OUT/baseline``): what its
    ``config.yaml`` and checkpoints record.

    Attributes:
        arch: the architecture.
        arch_kwargs: its keyword arguments.
        dataset: the online run's training data (less the same validation split).
        validation_fraction: the held-out share, as in the online run.
        seed: the online run's seed.
        trainer: the online run's loop.
    """

    arch: str
    arch_kwargs: dict[str, Any]
    dataset: str
    validation_fraction: float
    seed: int
    trainer: TrainerConfig
