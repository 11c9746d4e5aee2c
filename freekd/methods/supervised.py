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
