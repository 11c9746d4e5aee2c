"""Membership-inference metrics against brute force, closed forms and invariances (STYLE §4.7)."""

from __future__ import annotations

import math
from statistics import NormalDist

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

from freekd.audit.metrics import (
    advantage,
    attack_metrics,
    auc,
    balanced_accuracy,
    roc_curve,
    tpr_at_fpr,
)
from freekd.errors import FreekdError

STANDARD = NormalDist()

# Small integer scores so that ties are frequent; at least one member and one non-member.
member_scores = st.lists(st.integers(-6, 6), min_size=1, max_size=25)
non_member_scores = st.lists(st.integers(-6, 6), min_size=1, max_size=25)


def labelled(members: list[int], non_members: list[int]) -> tuple[np.ndarray, np.ndarray]:
    scores = np.array(members + non_members, dtype=np.float64)
    is_member = np.array([True] * len(members) + [False] * len(non_members))
    return scores, is_member


def pairwise_auc(members: list[int], non_members: list[int]) -> float:
    """P(member > non-member) + ½ P(tie), by counting all pairs: the O(n²) definition."""
    wins = sum((a > b) + 0.5 * (a == b) for a in members for b in non_members)
    return wins / (len(members) * len(non_members))


def all_metrics(scores: np.ndarray, is_member: np.ndarray) -> dict[str, object]:
    return attack_metrics(scores, is_member, fprs=(0.05, 0.25, 0.5, 1.0))


# ---- against brute force ---------------------------------------------------------------------


@given(member_scores, non_member_scores)
def test_auc_equals_the_pairwise_count_with_ties(
    members: list[int], non_members: list[int]
) -> None:
    scores, is_member = labelled(members, non_members)
    assert auc(scores, is_member) == pytest.approx(pairwise_auc(members, non_members), abs=1e-12)


@given(member_scores, non_member_scores)
def test_auc_is_the_trapezoidal_area_under_the_roc_curve(
    members: list[int], non_members: list[int]
) -> None:
    scores, is_member = labelled(members, non_members)
    fpr, tpr = roc_curve(scores, is_member)
    area = float(np.sum(np.diff(fpr) * (tpr[1:] + tpr[:-1]) / 2))
    assert auc(scores, is_member) == pytest.approx(area, abs=1e-12)


@given(member_scores, non_member_scores)
def test_roc_has_one_step_per_distinct_score_and_matches_counting(
    members: list[int], non_members: list[int]
) -> None:
    scores, is_member = labelled(members, non_members)
    fpr, tpr = roc_curve(scores, is_member)
    thresholds = sorted(set(members + non_members), reverse=True)
    assert len(fpr) == len(thresholds) + 1
    assert (fpr[0], tpr[0]) == (0.0, 0.0)
    assert (fpr[-1], tpr[-1]) == (1.0, 1.0)
    for point, threshold in enumerate(thresholds, start=1):
        assert tpr[point] == sum(s >= threshold for s in members) / len(members)
        assert fpr[point] == sum(s >= threshold for s in non_members) / len(non_members)


@given(member_scores, non_member_scores, st.sampled_from([0.05, 0.2, 0.5, 1.0]))
def test_tpr_at_fpr_and_maxima_equal_a_scan_over_thresholds(
    members: list[int], non_members: list[int], budget: float
) -> None:
    scores, is_member = labelled(members, non_members)
    points = [(0.0, 0.0)] + [
        (
            sum(s >= t for s in non_members) / len(non_members),
            sum(s >= t for s in members) / len(members),
        )
        for t in set(members + non_members)
    ]
    assert tpr_at_fpr(scores, is_member, fpr=budget) == max(t for f, t in points if f <= budget)
    assert advantage(scores, is_member) == pytest.approx(max(t - f for f, t in points))
    best_balanced = max((t + 1 - f) / 2 for f, t in points)
    assert balanced_accuracy(scores, is_member) == pytest.approx(best_balanced)


# ---- identities --------------------------------------------------------------------------------


def test_perfect_separation() -> None:
    scores = np.concatenate([np.linspace(1.0, 2.0, 50), np.linspace(-2.0, 0.5, 2000)])
    is_member = np.arange(2050) < 50
    metrics = attack_metrics(scores, is_member)
    assert metrics["auc"] == 1.0
    assert metrics["tpr_at_fpr"] == {"0.001": 1.0, "0.01": 1.0, "0.1": 1.0}
    assert metrics["advantage"] == 1.0
    assert metrics["balanced_accuracy"] == 1.0
    assert (metrics["members"], metrics["non_members"]) == (50, 2000)


def test_reversed_separation() -> None:
    scores = np.array([-3.0, -2.0, -1.0, 1.0, 2.0])
    is_member = np.array([True, True, True, False, False])
    assert auc(scores, is_member) == 0.0
    assert advantage(scores, is_member) == 0.0  # the trivial thresholds
    assert balanced_accuracy(scores, is_member) == 0.5
    assert tpr_at_fpr(scores, is_member, fpr=0.4) == 0.0


def test_identical_scores_are_chance_and_one_step() -> None:
    scores = np.full(10, 0.3)
    is_member = np.arange(10) % 3 == 0
    fpr, tpr = roc_curve(scores, is_member)
    np.testing.assert_array_equal(fpr, [0.0, 1.0])
    np.testing.assert_array_equal(tpr, [0.0, 1.0])
    assert auc(scores, is_member) == 0.5
    assert advantage(scores, is_member) == 0.0
    assert tpr_at_fpr(scores, is_member, fpr=0.5) == 0.0  # no point inside the tie


def test_tpr_at_fpr_uses_exact_rates_and_does_not_interpolate() -> None:
    # 100 non-members; exactly one non-member above the members' block of 30.
    scores = np.concatenate([[10.0], np.full(30, 5.0), np.arange(99, dtype=float) - 200.0])
    is_member = np.concatenate([[False], np.ones(30, bool), np.zeros(99, bool)])
    assert tpr_at_fpr(scores, is_member, fpr=0.01) == 1.0  # FPR 1/100 is exactly 0.01
    assert tpr_at_fpr(scores, is_member, fpr=0.0099) == 0.0


def test_attack_metrics_keys_and_types() -> None:
    rng = np.random.default_rng(3)
    scores = rng.normal(size=400)
    is_member = rng.random(400) < 0.5
    metrics = attack_metrics(scores, is_member, fprs=(0.001, 0.01, 0.1))
    assert set(metrics) == {
        "auc",
        "tpr_at_fpr",
        "balanced_accuracy",
        "advantage",
        "members",
        "non_members",
    }
    assert list(metrics["tpr_at_fpr"]) == ["0.001", "0.01", "0.1"]
    assert metrics["auc"] == auc(scores, is_member)
    assert metrics["advantage"] == advantage(scores, is_member)
    assert metrics["balanced_accuracy"] == pytest.approx((1 + metrics["advantage"]) / 2)
    assert isinstance(metrics["members"], int)
    assert isinstance(metrics["non_members"], int)
    assert metrics["members"] + metrics["non_members"] == 400


# ---- closed form: Gaussian scores ------------------------------------------------------------


@pytest.mark.parametrize("shift", [0.5, 1.0, 2.0])
def test_gaussian_scores_match_the_closed_form(shift: float) -> None:
    """Members N(d, 1), non-members N(0, 1): AUC = Φ(d/√2), TPR(f) = 1 − Φ(Φ⁻¹(1 − f) − d)."""
    rng = np.random.default_rng(int(shift * 10))
    count = 50_000
    scores = np.concatenate([rng.normal(shift, 1.0, count), rng.normal(0.0, 1.0, count)])
    is_member = np.arange(2 * count) < count
    metrics = attack_metrics(scores, is_member, fprs=(0.001, 0.01, 0.1))
    assert metrics["auc"] == pytest.approx(STANDARD.cdf(shift / math.sqrt(2)), abs=0.005)
    for budget, tolerance in [(0.001, 0.04), (0.01, 0.02), (0.1, 0.01)]:
        expected = 1 - STANDARD.cdf(STANDARD.inv_cdf(1 - budget) - shift)
        assert metrics["tpr_at_fpr"][str(budget)] == pytest.approx(expected, abs=tolerance)
    # The best threshold is d/2 (equal densities): advantage = 2Φ(d/2) − 1.
    assert metrics["advantage"] == pytest.approx(2 * STANDARD.cdf(shift / 2) - 1, abs=0.01)


# ---- invariance under strictly increasing transforms ---------------------------------------


TRANSFORMS = {
    "affine": lambda x: 3.0 * x - 7.0,
    "exp": lambda x: np.exp(x / 2.0),
    "cube": lambda x: x**3 + x,
    "arctan": np.arctan,
}


@given(member_scores, non_member_scores, st.sampled_from(sorted(TRANSFORMS)))
def test_metrics_are_invariant_under_increasing_transforms(
    members: list[int], non_members: list[int], name: str
) -> None:
    scores, is_member = labelled(members, non_members)
    transformed = TRANSFORMS[name](scores)
    curves = zip(roc_curve(scores, is_member), roc_curve(transformed, is_member), strict=True)
    for original, changed in curves:
        np.testing.assert_array_equal(original, changed)
    assert all_metrics(scores, is_member) == all_metrics(transformed, is_member)


# ---- errors ------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("scores", "is_member", "message"),
    [
        ([0.1, 0.2], [True], "entries"),
        ([], [], "empty"),
        ([0.1, 0.2], [False, False], "no members"),
        ([0.1, 0.2], [True, True], "no non-members"),
        ([0.1, float("nan"), float("inf")], [True, False, True], "2 of 3 scores are not finite"),
        ([0.1, 0.2], ["a", "b"], "booleans"),
        ([[0.1, 0.2]], [[True, False]], "one-dimensional"),
    ],
)
def test_bad_inputs_raise_freekd_error(scores: list, is_member: list, message: str) -> None:
    for metric in (auc, roc_curve, advantage, balanced_accuracy, attack_metrics):
        with pytest.raises(FreekdError, match=message):
            metric(scores, is_member)


def test_non_finite_message_blames_the_model() -> None:
    with pytest.raises(FreekdError, match="model produced non-finite outputs"):
        auc([float("nan"), 1.0], [True, False])


@pytest.mark.parametrize("budget", [0.0, -0.1, 1.5, float("nan")])
def test_fpr_outside_unit_interval_raises(budget: float) -> None:
    with pytest.raises(FreekdError, match="fpr must be in"):
        tpr_at_fpr([0.1, 0.2], [True, False], fpr=budget)
    with pytest.raises(FreekdError, match="fpr must be in"):
        attack_metrics([0.1, 0.2], [True, False], fprs=(0.01, budget))


def test_zero_one_integers_are_accepted_as_membership() -> None:
    assert auc([0.1, 0.9, 0.5], [0, 1, 0]) == 1.0
