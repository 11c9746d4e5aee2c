"""Logit matching under the L1 norm: DFAD's imitation stage."""

from __future__ import annotations

import torch
from torch import nn

from freekd.data.batch import Batch
from freekd.losses.inversion import logit_discrepancy
from freekd.methods.base import METHODS, Method, StepOutput
from freekd.teachers import Teacher


@METHODS.register("logit-l1")
class LogitL1(Method):
    """Mean absolute error between student and teacher logits, Fang et al. 2019 (DFAD,
    arXiv:1912.11006) §3.2, Eq. 2 and the imitation stage of Eq. 4.

    loss = l1_weight · (1 / BK) Σ |teacher_logits − student_logits|. DFAD argues that matching
    logits under the L1 norm bounds the model discrepancy and, unlike KL on softmax outputs, does
    not vanish once the student's argmax agrees, so its adversarial generator keeps finding hard
    samples. Meant for unlabelled (synthetic) batches: labels, when a batch has them, are ignored.

    The default weight of 10 compensates for the mean over the K classes: the MAE's gradient on
    each logit is only sign(·)/(B·K), a tenth of a KD term's scale for K = 10, so at the learning
    rates freekd's other methods use (SGD 0.01–0.05) l1_weight = 1 barely moves the student (it
    fails the one-batch overfitting contract test: 30 steps at lr 0.05 cut the loss by 30 %,
    weight 10 by 71 %). With SGD, l1_weight · lr is what matters: weight 10 at lr 0.01 is the
    unweighted MAE at lr 0.1.

    Args:
        student: the network being trained (takes [0, 1] images).
        teacher: frozen teacher.
        l1_weight: weight of the MAE term.
    """

    def __init__(self, student: nn.Module, teacher: Teacher, *, l1_weight: float = 10.0) -> None:
        super().__init__()
        self.student = student
        self.teacher = teacher
        self.l1_weight = l1_weight

    def training_step(self, batch: Batch) -> StepOutput:
        # no_grad, not detach: nothing of the teacher's graph is kept in memory.
        with torch.no_grad():
            teacher_logits = self.teacher(batch.images)
        student_logits = self.student(batch.images)
        losses = {"l1": self.l1_weight * logit_discrepancy(student_logits, teacher_logits)}
        return StepOutput(losses=losses, logits=student_logits)
