"""Config of ``freekd teacher train``: supervised teacher training, optionally with DP-SGD."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from freekd.config import Checks, TrainerConfig
from freekd.errors import FreekdError
from freekd.privacy.config import DPConfig


@dataclass(frozen=True)
class TeacherTrainConfig:
    """``freekd teacher train``: supervised training of a classifier.

    Attributes:
        dataset: training data spec (registry name[:split], ``.npz`` file or image folder).
        eval_dataset: held-out data spec; default: the ``test`` split of ``dataset``.
        data_root: torchvision-format root for datasets that need one (CIFAR, SVHN).
        download: let torchvision download into ``data_root`` (needs a network).
        arch: model architecture name.
        arch_kwargs: keyword arguments for the architecture.
        mean: normalization mean stored in the model; default: computed from the training set.
        std: normalization std stored in the model; default: computed from the training set.
        label_smoothing: cross-entropy label smoothing.
        seed: seed for weights, data order, augmentation and noise.
        trainer: the training loop's settings.
        dp: DP-SGD settings (``--dp``); BatchNorm layers are replaced by GroupNorm.
    """

    dataset: str = "mnist"
    eval_dataset: str | None = None
    data_root: str | None = None
    download: bool = False
    arch: str = "lenet5"
    arch_kwargs: dict[str, Any] = field(default_factory=dict)
    mean: list[float] | None = None
    std: list[float] | None = None
    label_smoothing: float = 0.0
    seed: int = 0
    trainer: TrainerConfig = field(default_factory=TrainerConfig)
    dp: DPConfig = field(default_factory=DPConfig)

    def __post_init__(self) -> None:
        Checks(self).within("label_smoothing", 0, 1)

    def check_given(self, given: dict[str, Any]) -> None:
        """What the user wrote (a file, ``--set``, Python keywords), before the defaults: DP-SGD
        settings that do not switch it on would train a teacher without it, silently
        (``--epsilon`` without ``--dp`` is refused the same way)."""
        written = given.get("dp")
        dp: dict[str, Any] = written if isinstance(written, dict) else {}
        budget = sorted({"epsilon", "noise_multiplier"} & set(dp))
        if budget and "enabled" not in dp and not self.dp.enabled:  # a recipe may hold the rest
            raise FreekdError(
                f"dp sets {', '.join(budget)} but DP-SGD is off (dp.enabled is false); "
                'pass --dp (--set dp.enabled=true, Python: dp={"enabled": True, ...})'
            )
