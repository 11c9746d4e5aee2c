"""Rényi-DP curves of the PATE aggregators and their conversion to (ε, δ): pure numerics.

Every function takes and returns NumPy arrays over a grid of Rényi orders α (``orders``) and
says which bound it implements:

* **data-independent** bounds hold for every data set; their ε may be published as is;
* **data-dependent** bounds (Papernot et al. 2018, arXiv:1802.08908, Thm 6 and Prop 7) depend on
  the teachers' votes, so the ε computed from them is itself a function of the private data. It
  may only be published after a smooth-sensitivity release (§B of the same paper); until then a
  report must label it *data-dependent-unsanitized*.

Neighbouring data sets differ in one training record, which lives in exactly one teacher's
shard: that teacher's vote can move from one class to another, so one count falls by one and
another rises by one (L1 sensitivity 2, L2 sensitivity √2), and the largest count moves by at
most one.

The (ε, δ) conversion is Opacus' (Balle et al. 2020, arXiv:1905.09982, Thm 21), so PATE curves
and Opacus' DP-SGD curves live on one scale and add order by order.
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Sequence

import numpy as np
from numpy.typing import ArrayLike, NDArray
from opacus.accountants.analysis import rdp as opacus_rdp
from scipy.special import log_ndtr, logsumexp

from freekd.lazy import drop_opacus_root_handler

drop_opacus_root_handler()  # importing opacus configured the root logger

#: Rényi orders used unless a caller gives its own: Opacus' default grid (1.1 to 10.9 by 0.1,
#: then 12 to 63) so that freekd's ε equals Opacus' own for DP-SGD, extended to 1024 for PATE's
#: strongly concentrated votes.
DEFAULT_ORDERS: tuple[float, ...] = (
    *(1 + x / 10 for x in range(1, 100)),
    *(float(a) for a in range(12, 64)),
    80.0, 96.0, 128.0, 192.0, 256.0, 384.0, 512.0, 768.0, 1024.0,
)  # fmt: skip

FloatArray = NDArray[np.float64]


def _orders(orders: ArrayLike) -> FloatArray:
    values = np.atleast_1d(np.asarray(orders, dtype=np.float64))
    if values.size == 0 or np.any(values <= 1) or not np.all(np.isfinite(values)):
        raise ValueError("Rényi orders must be finite numbers greater than 1")
    return values


def _positive(value: float, name: str) -> float:
    if not value > 0 or not math.isfinite(value):
        raise ValueError(f"{name} must be a positive finite number, got {value}")
    return float(value)


def gaussian_rdp(orders: ArrayLike, *, sigma: float, sensitivity: float = 1.0) -> FloatArray:
    """RDP of the Gaussian mechanism: α·Δ²/(2σ²) (Mironov 2017, arXiv:1702.07476, Prop. 7).

    Data-independent.

    Args:
        orders: (A,) Rényi orders α > 1.
        sigma: standard deviation of the noise added to every coordinate.
        sensitivity: L2 sensitivity Δ of the noised quantity.

    Returns:
        (A,) ε(α) of one release.
    """
    sigma = _positive(sigma, "sigma")
    return _orders(orders) * sensitivity**2 / (2.0 * sigma**2)


def gnmax_rdp(orders: ArrayLike, *, sigma: float) -> FloatArray:
    """Data-independent RDP of one GNMax answer: α/σ² (Papernot et al. 2018 Prop. 8).

    GNMax releases argmax_j(n_j + N(0, σ²)); the vote histogram n has L2 sensitivity √2, so this
    is the Gaussian mechanism's α·2/(2σ²) and post-processing keeps it.

    Args:
        orders: (A,) Rényi orders α > 1.
        sigma: the noise σ on every vote count.

    Returns:
        (A,) ε(α) of one answered query.
    """
    return gaussian_rdp(orders, sigma=sigma, sensitivity=math.sqrt(2.0))


def threshold_rdp(orders: ArrayLike, *, sigma: float) -> FloatArray:
    """Data-independent RDP of Confident-GNMax's threshold check: α/(2σ₁²).

    The check releases whether max_j n_j + N(0, σ₁²) ≥ T (Papernot et al. 2018 Alg. 1); the
    largest count has sensitivity 1, so it is the Gaussian mechanism with Δ = 1.

    Args:
        orders: (A,) Rényi orders α > 1.
        sigma: σ₁, the noise on the largest count.

    Returns:
        (A,) ε(α) of one check (paid for every query, answered or not).
    """
    return gaussian_rdp(orders, sigma=sigma, sensitivity=1.0)


def laplace_rdp(orders: ArrayLike, *, gamma: float) -> FloatArray:
    """Data-independent RDP of one LNMax answer (Papernot et al. 2017, arXiv:1610.05755 §2.1).

    LNMax releases argmax_j(n_j + Lap(1/γ)); with L1 sensitivity 2 one answer is (2γ, 0)-DP.
    An ε-DP mechanism is (α, ε)-RDP for every α (Mironov 2017 Prop. 3, α → ∞ is pure DP) and
    (α, α·ε²/2)-RDP (Bun & Steinke 2016, arXiv:1605.02065, Prop. 3.3: ε-DP implies
    ε²/2-zCDP); both hold, so the curve is their minimum.

    Args:
        orders: (A,) Rényi orders α > 1.
        gamma: inverse scale γ of the Laplace noise (PATE 2017's MNIST setting: 0.05).

    Returns:
        (A,) ε(α) of one answered query.
    """
    epsilon = 2.0 * _positive(gamma, "gamma")
    alphas = _orders(orders)
    return np.minimum(epsilon, alphas * epsilon**2 / 2.0)


def gnmax_log_q(votes: ArrayLike, *, sigma: float) -> FloatArray:
    """log q̃: a bound on the log-probability that GNMax does not return the plurality class.

    Papernot et al. 2018 Prop. 7: with i* the class of the most votes,

        Pr[M(n) ≠ i*] ≤ Σ_{i ≠ i*} Pr[N(0, 2σ²) > n_{i*} − n_i]
                      = ½ Σ_{i ≠ i*} erfc((n_{i*} − n_i)/(2σ)),

    computed in log space (``log_ndtr`` keeps vote gaps of hundreds of σ finite). The bound is
    capped at log(1 − 1/K): GNMax returns the plurality class with probability at least 1/K.
    This is a function of the private votes (a data-dependent quantity).

    Args:
        votes: (N, K) or (K,) vote counts per query and class.
        sigma: the GNMax noise σ.

    Returns:
        (N,) log q̃ per query (a 0-d array for a single histogram).
    """
    sigma = _positive(sigma, "sigma")
    counts = np.asarray(votes, dtype=np.float64)
    single = counts.ndim == 1
    counts = np.atleast_2d(counts)
    if counts.ndim != 2 or counts.shape[1] < 2:
        raise ValueError(
            f"votes must be (N, K) counts with K ≥ 2 classes, got shape {counts.shape}"
        )
    top = counts.max(axis=1, keepdims=True)
    gaps = top - counts
    # Φ(−gap/(√2σ)) = ½·erfc(gap/(2σ)); the plurality class itself (gap 0) is left out once.
    log_terms = log_ndtr(-gaps / (math.sqrt(2.0) * sigma))
    winner = counts.argmax(axis=1)
    log_terms[np.arange(len(counts)), winner] = -np.inf
    log_q = logsumexp(log_terms, axis=1)
    log_q = np.minimum(log_q, math.log1p(-1.0 / counts.shape[1]))
    return log_q[0] if single else log_q


def data_dependent_rdp(
    log_q: ArrayLike, orders: ArrayLike, *, mu1: ArrayLike, epsilon1: ArrayLike,
    mu2: ArrayLike, epsilon2: ArrayLike,
) -> FloatArray:  # fmt: skip
    """Papernot et al. 2018 Thm 6: RDP at order λ of a mechanism with a likely outcome.

    For a mechanism that is (μ₁, ε₁)- and (μ₂, ε₂)-RDP and returns its likely outcome on D with
    probability at least 1 − q̃,

        ε(λ) ≤ 1/(λ−1) · log((1 − q̃)·A^{λ−1} + q̃·B^{λ−1}),
        A = (1 − q̃) / (1 − (q̃·e^{ε₂})^{(μ₂−1)/μ₂}),   B = e^{ε₁} / q̃^{1/(μ₁−1)},

    provided λ ≤ μ₁, μ₂ > 1 and q̃ ≤ e^{(μ₂−1)ε₂} / (μ₁/(μ₁−1) · μ₂/(μ₂−1))^{μ₂}. Where the
    conditions fail the entry is +∞ (no bound from the theorem); callers take the minimum with
    a data-independent curve. Evaluated in log space. Data-dependent.

    Args:
        log_q: (N,) or scalar log q̃ per query.
        orders: (A,) orders λ.
        mu1, epsilon1, mu2, epsilon2: the two RDP guarantees, broadcastable to (N, 1).

    Returns:
        (N, A) ε(λ) per query and order (or (A,) for a scalar ``log_q``).
    """
    lam = _orders(orders)[None, :]
    single = np.ndim(log_q) == 0
    lq = np.atleast_1d(np.asarray(log_q, dtype=np.float64))[:, None]
    m1 = np.broadcast_to(np.asarray(mu1, dtype=np.float64), lq.shape)
    e1 = np.broadcast_to(np.asarray(epsilon1, dtype=np.float64), lq.shape)
    m2 = np.broadcast_to(np.asarray(mu2, dtype=np.float64), lq.shape)
    e2 = np.broadcast_to(np.asarray(epsilon2, dtype=np.float64), lq.shape)
    with np.errstate(divide="ignore", invalid="ignore", over="ignore"):
        # log of the q̃ condition's right-hand side
        log_limit = (m2 - 1) * e2 - m2 * (np.log(m1 / (m1 - 1)) + np.log(m2 / (m2 - 1)))
        valid = (m2 > 1) & (m1 > 1) & (lq < 0) & (lq <= log_limit) & (lam <= m1)
        # (q̃ e^{ε₂})^{(μ₂−1)/μ₂} < 1 is implied by the condition; log1p(−x) keeps precision.
        log_inner = (lq + e2) * (m2 - 1) / m2
        log_a = np.log1p(-np.exp(lq)) - np.log1p(-np.exp(log_inner))
        log_b = e1 - lq / (m1 - 1)
        first = np.log1p(-np.exp(lq)) + (lam - 1) * log_a
        second = lq + (lam - 1) * log_b
        bound = np.logaddexp(first, second) / (lam - 1)
    bound = np.where(valid & np.isfinite(bound), bound, np.inf)
    return bound[0] if single else bound


def gnmax_data_dependent_rdp(log_q: ArrayLike, orders: ArrayLike, *, sigma: float) -> FloatArray:
    """Data-dependent RDP of GNMax answers, capped by the data-independent α/σ².

    Thm 6 (``data_dependent_rdp``) with GNMax's own guarantees ε(μ) = μ/σ² at the orders
    μ₂ = σ·√(log 1/q̃) and μ₁ = μ₂ + 1, the choice of Papernot et al. 2018 §B.2 (it nearly
    minimizes the bound); where the theorem does not apply, or gives more, the data-independent
    value stands. Data-dependent: see the module docstring before publishing the ε.

    Args:
        log_q: (N,) log q̃ per query (``gnmax_log_q``).
        orders: (A,) Rényi orders.
        sigma: the GNMax noise σ.

    Returns:
        (N, A) ε(α) per query (or (A,) for a scalar ``log_q``).
    """
    sigma = _positive(sigma, "sigma")
    lq = np.asarray(log_q, dtype=np.float64)
    mu2 = sigma * np.sqrt(np.maximum(-lq, 0.0))
    mu1 = mu2 + 1.0
    bound = data_dependent_rdp(
        lq, orders, mu1=mu1[..., None], epsilon1=mu1[..., None] / sigma**2,
        mu2=mu2[..., None], epsilon2=mu2[..., None] / sigma**2,
    )  # fmt: skip
    return np.minimum(bound, gnmax_rdp(orders, sigma=sigma))


def threshold_log_pr_answered(votes: ArrayLike, *, threshold: float, sigma: float) -> FloatArray:
    """log Pr[max_j n_j + N(0, σ₁²) ≥ T] per query (Confident-GNMax's check passes).

    Args:
        votes: (N, K) vote counts.
        threshold: T.
        sigma: σ₁.

    Returns:
        (N,) log-probabilities.
    """
    sigma = _positive(sigma, "sigma")
    top = np.atleast_2d(np.asarray(votes, dtype=np.float64)).max(axis=1)
    return log_ndtr((top - threshold) / sigma)


def _bernoulli_renyi(x: FloatArray, y: FloatArray, alphas: FloatArray) -> FloatArray:
    """D_α(Bern(Φ(x)) ‖ Bern(Φ(y))); (N, 1) and (A,) broadcast to (N, A).

    Both outcomes' log-probabilities come from ``log_ndtr`` (1 − Φ(x) = Φ(−x)), so neither is
    lost to rounding when the check almost always passes or almost never does.
    """
    return np.logaddexp(
        alphas * log_ndtr(x) + (1 - alphas) * log_ndtr(y),
        alphas * log_ndtr(-x) + (1 - alphas) * log_ndtr(-y),
    ) / (alphas - 1)


def threshold_data_dependent_rdp(
    votes: ArrayLike, orders: ArrayLike, *, threshold: float, sigma: float
) -> FloatArray:
    """Exact data-dependent RDP of the threshold check at the votes ``votes``.

    The check releases one bit, Bern(p) with p = Φ((m − T)/σ₁) for the largest count m; a
    neighbouring data set moves m by at most one, so the data-dependent RDP at D is
    max over m' ∈ {m − 1, m + 1} of D_α(Bern(p(m)) ‖ Bern(p(m'))), computed exactly (this is
    the data-dependent threshold analysis of Papernot et al. 2018 §4.2, written out for a
    binary outcome). Capped by the data-independent α/(2σ₁²). Data-dependent.

    Args:
        votes: (N, K) vote counts.
        orders: (A,) Rényi orders.
        threshold: T.
        sigma: σ₁.

    Returns:
        (N, A) ε(α) per query.
    """
    sigma = _positive(sigma, "sigma")
    alphas = _orders(orders)
    top = np.atleast_2d(np.asarray(votes, dtype=np.float64)).max(axis=1)[:, None]
    here = (top - threshold) / sigma
    worst = np.maximum(
        _bernoulli_renyi(here, here - 1 / sigma, alphas),
        _bernoulli_renyi(here, here + 1 / sigma, alphas),
    )
    return np.minimum(np.maximum(worst, 0.0), threshold_rdp(alphas, sigma=sigma))


def epsilon_from_rdp(rdp: ArrayLike, orders: ArrayLike, *, delta: float) -> tuple[float, float]:
    """(ε, best order) for an RDP curve at δ, through Opacus' conversion.

    Opacus' ``get_privacy_spent`` implements Balle et al. 2020 Thm 21,
    ε = min_α [rdp(α) + log((α−1)/α) − (log δ + log α)/(α−1)].

    Args:
        rdp: (A,) total ε(α) of everything released.
        orders: (A,) the orders of ``rdp``.
        delta: target δ in (0, 1).

    Returns:
        ε and the order α that attains it.
    """
    if not 0 < delta < 1:
        raise ValueError(f"delta must lie in (0, 1), got {delta}")
    alphas = _orders(orders)
    curve = np.asarray(rdp, dtype=np.float64)
    if curve.shape != alphas.shape:
        raise ValueError(f"rdp has shape {curve.shape} but orders has {alphas.shape}")
    if not np.any(curve > 0):
        return 0.0, float(alphas[0])
    with warnings.catch_warnings():
        # Opacus warns when the best order is an end of the grid; the order is returned instead.
        warnings.simplefilter("ignore", UserWarning)
        epsilon, order = opacus_rdp.get_privacy_spent(
            orders=alphas.tolist(), rdp=curve.tolist(), delta=delta
        )
    return float(epsilon), float(order)


def dpsgd_rdp(
    orders: Sequence[float], *, sample_rate: float, noise_multiplier: float, steps: int
) -> FloatArray:
    """RDP of DP-SGD (the sampled Gaussian mechanism), from Opacus' ``compute_rdp``.

    Mironov, Talwar & Zhang 2019 (arXiv:1908.10530); data-independent.

    Args:
        orders: (A,) Rényi orders.
        sample_rate: Poisson sampling rate q of each record per step.
        noise_multiplier: σ/C, Opacus' noise multiplier.
        steps: optimizer steps taken.

    Returns:
        (A,) ε(α) of the whole run.
    """
    if not 0 < sample_rate <= 1:
        raise ValueError(f"sample_rate must lie in (0, 1], got {sample_rate}")
    if steps < 0:
        raise ValueError(f"steps must be ≥ 0, got {steps}")
    alphas = _orders(orders)
    if steps == 0:
        return np.zeros_like(alphas)
    return np.asarray(
        opacus_rdp.compute_rdp(
            q=sample_rate,
            noise_multiplier=_positive(noise_multiplier, "noise_multiplier"),
            steps=steps,
            orders=alphas.tolist(),
        ),
        dtype=np.float64,
    )


def dpsgd_noise_multiplier(
    *,
    epsilon: float,
    delta: float,
    sample_rate: float,
    steps: int,
    orders: Sequence[float] = DEFAULT_ORDERS,
    tolerance: float = 1e-3,
) -> float:
    """The smallest noise multiplier (within ``tolerance`` relative) whose DP-SGD run meets ε.

    Bisection on σ, which ε decreases in; the returned σ always satisfies ε(σ) ≤ ``epsilon``
    on ``orders`` (the grid every later report uses), so a run never ends above its target.

    Raises:
        ValueError: ε is unreachable even with σ = 1000.
    """

    def spent(sigma: float) -> float:
        curve = dpsgd_rdp(orders, sample_rate=sample_rate, noise_multiplier=sigma, steps=steps)
        return epsilon_from_rdp(curve, orders, delta=delta)[0]

    low, high = 1e-2, 1.0
    while spent(high) > epsilon:
        low, high = high, high * 2
        if high > 1000:
            raise ValueError(f"ε = {epsilon} at δ = {delta} is out of reach for {steps} steps")
    while high - low > tolerance * high:
        middle = (low + high) / 2
        if spent(middle) > epsilon:
            low = middle
        else:
            high = middle
    return high
