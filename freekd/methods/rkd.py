"""Relational knowledge distillation: distances and angles (relation-based)."""

from __future__ import annotations

from typing import Any

from torch import Tensor, nn

from freekd.data.batch import Batch
from freekd.losses.relations import rkd_angle, rkd_distance
from freekd.methods.base import METHODS
from freekd.methods.distiller import Views
from freekd.methods.relations import RelationDistiller


@METHODS.register("rkd")
class RelationalKD(RelationDistiller):
    """Park, Kim, Lu & Cho 2019 (CVPR, "Relational Knowledge Distillation", arXiv:1904.05068)
    §3.2, Eq. 4–7: the student's pairwise distances (normalized by their mean) and the cosines of
    the angles its triplets form are matched to the teacher's under the Huber loss:

        loss = ce_weight · CE + weight · (λ_D · L_RKD-D + λ_A · L_RKD-A)

    Both terms are unchanged when either network's features are scaled (the distance term
    divides by the mean distance, angles are scale-free). Defaults λ_D = 25, λ_A = 50 and weight
    1, the setting of the comparison tables (RepDistiller) on the penultimate embeddings.

    Args:
        student: the network being trained.
        teacher: frozen teacher.
        weight: overall weight of the RKD term.
        distance_weight: λ_D.
        angle_weight: λ_A.
        ce_weight: weight of the hard-label cross-entropy.
        student_layers: features to relate (default: the embedding).
        teacher_layers: the teacher's features.
    """

    title = "rkd"

    def __init__(
        self,
        student: nn.Module,
        teacher: nn.Module,
        *,
        weight: float = 1.0,
        distance_weight: float = 25.0,
        angle_weight: float = 50.0,
        **shared: Any,
    ) -> None:
        super().__init__(student, teacher, weight=weight, **shared)
        self.distance_weight = distance_weight
        self.angle_weight = angle_weight

    def distill_losses(self, student: Views, teacher: Views, batch: Batch) -> dict[str, Tensor]:
        return {
            "rkd_distance": self.weight
            * self.distance_weight
            * self.summed(rkd_distance, student, teacher),
            "rkd_angle": self.weight * self.angle_weight * self.summed(rkd_angle, student, teacher),
        }
