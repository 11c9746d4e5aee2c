"""Supervised training with labels: how teachers are trained."""

from __future__ import annotations

from torch import nn

from freekd.data.batch import Batch
from freekd.errors import FreekdError
from freekd.losses import cross_entropy
from freekd.methods.base import Method, StepOutput


class Supervised(Method):
    """Cross-entropy on labelled batches.

    Args:
        student: the network being trained (takes [0, 1] images).
        label_smoothing: Szegedy et al. 2016 (arXiv:1512.00567) §7 label smoothing ε.
    """

    def __init__(self, student: nn.Module, *, label_smoothing: float = 0.0) -> None:
        super().__init__()
        self.student = student
        self.label_smoothing = label_smoothing

    def training_step(self, batch: Batch) -> StepOutput:
        if batch.labels is None:
            raise FreekdError("supervised training needs labelled batches")
        logits = self.student(batch.images)
        loss = cross_entropy(logits, batch.labels, label_smoothing=self.label_smoothing)
        return StepOutput(losses={"ce": loss}, logits=logits)


class EnsembleSupervised(Method):
    """Cross-entropy for K teachers at once, each on its own batch.

    ``student`` maps (K, B, C, H, W) images to (K, B, classes) logits and labels are (K, B).
    The loss is the sum over teachers of each teacher's mean cross-entropy, so every teacher's
    gradient is exactly its own (their parameters are disjoint) at its own batch's scale.

    Args:
        student: a ``teachers.TeacherEnsemble`` or ``StackedTeacherEnsemble`` being trained.
    """

    def __init__(self, student: nn.Module) -> None:
        super().__init__()
        self.student = student

    def training_step(self, batch: Batch) -> StepOutput:
        if batch.labels is None:
            raise FreekdError("teacher training needs labelled batches")
        logits = self.student(batch.images)  # (K, B, classes)
        teachers = logits.shape[0]
        loss = teachers * cross_entropy(logits.flatten(0, 1), batch.labels.flatten())
        return StepOutput(losses={"ce": loss}, logits=None)
