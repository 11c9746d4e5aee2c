"""Smooth-sensitivity release: local sensitivities against brute force, the smoothness conditions
(Nissim et al. 2007 Def. 2.1), and the release's RDP against the exact Gaussian divergence."""

from __future__ import annotations

import itertools
import math

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from scipy import integrate, stats

from freekd.privacy import rdp
from freekd.privacy.smooth import (
    gnmax_local_sensitivity,
    gnss_rdp,
    sanitized_release,
    smooth_sensitivity,
    threshold_local_sensitivity,
)


def neighbours(votes: tuple[int, ...]) -> list[tuple[int, ...]]:
    """Histograms one changed teacher away: one vote moves from class a to class b."""
    result = []
    for a, b in itertools.permutations(range(len(votes)), 2):
        if votes[a] > 0:
            moved = list(votes)
            moved[a] -= 1
            moved[b] += 1
            result.append(tuple(moved))
    return result


def ball(votes: tuple[int, ...], radius: int) -> set[tuple[int, ...]]:
    seen, frontier = {votes}, {votes}
    for _ in range(radius):
        frontier = {n for v in frontier for n in neighbours(v)} - seen
        seen |= frontier
    return seen


def gnmax_cost(votes: tuple[int, ...], sigma: float, order: float) -> float:
    log_q = rdp.gnmax_log_q(np.array(votes, dtype=float), sigma=sigma)
    return float(rdp.gnmax_data_dependent_rdp(log_q, [order], sigma=sigma)[0])


def threshold_cost(votes: tuple[int, ...], threshold: float, sigma: float, order: float) -> float:
    counts = np.array([votes], dtype=float)
    return float(
        rdp.threshold_data_dependent_rdp(counts, [order], threshold=threshold, sigma=sigma)[0, 0]
    )


def brute_local_sensitivity(cost, votes: tuple[int, ...], distance: int) -> float:
    return max(
        abs(cost(near) - cost(other))
        for near in ball(votes, distance)
        for other in neighbours(near)
    )


VOTES = [(9, 1, 0), (6, 3, 1), (5, 5, 0), (10, 0, 0), (4, 3, 3)]


@pytest.mark.parametrize("votes", VOTES)
@pytest.mark.parametrize(("sigma", "order"), [(1.0, 4.0), (2.0, 10.0), (0.7, 30.0)])
def test_gnmax_bound_holds_against_brute_force(
    votes: tuple[int, ...], sigma: float, order: float
) -> None:
    bound = gnmax_local_sensitivity(np.array([votes]), sigma=sigma, order=order, max_distance=4)
    for d in range(4):
        exact = brute_local_sensitivity(lambda v: gnmax_cost(v, sigma, order), votes, d)
        assert exact <= bound[d] + 1e-12, (d, exact, bound[d])
    assert np.all(np.diff(bound) >= -1e-15)  # balls grow, so the bound never falls


@pytest.mark.parametrize("votes", VOTES)
@pytest.mark.parametrize(("threshold", "sigma", "order"), [(7.0, 2.0, 5.0), (4.0, 1.0, 20.0)])
def test_threshold_sensitivity_is_exact(
    votes: tuple[int, ...], threshold: float, sigma: float, order: float
) -> None:
    local = threshold_local_sensitivity(
        np.array([votes]), threshold=threshold, sigma=sigma, order=order, teachers=10,
        max_distance=4,
    )  # fmt: skip
    for d in range(4):
        exact = brute_local_sensitivity(
            lambda v: threshold_cost(v, threshold, sigma, order), votes, d
        )
        assert local[d] == pytest.approx(exact, rel=1e-9, abs=1e-15)


@settings(max_examples=30, deadline=None)
@given(
    votes=st.sampled_from([(7, 2, 1), (5, 4, 1), (8, 1, 1), (10, 0, 0), (4, 3, 3)]),
    beta=st.floats(0.01, 0.5),
    sigma=st.floats(0.5, 3.0),
)
def test_smooth_sensitivity_conditions(votes: tuple[int, ...], beta: float, sigma: float) -> None:
    # Nissim et al. 2007 Def. 2.1: S bounds the local sensitivity, and S(D') ≤ e^β S(D).
    order, teachers = 6.0, sum(votes)

    def smooth(v: tuple[int, ...]) -> float:
        local = gnmax_local_sensitivity(
            np.array([v]), sigma=sigma, order=order, max_distance=teachers + 1
        ) + threshold_local_sensitivity(
            np.array([v]), threshold=6.0, sigma=sigma, order=order, teachers=teachers,
            max_distance=teachers + 1,
        )  # fmt: skip
        return smooth_sensitivity(local, beta=beta)

    here = smooth(votes)

    def cost(v: tuple[int, ...]) -> float:
        return gnmax_cost(v, sigma, order) + threshold_cost(v, 6.0, sigma, order)

    assert brute_local_sensitivity(cost, votes, 0) <= here + 1e-12
    for other in neighbours(votes):
        assert smooth(other) <= math.exp(beta) * here * (1 + 1e-12) + 1e-15


def gaussian_renyi(order: float, mu: float, s: float, mu2: float, s2: float) -> float:
    """D_λ(N(μ, s²) ‖ N(μ₂, s₂²)), the closed form (Gil, Alajaji & Linder 2013)."""
    mixed = order * s2**2 + (1 - order) * s**2
    return (
        math.log(s2 / s)
        + math.log(s2**2 / mixed) / (2 * (order - 1))
        + order * (mu - mu2) ** 2 / (2 * mixed)
    )


def test_the_closed_form_matches_numerical_integration() -> None:
    order, mu, s, mu2, s2 = 3.0, 0.2, 1.0, -0.1, 1.1

    def integrand(x: float) -> float:
        log_p, log_q = stats.norm.logpdf(x, mu, s), stats.norm.logpdf(x, mu2, s2)
        return math.exp(order * log_p + (1 - order) * log_q)

    numeric = math.log(integrate.quad(integrand, -12, 12, epsabs=0, limit=200)[0]) / (order - 1)
    assert gaussian_renyi(order, mu, s, mu2, s2) == pytest.approx(numeric, rel=1e-7)


@settings(max_examples=200, deadline=None)
@given(
    order=st.floats(1.1, 40.0),
    beta_fraction=st.floats(0.01, 0.95),
    sigma=st.floats(0.5, 20.0),
    sensitivity=st.floats(0.01, 10.0),
    ratio=st.floats(0.0, 1.0),
    shift=st.floats(-1.0, 1.0),
)
def test_release_rdp_bounds_every_pair_of_neighbours(
    order: float, beta_fraction: float, sigma: float, sensitivity: float, ratio: float,
    shift: float,
) -> None:  # fmt: skip
    # Neighbours: scales S' = r·S with r ∈ [e^{−β}, e^{β}], means at most min(S, S') apart.
    beta = beta_fraction * -0.5 * math.log(1 - 1 / order)  # inside 1 − λ(1 − e^{−2β}) > 0
    r = math.exp(beta * (2 * ratio - 1))
    other = sensitivity * r
    mean_gap = shift * min(sensitivity, other)
    exact = gaussian_renyi(order, 0.0, sigma * sensitivity, mean_gap, sigma * other)
    assert exact <= gnss_rdp(order, beta=beta, sigma=sigma) + 1e-9


def test_release_rdp_refuses_an_order_beyond_its_range() -> None:
    with pytest.raises(ValueError, match="too large for beta"):
        gnss_rdp(30.0, beta=0.1, sigma=5.0)
    assert gnss_rdp(2.0, beta=0.0, sigma=5.0) == pytest.approx(2.0 / (2 * 25.0))  # Gaussian


def test_release_is_seeded_and_labelled() -> None:
    generator = np.random.default_rng(0)
    votes = np.stack([generator.multinomial(50, [0.9, 0.05, 0.05]) for _ in range(40)])
    answered = votes.max(axis=1) >= 40
    args = {"sigma": 4.0, "delta": 1e-5, "teachers": 50, "sigma_threshold": 10.0,
            "threshold": 40.0, "answered": answered}  # fmt: skip
    first, again = (
        sanitized_release(votes, seed=3, **args),
        sanitized_release(votes, seed=3, **args),
    )
    assert first == again
    assert first["kind"] == "data-dependent-sanitized"
    assert first["released_rdp"] != sanitized_release(votes, seed=4, **args)["released_rdp"]
    assert first["order"] < 1 / (1 - math.exp(-2 * first["beta"]))
    release_only, _ = rdp.epsilon_from_rdp(
        np.array([first["release_rdp"]]), [first["order"]], delta=1e-5
    )
    assert first["epsilon"] >= release_only
    fixed = sanitized_release(votes, seed=3, order=8.0, **args)
    assert fixed["order"] == 8.0
    assert not fixed["order_from_data"]
