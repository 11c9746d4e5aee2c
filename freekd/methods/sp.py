"""Similarity-preserving knowledge distillation (relation-based)."""

from __future__ import annotations

from typing import Any

from torch import Tensor, nn

from freekd.losses.relations import similarity_preserving
from freekd.methods.base import METHODS
from freekd.methods.relations import RelationDistiller


@METHODS.register("sp")
class SimilarityPreserving(RelationDistiller):
    """Tung & Mori 2019 (ICCV, "Similarity-Preserving Knowledge Distillation",
    arXiv:1907.09682) §3, Eq. 4: inputs that the teacher finds similar should be similar to the
    student too.

        loss = ce_weight · CE + γ · Σ_l (1/B²) ‖G̃_T^l − G̃_S^l‖²_F

    with G̃ the row-normalized B × B Gram matrix of a layer's flattened activations
    (``losses.relations.gram``). Without named layers the pair is the last stage of each network
    (the paper's activations at the end of the last group); networks without feature maps use
    their embeddings. Default γ = 3000, the paper's CIFAR-10 value.
    The loss is equivariant to the batch order: permuting the batch permutes both Gram matrices
    the same way and leaves the loss unchanged.

    Args:
        student: the network being trained.
        teacher: frozen teacher.
        weight: γ.
        ce_weight: weight of the hard-label cross-entropy.
        student_layers: layers to compare (default: the last stage).
        teacher_layers: the teacher's layers.
    """

    title = "sp"
    term = "sp"

    def __init__(
        self,
        student: nn.Module,
        teacher: nn.Module,
        *,
        weight: float = 3000.0,
        **shared: Any,
    ) -> None:
        super().__init__(student, teacher, weight=weight, **shared)

    def default_pairs(self, stages: list[tuple[str, str]]) -> list[tuple[str, str]]:
        return stages[-1:] or super().default_pairs(stages)

    def relation_loss(self, student: Tensor, teacher: Tensor) -> Tensor:
        return similarity_preserving(student, teacher)
