"""Empirical ε lower bounds from one training run (Steinke, Nasr & Jagielski 2023).

"Privacy Auditing with One (1) Training Run", NeurIPS 2023 (arXiv:2305.08846). The setting:

* m **canaries**, each included in the training set **independently with probability ½** (the
  inclusion bits S ∈ {−1, +1}^m are uniform); everything else about the training run is fixed;
* after training, an auditor that sees **only the trained model** (here: one membership score per
  canary, computed from the model alone) guesses "in" or "out" for r canaries and abstains on
  the rest. W is the number of correct guesses.

The paper's main result (Thm. 3.1 for ε-DP, and its approximate-DP version with the 2mδ term,
evaluated numerically as in the paper's appendix): if training is (ε, δ)-DP with respect to each
canary's inclusion, then for every v,

    P[W ≥ v] ≤ f(v) + 2mδ · max_{i ∈ {1, …, m}} (f(v − i) − f(v)) / i,
    f(v) = P[Binomial(r, p) ≥ v],   p = e^ε / (1 + e^ε),

and for δ = 0 this says W is stochastically dominated by Binomial(r, p): the auditor can do no
better than r independent ε-randomized-response guesses. It needs no group privacy, which is why
one run with many canaries suffices.

An observation of v correct guesses therefore rejects "(ε, δ)-DP" at level β = 1 − confidence
when that tail bound is ≤ β, and the largest rejected ε is a lower bound on the training
algorithm's ε that is wrong (too high) with probability at most β over the canary coin flips and
the training randomness. A bound above the accountant's ε (an upper bound) signals a bug in the
implementation or in its analysis; a small bound proves nothing, since a weak attack also gives
one.

freekd deviations, all in the conservative direction: ties between scores are resolved against
the auditor (``one_run_audit``), and for 2mδ > 1, where the tail bound need not grow with ε, the
search returns a rejected ε that may lie below the largest one.
"""

from __future__ import annotations

import functools
import math
import numbers
from collections.abc import Sequence
from typing import Any

import numpy as np
from numpy.typing import ArrayLike, NDArray

from freekd.audit.metrics import _checked
from freekd.errors import FreekdError

FloatArray = NDArray[np.float64]
BoolArray = NDArray[np.bool_]

#: Guess counts tried by ``one_run_audit``, as fractions of the canaries.
DEFAULT_GUESS_FRACTIONS: tuple[float, ...] = (0.01, 0.02, 0.05, 0.1, 0.2, 0.5, 1.0)
#: The ε search stops here: even r = 10⁶ correct guesses out of 10⁶ only reject ε ≈ 12.7 at 95 %.
EPSILON_CAP = 50.0
#: Absolute precision of the ε bisection; the returned ε is always a rejected one (the lower end).
EPSILON_TOLERANCE = 1e-10
METHOD = "steinke-nasr-jagielski-2023"


# ---- binomial numerics, in log space ----------------------------------------------------------


@functools.lru_cache(maxsize=32)
def _log_binomial_coefficients(trials: int) -> FloatArray:
    """(trials + 1,) log C(trials, k), k = 0 … trials, from math.lgamma (cached per size)."""
    log_factorials = np.fromiter(
        (math.lgamma(k + 1.0) for k in range(trials + 1)), dtype=np.float64, count=trials + 1
    )
    coefficients = log_factorials[trials] - log_factorials - log_factorials[::-1]
    coefficients.flags.writeable = False  # shared through the cache
    return coefficients


def _log_pmf(trials: int, log_p: float, log_q: float) -> FloatArray:
    """(trials + 1,) log P[Binomial(trials, p) = k] from finite log p and log q = log(1 − p)."""
    successes = np.arange(trials + 1, dtype=np.float64)
    return _log_binomial_coefficients(trials) + successes * log_p + (trials - successes) * log_q


def _log_sum_exp(values: FloatArray) -> float:
    if len(values) == 0:
        return -math.inf
    largest = float(values.max())
    if largest == -math.inf:
        return -math.inf
    # Shifting by the largest term keeps exp() in range: tails of 1e-300 and below stay exact.
    return largest + math.log(float(np.exp(values - largest).sum()))


def _integer(value: Any, *, name: str, minimum: int | None = 0) -> int:
    if (
        isinstance(value, bool)
        or not isinstance(value, numbers.Integral)
        or (minimum is not None and value < minimum)
    ):
        bound = "an integer" if minimum is None else f"an integer ≥ {minimum}"
        raise FreekdError(f"{name} must be {bound}, got {value!r}; pass a count")
    return int(value)


def binomial_tail(successes: int, trials: int, p: float) -> float:
    """P[Binomial(trials, p) ≥ successes], summed in log space.

    Each term log C(n, k) + k log p + (n − k) log(1 − p) comes from ``math.lgamma`` and the tail
    is a log-sum-exp of positive terms, so there is no cancellation and nothing overflows: tails
    far below 1e-300 underflow to 0 only at the end. The relative error is that of log n! in
    double precision, about n log n ulps (1e-14 at n = 100, 1e-11 at n = 10⁴), far below what
    moves an ε bound.

    Args:
        successes: the threshold k (any integer; k ≤ 0 gives 1, k > trials gives 0).
        trials: n ≥ 0.
        p: the success probability, in [0, 1].

    Returns:
        The upper tail probability, in [0, 1].

    Raises:
        FreekdError: ``trials`` negative or not an integer, or ``p`` outside [0, 1].
    """
    threshold = _integer(successes, name="successes", minimum=None)
    count = _integer(trials, name="trials")
    if not 0.0 <= p <= 1.0:
        raise FreekdError(f"p must be a probability in [0, 1], got {p}; pass a success rate")
    if threshold <= 0:
        return 1.0
    if threshold > count or p == 0.0:
        return 0.0
    if p == 1.0:
        return 1.0
    log_pmf = _log_pmf(count, math.log(p), math.log1p(-p))
    return min(1.0, math.exp(_log_sum_exp(log_pmf[threshold:])))


# ---- the one-run theorem ----------------------------------------------------------------------


def _tail_bound(correct: int, guesses: int, canaries: int, epsilon: float, delta: float) -> float:
    """The main theorem's bound on P[W ≥ correct] for an (epsilon, delta)-DP algorithm."""
    if correct <= 0:
        return 1.0
    # p = e^ε / (1 + e^ε) and 1 − p = e^{−ε} p, in logs, so that large ε loses no precision.
    log_p = -math.log1p(math.exp(-epsilon))
    log_pmf = _log_pmf(guesses, log_p, log_p - epsilon)
    bound = math.exp(_log_sum_exp(log_pmf[correct:]))  # f(v)
    if delta > 0.0:
        # f(v − i) − f(v) = P[v − i ≤ W' ≤ v − 1]. For i ≥ v it is 1 − f(v) and only the divisor
        # i grows, so the maximum over i ∈ {1, …, m} is attained at some i ≤ v ≤ r ≤ m.
        windows = np.logaddexp.accumulate(log_pmf[:correct][::-1])  # i = 1 … v
        widths = np.log(np.arange(1, correct + 1, dtype=np.float64))
        bound += 2.0 * canaries * delta * math.exp(float((windows - widths).max()))
    return min(1.0, bound)


def _check_counts(correct: Any, guesses: Any, canaries: Any) -> tuple[int, int, int]:
    v = _integer(correct, name="correct")
    r = _integer(guesses, name="guesses")
    m = _integer(canaries, name="canaries", minimum=1)
    if not v <= r <= m:
        raise FreekdError(
            f"need correct ≤ guesses ≤ canaries, got {v}, {r}, {m}; count correct guesses among "
            "the guesses made, and guesses among the canaries"
        )
    return v, r, m


def _check_confidence(confidence: float) -> float:
    if not 0.0 < confidence < 1.0:  # also rejects NaN
        raise FreekdError(f"confidence must be in (0, 1), got {confidence}; pass e.g. 0.95")
    return float(confidence)


def _check_delta(delta: float) -> float:
    if not 0.0 <= delta < 1.0:
        raise FreekdError(f"delta must be in [0, 1), got {delta}; pass the δ of the claimed (ε, δ)")
    return float(delta)


def guess_tail_bound(
    *, correct: int, guesses: int, canaries: int, epsilon: float, delta: float = 0.0
) -> float:
    """Upper bound on P[W ≥ correct] for any (ε, δ)-DP training run (the one-run main theorem).

    Steinke, Nasr & Jagielski 2023 (arXiv:2305.08846) Thm. 3.1 and its (ε, δ) form: with m
    canaries included independently with probability ½ and r guesses that depend on the trained
    model only, P[W ≥ v] ≤ f(v) + 2mδ · max_{1 ≤ i ≤ m} (f(v − i) − f(v)) / i, where
    f(v) = P[Binomial(r, e^ε / (1 + e^ε)) ≥ v]. With δ = 0 this is the Binomial tail f(v).
    Data-independent: it is a property of every (ε, δ)-DP algorithm.

    Args:
        correct: v, the number of correct guesses observed.
        guesses: r, the number of guesses made (abstentions excluded).
        canaries: m, the number of canaries (only the δ term depends on it).
        epsilon: the ε of the null hypothesis, ≥ 0.
        delta: the δ of the null hypothesis, in [0, 1).

    Returns:
        The bound, capped at 1 (a p-value for the null "(ε, δ)-DP").

    Raises:
        FreekdError: counts out of order or negative, ε negative, δ outside [0, 1).
    """
    v, r, m = _check_counts(correct, guesses, canaries)
    if not 0.0 <= epsilon < math.inf:
        raise FreekdError(f"epsilon must be finite and ≥ 0, got {epsilon}; pass the ε to test")
    return _tail_bound(v, r, m, float(epsilon), _check_delta(delta))


def epsilon_lower_bound(
    *,
    correct: int,
    guesses: int,
    canaries: int,
    confidence: float = 0.95,
    delta: float = 0.0,
) -> float:
    """The largest ε whose (ε, δ)-DP is rejected by ``correct`` right guesses out of ``guesses``.

    Steinke, Nasr & Jagielski 2023 (arXiv:2305.08846) Thm. 3.1 (δ = 0: W is stochastically
    dominated by Binomial(r, e^ε / (1 + e^ε))) and its (ε, δ) form (the 2mδ term, see
    ``guess_tail_bound``). "(ε, δ)-DP" is rejected at level β = 1 − ``confidence`` when the
    theorem's bound on P[W ≥ correct] is ≤ β, and the result is the largest such ε, found by
    bisection in [0, ``EPSILON_CAP``]. For δ = 0 and for 2mδ ≤ 1 the bound grows with ε, so the
    rejected set is an interval and the bisection finds its end; for 2mδ > 1 it returns a rejected
    ε that may lie below the largest (conservative).

    Assumptions, as in the paper: every canary was included independently with probability ½,
    and the guesses are a function of the trained model only (never of the inclusion bits).
    Then, if training is (ε_true, δ)-DP, the result exceeds ε_true with probability ≤ β.

    Args:
        correct: v, the number of correct guesses.
        guesses: r, the number of guesses made (abstentions excluded).
        canaries: m, the number of canaries.
        confidence: 1 − β, in (0, 1).
        delta: the δ of the tested (ε, δ)-DP, in [0, 1).

    Returns:
        The ε lower bound; 0.0 when even ε = 0 is not rejected.

    Raises:
        FreekdError: counts out of order or negative, confidence outside (0, 1), δ outside [0, 1).
    """
    v, r, m = _check_counts(correct, guesses, canaries)
    beta = 1.0 - _check_confidence(confidence)
    checked_delta = _check_delta(delta)

    def rejected(epsilon: float) -> bool:
        return _tail_bound(v, r, m, epsilon, checked_delta) <= beta

    if not rejected(0.0):
        return 0.0
    low, high = 0.0, 1.0  # invariant once bracketed: rejected(low) and not rejected(high)
    while rejected(high):
        if high >= EPSILON_CAP:
            return EPSILON_CAP
        low, high = high, min(2.0 * high, EPSILON_CAP)
    while high - low > EPSILON_TOLERANCE:
        middle = (low + high) / 2.0
        if rejected(middle):
            low = middle
        else:
            high = middle
    return low  # always a rejected ε, never the unrejected end


# ---- the audit ------------------------------------------------------------------------------


def _correct_guesses(
    values: FloatArray, included: BoolArray, guesses: int, side: str = "both"
) -> int:
    """Correct guesses when the ⌈r/2⌉ highest scores are guessed "in", the ⌊r/2⌋ lowest "out"
    (``side="both"``), or all r guesses are "in" on the highest (``"in"``) or "out" on the
    lowest scores (``"out"``: the same count as "in" with the scores and the bits negated, since
    the theorem treats both values of a canary's bit alike).

    A tie across a cut is split against the auditor (the assignment with the fewest correct
    guesses): W then never exceeds the count of any tie-break that ignores the inclusion bits,
    so the theorem still bounds it, and the order in which canaries were passed in cannot leak
    their bits into the guesses (e.g. all scores equal with the included canaries first).
    """
    if side == "out":
        return _correct_guesses(-values, ~included, guesses, "in")
    guessed_in, guessed_out = ((guesses + 1) // 2, guesses // 2) if side == "both" else (guesses, 0)
    descending = np.sort(values)[::-1]
    in_cut = descending[guessed_in - 1]
    above = values > in_cut
    correct = int(np.count_nonzero(above & included))
    in_slots = guessed_in - int(np.count_nonzero(above))
    out_slots = 0
    out_cut = in_cut
    if guessed_out:
        out_cut = descending[len(values) - guessed_out]
        below = values < out_cut
        correct += int(np.count_nonzero(below & ~included))
        out_slots = guessed_out - int(np.count_nonzero(below))
    in_group = values == in_cut
    in_group_included = int(np.count_nonzero(in_group & included))
    in_group_excluded = int(np.count_nonzero(in_group)) - in_group_included
    if guessed_out and out_cut != in_cut:
        out_group = values == out_cut
        out_group_included = int(np.count_nonzero(out_group & included))
    else:  # one tied group holds both cuts (or there are no "out" guesses)
        out_group_included = in_group_included
    # Worst case: "in" slots take the group's excluded canaries first and "out" slots its
    # included ones; for a shared group both can be satisfied since in + out slots ≤ its size.
    correct += max(0, in_slots - in_group_excluded) + max(0, out_slots - out_group_included)
    return correct


def one_run_audit(
    scores: ArrayLike,
    included: ArrayLike,
    *,
    confidence: float = 0.95,
    delta: float = 0.0,
    guess_fractions: Sequence[float] = DEFAULT_GUESS_FRACTIONS,
    sides: Sequence[str] = ("both",),
) -> dict[str, Any]:
    """One-run ε lower bound of a training run from per-canary membership scores.

    The auditor of Steinke, Nasr & Jagielski 2023 (arXiv:2305.08846 §2–3): for each guess
    fraction g it makes r = max(1, round(g·m)) guesses, "in" for the ⌈r/2⌉ highest scores and
    "out" for the ⌊r/2⌋ lowest, abstains on the rest, and turns the number of correct guesses into
    an ε lower bound (``epsilon_lower_bound``). Ties across a cut count against the auditor.

    ``sides`` adds one-sided auditors: ``"in"`` guesses "in" on the r highest scores only,
    ``"out"`` "out" on the r lowest only (the paper lets the numbers of "in" and "out" guesses
    differ; an overfit model's natural canaries are told apart best by their high losses, i.e.
    by "out" guesses).

    Because the best r and side are picked after seeing the scores, each of the k distinct
    (r, side) pairs is tested at level β / k (Bonferroni, β = 1 − ``confidence``), so the
    reported maximum still holds with the stated confidence.

    Assumptions: each canary was included in training independently with probability ½, and the
    scores are computed from the trained model alone (e.g. each canary's loss), never from the
    inclusion bits. A bound above the accountant's ε signals a privacy bug; a small bound proves
    nothing.

    Args:
        scores: (m,) membership score per canary, higher = guess "in".
        included: (m,) bool, whether each canary was in the training set.
        confidence: 1 − β of the reported bound, in (0, 1).
        delta: the δ of the audited (ε, δ)-DP claim, in [0, 1).
        guess_fractions: fractions g of the canaries to guess on, each in (0, 1].

    Returns:
        ``{"epsilon", "confidence", "delta", "canaries", "guesses", "correct", "method",
        "grid"}``: the best ε lower bound with its guess count and correct count, and "grid" the
        list of ``{"guesses", "correct", "epsilon"}`` for every distinct r (each ε at level β/k).

    Raises:
        FreekdError: lengths differ, no canaries, non-finite scores, confidence outside (0, 1),
            δ outside [0, 1), or a guess fraction outside (0, 1].
    """
    values, bits = _checked(scores, included, labels_name="included")
    beta = 1.0 - _check_confidence(confidence)
    checked_delta = _check_delta(delta)
    if len(guess_fractions) == 0 or not all(0.0 < g <= 1.0 for g in guess_fractions):
        raise FreekdError(
            f"guess_fractions must be non-empty, each in (0, 1], got {list(guess_fractions)}; "
            "pass e.g. (0.01, 0.1, 1.0)"
        )
    unknown = [side for side in sides if side not in ("both", "in", "out")]
    if not sides or unknown:
        raise FreekdError(f"sides must be some of both, in, out; got {list(sides)}")
    canaries = len(values)
    guess_counts = list(dict.fromkeys(max(1, round(g * canaries)) for g in guess_fractions))
    tests = [(guesses, side) for side in dict.fromkeys(sides) for guesses in guess_counts]
    per_test_confidence = 1.0 - beta / len(tests)
    grid: list[dict[str, Any]] = []
    for guesses, side in tests:
        correct = _correct_guesses(values, bits, guesses, side)
        epsilon = epsilon_lower_bound(
            correct=correct,
            guesses=guesses,
            canaries=canaries,
            confidence=per_test_confidence,
            delta=checked_delta,
        )
        grid.append({"guesses": guesses, "side": side, "correct": correct, "epsilon": epsilon})
    best = max(grid, key=lambda row: row["epsilon"])  # the first of equal maxima
    return {
        "epsilon": best["epsilon"],
        "confidence": float(confidence),
        "delta": checked_delta,
        "canaries": canaries,
        "guesses": best["guesses"],
        "side": best["side"],
        "correct": best["correct"],
        "method": METHOD,
        "grid": grid,
    }
