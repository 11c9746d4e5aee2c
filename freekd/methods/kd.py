"""Response-based distillation (Hinton KD)."""

from __future__ import annotations

import torch
from torch import Tensor, nn

from freekd.data.batch import Batch
from freekd.losses import cross_entropy, kd_kl
from freekd.methods.base import METHODS, Method, StepOutput
from freekd.teachers import Teacher


@METHODS.register("kd")
class LogitKD(Method):
    """Hinton et al. 2015 (arXiv:1503.02531) §2: match the teacher's softened distribution.

    loss = kd_weight · T² · KL(p_T(teacher) ‖ p_T(student)) + ce_weight · CE(student, labels).
    The CE term is dropped for unlabelled batches (synthetic inputs, unlabelled queries).
    Defaults: T = 4 and equal weights, Hinton's "weighted average" of the two objectives (§2).
    The 0.9 / 0.1 weighting common on CIFAR (Tian et al. 2020, arXiv:1910.10699) did worse for
    LeNet-5-half on MNIST: 98.73 % vs 99.07 % after 10 epochs (seed 1).

    Args:
        student: the network being trained (takes [0, 1] images).
        teacher: frozen teacher.
        temperature: softmax temperature T.
        kd_weight: weight of the soft-target term.
        ce_weight: weight of the hard-label cross-entropy term.
        standardize: z-score both networks' logits before the softmax (logit standardization,
            Sun et al. 2024, CVPR, §3.2; ``losses.kd.standardized``): the soft targets then do
            not depend on how large the teacher's logits are.
    """

    def __init__(
        self,
        student: nn.Module,
        teacher: Teacher,
        *,
        temperature: float = 4.0,
        kd_weight: float = 0.5,
        ce_weight: float = 0.5,
        standardize: bool = False,
    ) -> None:
        super().__init__()
        self.standardize = standardize
        self.student = student
        self.teacher = teacher
        self.temperature = temperature
        self.kd_weight = kd_weight
        self.ce_weight = ce_weight

    def training_step(self, batch: Batch) -> StepOutput:
        # no_grad, not detach: nothing of the teacher's graph is kept in memory.
        with torch.no_grad():
            teacher_logits = self.teacher(batch.images)
        student_logits = self.student(batch.images)
        losses = self.response_losses(student_logits, teacher_logits, batch.labels)
        return StepOutput(losses=losses, logits=student_logits)

    def response_losses(
        self, student_logits: Tensor, teacher_logits: Tensor, labels: Tensor | None
    ) -> dict[str, Tensor]:
        """The weighted ``"kd"`` term and, for labelled batches, the ``"ce"`` term."""
        losses = {
            "kd": self.kd_weight
            * kd_kl(
                student_logits,
                teacher_logits,
                temperature=self.temperature,
                standardize=self.standardize,
            )
        }
        if labels is not None and self.ce_weight > 0:
            losses["ce"] = self.ce_weight * cross_entropy(student_logits, labels)
        return losses
