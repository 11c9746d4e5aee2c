"""``glnn``: soft labels on every observed node (Graph-less Neural Networks)."""

from __future__ import annotations

import torch.nn.functional as F
from torch import nn

from freekd.data.batch import Batch
from freekd.graph.methods.base import GRAPH_METHODS, GraphMethod, GraphTargets, number
from freekd.graph.models import GraphNetwork
from freekd.losses.graph import soft_label_kd
from freekd.methods.base import StepOutput


@GRAPH_METHODS.register("glnn")
class GLNN(GraphMethod):
    """GLNN, Zhang et al. "Graph-less Neural Networks: Teaching Old MLPs New Tricks via
    Distillation" (ICLR 2022) §4, eq. 1: the student matches the teacher GNN's soft labels on
    all observed nodes, labelled or not, L = λ CE(labelled) + (1 − λ) KL(z ‖ ŷ).

    ``embedding_weight`` > 0 adds the teacher's embeddings (the "optionally with the teacher's
    embeddings" of the issue, as GLNN's follow-ups match hidden layers): a linear adapter maps
    the student's last hidden layer to the teacher's width and the mean squared error to the
    teacher's embedding is added with that weight. The adapter trains with the student and is
    not part of ``model.pt``.

    Args:
        lam: λ, the share of the hard-label term (GLNN's released setting: 0).
        embedding_weight: weight of the embedding term (0: soft labels only).
    """

    uses_all_nodes = True

    def __init__(
        self,
        student: GraphNetwork,
        targets: GraphTargets,
        *,
        lam: float = 0.0,
        embedding_weight: float = 0.0,
    ) -> None:
        super().__init__(student, targets)
        self.lam = number("lam", lam, high=1.0)
        self.embedding_weight = number("embedding_weight", embedding_weight)
        self.adapter: nn.Module | None = None
        if self.embedding_weight > 0 and targets.features is not None:
            width = int(student.arch_kwargs["hidden"])  # every graph network's last hidden width
            self.adapter = nn.Linear(width, targets.features.shape[-1])

    def training_step(self, batch: Batch) -> StepOutput:
        assert batch.labels is not None
        assert self.teacher_logits is not None
        hidden, logits = self.student_outputs(batch)
        ce, kl = soft_label_kd(
            logits, self.teacher_logits[batch.indices], batch.labels, lam=self.lam
        )
        losses = {"ce": ce, "soft_labels": kl}
        if self.adapter is not None and self.teacher_features is not None:
            target = self.teacher_features[batch.indices]
            losses["embedding"] = self.embedding_weight * F.mse_loss(self.adapter(hidden), target)
        return StepOutput(losses, logits)
