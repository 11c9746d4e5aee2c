"""Contrastive losses: pure functions, tensors in and scalar out, hyperparameters keyword-only."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor


def info_nce(
    queries: Tensor,
    keys: Tensor,
    *,
    temperature: float | Tensor,
    negatives: Tensor | None = None,
) -> Tensor:
    """InfoNCE instance discrimination, van den Oord et al. 2018 (arXiv:1807.03748) Eq. 4, in the
    cosine-similarity form of SimCLR (Chen et al. 2020, arXiv:2002.05709) and of CMI's contrastive
    term L_cr (Fang et al. 2021, arXiv:2105.08584 §3.2).

    Query i's positive is key i (the diagonal); every other key in the batch and every row of
    ``negatives`` is a negative. With s(a, b) = aᵀb / (‖a‖‖b‖),

        L = −(1/B) Σ_i log [ e^{s(q_i, k_i)/τ} / (Σ_j e^{s(q_i, k_j)/τ} + Σ_m e^{s(q_i, n_m)/τ}) ],

    i.e. the cross-entropy of picking the own key among all candidates. It is ≥ 0, equals log B
    when every embedding is the same and there are no extra negatives, and only grows when
    negatives are added (each adds a positive term to the denominator).

    Args:
        queries: (B, D) embeddings of one view (not necessarily normalized).
        keys: (B, D) embeddings of the other view; row i is the positive of query i.
        temperature: τ > 0; smaller values sharpen the distribution over candidates.
        negatives: (N, D) extra negatives for every query (e.g. a memory bank of earlier
            samples), or None.

    Returns:
        Scalar loss, mean over the B queries.
    """
    if queries.shape != keys.shape or queries.dim() != 2:
        raise ValueError(
            f"info_nce needs (B, D) queries and keys of one shape, got {tuple(queries.shape)} "
            f"and {tuple(keys.shape)}"
        )
    value = float(temperature.detach()) if isinstance(temperature, Tensor) else temperature
    if value <= 0:
        raise ValueError(f"info_nce needs a positive temperature, got {value}")
    queries = F.normalize(queries, dim=1)
    logits = queries @ F.normalize(keys, dim=1).T  # (B, B), positives on the diagonal
    if negatives is not None and len(negatives) > 0:
        extra = queries @ F.normalize(negatives, dim=1).T  # (B, N)
        logits = torch.cat([logits, extra], dim=1)
    targets = torch.arange(len(queries), device=queries.device)
    return F.cross_entropy(logits / temperature, targets)


def clip_contrastive(
    image_features: Tensor, text_features: Tensor, *, logit_scale: Tensor | float
) -> Tensor:
    """CLIP's symmetric contrastive loss, Radford et al. 2021 (arXiv:2103.00020) §2.3, Fig. 3.

    Both sets are L2-normalized; with logits = s · I Tᵀ (s the learnable inverse temperature),
    the loss is the mean of the cross-entropies of picking the paired text for each image (rows)
    and the paired image for each text (columns):

        L = ½ [CE(s I Tᵀ, diag) + CE(s T Iᵀ, diag)].

    Args:
        image_features: (B, D) image embeddings (any norm).
        text_features: (B, D) embeddings of each image's caption, in the same order.
        logit_scale: s = exp(log-temperature), a scalar tensor (learnable) or a number.

    Returns:
        Scalar loss; log B when every embedding is the same.
    """
    images = F.normalize(image_features, dim=-1)
    texts = F.normalize(text_features, dim=-1)
    logits = logit_scale * images @ texts.T
    targets = torch.arange(len(images), device=images.device)
    return 0.5 * (F.cross_entropy(logits, targets) + F.cross_entropy(logits.T, targets))


def interactive_contrastive(
    student_features: Tensor, teacher_features: Tensor, *, logit_scale: Tensor | float
) -> Tensor:
    """CLIP-KD's interactive contrastive term, Yang et al. 2024 (arXiv:2307.12732) §3.2, ICL.

    The student's embeddings of one modality are contrasted against the teacher's embeddings of
    the *other* modality (student images against teacher texts, or student texts against
    teacher images), so the student learns to sit where the teacher's cross-modal neighbours
    are: L = CE(s · S Tᵀ, diag) with S, T L2-normalized.

    Args:
        student_features: (B, D) student embeddings (projected to the teacher's dimension).
        teacher_features: (B, D) teacher embeddings of the paired items in the other modality.
        logit_scale: s, the inverse temperature.
    """
    student = F.normalize(student_features, dim=-1)
    teacher = F.normalize(teacher_features, dim=-1)
    targets = torch.arange(len(student), device=student.device)
    return F.cross_entropy(logit_scale * student @ teacher.T, targets)


def contrastive_relational(
    student_images: Tensor,
    student_texts: Tensor,
    teacher_images: Tensor,
    teacher_texts: Tensor,
    *,
    student_scale: Tensor | float,
    teacher_scale: Tensor | float,
) -> Tensor:
    """CLIP-KD's contrastive relational distillation, Yang et al. 2024 (arXiv:2307.12732) §3.1,
    CRD (TinyCLIP's affinity mimicking, Wu et al. 2023, arXiv:2309.12314 §3.1, is the same term).

    Within a batch, each image's distribution over the batch's texts (and each text's over the
    images) is the softmax of its scaled cosine similarities; the student's distributions
    follow the teacher's by KL divergence, both directions averaged:

        p^T_i = softmax(t · Î_i Tᵀ), p^S_i = softmax(s · Î'_i T'ᵀ),
        L = ½ [ mean_i KL(p^T_i ‖ p^S_i) + the same over texts ].

    Unlike instance contrast it carries relations, not identities: when many captions in a
    batch say the same thing (templated pairs), the teacher's distribution spreads over all of
    them and the student is not pushed to tell identical texts apart. Student and teacher
    embeddings are compared only within their own model, so their dimensions may differ.

    Args:
        student_images, student_texts: (B, D_s) the student's embeddings of the pairs.
        teacher_images, teacher_texts: (B, D_t) the teacher's embeddings of the same pairs.
        student_scale: s, the student's inverse temperature (its learnable logit scale).
        teacher_scale: t, the teacher's inverse temperature.

    Returns:
        Scalar loss, ≥ 0, zero when the student's similarity matrix equals the teacher's.
    """
    if student_images.shape != student_texts.shape or teacher_images.shape != teacher_texts.shape:
        raise ValueError("contrastive_relational needs image and text embeddings of one shape")
    if len(student_images) != len(teacher_images):
        raise ValueError("student and teacher must embed the same batch of pairs")
    student = (
        student_scale * F.normalize(student_images, dim=-1) @ F.normalize(student_texts, dim=-1).T
    )
    teacher = (
        teacher_scale * F.normalize(teacher_images, dim=-1) @ F.normalize(teacher_texts, dim=-1).T
    )

    def divergence(teacher_logits: Tensor, student_logits: Tensor) -> Tensor:
        return F.kl_div(
            F.log_softmax(student_logits, dim=-1),
            F.log_softmax(teacher_logits, dim=-1),
            log_target=True,
            reduction="batchmean",
        )

    return 0.5 * (divergence(teacher, student) + divergence(teacher.T, student.T))


def feature_distillation(student_features: Tensor, teacher_features: Tensor) -> Tensor:
    """CLIP-KD's feature distillation, Yang et al. 2024 §3.2, FD: the mean squared distance
    between the (projected) student and the teacher embeddings, both L2-normalized.

    Args:
        student_features: (B, D) student embeddings, projected to the teacher's dimension.
        teacher_features: (B, D) teacher embeddings of the same items.
    """
    student = F.normalize(student_features, dim=-1)
    teacher = F.normalize(teacher_features, dim=-1)
    return (student - teacher).pow(2).sum(dim=-1).mean()


def queue_contrastive(
    anchors: Tensor,
    positives: Tensor,
    negatives: Tensor,
    *,
    temperature: float,
    negative_mask: Tensor | None = None,
) -> Tensor:
    """Contrast each anchor with its own positive against a shared set of negatives.

    With unit vectors (all three are L2-normalized here) and critic e^{aᵀb/τ},

        L = −(1/B) Σ_i log [ e^{a_iᵀp_i/τ} / (e^{a_iᵀp_i/τ} + Σ_m e^{a_iᵀn_m/τ}) ],

    the softmax (InfoNCE) form of the contrastive representation distillation objective (Tian et
    al. 2020, ICLR, "Contrastive Representation Distillation", §3.1–3.4) with the negatives of a
    queue, as MoCo keeps them (He et al. 2020, CVPR, §3.2).

    Args:
        anchors: (B, D) embeddings of one network.
        positives: (B, D) embeddings of the other network; row i is anchor i's positive.
        negatives: (N, D) embeddings of the other network for other examples (N ≥ 1).
        temperature: τ > 0.
        negative_mask: (B, N) booleans, False where negative m must not count for anchor i (the
            same class as the anchor, for label-aware sampling); at least one per row must be True.

    Returns:
        Scalar loss, mean over the anchors; log(1 + N) when every embedding is the same.
    """
    if temperature <= 0:
        raise ValueError(f"queue_contrastive needs a positive temperature, got {temperature}")
    if anchors.shape != positives.shape or negatives.dim() != 2 or len(negatives) == 0:
        raise ValueError(
            f"need (B, D) anchors and positives and (N ≥ 1, D) negatives, got "
            f"{tuple(anchors.shape)}, {tuple(positives.shape)} and {tuple(negatives.shape)}"
        )
    anchors = F.normalize(anchors, dim=1)
    positive = (anchors * F.normalize(positives, dim=1)).sum(1, keepdim=True)  # (B, 1)
    negative = anchors @ F.normalize(negatives, dim=1).T  # (B, N)
    if negative_mask is not None:
        negative = negative.masked_fill(~negative_mask, float("-inf"))
    logits = torch.cat([positive, negative], dim=1) / temperature
    targets = torch.zeros(len(anchors), dtype=torch.long, device=anchors.device)
    return F.cross_entropy(logits, targets)
