"""Instance relationship graph (graph-based)."""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from freekd.data.batch import Batch
from freekd.losses.relations import irg_edges, irg_transformation
from freekd.methods.base import METHODS
from freekd.methods.distiller import Views
from freekd.methods.relations import RelationDistiller
from freekd.methods.taps import EMBEDDING


def _moves(features: list[Tensor]) -> Tensor:
    """(L − 1, B) how far each instance moves between consecutive layers, divided by the mean
    move so networks of different scales compare."""
    moves = torch.stack(
        [irg_transformation(a, b) for a, b in zip(features, features[1:], strict=False)]
    )
    return moves / moves.mean().clamp_min(1e-12)


@METHODS.register("irg")
class InstanceRelationshipGraph(RelationDistiller):
    """Liu et al. 2019 (CVPR, "Knowledge Distillation via Instance Relationship Graph") §3: a batch
    is a graph whose vertices are the instances' features and whose edges are their distances;
    the student matches the teacher's graph and the way it transforms from layer to layer.

        loss = ce_weight · CE + λ_V · L_vertex + λ_E · L_edge + λ_T · L_transformation

    - L_vertex (§3.1): the squared distance between the two networks' logits, the vertices of the
      last layer's graph.
    - L_edge (§3.2): ``losses.relations.irg_edges`` on the logits and on every paired feature.
    - L_transformation (§3.3): how far each instance moves between consecutive paired features
      (``losses.relations.irg_transformation``), matched between the two networks.

    Without named layers the features are every paired stage and the embedding (the paper's
    layers at the end of each stage). Defaults λ_V = 0.1, λ_E = 5, λ_T = 5 (torchdistill's IRG
    setting; the paper tunes them per experiment).

    Args:
        student: the network being trained.
        teacher: frozen teacher.
        vertex_weight: λ_V.
        edge_weight: λ_E.
        transformation_weight: λ_T (used when there are at least two paired features).
        ce_weight: weight of the hard-label cross-entropy.
        student_layers: features whose graphs are matched, in forward order.
        teacher_layers: the teacher's features.
    """

    title = "irg"

    def __init__(
        self,
        student: nn.Module,
        teacher: nn.Module,
        *,
        vertex_weight: float = 0.1,
        edge_weight: float = 5.0,
        transformation_weight: float = 5.0,
        ce_weight: float = 1.0,
        student_layers: Sequence[str] | None = None,
        teacher_layers: Sequence[str] | None = None,
    ) -> None:
        super().__init__(
            student,
            teacher,
            weight=1.0,  # the three terms carry their own weights
            ce_weight=ce_weight,
            student_layers=student_layers,
            teacher_layers=teacher_layers,
        )
        self.vertex_weight = vertex_weight
        self.edge_weight = edge_weight
        self.transformation_weight = transformation_weight

    def default_pairs(self, stages: list[tuple[str, str]]) -> list[tuple[str, str]]:
        return [*stages, (EMBEDDING, EMBEDDING)]

    def distill_losses(self, student: Views, teacher: Views, batch: Batch) -> dict[str, Tensor]:
        s_features, t_features = student.pick(self.student_taps), teacher.pick(self.teacher_taps)
        edges = irg_edges(student.logits, teacher.logits) + self.summed(irg_edges, student, teacher)
        losses = {
            "irg_vertex": self.vertex_weight * F.mse_loss(student.logits, teacher.logits),
            "irg_edge": self.edge_weight * edges,
        }
        if len(s_features) > 1:
            losses["irg_transformation"] = self.transformation_weight * F.mse_loss(
                _moves(s_features), _moves(t_features).detach()
            )
        return losses
