"""``kd``: Hinton KD on the labelled nodes only (the classic setting, the baseline of GLNN)."""

from __future__ import annotations

from freekd.data.batch import Batch
from freekd.graph.methods.base import (
    GRAPH_METHODS,
    GraphMethod,
    GraphTargets,
    labelled_cross_entropy,
    number,
)
from freekd.graph.models import GraphNetwork
from freekd.losses.kd import kd_kl
from freekd.methods.base import StepOutput


@GRAPH_METHODS.register("kd")
class GraphKD(GraphMethod):
    """Soft targets on the labelled nodes alone, Hinton et al. 2015 (arXiv:1503.02531) §2:
    CE(y) + weight · T² KL(p_T ‖ p_S) at temperature T. The student never sees the teacher's
    predictions on unlabelled nodes, which is where GLNN (``glnn``) differs.

    Args:
        temperature: softmax temperature T.
        weight: weight of the KD term against the cross-entropy.
    """

    def __init__(
        self,
        student: GraphNetwork,
        targets: GraphTargets,
        *,
        temperature: float = 4.0,
        weight: float = 1.0,
    ) -> None:
        super().__init__(student, targets)
        self.temperature = number("temperature", temperature, low=1e-3)
        self.weight = number("weight", weight)

    def training_step(self, batch: Batch) -> StepOutput:
        assert batch.labels is not None
        assert self.teacher_logits is not None
        _, logits = self.student_outputs(batch)
        labelled = batch.labels >= 0
        teacher = self.teacher_logits[batch.indices][labelled]
        ce = labelled_cross_entropy(logits, batch.labels)
        kd = kd_kl(logits[labelled], teacher, temperature=self.temperature)
        return StepOutput({"ce": ce, "kd": self.weight * kd}, logits)
