"""Accountants: bookkeeping, composition with DP-SGD, and the budget guard (STYLE.md §4.7)."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st
from opacus.accountants import RDPAccountant

from freekd.privacy import (
    ConfidentGNMaxAccountant,
    DPSGDAccountant,
    GNMaxAccountant,
    LNMaxAccountant,
    PrivacyBudget,
    compose,
    max_queries,
)
from freekd.privacy import rdp as analysis
from freekd.privacy.rdp import DEFAULT_ORDERS

ORDERS = np.asarray(DEFAULT_ORDERS)


def test_gnmax_accountant_counts_queries() -> None:
    accountant = GNMaxAccountant(sigma=40.0)
    assert accountant.epsilon(delta=1e-5) == 0.0
    accountant.step(count=600)
    accountant.step(count=400)
    np.testing.assert_allclose(accountant.rdp(), 1000 * ORDERS / 1600)
    assert accountant.epsilon(delta=1e-5) == pytest.approx(5.378, abs=5e-4)


def test_state_round_trip_and_mechanism_mismatch() -> None:
    accountant = ConfidentGNMaxAccountant(sigma=40.0, sigma_threshold=150.0, threshold=200.0)
    votes = np.array([[240, 5, 5], [120, 100, 30], [90, 80, 80]])
    accountant.record(votes, answered=[True, True, False])
    copy = ConfidentGNMaxAccountant(sigma=40.0, sigma_threshold=150.0, threshold=200.0)
    copy.load_state_dict(accountant.state_dict())
    np.testing.assert_array_equal(copy.rdp(), accountant.rdp())
    np.testing.assert_array_equal(copy.data_dependent_rdp(), accountant.data_dependent_rdp())
    assert (copy.checks, copy.answered) == (3, 2)
    other = ConfidentGNMaxAccountant(sigma=30.0, sigma_threshold=150.0, threshold=200.0)
    with pytest.raises(ValueError, match="sigma"):
        other.load_state_dict(accountant.state_dict())
    with pytest.raises(ValueError, match="kind"):
        GNMaxAccountant(sigma=40.0).load_state_dict(accountant.state_dict())


def test_confident_gnmax_curves() -> None:
    votes = np.array([[240, 5, 5], [120, 100, 30], [90, 80, 80]])
    accountant = ConfidentGNMaxAccountant(sigma=40.0, sigma_threshold=150.0, threshold=200.0)
    accountant.record(votes, answered=[True, True, False])
    # Data-independent: every check plus every answer.
    expected = 3 * ORDERS / (2 * 150.0**2) + 2 * ORDERS / 40.0**2
    np.testing.assert_allclose(accountant.rdp(), expected)
    dependent = accountant.data_dependent_rdp()
    assert np.all(dependent <= expected + 1e-15)
    manual = analysis.threshold_data_dependent_rdp(votes, ORDERS, threshold=200.0, sigma=150.0).sum(
        axis=0
    ) + analysis.gnmax_data_dependent_rdp(
        analysis.gnmax_log_q(votes[:2], sigma=40.0), ORDERS, sigma=40.0
    ).sum(axis=0)
    np.testing.assert_allclose(dependent, manual)
    assert accountant.data_dependent_epsilon(delta=1e-5) <= accountant.epsilon(delta=1e-5)
    with pytest.raises(ValueError, match="answered"):
        accountant.record(votes, answered=[True])


def test_plain_gnmax_through_the_confident_accountant_matches_gnmax_accountant() -> None:
    votes = np.array([[200, 50], [130, 120]])
    confident = ConfidentGNMaxAccountant(sigma=40.0)
    confident.record(votes, answered=[True, True])
    plain = GNMaxAccountant(sigma=40.0)
    plain.step(count=2)
    np.testing.assert_allclose(confident.rdp(), plain.rdp())
    with pytest.raises(ValueError, match="every query"):
        confident.record(votes, answered=[True, False])


def test_composition_adds_curves_and_matches_opacus_for_dpsgd() -> None:
    dpsgd = DPSGDAccountant(sample_rate=256 / 60_000, noise_multiplier=1.1, steps=2_000)
    pate = GNMaxAccountant(sigma=40.0, queries=300)
    both = compose(dpsgd, pate)
    np.testing.assert_allclose(both.rdp(), dpsgd.rdp() + pate.rdp())
    assert both.epsilon(delta=1e-5) > max(dpsgd.epsilon(delta=1e-5), pate.epsilon(delta=1e-5))
    opacus = RDPAccountant()
    opacus.history = [(1.1, 256 / 60_000, 2_000)]
    assert dpsgd.epsilon(delta=1e-5) == pytest.approx(
        opacus.get_epsilon(delta=1e-5, alphas=list(ORDERS)), rel=1e-12
    )
    copy = compose(
        DPSGDAccountant(sample_rate=256 / 60_000, noise_multiplier=1.1),
        GNMaxAccountant(sigma=40.0),
    )
    copy.load_state_dict(both.state_dict())
    np.testing.assert_array_equal(copy.rdp(), both.rdp())
    with pytest.raises(ValueError, match="orders"):
        compose(pate, GNMaxAccountant(sigma=40.0, orders=(2.0, 4.0)))


def test_lnmax_accountant_pate_2017_setting() -> None:
    accountant = LNMaxAccountant(gamma=0.05, queries=100)
    np.testing.assert_allclose(accountant.rdp(), 100 * analysis.laplace_rdp(ORDERS, gamma=0.05))
    # 100 answers of 0.1-DP: never more than basic composition's 10.
    assert accountant.epsilon(delta=1e-5) < 10.0


@given(
    sigma=st.floats(min_value=5.0, max_value=200.0),
    epsilon=st.floats(min_value=0.2, max_value=20.0),
    delta=st.sampled_from([1e-5, 1e-6, 1e-8]),
)
def test_max_queries_never_exceeds_the_budget(sigma: float, epsilon: float, delta: float) -> None:
    budget = PrivacyBudget(epsilon=epsilon, delta=delta)
    allowed = max_queries(lambda q: GNMaxAccountant(sigma=sigma, queries=q), budget, limit=10**7)
    assert GNMaxAccountant(sigma=sigma, queries=allowed).epsilon(delta=delta) <= epsilon
    if allowed < 10**7:
        assert GNMaxAccountant(sigma=sigma, queries=allowed + 1).epsilon(delta=delta) > epsilon


def test_budget_refuses_nonsense() -> None:
    with pytest.raises(ValueError, match="ε > 0"):
        PrivacyBudget(epsilon=0.0, delta=1e-5)
    with pytest.raises(ValueError, match="δ"):
        PrivacyBudget(epsilon=1.0, delta=1.0)
