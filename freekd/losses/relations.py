"""Batch relations and the relation- and graph-based distillation losses built on them.

One set of primitives describes a batch as a graph: its instances are the vertices and a (B, B)
matrix of :func:`pairwise_distances`, :func:`gram` or :func:`similarity` (or the (B, B, B)
:func:`angles`) holds its edges. Each relation method of ``freekd.methods`` is then a short
edge-matching loss between the teacher's graph and the student's, and the two graphs may come
from features of different widths: only the batch size must agree.

Pure functions: tensors in, tensors out, hyperparameters keyword-only.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import Tensor


def _flat(features: Tensor) -> Tensor:
    """(B, ...) features as (B, D) rows."""
    if features.dim() < 2:
        raise ValueError(f"relations need (B, ...) features, got shape {tuple(features.shape)}")
    return features.flatten(1)


def pairwise_distances(features: Tensor, *, squared: bool = False, eps: float = 1e-12) -> Tensor:
    """(B, B) Euclidean distances between the rows of ``features`` (flattened), 0 on the diagonal.

    Computed as ‖a‖² + ‖b‖² − 2aᵀb (clamped at 0), so memory is B × B whatever the width of the
    features (a (B, B, D) tensor of differences would take a gigabyte for a 16×32×32 stage at
    B = 128); the square root is taken of ``max(d², eps)`` off the diagonal so its gradient
    stays finite.
    """
    rows = _flat(features)
    norms = rows.pow(2).sum(1)
    squares = (norms.unsqueeze(0) + norms.unsqueeze(1) - 2 * rows @ rows.T).clamp_min(0)
    if squared:
        return squares
    off_diagonal = ~torch.eye(len(rows), dtype=torch.bool, device=rows.device)
    return torch.where(off_diagonal, squares.clamp_min(eps).sqrt(), torch.zeros_like(squares))


def mean_normalized(distances: Tensor) -> Tensor:
    """Distances divided by their mean over the distinct pairs (RKD's μ, Park et al. 2019, Eq. 4):
    the result does not change when every feature is scaled by the same factor."""
    count = distances.shape[0] * (distances.shape[0] - 1)
    mean = distances.sum() / max(count, 1)
    return distances / mean.clamp_min(1e-12)


def angles(features: Tensor) -> Tensor:
    """(B, B, B) cosines of the angles ∠(x_i, x_j, x_k) at vertex j: ⟨e_ij, e_kj⟩ with
    e_ij = (x_i − x_j)/‖x_i − x_j‖ (Park et al. 2019, RKD, Eq. 5). Entry [j, i, k]. Holds a
    (B, B, D) tensor of differences: meant for embeddings, not for wide feature maps."""
    rows = _flat(features)
    # differences[j, i] = x_i − x_j, normalized
    differences = F.normalize(rows.unsqueeze(0) - rows.unsqueeze(1), p=2, dim=2)
    return differences @ differences.transpose(1, 2)


def gram(features: Tensor) -> Tensor:
    """(B, B) row-normalized Gram matrix G̃ = row_L2(Q Qᵀ), Q the flattened features
    (Tung & Mori 2019, similarity-preserving KD, Eq. 1–2)."""
    rows = _flat(features)
    return F.normalize(rows @ rows.T, p=2, dim=1)


def similarity(features: Tensor) -> Tensor:
    """(B, B) cosine similarities of the rows of ``features`` (flattened)."""
    rows = F.normalize(_flat(features), p=2, dim=1)
    return rows @ rows.T


def _check_batches(student: Tensor, teacher: Tensor) -> None:
    if student.shape[0] != teacher.shape[0]:
        raise ValueError(
            f"relations compare batches of one size, got {student.shape[0]} and {teacher.shape[0]}"
        )


def rkd_distance(student: Tensor, teacher: Tensor) -> Tensor:
    """RKD distance-wise loss, Park et al. 2019 (CVPR, "Relational Knowledge Distillation") Eq. 4–6:
    the Huber loss between the mean-normalized pairwise distances of the two batches."""
    _check_batches(student, teacher)
    with torch.no_grad():
        target = mean_normalized(pairwise_distances(teacher))
    return F.smooth_l1_loss(mean_normalized(pairwise_distances(student)), target)


def rkd_angle(student: Tensor, teacher: Tensor) -> Tensor:
    """RKD angle-wise loss, Park et al. 2019 Eq. 5–7: the Huber loss between the cosines of every
    angle the triplets of the two batches form."""
    _check_batches(student, teacher)
    with torch.no_grad():
        target = angles(teacher)
    return F.smooth_l1_loss(angles(student), target)


def similarity_preserving(student: Tensor, teacher: Tensor) -> Tensor:
    """Similarity-preserving loss of one layer pair, Tung & Mori 2019 (ICCV) Eq. 3:
    (1/B²) ‖G̃_T − G̃_S‖²_F with the row-normalized Gram matrices of :func:`gram`."""
    _check_batches(student, teacher)
    batch = student.shape[0]
    return (gram(student) - gram(teacher).detach()).pow(2).sum() / batch**2


def probabilistic_transfer(student: Tensor, teacher: Tensor, *, eps: float = 1e-7) -> Tensor:
    """Probabilistic knowledge transfer, Passalis & Tefas 2018 (ECCV) Eq. 7–10 with the cosine
    kernel K(a, b) = (1 + cos(a, b))/2 of §3.2: each batch's kernel matrix, normalized per row
    into conditional probabilities p_{j|i} (Eq. 8), and p^T_{j|i} log(p^T_{j|i}/p^S_{j|i}) (the KL
    divergence of Eq. 10) averaged over the B² pairs, the normalization the comparison tables'
    weight of 30000 belongs to (Eq. 10 sums). The diagonal (an instance with itself) is included."""
    _check_batches(student, teacher)

    def conditional(features: Tensor) -> Tensor:
        kernel = (similarity(features) + 1.0) / 2.0
        return kernel / kernel.sum(dim=1, keepdim=True)

    p_student = conditional(student)
    with torch.no_grad():
        p_teacher = conditional(teacher)
    return (p_teacher * torch.log((p_teacher + eps) / (p_student + eps))).mean()


def correlation_matrix(features: Tensor, *, gamma: float = 0.4, order: int = 2) -> Tensor:
    """(B, B) correlations under a Gaussian RBF kernel k(x, y) = exp(−γ‖x − y‖²) of L2-normalized
    features, expanded to Taylor order P (Peng et al. 2019, ICCV, correlation congruence, Eq. 9):
    for unit vectors ‖x − y‖² = 2 − 2xᵀy, so k ≈ Σ_{p=0}^{P} e^{−2γ} (2γ)^p/p! (xᵀy)^p."""
    cosine = similarity(features)
    terms = [
        math.exp(-2 * gamma) * (2 * gamma) ** p / math.factorial(p) * cosine.pow(p)
        for p in range(order + 1)
    ]
    return torch.stack(terms).sum(0)


def correlation_congruence(
    student: Tensor, teacher: Tensor, *, gamma: float = 0.4, order: int = 2
) -> Tensor:
    """Correlation-congruence loss, Peng et al. 2019 (ICCV) Eq. 6: the mean squared difference of
    the two batches' correlation matrices (:func:`correlation_matrix`)."""
    _check_batches(student, teacher)
    with torch.no_grad():
        target = correlation_matrix(teacher, gamma=gamma, order=order)
    return F.mse_loss(correlation_matrix(student, gamma=gamma, order=order), target)


def irg_edges(student: Tensor, teacher: Tensor) -> Tensor:
    """Instance-relationship-graph edge loss of one layer pair, Liu et al. 2019 (CVPR, "Knowledge
    Distillation via Instance Relationship Graph") §3.2: the mean squared difference of the two
    batches' Euclidean distance matrices. Each matrix is divided by its largest entry first
    (freekd's choice, as RKD divides by the mean), so networks whose features differ in width and
    scale compare."""
    _check_batches(student, teacher)

    def edges(features: Tensor) -> Tensor:
        distances = pairwise_distances(features)
        return distances / distances.max().clamp_min(1e-12)

    with torch.no_grad():
        target = edges(teacher)
    return F.mse_loss(edges(student), target)


def irg_transformation(first: Tensor, second: Tensor) -> Tensor:
    """(B,) how far each instance moves between two layers of one network (Liu et al. 2019, §3.3,
    the IRG transformation): the distance between its globally average-pooled features at the two
    layers. Feature maps are pooled over space; when the layers' channel counts differ the wider
    one is averaged down to the narrower one's count (freekd's parameter-free bridge; the paper
    pairs layers of equal shape)."""

    def vector(features: Tensor) -> Tensor:
        return features.flatten(2).mean(2) if features.dim() > 2 else features

    a, b = vector(first), vector(second)
    width = min(a.shape[1], b.shape[1])
    if a.shape[1] != width:
        a = F.adaptive_avg_pool1d(a.unsqueeze(1), width).squeeze(1)
    if b.shape[1] != width:
        b = F.adaptive_avg_pool1d(b.unsqueeze(1), width).squeeze(1)
    return (a - b).pow(2).sum(1).clamp_min(1e-12).sqrt()
