"""RDP numerics against closed forms, against Opacus, and by properties (STYLE.md §4.7)."""

from __future__ import annotations

import math

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st
from opacus.accountants import RDPAccountant
from opacus.accountants.analysis import rdp as opacus_rdp
from scipy.optimize import brentq
from scipy.special import log_ndtr, ndtr

from freekd.privacy import rdp
from freekd.privacy.rdp import DEFAULT_ORDERS

ORDERS = np.asarray(DEFAULT_ORDERS)


def by_hand_epsilon(curve: np.ndarray, orders: np.ndarray, delta: float) -> float:
    """Balle et al. 2020 Thm 21, written out: the conversion Opacus implements."""
    values = curve + np.log((orders - 1) / orders) - (np.log(delta) + np.log(orders)) / (orders - 1)
    return float(np.min(values))


def bernoulli_renyi(p: float, r: float, alpha: float) -> float:
    return math.log(p**alpha * r ** (1 - alpha) + (1 - p) ** alpha * (1 - r) ** (1 - alpha)) / (
        alpha - 1
    )


def gaussian_dp_epsilon(mu: float, delta: float) -> float:
    """Exact ε at δ of μ-GDP (Dong, Roth & Su 2019, Cor. 2.13), by root finding."""

    def excess(epsilon: float) -> float:
        return (
            ndtr(-epsilon / mu + mu / 2) - math.exp(epsilon) * ndtr(-epsilon / mu - mu / 2) - delta
        )

    return brentq(excess, 0.0, 500.0)


# ---- closed forms ------------------------------------------------------------------------------


def test_gaussian_rdp_is_alpha_over_two_sigma_squared_and_matches_opacus() -> None:
    ours = rdp.gaussian_rdp(ORDERS, sigma=1.7)
    np.testing.assert_allclose(ours, ORDERS / (2 * 1.7**2), rtol=0, atol=1e-15)
    theirs = opacus_rdp.compute_rdp(q=1.0, noise_multiplier=1.7, steps=1, orders=list(ORDERS))
    np.testing.assert_allclose(ours, theirs, rtol=1e-12)


def test_gnmax_data_independent_equals_opacus_with_sigma_over_root_two() -> None:
    sigma, queries = 40.0, 1000
    ours = queries * rdp.gnmax_rdp(ORDERS, sigma=sigma)
    np.testing.assert_allclose(ours, queries * ORDERS / sigma**2, rtol=0, atol=1e-12)
    theirs = opacus_rdp.compute_rdp(
        q=1.0, noise_multiplier=sigma / math.sqrt(2), steps=queries, orders=list(ORDERS)
    )
    np.testing.assert_allclose(ours, theirs, rtol=1e-12)
    epsilon, order = rdp.epsilon_from_rdp(ours, ORDERS, delta=1e-5)
    assert order == 5.0
    assert epsilon == pytest.approx(5.378, abs=5e-4)  # STYLE.md's checked value


def test_conversion_is_the_written_out_formula() -> None:
    curve = 37 * rdp.gnmax_rdp(ORDERS, sigma=6.0)
    for delta in (1e-3, 1e-5, 1e-8):
        epsilon, _ = rdp.epsilon_from_rdp(curve, ORDERS, delta=delta)
        assert epsilon == pytest.approx(by_hand_epsilon(curve, ORDERS, delta), abs=1e-12)


def test_rdp_never_reports_less_than_the_exact_gaussian_privacy() -> None:
    # q = 1 and k steps of noise σ is exactly √k/σ-GDP: RDP's ε is an upper bound on it.
    sigma, steps, delta = 2.0, 50, 1e-5
    curve = rdp.dpsgd_rdp(ORDERS, sample_rate=1.0, noise_multiplier=sigma, steps=steps)
    ours, _ = rdp.epsilon_from_rdp(curve, ORDERS, delta=delta)
    exact = gaussian_dp_epsilon(math.sqrt(steps) / sigma, delta)
    assert exact == pytest.approx(20.676, abs=1e-3)  # STYLE.md's checked value
    assert exact <= ours <= exact * 1.1


def test_dpsgd_curve_gives_opacus_rdp_accountants_epsilon() -> None:
    accountant = RDPAccountant()
    accountant.history = [(1.1, 256 / 60_000, 2_000)]
    theirs = accountant.get_epsilon(delta=1e-5, alphas=list(ORDERS))
    curve = rdp.dpsgd_rdp(ORDERS, sample_rate=256 / 60_000, noise_multiplier=1.1, steps=2_000)
    assert rdp.epsilon_from_rdp(curve, ORDERS, delta=1e-5)[0] == pytest.approx(theirs, rel=1e-12)


def test_laplace_rdp_is_pure_dp_for_large_orders_and_zcdp_for_small() -> None:
    curve = rdp.laplace_rdp(ORDERS, gamma=0.05)  # PATE 2017's MNIST setting: 0.1-DP per answer
    assert np.all(curve <= 0.1 + 1e-15)
    np.testing.assert_allclose(curve[ORDERS <= 20], ORDERS[ORDERS <= 20] * 0.1**2 / 2)
    assert curve[-1] == pytest.approx(0.1)


def test_gnmax_log_q_is_proposition_seven() -> None:
    votes = np.array([[200, 30, 20], [100, 90, 60]])
    sigma = 40.0
    sums = [
        sum(0.5 * math.erfc((row.max() - n) / (2 * sigma)) for n in sorted(row)[:-1])
        for row in votes
    ]
    assert sums[1] > 2 / 3  # the second bound exceeds the cap 1 − 1/K
    expected = [math.log(sums[0]), math.log(2 / 3)]
    np.testing.assert_allclose(rdp.gnmax_log_q(votes, sigma=sigma), expected, rtol=1e-12)
    # A tie is capped at log(1 − 1/K): the plurality class is returned with probability ≥ 1/K.
    tie = rdp.gnmax_log_q(np.array([50, 50, 50, 50]), sigma=sigma)
    assert float(tie) == pytest.approx(math.log(0.75))
    # A unanimous vote of hundreds of σ stays finite in log space.
    assert -1e6 < float(rdp.gnmax_log_q(np.array([250, 0]), sigma=1.0)) < -1e4


def test_threshold_rdp_closed_form_and_exact_data_dependent_value() -> None:
    np.testing.assert_allclose(rdp.threshold_rdp(ORDERS, sigma=150.0), ORDERS / (2 * 150.0**2))
    votes = np.array([[180, 40, 30]])
    got = rdp.threshold_data_dependent_rdp(votes, [2.0, 8.0], threshold=200, sigma=150.0)[0]
    p = ndtr((180 - 200) / 150)
    for value, alpha in zip(got, (2.0, 8.0), strict=True):
        worst = max(
            bernoulli_renyi(p, ndtr((179 - 200) / 150), alpha),
            bernoulli_renyi(p, ndtr((181 - 200) / 150), alpha),
        )
        assert value == pytest.approx(worst, rel=1e-9)
        assert value <= alpha / (2 * 150.0**2)


def test_unanimous_votes_cost_almost_nothing_data_dependently() -> None:
    log_q = rdp.gnmax_log_q(np.array([[250] + [0] * 9]), sigma=40.0)
    dependent = rdp.gnmax_data_dependent_rdp(log_q, ORDERS, sigma=40.0)[0]
    independent = rdp.gnmax_rdp(ORDERS, sigma=40.0)
    assert np.all(dependent[ORDERS <= 20] < independent[ORDERS <= 20] / 20)


def test_bad_arguments_are_refused() -> None:
    with pytest.raises(ValueError, match="orders"):
        rdp.gnmax_rdp([1.0, 2.0], sigma=1.0)
    with pytest.raises(ValueError, match="sigma"):
        rdp.gnmax_rdp(ORDERS, sigma=0.0)
    with pytest.raises(ValueError, match="delta"):
        rdp.epsilon_from_rdp(rdp.gnmax_rdp(ORDERS, sigma=1.0), ORDERS, delta=0.0)
    with pytest.raises(ValueError, match="K ≥ 2"):
        rdp.gnmax_log_q(np.array([[5]]), sigma=1.0)


# ---- properties --------------------------------------------------------------------------------

gaps = st.integers(min_value=0, max_value=300)
sigmas = st.floats(min_value=0.5, max_value=200.0)
alphas = st.sampled_from([1.5, 2.0, 4.0, 8.0, 16.0, 32.0, 64.0])


@given(gap=gaps, sigma=sigmas, alpha=alphas)
def test_theorem_six_bounds_the_exact_divergence_of_two_class_gnmax(
    gap: int, sigma: float, alpha: float
) -> None:
    # With two classes GNMax releases one bit, Bern(Φ(gap/(√2σ))), and a neighbour moves the gap
    # by 2 either way: the exact data-dependent RDP is computable, and Thm 6 must not undercut it.
    n = 300
    votes = np.array([(n + gap) // 2, (n - gap) // 2])
    g = votes[0] - votes[1]
    scale = math.sqrt(2) * sigma

    def log_bernoulli_renyi(x: float, y: float) -> float:
        # D_α(Bern(Φ(x)) ‖ Bern(Φ(y))) in log space (1 − Φ(x) = Φ(−x)).
        terms = [
            alpha * log_ndtr(x) + (1 - alpha) * log_ndtr(y),
            alpha * log_ndtr(-x) + (1 - alpha) * log_ndtr(-y),
        ]
        return float(np.logaddexp(*terms)) / (alpha - 1)

    exact = max(log_bernoulli_renyi(g / scale, (g + d) / scale) for d in (-2, 2))
    bound = rdp.gnmax_data_dependent_rdp(rdp.gnmax_log_q(votes, sigma=sigma), [alpha], sigma=sigma)
    assert float(bound[0]) >= exact - 1e-9 * max(1.0, exact)


@given(
    votes=st.lists(st.integers(min_value=0, max_value=250), min_size=2, max_size=10),
    sigma=sigmas,
)
def test_data_dependent_never_exceeds_data_independent(votes: list[int], sigma: float) -> None:
    counts = np.array(votes)
    log_q = rdp.gnmax_log_q(counts, sigma=sigma)
    dependent = rdp.gnmax_data_dependent_rdp(log_q, ORDERS, sigma=sigma)
    assert np.all(dependent >= 0)
    assert np.all(dependent <= rdp.gnmax_rdp(ORDERS, sigma=sigma) + 1e-15)
    threshold = rdp.threshold_data_dependent_rdp(counts[None], ORDERS, threshold=150, sigma=sigma)
    assert np.all((threshold >= 0) & (threshold <= rdp.threshold_rdp(ORDERS, sigma=sigma) + 1e-15))


@given(gap=st.integers(min_value=0, max_value=200), sigma=sigmas)
def test_a_wider_vote_gap_never_costs_more(gap: int, sigma: float) -> None:
    narrow = rdp.gnmax_log_q(np.array([100 + gap, 100, 50]), sigma=sigma)
    wide = rdp.gnmax_log_q(np.array([110 + gap, 100, 50]), sigma=sigma)
    assert wide <= narrow
    costs = rdp.gnmax_data_dependent_rdp(np.array([narrow, wide]), ORDERS, sigma=sigma)
    assert np.all(costs[1] <= costs[0] + 1e-12)


@given(
    queries=st.integers(min_value=1, max_value=5000),
    sigma=st.floats(min_value=1.0, max_value=100.0),
    delta=st.floats(min_value=1e-10, max_value=1e-2),
)
def test_epsilon_is_monotone_in_queries_sigma_and_delta(
    queries: int, sigma: float, delta: float
) -> None:
    def epsilon(q: int, s: float, d: float) -> float:
        return rdp.epsilon_from_rdp(q * rdp.gnmax_rdp(ORDERS, sigma=s), ORDERS, delta=d)[0]

    base = epsilon(queries, sigma, delta)
    assert epsilon(queries + 1, sigma, delta) >= base
    assert epsilon(queries, sigma * 1.1, delta) <= base
    assert epsilon(queries, sigma, delta * 2) <= base
