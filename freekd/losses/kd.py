"""Response-based distillation losses."""

from __future__ import annotations

import torch.nn.functional as F
from torch import Tensor


def kd_kl(student_logits: Tensor, teacher_logits: Tensor, *, temperature: float = 4.0) -> Tensor:
    """Soft-target distillation loss, Hinton et al. 2015 (arXiv:1503.02531) §2.

    Args:
        student_logits: (B, C) unnormalized scores.
        teacher_logits: (B, C) unnormalized scores; callers pass them detached or under no_grad.
        temperature: softmax temperature T. The T² factor keeps the gradient scale independent of
            T (§2: "it is important to multiply them by T²").

    Returns:
        Scalar KL(p_teacher ‖ p_student) at temperature T, times T², mean over the batch.
    """
    log_p_student = F.log_softmax(student_logits / temperature, dim=-1)
    log_p_teacher = F.log_softmax(teacher_logits / temperature, dim=-1)
    # log_target keeps the teacher side in log space: no log(0) for confidently wrong classes.
    kl = F.kl_div(log_p_student, log_p_teacher, log_target=True, reduction="batchmean")
    return kl * temperature**2


def cross_entropy(logits: Tensor, labels: Tensor, *, label_smoothing: float = 0.0) -> Tensor:
    """Mean cross-entropy of (B, C) logits against (B,) integer labels."""
    return F.cross_entropy(logits, labels, label_smoothing=label_smoothing)
