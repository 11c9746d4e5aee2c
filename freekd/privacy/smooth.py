"""Smooth-sensitivity release of PATE's data-dependent privacy cost (Papernot et al. 2018 §B).

The data-dependent RDP ε_λ(D) of a PATE run (Thm 6 with Prop 7 for the answers, the exact
threshold cost for Confident-GNMax's checks) is a function of the private votes, so publishing it
leaks. Papernot et al. 2018 (arXiv:1802.08908, §4.2 and App. B–C) release it instead through the
smooth-sensitivity framework of Nissim, Raskhodnikova & Smith 2007 ("Smooth sensitivity and
sampling in private data analysis"):

1. **Local sensitivity at distance d**, LS(d): how much ε_λ can change between two neighbouring
   vote sets, for any vote set reachable from D by changing d teachers' votes. One changed
   training record changes one teacher's vote, so each vote gap n_top − n_i shrinks or grows by at
   most 2 per changed teacher and the largest count moves by at most 1 (``rdp`` module docstring).
   The per-query bounds below use exactly these facts; a run's LS(d) is the sum over its queries
   (one teacher votes on all of them).
2. **Smooth sensitivity** SS_β(D) = max_d e^{−βd} LS(d), a β-smooth upper bound on the local
   sensitivity (Nissim et al. 2007 Def. 2.2 and Lemma 2.3).
3. **Release** (the GNSS mechanism of PATE 2018 App. C): ε̂_λ = ε_λ(D) + SS_β(D)·σ_s·Z with
   Z ~ N(0, 1); only ε̂_λ is published, not SS_β(D), which depends on the votes too. The
   release's own RDP at order λ is ``gnss_rdp``; the published (ε, δ) converts
   ε̂_λ + gnss_rdp(λ) at the one order λ (RDP composition, Mironov 2017 Prop. 1; Opacus'
   conversion, as everywhere in freekd).

The RDP order λ of the release is chosen before it, as the order that minimizes the
data-dependent ε (as in PATE 2018's analysis); pass a fixed ``order`` to take even that choice
away from the data.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any

import numpy as np
from numpy.typing import ArrayLike
from scipy.special import log_ndtr, logsumexp

from freekd.privacy import rdp as analysis
from freekd.privacy.rdp import FloatArray

#: Defaults of the release: smoothness β as a fraction of its limit 1/(2λ) (``gnss_rdp``), and the
#: noise multiplier σ_s of the smooth sensitivity.
DEFAULT_BETA_FRACTION = 0.5
DEFAULT_SIGMA = 10.0


def _log_q_from_gaps(gaps: FloatArray, *, sigma: float, classes: int) -> FloatArray:
    """Prop. 7's log q̃ from the vote gaps n_top − n_i of the K − 1 other classes (…, K − 1)."""
    terms = log_ndtr(-np.maximum(gaps, 0.0) / (math.sqrt(2.0) * sigma))
    return np.minimum(logsumexp(terms, axis=-1), math.log1p(-1.0 / classes))


def _gaps(votes: FloatArray) -> FloatArray:
    """(N, K − 1) gaps between each query's top count and every other class's count."""
    ordered = np.sort(votes, axis=1)[:, ::-1]
    return ordered[:, :1] - ordered[:, 1:]


def gnmax_local_sensitivity(
    votes: ArrayLike, *, sigma: float, order: float, max_distance: int
) -> FloatArray:
    """LS(d), d = 0 … ``max_distance``, of the summed data-dependent GNMax RDP at ``order``.

    For vote sets within distance d + 1 of D (every pair of neighbours has one at distance ≤ d),
    q̃ lies in [L, U]: while every gap exceeds 2(d + 1) the plurality class cannot change and
    U, L are Prop. 7 with every gap reduced, resp. increased, by 2(d + 1); otherwise U is q̃'s cap
    1 − 1/K and L is 0. The data-dependent cost F(q̃) (``rdp.gnmax_data_dependent_rdp``) is
    non-decreasing in q̃ (tested), so F(U) − F(L) bounds the change between neighbours.

    Args:
        votes: (N, K) vote counts of the answered queries.
        sigma: σ₂, the GNMax noise.
        order: the Rényi order λ.
        max_distance: the largest d.

    Returns:
        (max_distance + 1,) upper bounds on LS(d).
    """
    counts = np.atleast_2d(np.asarray(votes, dtype=np.float64))
    if len(counts) == 0:
        return np.zeros(max_distance + 1)
    gaps, classes = _gaps(counts), counts.shape[1]
    shifts = 2.0 * (np.arange(max_distance + 1) + 1)[:, None, None]  # 2(d + 1)
    stays = gaps.min(axis=1)[None, :] > shifts[:, :, 0]  # (D, N): the plurality cannot change
    cap = math.log1p(-1.0 / classes)
    upper = np.where(
        stays, _log_q_from_gaps(gaps[None] - shifts, sigma=sigma, classes=classes), cap
    )
    lower = np.where(
        stays, _log_q_from_gaps(gaps[None] + shifts, sigma=sigma, classes=classes), -np.inf
    )
    cost = _gnmax_cost(sigma, order)
    return (cost(upper) - cost(lower)).sum(axis=1)


def _gnmax_cost(sigma: float, order: float) -> Any:
    def cost(log_q: FloatArray) -> FloatArray:
        finite = np.isfinite(log_q)
        values = np.zeros_like(log_q)
        values[finite] = analysis.gnmax_data_dependent_rdp(
            log_q[finite], [order], sigma=sigma
        ).reshape(-1)
        return values  # q̃ = 0: the answer is certain and costs nothing

    return cost


def threshold_local_sensitivity(
    votes: ArrayLike,
    *,
    threshold: float,
    sigma: float,
    order: float,
    teachers: int,
    max_distance: int,
) -> FloatArray:
    """LS(d) of the summed exact threshold-check RDP (``rdp.threshold_data_dependent_rdp``).

    The check's cost is a function f(m) of the largest count m alone, and m moves by at most one
    per changed teacher, so the local sensitivity at distance d is exactly
    max over m' ∈ [m − d, m + d] of max(|f(m') − f(m' − 1)|, |f(m' + 1) − f(m')|) over the counts
    that exist (⌈n/K⌉ ≤ m' ≤ n for n teachers and K classes; tested against brute force).

    Args:
        votes: (N, K) vote counts of every checked query.
        threshold: T.
        sigma: σ₁.
        order: the Rényi order λ.
        teachers: n, the number of teachers (the largest possible count).
        max_distance: the largest d.

    Returns:
        (max_distance + 1,) LS(d).
    """
    counts = np.atleast_2d(np.asarray(votes, dtype=np.float64))
    if len(counts) == 0:
        return np.zeros(max_distance + 1)
    grid = np.arange(teachers + 1, dtype=np.float64)
    f = analysis.threshold_data_dependent_rdp(
        np.stack([grid, np.zeros_like(grid)], axis=1), [order], threshold=threshold, sigma=sigma
    )[:, 0]
    # The largest of n votes over K classes is at least ⌈n/K⌉: no lower count exists.
    lowest = -(-teachers // counts.shape[1])
    steps = np.abs(np.diff(f))  # steps[m] = |f(m + 1) − f(m)|
    steps[: max(lowest, 0)] = 0.0
    change = np.maximum(np.append(steps, 0.0), np.insert(steps, 0, 0.0))  # per m' ∈ [0, n]
    tops = np.clip(counts.max(axis=1).astype(np.int64), 0, teachers)
    how_many = np.bincount(tops, minlength=teachers + 1).astype(np.float64)
    result = np.empty(max_distance + 1)
    window = change.copy()
    for d in range(max_distance + 1):
        result[d] = float(how_many @ window)
        # Widen every window by one on each side (a running maximum over [m − d, m + d]).
        window = np.maximum(
            window, np.maximum(np.append(window[1:], 0.0), np.insert(window[:-1], 0, 0.0))
        )
    return result


def smooth_sensitivity(local: ArrayLike, *, beta: float) -> float:
    """SS_β = max_d e^{−βd}·LS(d) (Nissim et al. 2007 Def. 2.2 / Lemma 2.3).

    ``local`` must run to a distance where LS(d) no longer grows (callers go to the number of
    teachers, beyond which nothing is left to change); later terms are then smaller.
    """
    values = np.asarray(local, dtype=np.float64)
    if beta < 0:
        raise ValueError(f"beta must be non-negative, got {beta}")
    return float((np.exp(-beta * np.arange(len(values))) * values).max(initial=0.0))


def gnss_rdp(order: float, *, beta: float, sigma: float) -> float:
    """RDP at ``order`` of releasing f(D) + S(D)·σ·N(0, 1) for a β-smooth bound S on LS_f.

    Derived here from the Rényi divergence of two Gaussians (Gil, Alajaji & Linder 2013):
    neighbours have means within min(S, S') and scales s' = r·s with r ∈ [e^{−β}, e^{β}], and

        D_λ(N(μ, σ²s²) ‖ N(μ', σ²s'²)) = λ/(λ−1)·ln r − ln(1 − λ + λr²)/(2(λ−1))
                                         + λ(μ − μ')²/(2σ²s²(1 − λ + λr²)).

    The first two terms are largest at r = e^{±β}; the last is at most λ/(2σ²) for r ≥ 1 and
    at most λe^{−2β}/(2σ²(1 − λ(1 − e^{−2β}))) for r ≤ 1 (it falls as r grows). The bound is the
    larger of the two halves' sums. It needs 1 − λ(1 − e^{−2β}) > 0, i.e. about λ < 1/(2β);
    PATE 2018 App. C states the same mechanism's RDP for 1 < λ < 1/(2β). Tested against the
    exact divergence.

    Args:
        order: λ > 1.
        beta: the smoothness β of S.
        sigma: σ, the noise multiplier of S.
    """
    lam = float(order)
    if lam <= 1 or sigma <= 0 or beta < 0:
        raise ValueError(f"need order > 1, sigma > 0, beta ≥ 0; got {order}, {sigma}, {beta}")
    shrink = 1.0 - lam * (1.0 - math.exp(-2.0 * beta))
    if shrink <= 0:
        raise ValueError(
            f"order {order:g} is too large for beta {beta:g}: need order < "
            f"{1 / (1 - math.exp(-2 * beta)):.4g} (about 1/(2·beta)); lower beta"
        )

    def scale_terms(log_r: float) -> float:
        return lam / (lam - 1) * log_r - math.log(1 - lam + lam * math.exp(2 * log_r)) / (
            2 * (lam - 1)
        )

    wider = scale_terms(beta) + lam / (2 * sigma**2)
    narrower = scale_terms(-beta) + lam * math.exp(-2 * beta) / (2 * sigma**2 * shrink)
    return max(wider, narrower)


def sanitized_release(
    votes: ArrayLike,
    *,
    sigma: float,
    delta: float,
    teachers: int,
    sigma_threshold: float | None = None,
    threshold: float = 0.0,
    answered: ArrayLike | None = None,
    order: float | None = None,
    beta: float | None = None,
    noise: float = DEFAULT_SIGMA,
    seed: int = 0,
    prior: Callable[[float], float] | None = None,
) -> dict[str, Any]:
    """Release a PATE run's data-dependent ε through smooth sensitivity.

    Args:
        votes: (N, K) vote counts of every query (answered or not).
        sigma: σ₂ of the GNMax answers.
        delta: δ.
        teachers: the number of teachers.
        sigma_threshold: σ₁ of Confident-GNMax's check (None: GNMax, every query answered).
        threshold: T.
        answered: (N,) which queries the teachers answered (default all).
        order: the Rényi order of the release (default: the one minimizing the data-dependent ε).
        beta: smoothness β (default ``DEFAULT_BETA_FRACTION``/(2λ)).
        noise: σ_s, the noise multiplier of the smooth sensitivity.
        seed: seeds the release's noise Z.
        prior: order → RDP already spent on the same data and not data-dependent (e.g. the
            DP-SGD teacher that synthesized the queries); added to the published total.

    Returns:
        A dict with ``epsilon`` (the sanitized ε, publishable), ``order``, ``beta``, ``sigma``,
        ``released_rdp`` (ε̂_λ), ``release_rdp`` (the cost of the release itself), ``kind``,
        and ``unsanitized``: the data-dependent RDP at the order and the smooth sensitivity,
        which are **not** publishable (kept for the data owner's record).
    """
    from freekd.privacy.report import pate_privacy

    counts = np.atleast_2d(np.asarray(votes, dtype=np.float64))
    mask = np.ones(len(counts), bool) if answered is None else np.asarray(answered, bool)
    arguments: dict[str, Any] = {"sigma": sigma, "delta": delta, "sigma_threshold": sigma_threshold,
                 "threshold": threshold, "answered": mask}  # fmt: skip
    lam = float(order if order is not None else pate_privacy(counts, **arguments)["order"])
    at_order = float(pate_privacy(counts, orders=[lam], **arguments)["rdp"][0])
    smoothness = DEFAULT_BETA_FRACTION / (2 * lam) if beta is None else float(beta)
    distance = int(teachers) + 1
    local = gnmax_local_sensitivity(counts[mask], sigma=sigma, order=lam, max_distance=distance)
    if sigma_threshold is not None:
        local = local + threshold_local_sensitivity(
            counts, threshold=threshold, sigma=sigma_threshold, order=lam, teachers=teachers,
            max_distance=distance,
        )  # fmt: skip
    sensitivity = smooth_sensitivity(local, beta=smoothness)
    z = float(np.random.default_rng(seed).standard_normal())
    released = at_order + sensitivity * noise * z
    cost = gnss_rdp(lam, beta=smoothness, sigma=noise)
    spent = 0.0 if prior is None else float(prior(lam))
    epsilon, _ = analysis.epsilon_from_rdp(
        np.array([max(released, 0.0) + cost + spent]), [lam], delta=delta
    )
    return {
        "epsilon": epsilon,
        "delta": delta,
        "kind": "data-dependent-sanitized",
        "order": lam,
        "order_from_data": order is None,
        "beta": smoothness,
        "sigma": noise,
        "seed": seed,
        "released_rdp": released,
        "release_rdp": cost,
        "prior_rdp": spent,
        "unsanitized": {"data_dependent_rdp": at_order, "smooth_sensitivity": sensitivity},
        "note": "epsilon converts released_rdp + release_rdp + prior_rdp at the order (Opacus' "
        "conversion); "
        "the unsanitized figures depend on the private votes and are for the data owner only",
    }
