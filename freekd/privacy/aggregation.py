"""Noisy aggregation of teacher votes: what leaves a PATE ensemble.

Each function maps an (N, K) tensor of integer vote counts (N queries, K classes) to N labels,
with an explicit ``rng: torch.Generator``. Randomness is research-grade (PyTorch's generator, as
Opacus' ``secure_mode=False``): fine for experiments and audits, not for a deployment facing an
adversary who can observe floating-point noise.
"""

from __future__ import annotations

import torch
from torch import Tensor

#: The label of a query Confident-GNMax declines to answer.
ABSTAIN = -1


def _check_votes(votes: Tensor) -> Tensor:
    if votes.ndim != 2 or votes.shape[1] < 2:
        raise ValueError(f"votes must be (N, K) counts with K ≥ 2, got shape {tuple(votes.shape)}")
    if votes.is_floating_point() and not torch.isfinite(votes).all():
        raise ValueError("votes contain NaN or infinite counts")
    return votes.to(torch.float64)


def lnmax_labels(votes: Tensor, *, gamma: float, rng: torch.Generator) -> Tensor:
    """LNMax, Papernot et al. 2017 (arXiv:1610.05755) Eq. 1: argmax_j(n_j + Lap(1/γ)).

    Args:
        votes: (N, K) vote counts.
        gamma: inverse Laplace scale; each answer is (2γ, 0)-DP.
        rng: source of the noise.

    Returns:
        (N,) int64 labels.
    """
    counts = _check_votes(votes)
    if not gamma > 0:
        raise ValueError(f"gamma must be positive, got {gamma}")
    # Laplace(0, b) as the difference of two Exp(1/b) draws keeps every draw on ``rng``.
    uniform = torch.rand((2, *counts.shape), generator=rng, dtype=torch.float64)
    noise = (-torch.log1p(-uniform[0]) + torch.log1p(-uniform[1])) / gamma
    return (counts + noise.to(counts.device)).argmax(dim=1)


def gnmax_labels(votes: Tensor, *, sigma: float, rng: torch.Generator) -> Tensor:
    """GNMax, Papernot et al. 2018 (arXiv:1802.08908) §4.1: argmax_j(n_j + N(0, σ²)).

    Args:
        votes: (N, K) vote counts.
        sigma: the noise σ on every count (σ = 0 is the plain, non-private plurality vote).
        rng: source of the noise.

    Returns:
        (N,) int64 labels.
    """
    counts = _check_votes(votes)
    if sigma < 0:
        raise ValueError(f"sigma must be ≥ 0, got {sigma}")
    noise = torch.randn(counts.shape, generator=rng, dtype=torch.float64) * sigma
    return (counts + noise.to(counts.device)).argmax(dim=1)


def confident_gnmax_labels(
    votes: Tensor, *, threshold: float, sigma_threshold: float, sigma: float, rng: torch.Generator
) -> Tensor:
    """Confident-GNMax, Papernot et al. 2018 Alg. 1: answer only where the teachers agree.

    A query is answered when max_j n_j + N(0, σ₁²) ≥ T, then with GNMax at σ₂; otherwise its
    label is :data:`ABSTAIN`. Both draws are made for every query, so the noise a query gets
    does not depend on which earlier queries were answered.

    Args:
        votes: (N, K) vote counts.
        threshold: T.
        sigma_threshold: σ₁, the noise of the check.
        sigma: σ₂, the noise of the answer.
        rng: source of both noises.

    Returns:
        (N,) int64 labels, :data:`ABSTAIN` where the check failed.
    """
    counts = _check_votes(votes)
    if sigma_threshold < 0 or sigma < 0:
        raise ValueError("sigma_threshold and sigma must be ≥ 0")
    check = torch.randn(len(counts), generator=rng, dtype=torch.float64) * sigma_threshold
    labels = gnmax_labels(counts, sigma=sigma, rng=rng)
    passed = counts.max(dim=1).values + check.to(counts.device) >= threshold
    return torch.where(passed, labels, torch.full_like(labels, ABSTAIN))


def interactive_gnmax_labels(
    votes: Tensor,
    student_probabilities: Tensor,
    *,
    confidence_scale: float,
    threshold: float,
    student_threshold: float,
    sigma_threshold: float,
    sigma: float,
    rng: torch.Generator,
) -> tuple[Tensor, Tensor]:
    """Interactive-GNMax, Papernot et al. 2018 Alg. 2: ask the teachers only where they disagree.

    With the student's class probabilities p (public: the student saw only public data and
    released labels), a query goes to the teachers when
    max_j(n_j − O·p_j) + N(0, σ₁²) ≥ T and is answered by GNMax at σ₂; otherwise, if the
    student is confident (max_j p_j > T'), its own prediction is the label (no further cost);
    otherwise the query is dropped (:data:`ABSTAIN`).

    Args:
        votes: (N, K) vote counts.
        student_probabilities: (N, K) the student's softmax outputs.
        confidence_scale: O, how strongly the student's beliefs are subtracted from the votes.
        threshold: T of the teachers' check.
        student_threshold: T', the student confidence that labels a query on its own.
        sigma_threshold: σ₁.
        sigma: σ₂.
        rng: source of both noises.

    Returns:
        (N,) labels and (N,) booleans: which labels the teachers gave.
    """
    counts = _check_votes(votes)
    probabilities = student_probabilities.to(torch.float64).to(counts.device)
    if probabilities.shape != counts.shape:
        raise ValueError(
            f"student probabilities have shape {tuple(probabilities.shape)}, votes "
            f"{tuple(counts.shape)}"
        )
    check = torch.randn(len(counts), generator=rng, dtype=torch.float64) * sigma_threshold
    teacher_labels = gnmax_labels(counts, sigma=sigma, rng=rng)
    disagreement = (counts - confidence_scale * probabilities).max(dim=1).values
    by_teachers = disagreement + check.to(counts.device) >= threshold
    confident = probabilities.max(dim=1).values > student_threshold
    student_labels = torch.where(
        confident, probabilities.argmax(dim=1), torch.full_like(teacher_labels, ABSTAIN)
    )
    return torch.where(by_teachers, teacher_labels, student_labels), by_teachers
