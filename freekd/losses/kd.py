"""Response-based distillation losses."""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import Tensor


def standardized(logits: Tensor) -> Tensor:
    """Each row z-scored, (z − mean z) / std z: logit standardization, Sun et al. 2024 (CVPR,
    "Logit Standardization in Knowledge Distillation", §3.2, Algorithm 1).

    A softmax of standardized logits no longer depends on the scale (or shift) of the network's
    logits, so one temperature fits teachers whose logits differ several-fold in spread.
    """
    centred = logits - logits.mean(dim=-1, keepdim=True)
    return centred / (centred.std(dim=-1, keepdim=True) + 1e-7)


def kd_kl(
    student_logits: Tensor,
    teacher_logits: Tensor,
    *,
    temperature: float = 4.0,
    standardize: bool = False,
) -> Tensor:
    """Soft-target distillation loss, Hinton et al. 2015 (arXiv:1503.02531) §2.

    Args:
        student_logits: (B, C) unnormalized scores.
        teacher_logits: (B, C) unnormalized scores; callers pass them detached or under no_grad.
        temperature: softmax temperature T. The T² factor keeps the gradient scale independent of
            T (§2: "it is important to multiply them by T²").
        standardize: z-score both sides' logits first (:func:`standardized`, Sun et al. 2024);
            T is then the "base temperature" of that paper.

    Returns:
        Scalar KL(p_teacher ‖ p_student) at temperature T, times T², mean over the batch.
    """
    if standardize:
        student_logits, teacher_logits = standardized(student_logits), standardized(teacher_logits)
    log_p_student = F.log_softmax(student_logits / temperature, dim=-1)
    log_p_teacher = F.log_softmax(teacher_logits / temperature, dim=-1)
    # log_target keeps the teacher side in log space: no log(0) for confidently wrong classes.
    kl = F.kl_div(log_p_student, log_p_teacher, log_target=True, reduction="batchmean")
    return kl * temperature**2


def cross_entropy(logits: Tensor, labels: Tensor, *, label_smoothing: float = 0.0) -> Tensor:
    """Mean cross-entropy of (B, C) logits against (B,) integer labels."""
    return F.cross_entropy(logits, labels, label_smoothing=label_smoothing)


def attention_map(features: Tensor, *, power: float = 2.0) -> Tensor:
    """Spatial attention map of a feature block, Zagoruyko & Komodakis 2017 (arXiv:1612.03928) §3.1.

    Args:
        features: (B, C, H, W) activations.
        power: p of the channel-wise statistic F^p_mean = (1/C) Σ_c |A_c|^p (the paper's p = 2).

    Returns:
        (B, H·W) maps, each L2-normalized (§3.1: "it is important to normalize").
    """
    pooled = features.abs().pow(power).mean(dim=1).flatten(1)
    return F.normalize(pooled, dim=1)


def attention_transfer(
    student_features: list[Tensor], teacher_features: list[Tensor], *, power: float = 2.0
) -> Tensor:
    """Attention-transfer loss summed over matched blocks (Zagoruyko & Komodakis 2017, Eq. 2).

    Σ_j mean over batch and positions of (Q_S^j/‖Q_S^j‖ − Q_T^j/‖Q_T^j‖)², the form ZSKT adds to
    its student loss with weight β (Micaelli & Storkey 2019, arXiv:1905.09768, Eq. 2). Blocks
    pair up by position in the lists and must share their spatial size; channels may differ.
    """
    if len(student_features) != len(teacher_features) or not student_features:
        raise ValueError(
            f"need the same non-zero number of student and teacher blocks, got "
            f"{len(student_features)} and {len(teacher_features)}"
        )
    terms = []
    for student, teacher in zip(student_features, teacher_features, strict=True):
        if student.shape[-2:] != teacher.shape[-2:]:
            raise ValueError(
                f"attention maps need equal spatial sizes, got {tuple(student.shape[-2:])} "
                f"and {tuple(teacher.shape[-2:])}"
            )
        difference = attention_map(student, power=power) - attention_map(teacher, power=power)
        terms.append(difference.pow(2).mean())
    return torch.stack(terms).sum()


def decoupled_kd(
    student_logits: Tensor,
    teacher_logits: Tensor,
    target: Tensor,
    *,
    alpha: float = 1.0,
    beta: float = 8.0,
    temperature: float = 4.0,
) -> Tensor:
    """Decoupled knowledge distillation, Zhao et al. 2022 (CVPR, "Decoupled Knowledge
    Distillation") Eq. 7: DKD = α·TCKD + β·NCKD, each times T².

    TCKD = KL(b^T ‖ b^S), the binary distributions [p_t, 1 − p_t] of the target class t at
    temperature T; NCKD = KL(p̂^T ‖ p̂^S), the distributions over the non-target classes alone
    (the softmax of the other logits). Classic KD is TCKD + (1 − p^T_t)·NCKD (Eq. 6), so DKD with
    α = 1 and β = 1 − p^T_t per example equals :func:`kd_kl`.

    Args:
        student_logits: (B, K) scores.
        teacher_logits: (B, K) scores, passed detached or under no_grad.
        target: (B,) class t of each example (the label, or the teacher's prediction when the
            batch has none).
        alpha: weight of TCKD; a float or a (B,) tensor.
        beta: weight of NCKD; a float or a (B,) tensor.
        temperature: T.
    """
    mask = F.one_hot(target, student_logits.shape[1]).bool()

    def binary(logits: Tensor) -> Tensor:
        probabilities = F.softmax(logits / temperature, dim=1)
        target_p = probabilities.masked_select(mask).unsqueeze(1)
        return torch.cat([target_p, 1 - target_p], dim=1).clamp_min(1e-12)

    def non_target_log(logits: Tensor) -> Tensor:
        # A target logit far below the others leaves a softmax over the other classes only
        # (finite, so no 0·inf appears in the loss or its gradient).
        return F.log_softmax(logits.masked_fill(mask, -1e9) / temperature, dim=1)

    b_student, b_teacher = binary(student_logits), binary(teacher_logits)
    tckd = (b_teacher * (b_teacher.log() - b_student.log())).sum(1)
    log_s, log_t = non_target_log(student_logits), non_target_log(teacher_logits)
    p_t = log_t.exp()
    nckd = torch.where(mask, torch.zeros_like(p_t), p_t * (log_t - log_s)).sum(1)
    return ((alpha * tckd + beta * nckd) * temperature**2).mean()


def mutual_kl(peer_logits: Sequence[Tensor], *, temperature: float = 1.0) -> Tensor:
    """Deep mutual learning's mimicry terms, Zhang et al. 2018 (CVPR, "Deep Mutual Learning",
    arXiv:1706.00384) Eq. 5 (K peers): peer k's mean over the other peers l of
    KL(p_l ‖ p_k), with every target p_l detached (each peer learns from the others'
    predictions, not through them). At T ≠ 1 both sides are softened and the term is times T².

    Args:
        peer_logits: K ≥ 2 tensors of (B, C) logits, one per peer, on the same batch.
        temperature: T (the paper's is 1).

    Returns:
        (K,) each peer's mimicry loss, mean over the batch.
    """
    if len(peer_logits) < 2:
        raise ValueError(f"mutual learning needs at least two peers, got {len(peer_logits)}")
    targets = [logits.detach() for logits in peer_logits]
    terms = [
        torch.stack(
            [
                kd_kl(logits, target, temperature=temperature)
                for other, target in enumerate(targets)
                if other != peer
            ]
        ).mean()
        for peer, logits in enumerate(peer_logits)
    ]
    return torch.stack(terms)
