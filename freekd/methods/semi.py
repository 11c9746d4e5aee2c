"""Semi-supervised training of a student from a few labels and many unlabelled images."""

from __future__ import annotations

import torch
from torch import nn

from freekd.data.batch import UNLABELLED, Batch
from freekd.errors import FreekdError
from freekd.losses import cross_entropy, kd_kl
from freekd.losses.semi import conditional_entropy, virtual_adversarial
from freekd.methods.base import Method, StepOutput


class VirtualAdversarial(Method):
    """Virtual adversarial training (Miyato et al. 2018, TPAMI, arXiv:1704.03976) §3.3–3.4.

    loss = CE(labelled images) + vat_weight · LDS(all images) [+ entropy_weight · H(all images)],
    where LDS is ``losses.semi.virtual_adversarial`` and H the conditional entropy of VAT+EntMin
    (§4.1.2). Batches mix labelled images with unlabelled ones, whose label is ``UNLABELLED``.
    This is how the PATE papers train their students: a few hundred noisy labels plus the rest
    of the public set unlabelled (Papernot et al. 2018, arXiv:1802.08908 §5; PATE 2017 used a GAN
    instead). The random directions come from the global torch generator, which the Trainer's
    checkpoints save, so a resumed run draws the same ones.

    Args:
        student: the network being trained (takes [0, 1] images).
        epsilon: L2 norm of the virtual adversarial perturbation.
        xi: finite-difference step of the power iteration.
        power_iterations: power-method steps.
        vat_weight: weight α of the LDS term (Eq. 14: α = 1).
        entropy_weight: weight of the entropy term (0: plain VAT; 1: VAT+EntMin).
        label_smoothing: label smoothing of the cross-entropy on the labelled images.
    """

    def __init__(
        self,
        student: nn.Module,
        *,
        epsilon: float = 2.0,
        xi: float = 1e-3,
        power_iterations: int = 1,
        vat_weight: float = 1.0,
        entropy_weight: float = 1.0,
        label_smoothing: float = 0.0,
    ) -> None:
        super().__init__()
        if epsilon <= 0 or xi <= 0 or power_iterations < 1:
            raise FreekdError(
                "virtual adversarial training needs epsilon > 0, xi > 0 and power_iterations "
                f">= 1, got {epsilon}, {xi}, {power_iterations}"
            )
        self.student = student
        self.epsilon = epsilon
        self.xi = xi
        self.power_iterations = power_iterations
        self.vat_weight = vat_weight
        self.entropy_weight = entropy_weight
        self.label_smoothing = label_smoothing

    def training_step(self, batch: Batch) -> StepOutput:
        if batch.labels is None:
            raise FreekdError("virtual adversarial training needs batches with some labels")
        labelled = batch.labels != UNLABELLED
        logits = self.student(batch.images)
        losses = {}
        if labelled.any():
            losses["ce"] = cross_entropy(
                logits[labelled], batch.labels[labelled], label_smoothing=self.label_smoothing
            )
        losses["vat"] = self.vat_weight * virtual_adversarial(
            self.student,
            batch.images,
            logits,
            epsilon=self.epsilon,
            xi=self.xi,
            power_iterations=self.power_iterations,
        )
        if self.entropy_weight:
            losses["entropy"] = self.entropy_weight * conditional_entropy(logits)
        return StepOutput(losses=losses, logits=logits[labelled])


class LabelsAndTeacher(Method):
    """Hard labels on a few images plus a teacher's soft targets on all of them: Hinton et al.
    2015 (arXiv:1503.02531) §2, the weighted sum of the cross-entropy with the correct labels and
    the soft-target loss, where only some images have a correct label.

    loss = CE(labelled images) + kd_weight · T² · KL(p_teacher^T ‖ p_student^T)(all images).
    Batches mix labelled images with unlabelled ones (label ``UNLABELLED``), as for
    ``VirtualAdversarial``. Data-free PATE trains its student this way (``freekd pate student
    --set semi_supervised=teacher``): the labels are the ensemble's answers, the teacher is the
    DP model the queries were synthesized from, whose cost the labels' (ε, δ) already holds.

    Args:
        student: the network being trained (takes [0, 1] images).
        teacher: the frozen teacher (takes [0, 1] images).
        kd_weight: weight of the soft-target term.
        temperature: softmax temperature T of the soft targets.
        label_smoothing: label smoothing of the cross-entropy on the labelled images.
    """

    def __init__(
        self,
        student: nn.Module,
        teacher: nn.Module,
        *,
        kd_weight: float = 1.0,
        temperature: float = 4.0,
        label_smoothing: float = 0.0,
    ) -> None:
        super().__init__()
        if kd_weight < 0 or temperature <= 0:
            raise FreekdError(
                f"labels plus teacher needs kd_weight >= 0 and temperature > 0, got {kd_weight}, "
                f"{temperature}; fix --set semi_supervised_kwargs.kd_weight=... / .temperature=..."
            )
        self.student = student
        self.teacher = teacher
        self.kd_weight = kd_weight
        self.temperature = temperature
        self.label_smoothing = label_smoothing

    def training_step(self, batch: Batch) -> StepOutput:
        if batch.labels is None:
            raise FreekdError("labels plus teacher needs batches with some labels")
        labelled = batch.labels != UNLABELLED
        logits = self.student(batch.images)
        with torch.no_grad():
            teacher_logits = self.teacher(batch.images)
        losses = {
            "kd": self.kd_weight * kd_kl(logits, teacher_logits, temperature=self.temperature)
        }
        if labelled.any():
            losses["ce"] = cross_entropy(
                logits[labelled], batch.labels[labelled], label_smoothing=self.label_smoothing
            )
        return StepOutput(losses=losses, logits=logits[labelled])
