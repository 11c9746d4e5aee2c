"""Attention transfer on its own (feature-based)."""

from __future__ import annotations

from typing import Any

import torch.nn.functional as F
from torch import Tensor, nn

from freekd.data.batch import Batch
from freekd.losses import attention_transfer
from freekd.methods.base import METHODS
from freekd.methods.distiller import FeatureDistiller, Views


def same_size(student: Tensor, teacher: Tensor) -> tuple[Tensor, Tensor]:
    """The larger of two (B, C, H, W) maps average-pooled to the smaller one's spatial size."""
    h, w = min(student.shape[2], teacher.shape[2]), min(student.shape[3], teacher.shape[3])
    if student.shape[2:] != (h, w):
        student = F.adaptive_avg_pool2d(student, (h, w))
    if teacher.shape[2:] != (h, w):
        teacher = F.adaptive_avg_pool2d(teacher, (h, w))
    return student, teacher


@METHODS.register("at")
class AttentionTransfer(FeatureDistiller):
    """Attention transfer, Zagoruyko & Komodakis 2017 (ICLR, arXiv:1612.03928) §3.1, Eq. 2:

        loss = ce_weight · CE + weight · Σ_j mean ( Q_S^j/‖Q_S^j‖₂ − Q_T^j/‖Q_T^j‖₂ )²

    with Q^j the spatial attention map of the j-th pair (the channel mean of |A|², flattened;
    ``losses.kd.attention_map``) and the squared difference averaged over batch and positions,
    as in the paper's code. Eq. 2 writes the weight as β/2 with β = 1000, i.e. 500 on this
    mean; the default 1000 is the comparison tables' (RepDistiller's ``-b 1000``).
    Without named layers every stage both networks end at the same resolution is paired (the
    paper's "group outputs"); maps of different sizes are average-pooled to the smaller one.
    ``kd-at`` is the same term inside ZSKT's student loss.

    Args:
        student: the network being trained.
        teacher: frozen teacher.
        weight: β.
        ce_weight: weight of the hard-label cross-entropy.
        student_layers: layer paths to match, in order with ``teacher_layers``.
        teacher_layers: the teacher's layer paths.
    """

    title = "attention transfer"

    def __init__(
        self,
        student: nn.Module,
        teacher: nn.Module,
        *,
        weight: float = 1000.0,
        **shared: Any,
    ) -> None:
        super().__init__(student, teacher, **shared)
        self.weight = weight

    def default_pairs(self, stages: list[tuple[str, str]]) -> list[tuple[str, str]]:
        return stages

    def check_pairs(self) -> None:
        self.require_maps()

    def distill_losses(self, student: Views, teacher: Views, batch: Batch) -> dict[str, Tensor]:
        pairs = [
            same_size(s, t)
            for s, t in zip(
                student.pick(self.student_taps), teacher.pick(self.teacher_taps), strict=True
            )
        ]
        value = attention_transfer([s for s, _ in pairs], [t for _, t in pairs])
        return {"attention": self.weight * value}
