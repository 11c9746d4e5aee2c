"""One-run ε lower bounds: closed forms, monotonicity and statistical validity (STYLE.md §4.7).

An audit bound that overstates ε is a bug: it reports a privacy violation that is not there, and
teaches users to ignore the real ones. So besides closed forms, the bounds are checked exactly
against mechanisms whose true (ε, δ) is known, and by seeded simulation of whole audits.
"""

from __future__ import annotations

import itertools
import math
from fractions import Fraction
from random import Random

import numpy as np
import pytest
from hypothesis import assume, given
from hypothesis import strategies as st

from freekd.audit.bounds import (
    DEFAULT_GUESS_FRACTIONS,
    binomial_tail,
    epsilon_lower_bound,
    guess_tail_bound,
    one_run_audit,
)
from freekd.errors import FreekdError

BETA = 0.05


def accuracy(epsilon: float) -> float:
    """e^ε / (1 + e^ε): the accuracy of ε-randomized response, the best per-guess accuracy."""
    return 1.0 / (1.0 + math.exp(-epsilon))


def exact_tail(successes: int, trials: int, p: float) -> float:
    """P[Binomial(trials, p) ≥ successes] by summing math.comb terms."""
    return math.fsum(
        math.comb(trials, k) * p**k * (1 - p) ** (trials - k)
        for k in range(max(successes, 0), trials + 1)
    )


def revealing_tail(
    correct: int, *, guesses: int, canaries: int, epsilon: float, delta: float
) -> float:
    """P[W ≥ correct] for a per-canary (ε, δ)-DP mechanism and the auditor that exploits δ.

    Each canary's output independently reveals its bit, flagged, with probability δ, and is
    ε-randomized response otherwise; that is (ε, δ)-DP in each bit. The auditor guesses the
    revealed canaries first (always right), then r − R randomized responses (right w.p. p), so
    W = min(R, r) + Binomial(r − min(R, r), p) with R ~ Binomial(m, δ).
    """
    p = accuracy(epsilon)
    total = 0.0
    for revealed in range(canaries + 1):
        weight = (
            math.comb(canaries, revealed) * delta**revealed * (1 - delta) ** (canaries - revealed)
        )
        if revealed > canaries * delta and weight < 1e-17:
            break
        sure = min(revealed, guesses)
        total += weight * binomial_tail(correct - sure, guesses - sure, p)
    return total


def smallest_overstating(
    *, guesses: int, canaries: int, epsilon: float, delta: float, analysed_delta: float
) -> int:
    """The smallest correct count whose bound exceeds ``epsilon`` (bounds grow with it)."""
    low, high = 0, guesses + 1
    while low < high:
        middle = (low + high) // 2
        bound = epsilon_lower_bound(
            correct=middle, guesses=guesses, canaries=canaries, delta=analysed_delta
        )
        if bound > epsilon:
            high = middle
        else:
            low = middle + 1
    return low


# ---- binomial tail -------------------------------------------------------------------------------


@given(st.integers(0, 40), st.integers(-2, 42), st.floats(0.0, 1.0))
def test_binomial_tail_matches_exact_comb_sums(trials: int, successes: int, p: float) -> None:
    expected = exact_tail(successes, trials, p)
    assert binomial_tail(successes, trials, p) == pytest.approx(expected, rel=1e-9, abs=1e-300)


@given(st.integers(0, 500), st.floats(0.0, 1.0))
def test_binomial_tail_from_zero_is_one(trials: int, p: float) -> None:
    assert binomial_tail(0, trials, p) == 1.0
    assert binomial_tail(trials + 1, trials, p) == 0.0


@given(st.integers(1, 20_000), st.data())
def test_binomial_tail_of_a_fair_coin_is_symmetric(trials: int, data: st.DataObject) -> None:
    successes = data.draw(st.integers(0, trials + 1))
    total = binomial_tail(successes, trials, 0.5) + binomial_tail(
        trials - successes + 1, trials, 0.5
    )
    # log C(n, k) from lgamma carries an absolute error of about n log n ulps
    assert total == pytest.approx(1.0, abs=1e-15 * (trials + 1) * math.log(trials + 2) + 1e-14)


@pytest.mark.parametrize(
    ("successes", "p"),
    [(250, (1, 4)), (400, (1, 4)), (800, (1, 4)), (1000, (1, 4)), (1000, (1, 2)), (520, (1, 2))],
)
def test_binomial_tail_of_a_thousand_trials_matches_exact_rationals(
    successes: int, p: tuple[int, int]
) -> None:
    """Exact tails with integer arithmetic, down to 10⁻⁶⁰², including ones below float range."""
    numerator, denominator = p
    exact = Fraction(
        sum(
            math.comb(1000, k) * numerator**k * (denominator - numerator) ** (1000 - k)
            for k in range(successes, 1001)
        ),
        denominator**1000,
    )
    ours = binomial_tail(successes, 1000, numerator / denominator)
    if exact < Fraction(1, 10**300):
        assert ours < 1e-300
    else:
        assert ours == pytest.approx(float(exact), rel=1e-11)


@pytest.mark.parametrize(
    ("successes", "trials", "p"), [(1, -1, 0.5), (1, 3, 1.5), (1, 3, -0.1), (1.5, 3, 0.5)]
)
def test_binomial_tail_rejects_bad_arguments(successes: float, trials: int, p: float) -> None:
    with pytest.raises(FreekdError):
        binomial_tail(successes, trials, p)


# ---- the theorem's tail bound --------------------------------------------------------------------


@given(st.integers(1, 300), st.data(), st.floats(0.0, 6.0))
def test_pure_dp_tail_bound_is_the_binomial_tail(
    guesses: int, data: st.DataObject, epsilon: float
) -> None:
    correct = data.draw(st.integers(0, guesses))
    bound = guess_tail_bound(correct=correct, guesses=guesses, canaries=guesses, epsilon=epsilon)
    assert bound == pytest.approx(binomial_tail(correct, guesses, accuracy(epsilon)), rel=1e-10)


@pytest.mark.parametrize(
    ("guesses", "canaries", "epsilon", "delta"),
    [(10, 1000, 1.0, 5e-4), (50, 200, 0.5, 1e-3), (200, 1000, 2.0, 2e-4), (20, 20, 1.0, 0.02)],
)
def test_tail_bound_covers_a_mechanism_that_spends_its_delta(
    guesses: int, canaries: int, epsilon: float, delta: float
) -> None:
    """The δ term is needed and sufficient for the reveal-with-probability-δ mechanism."""
    kwargs = {"guesses": guesses, "canaries": canaries, "epsilon": epsilon}
    pure_violated = False
    for correct in range(guesses + 1):
        truth = revealing_tail(correct, delta=delta, **kwargs)
        assert truth <= guess_tail_bound(correct=correct, delta=delta, **kwargs) + 1e-12
        pure_violated |= truth > guess_tail_bound(correct=correct, delta=0.0, **kwargs) + 1e-12
    assert pure_violated  # without the 2mδ term the bound would be wrong for this mechanism


# ---- epsilon_lower_bound: closed forms -----------------------------------------------------------


@pytest.mark.parametrize("guesses", [10, 50, 200, 1000, 5000])
@pytest.mark.parametrize("confidence", [0.9, 0.95, 0.99])
def test_all_guesses_correct_gives_the_closed_form(guesses: int, confidence: float) -> None:
    """δ = 0, v = r: P[Binomial(r, p) ≥ r] = p^r = β, so p = β^(1/r) and ε = log(p / (1 − p))."""
    p = (1 - confidence) ** (1 / guesses)
    bound = epsilon_lower_bound(
        correct=guesses, guesses=guesses, canaries=guesses, confidence=confidence
    )
    assert bound == pytest.approx(math.log(p / (1 - p)), abs=1e-6)


def test_too_few_guesses_reject_nothing() -> None:
    # one right guess out of one: p-value ≥ ½ at ε = 0, never ≤ 5 %
    assert epsilon_lower_bound(correct=1, guesses=1, canaries=1) == 0.0
    assert epsilon_lower_bound(correct=4, guesses=4, canaries=4) == 0.0  # 1/16 > 5 %


@pytest.mark.parametrize("delta", [0.0, 1e-5, 1e-3])
def test_zero_correct_gives_zero(delta: float) -> None:
    assert epsilon_lower_bound(correct=0, guesses=500, canaries=1000, delta=delta) == 0.0


def test_chance_level_guessing_gives_zero_or_tiny() -> None:
    assert epsilon_lower_bound(correct=500, guesses=1000, canaries=1000) == 0.0
    assert epsilon_lower_bound(correct=5000, guesses=10_000, canaries=10_000) == 0.0
    assert epsilon_lower_bound(correct=530, guesses=1000, canaries=1000) < 0.05


# ---- epsilon_lower_bound: monotonicity (2mδ ≤ 1, where the bound grows with ε) ----------------


@st.composite
def audits(draw: st.DrawFn) -> dict[str, float]:
    canaries = draw(st.integers(1, 2000))
    guesses = draw(st.integers(1, canaries))
    correct = draw(st.integers(0, guesses))
    delta = draw(st.floats(0.0, 1.0)) / (2 * canaries)
    return {"correct": correct, "guesses": guesses, "canaries": canaries, "delta": delta}


@given(audits(), st.data())
def test_more_correct_guesses_never_lower_the_bound(audit: dict, data: st.DataObject) -> None:
    more = data.draw(st.integers(audit["correct"], audit["guesses"]))
    assert epsilon_lower_bound(**audit) <= epsilon_lower_bound(**{**audit, "correct": more}) + 1e-9


@given(audits(), st.floats(0.5, 0.999), st.floats(0.5, 0.999))
def test_higher_confidence_never_raises_the_bound(audit: dict, first: float, second: float) -> None:
    low, high = sorted((first, second))
    assert (
        epsilon_lower_bound(**audit, confidence=high)
        <= epsilon_lower_bound(**audit, confidence=low) + 1e-9
    )


@given(audits(), st.floats(0.0, 1.0))
def test_larger_delta_never_raises_the_bound(audit: dict, scale: float) -> None:
    smaller = {**audit, "delta": audit["delta"] * scale}
    assert epsilon_lower_bound(**audit) <= epsilon_lower_bound(**smaller) + 1e-9


# ---- epsilon_lower_bound: exact validity against known mechanisms --------------------------------


@pytest.mark.parametrize("guesses", [10, 100, 1000])
@pytest.mark.parametrize("epsilon", [0.5, 1.0, 2.0])
def test_pure_dp_bound_overstates_with_probability_at_most_beta(
    guesses: int, epsilon: float
) -> None:
    """Against r ε-randomized responses, W ~ Binomial(r, p) exactly; P[bound > ε] ≤ β, and the
    test is the exact binomial test (one fewer correct guess would be rejected too often)."""
    threshold = smallest_overstating(
        guesses=guesses, canaries=guesses, epsilon=epsilon, delta=0.0, analysed_delta=0.0
    )
    p = accuracy(epsilon)
    assert binomial_tail(threshold, guesses, p) <= BETA
    if threshold <= guesses:
        assert binomial_tail(threshold - 1, guesses, p) > BETA


@pytest.mark.parametrize(
    ("guesses", "canaries", "epsilon", "delta"),
    [(10, 1000, 1.0, 5e-4), (50, 1000, 0.5, 5e-4), (1000, 1000, 1.0, 5e-4), (100, 500, 2.0, 1e-4)],
)
def test_approximate_dp_bound_overstates_with_probability_at_most_beta(
    guesses: int, canaries: int, epsilon: float, delta: float
) -> None:
    kwargs = {"guesses": guesses, "canaries": canaries, "epsilon": epsilon}
    threshold = smallest_overstating(**kwargs, delta=delta, analysed_delta=delta)
    assert revealing_tail(threshold, delta=delta, **kwargs) <= BETA


def test_ignoring_delta_overstates_for_a_mechanism_that_spends_it() -> None:
    """The same mechanism analysed as if δ were 0 overstates ε more often than β allows."""
    kwargs = {"guesses": 10, "canaries": 1000, "epsilon": 1.0}
    threshold = smallest_overstating(**kwargs, delta=5e-4, analysed_delta=0.0)
    assert revealing_tail(threshold, delta=5e-4, **kwargs) > BETA


# ---- one_run_audit: simulated audits ----------------------------------------------------------


def randomized_response_run(
    rng: np.random.Generator, *, canaries: int, epsilon: float, delta: float = 0.0
) -> tuple[np.ndarray, np.ndarray]:
    """A training run that is exactly (ε, δ)-DP in each canary's inclusion bit.

    With probability δ the canary's score reveals its bit (±10, flagged by its size); otherwise
    it is the bit after ε-randomized response. Tiny noise only orders ties.
    """
    included = rng.random(canaries) < 0.5
    kept = rng.random(canaries) < accuracy(epsilon)
    response = np.where(kept, included, ~included).astype(np.float64)
    revealed = rng.random(canaries) < delta
    scores = np.where(revealed, np.where(included, 10.0, -10.0), response)
    return scores + 1e-3 * rng.random(canaries), included


RUNS = 200
# binomial noise of an empirical rate ≤ β over RUNS runs: three standard deviations
SLACK = 3 * math.sqrt(BETA * (1 - BETA) / RUNS)


@pytest.mark.parametrize("epsilon", [0.5, 1.0, 2.0])
def test_audit_of_randomized_response_is_valid_and_has_power(epsilon: float) -> None:
    rng = np.random.default_rng(int(100 * epsilon))
    bounds = np.array(
        [
            one_run_audit(*randomized_response_run(rng, canaries=1000, epsilon=epsilon))["epsilon"]
            for _ in range(RUNS)
        ]
    )
    assert np.mean(bounds > epsilon) <= BETA + SLACK
    assert bounds.mean() > 0.5 * epsilon  # the audit sees most of a real leak
    if epsilon == 2.0:
        assert bounds.mean() > 1.0


def test_audit_with_delta_is_valid_for_a_mechanism_that_spends_it() -> None:
    rng = np.random.default_rng(7)
    epsilon, delta = 1.0, 5e-4
    bounds = np.array(
        [
            one_run_audit(
                *randomized_response_run(rng, canaries=1000, epsilon=epsilon, delta=delta),
                delta=delta,
            )["epsilon"]
            for _ in range(RUNS)
        ]
    )
    assert np.mean(bounds > epsilon) <= BETA + SLACK
    assert bounds.mean() > 0.0


# ---- one_run_audit: bookkeeping -----------------------------------------------------------------


def test_audit_reports_a_bonferroni_grid() -> None:
    rng = np.random.default_rng(0)
    scores, included = randomized_response_run(rng, canaries=1000, epsilon=2.0)
    result = one_run_audit(scores, included)
    guesses = [row["guesses"] for row in result["grid"]]
    assert guesses == [10, 20, 50, 100, 200, 500, 1000]
    level = 1 - BETA / len(DEFAULT_GUESS_FRACTIONS)
    for row in result["grid"]:
        assert row["epsilon"] == epsilon_lower_bound(
            correct=row["correct"], guesses=row["guesses"], canaries=1000, confidence=level
        )
    best = max(result["grid"], key=lambda row: row["epsilon"])
    assert (result["epsilon"], result["guesses"], result["correct"]) == (
        best["epsilon"],
        best["guesses"],
        best["correct"],
    )
    assert result["method"] == "steinke-nasr-jagielski-2023"
    assert (result["confidence"], result["delta"], result["canaries"]) == (0.95, 0.0, 1000)


def test_perfect_scores_give_the_closed_form_at_the_bonferroni_level() -> None:
    included = np.arange(1000) % 2 == 0
    result = one_run_audit(included.astype(float), included, guess_fractions=(1.0,))
    p = BETA ** (1 / 1000)
    assert result["correct"] == 1000
    assert result["epsilon"] == pytest.approx(math.log(p / (1 - p)), abs=1e-6)


def test_odd_guess_count_gives_the_extra_guess_to_in() -> None:
    scores = [5.0, 4.0, 3.0, 2.0, 1.0, 0.0, -1.0]
    # r = 3: "in" for 5.0 and 4.0, "out" for -1.0
    included = [True, False, True, True, True, True, False]
    assert one_run_audit(scores, included, guess_fractions=(3 / 7,))["correct"] == 2
    assert one_run_audit(scores, included, guess_fractions=(1 / 7,))["correct"] == 1  # r = 1: in


def test_ties_cannot_leak_the_input_order() -> None:
    """Equal scores with the included canaries passed first: no information, so no ε."""
    included = np.arange(1000) < 500
    result = one_run_audit(np.zeros(1000), included)
    assert result["epsilon"] == 0.0
    assert result["grid"][-1]["correct"] == 0  # worst-case split of the single tied group


@given(
    st.lists(st.tuples(st.integers(0, 2), st.booleans()), min_size=1, max_size=6),
    st.data(),
)
def test_tied_guesses_count_the_worst_tie_break(canaries: list, data: st.DataObject) -> None:
    count = len(canaries)
    guesses = data.draw(st.integers(1, count))
    scores = [score for score, _ in canaries]
    included = [bit for _, bit in canaries]
    worst = count
    for order in itertools.permutations(range(count)):
        if any(scores[a] < scores[b] for a, b in itertools.pairwise(order)):
            continue  # not a descending order of the scores
        guessed_in = order[: (guesses + 1) // 2]
        guessed_out = order[count - guesses // 2 :]
        right = sum(included[i] for i in guessed_in) + sum(not included[i] for i in guessed_out)
        worst = min(worst, right)
    result = one_run_audit(scores, included, guess_fractions=(guesses / count,))
    assert result["guesses"] == guesses
    assert result["correct"] == worst


@given(st.lists(st.tuples(st.integers(0, 3), st.booleans()), min_size=2, max_size=60), st.randoms())
def test_audit_does_not_depend_on_the_canary_order(canaries: list, random: Random) -> None:
    shuffled = list(canaries)
    random.shuffle(shuffled)
    assume(shuffled != canaries)
    first = one_run_audit([s for s, _ in canaries], [b for _, b in canaries])
    second = one_run_audit([s for s, _ in shuffled], [b for _, b in shuffled])
    assert first == second


# ---- errors ------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"correct": 5, "guesses": 4, "canaries": 10}, "correct ≤ guesses ≤ canaries"),
        ({"correct": 1, "guesses": 20, "canaries": 10}, "correct ≤ guesses ≤ canaries"),
        ({"correct": -1, "guesses": 4, "canaries": 10}, "correct must be"),
        ({"correct": 1, "guesses": 4, "canaries": 0}, "canaries must be"),
        ({"correct": 1, "guesses": 4, "canaries": 10, "confidence": 1.0}, "confidence"),
        ({"correct": 1, "guesses": 4, "canaries": 10, "confidence": 0.0}, "confidence"),
        ({"correct": 1, "guesses": 4, "canaries": 10, "delta": 1.0}, "delta"),
        ({"correct": 1, "guesses": 4, "canaries": 10, "delta": -1e-9}, "delta"),
        ({"correct": 1.5, "guesses": 4, "canaries": 10}, "correct must be"),
    ],
)
def test_epsilon_lower_bound_rejects_bad_arguments(kwargs: dict, message: str) -> None:
    with pytest.raises(FreekdError, match=message):
        epsilon_lower_bound(**kwargs)


@pytest.mark.parametrize(
    ("scores", "included", "kwargs", "message"),
    [
        ([0.1, 0.2], [True], {}, "entries"),
        ([], [], {}, "empty"),
        ([0.1, float("nan")], [True, False], {}, "model produced non-finite outputs"),
        ([0.1, 0.2], [True, False], {"confidence": 1.5}, "confidence"),
        ([0.1, 0.2], [True, False], {"delta": 1.0}, "delta"),
        ([0.1, 0.2], [True, False], {"guess_fractions": ()}, "guess_fractions"),
        ([0.1, 0.2], [True, False], {"guess_fractions": (0.0,)}, "guess_fractions"),
        ([0.1, 0.2], [True, False], {"guess_fractions": (1.5,)}, "guess_fractions"),
    ],
)
def test_one_run_audit_rejects_bad_inputs(
    scores: list, included: list, kwargs: dict, message: str
) -> None:
    with pytest.raises(FreekdError, match=message):
        one_run_audit(scores, included, **kwargs)


def test_one_sided_auditors_stay_valid_under_their_bonferroni_correction() -> None:
    rng = np.random.default_rng(11)
    epsilon = 1.0
    results = [
        one_run_audit(
            *randomized_response_run(rng, canaries=1000, epsilon=epsilon),
            sides=("both", "in", "out"),
        )
        for _ in range(RUNS)
    ]
    bounds = np.array([result["epsilon"] for result in results])
    assert np.mean(bounds > epsilon) <= BETA + SLACK
    assert bounds.mean() > 0.5 * epsilon
    assert {row["side"] for row in results[0]["grid"]} == {"both", "in", "out"}


def test_out_guesses_count_excluded_canaries_among_the_lowest_scores() -> None:
    scores = np.array([0.0, 1.0, 2.0, 3.0, 4.0, 5.0])
    included = np.array([False, False, True, False, True, True])
    # the two lowest are both excluded: 2 correct "out" guesses; "in" on the top two: 2 correct
    assert one_run_audit(scores, included, guess_fractions=(2 / 6,), sides=("out",))["correct"] == 2
    # three lowest: two of three excluded
    assert one_run_audit(scores, included, guess_fractions=(3 / 6,), sides=("out",))["correct"] == 2
    with pytest.raises(FreekdError, match="sides"):
        one_run_audit(scores, included, sides=("sideways",))
