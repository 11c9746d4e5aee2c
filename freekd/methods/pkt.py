"""Probabilistic knowledge transfer (relation-based)."""

from __future__ import annotations

from typing import Any

from torch import Tensor, nn

from freekd.losses.relations import probabilistic_transfer
from freekd.methods.base import METHODS
from freekd.methods.relations import RelationDistiller


@METHODS.register("pkt")
class ProbabilisticTransfer(RelationDistiller):
    """Passalis & Tefas 2018 (ECCV, "Learning Deep Representations with Probabilistic Knowledge
    Transfer", arXiv:1803.10837) §3, Eq. 7–10: the conditional probability that an example picks
    another as its neighbour, under a cosine-similarity kernel, is matched from the teacher's
    features to the student's by the KL divergence (``losses.relations.probabilistic_transfer``).

        loss = ce_weight · CE + weight · KL(P_T ‖ P_S)

    on the penultimate embeddings; the dimensions of the two may differ. Default weight 30000,
    the comparison tables' (RepDistiller).

    Args:
        student: the network being trained.
        teacher: frozen teacher.
        weight: weight of the PKT term.
        ce_weight: weight of the hard-label cross-entropy.
        student_layers: features to relate (default: the embedding).
        teacher_layers: the teacher's features.
    """

    title = "pkt"
    term = "pkt"

    def __init__(
        self,
        student: nn.Module,
        teacher: nn.Module,
        *,
        weight: float = 30000.0,
        **shared: Any,
    ) -> None:
        super().__init__(student, teacher, weight=weight, **shared)

    def relation_loss(self, student: Tensor, teacher: Tensor) -> Tensor:
        return probabilistic_transfer(student, teacher)
