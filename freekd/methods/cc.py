"""Correlation congruence (relation-based)."""

from __future__ import annotations

from typing import Any

from torch import Tensor, nn

from freekd.losses.relations import correlation_congruence
from freekd.methods.base import METHODS
from freekd.methods.relations import RelationDistiller


@METHODS.register("cc")
class CorrelationCongruence(RelationDistiller):
    """Peng et al. 2019 (ICCV, "Correlation Congruence for Knowledge Distillation",
    arXiv:1904.01802) §3.2–3.3, Eq. 6–9: beyond each instance, transfer the correlation between
    instances, measured by a Gaussian RBF kernel expanded to Taylor order P on the L2-normalized
    embeddings (``losses.relations.correlation_matrix``).

        loss = ce_weight · CE + weight · (1/B²) ‖ψ(F_T) − ψ(F_S)‖²

    Defaults γ = 0.4 and P = 2 (the paper's). The default weight, 1, is freekd's: the comparison
    tables' 0.02 (RepDistiller) belongs to a simplified loss, not to this kernel.

    Args:
        student: the network being trained.
        teacher: frozen teacher.
        weight: weight of the correlation term.
        gamma: γ of the RBF kernel.
        order: Taylor order P.
        ce_weight: weight of the hard-label cross-entropy.
        student_layers: features to correlate (default: the embedding).
        teacher_layers: the teacher's features.
    """

    title = "cc"
    term = "cc"

    def __init__(
        self,
        student: nn.Module,
        teacher: nn.Module,
        *,
        weight: float = 1.0,
        gamma: float = 0.4,
        order: int = 2,
        **shared: Any,
    ) -> None:
        super().__init__(student, teacher, weight=weight, **shared)
        if gamma <= 0 or not 0 <= order <= 20:  # order 200 overflowed (P! and γ^P) mid-run
            raise ValueError(f"gamma must be positive and order in [0, 20], got {gamma}, {order}")
        self.gamma, self.order = gamma, order

    def relation_loss(self, student: Tensor, teacher: Tensor) -> Tensor:
        return correlation_congruence(student, teacher, gamma=self.gamma, order=self.order)
