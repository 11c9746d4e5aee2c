"""Losses that synthesize inputs from a teacher (data-free distillation).

Pure functions: tensors in, scalar out, hyperparameters keyword-only. Each names the paper and
equation it implements. Synthesizers compose them with weights; the sign convention is that every
function returns a quantity to *minimize* (a term the generator maximizes is returned negated and
says so).
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import Tensor

from freekd.losses.kd import standardized


def bn_statistics(
    batch_means: Sequence[Tensor],
    batch_variances: Sequence[Tensor],
    running_means: Sequence[Tensor],
    running_variances: Sequence[Tensor],
) -> Tensor:
    """Feature-distribution regularizer R_feature, Yin et al. 2020 (arXiv:1912.08795) Eq. 4.

    Σ_l ‖μ_l(x̂) − E(μ_l | X)‖₂ + ‖σ²_l(x̂) − E(σ²_l | X)‖₂ over the BatchNorm layers l, where the
    expectations are the layers' running statistics.

    Args:
        batch_means: per layer, (C_l,) channel means of the synthetic batch at that layer's input.
        batch_variances: per layer, (C_l,) channel variances (biased) of the same.
        running_means: per layer, (C_l,) the BatchNorm layer's running mean.
        running_variances: per layer, (C_l,) the BatchNorm layer's running variance.

    Returns:
        Scalar sum over layers.
    """
    if not batch_means:
        raise ValueError("bn_statistics needs at least one BatchNorm layer")
    terms = [
        torch.linalg.vector_norm(mean - running_mean) + torch.linalg.vector_norm(var - running_var)
        for mean, var, running_mean, running_var in zip(
            batch_means, batch_variances, running_means, running_variances, strict=True
        )
    ]
    return torch.stack(terms).sum()


def onehot(teacher_logits: Tensor, targets: Tensor | None = None) -> Tensor:
    """One-hot loss L_oh, Chen et al. 2019 (DAFL, arXiv:1904.01186) Eq. 2.

    Cross-entropy between the teacher's outputs and one-hot targets: the teacher's own argmax
    (DAFL), or given class targets (DeepInversion's L_CE, Fast and CMI's conditional synthesis).

    Args:
        teacher_logits: (B, K).
        targets: (B,) class indices; default ``teacher_logits.argmax(1)``.
    """
    if targets is None:
        targets = teacher_logits.detach().argmax(dim=1)
    return F.cross_entropy(teacher_logits, targets)


def activation(features: Tensor) -> Tensor:
    """Activation loss L_a, DAFL Eq. 3: −(1/B) Σ_i ‖f_i‖₁ over the teacher's penultimate features.

    Real images excite the teacher's filters strongly; minimizing this term raises the L1 norm.

    Args:
        features: (B, D) features before the teacher's last fully-connected layer.
    """
    return -features.abs().sum(dim=1).mean()


def information_entropy(teacher_logits: Tensor) -> Tensor:
    """Information-entropy loss L_ie, DAFL Eq. 4: −H_info((1/B) Σ_i softmax(y_i)).

    Minimizing it maximizes the entropy of the batch's mean class distribution, so every class is
    synthesized about equally often (class balance).

    Args:
        teacher_logits: (B, K).
    """
    mean_probabilities = F.softmax(teacher_logits, dim=1).mean(dim=0)
    # Σ p log p = −H; clamp keeps log finite for a class no sample falls into.
    return (mean_probabilities * mean_probabilities.clamp_min(1e-12).log()).sum()


def logit_discrepancy(student_logits: Tensor, teacher_logits: Tensor) -> Tensor:
    """Mean absolute error between logits, DFAD (Fang et al. 2019, arXiv:1912.11006) Eq. 2.

    The student minimizes it; the adversarial generator maximizes it (minimizes its negative).

    Args:
        student_logits: (B, K).
        teacher_logits: (B, K).
    """
    return F.l1_loss(student_logits, teacher_logits)


def kl_discrepancy(
    student_logits: Tensor,
    teacher_logits: Tensor,
    *,
    temperature: float = 1.0,
    standardize: bool = False,
) -> Tensor:
    """KL(p_teacher ‖ p_student), ZSKT (Micaelli & Storkey 2019, arXiv:1905.09768) Eq. 1.

    The discrepancy ZSKT's generator maximizes and its student minimizes (no T² factor).

    Args:
        student_logits: (B, K).
        teacher_logits: (B, K).
        temperature: softmax temperature (ZSKT uses 1).
        standardize: z-score both sides' logits first (``losses.kd.standardized``).
    """
    if standardize:
        student_logits, teacher_logits = standardized(student_logits), standardized(teacher_logits)
    log_p_student = F.log_softmax(student_logits / temperature, dim=1)
    log_p_teacher = F.log_softmax(teacher_logits / temperature, dim=1)
    return F.kl_div(log_p_student, log_p_teacher, log_target=True, reduction="batchmean")


def jensen_shannon(student_logits: Tensor, teacher_logits: Tensor) -> Tensor:
    """Jensen–Shannon divergence between softmax outputs, averaged over the batch.

    Adaptive DeepInversion's competition term (Yin et al. 2020 Eq. 6) uses 1 − JS: the images are
    pushed to where teacher and student disagree.

    Args:
        student_logits: (B, K).
        teacher_logits: (B, K).
    """
    p_student = F.softmax(student_logits, dim=1)
    p_teacher = F.softmax(teacher_logits, dim=1)
    mixture = (0.5 * (p_student + p_teacher)).clamp_min(1e-12)
    kl_student = (p_student * (p_student.clamp_min(1e-12).log() - mixture.log())).sum(dim=1)
    kl_teacher = (p_teacher * (p_teacher.clamp_min(1e-12).log() - mixture.log())).sum(dim=1)
    return (0.5 * (kl_student + kl_teacher)).mean()


def total_variation(images: Tensor) -> Tensor:
    """Image prior R_TV, DeepInversion Eq. 3 (after Mahendran & Vedaldi 2015): mean absolute
    difference between neighbouring pixels, horizontally and vertically.

    Args:
        images: (B, C, H, W).
    """
    vertical = (images[:, :, 1:, :] - images[:, :, :-1, :]).abs().mean()
    horizontal = (images[:, :, :, 1:] - images[:, :, :, :-1]).abs().mean()
    return vertical + horizontal


def l2_prior(images: Tensor) -> Tensor:
    """Image prior R_l2, DeepInversion Eq. 3: mean squared pixel value of (B, C, H, W) images."""
    return images.pow(2).mean()


def competition(student_logits: Tensor, teacher_logits: Tensor) -> Tensor:
    """Teacher–student competition R_compete = 1 − JS(p_T, p_S), Yin et al. 2020
    (Adaptive DeepInversion, arXiv:1912.08795) §3.3 Eq. 6–7.

    Minimizing it maximizes the Jensen–Shannon divergence between teacher and student softmax
    outputs, so synthesis moves to inputs the student does not yet imitate; combined with the
    teacher's cross-entropy on a target class (Eq. 8), the images stay ones the teacher is sure of.
    In [0, 1] when the divergence uses natural logs (JS ≤ log 2 < 1).

    Args:
        student_logits: (B, K).
        teacher_logits: (B, K).
    """
    return 1.0 - jensen_shannon(student_logits, teacher_logits)
