"""Membership-inference metrics: ROC curve, AUC, TPR at low FPR, balanced accuracy, advantage.

Every function takes one membership score per example (higher means "more likely a training
member") and the true membership bits, and treats the attack as the family of threshold rules
"guess member when score ≥ τ". The ROC curve has one point per distinct score, so tied scores
form one step: no threshold can split a tie.

Which number to look at: Carlini et al. 2022 ("Membership Inference Attacks From First
Principles", arXiv:2112.03570) argue that average-case numbers (accuracy, AUC) hide whether an
attack can identify *any* member confidently, and report the TPR at a low FPR (0.1 %, 1 %)
read off the ROC curve without interpolation; ``tpr_at_fpr`` does exactly that. Balanced accuracy
and Yeom et al.'s membership advantage are maxima over thresholds picked on the evaluated data,
so they are optimistic for the attacker: they describe this data, not a threshold fixed in advance.

These metrics describe one attack on one model; they are not differential-privacy guarantees. For
an ε lower bound with a stated confidence see :mod:`freekd.audit.bounds`.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
from numpy.typing import ArrayLike, NDArray

from freekd.errors import FreekdError

FloatArray = NDArray[np.float64]
BoolArray = NDArray[np.bool_]

#: False-positive rates at which ``attack_metrics`` reports the TPR (Carlini et al. 2022's 0.1 %
#: and 1 %, plus 10 % for weak attacks).
DEFAULT_FPRS: tuple[float, ...] = (0.001, 0.01, 0.1)


def _boolean(values: ArrayLike, *, name: str) -> BoolArray:
    """``values`` as a (N,) bool array; 0/1 numbers are accepted, anything else is an error."""
    array = np.asarray(values)
    if array.ndim != 1:
        raise FreekdError(
            f"{name} must be one-dimensional (one bit per example), got shape {array.shape}; "
            "flatten it"
        )
    if array.dtype == np.bool_:
        return array
    if array.dtype.kind in "iuf" and bool(np.isin(array, (0, 1)).all()):
        return array.astype(np.bool_)
    raise FreekdError(
        f"{name} must hold booleans (or 0/1), got dtype {array.dtype}; pass a bool mask"
    )


def _checked(
    scores: ArrayLike, labels: ArrayLike, *, labels_name: str
) -> tuple[FloatArray, BoolArray]:
    """Validate scores and their bits: same length, non-empty, finite scores.

    Shared with :mod:`freekd.audit.bounds`. Raises :class:`FreekdError` naming the problem.
    """
    try:
        values = np.asarray(scores, dtype=np.float64)
    except (TypeError, ValueError) as error:
        raise FreekdError(f"scores must be numbers, got {error}; pass a float array") from None
    if values.ndim != 1:
        raise FreekdError(
            f"scores must be one-dimensional (one score per example), got shape {values.shape}; "
            "flatten them"
        )
    bits = _boolean(labels, name=labels_name)
    if len(values) != len(bits):
        raise FreekdError(
            f"scores has {len(values)} entries but {labels_name} has {len(bits)}; pass one bit "
            "per score"
        )
    if len(values) == 0:
        raise FreekdError("scores is empty; score at least one member and one non-member")
    non_finite = int(np.count_nonzero(~np.isfinite(values)))
    if non_finite:
        raise FreekdError(
            f"{non_finite} of {len(values)} scores are not finite (NaN or inf): the model produced "
            "non-finite outputs; fix the model or drop those examples before scoring"
        )
    return values, bits


def _member_split(scores: ArrayLike, is_member: ArrayLike) -> tuple[FloatArray, BoolArray]:
    values, members = _checked(scores, is_member, labels_name="is_member")
    count = int(members.sum())
    if count == 0 or count == len(members):
        missing = "members" if count == 0 else "non-members"
        raise FreekdError(
            f"is_member has no {missing}; an attack is measured on both members and non-members"
        )
    return values, members


def _roc(values: FloatArray, members: BoolArray) -> tuple[FloatArray, FloatArray]:
    # Sort by descending score; a threshold can only sit between two distinct scores, so the curve
    # keeps only the last position of every run of ties (one step per tie, never half a tie).
    order = np.argsort(-values, kind="stable")
    ordered, hits = values[order], members[order]
    ends = np.append(np.flatnonzero(ordered[1:] != ordered[:-1]), len(ordered) - 1)
    true_positives = np.concatenate(([0], np.cumsum(hits)[ends]))
    false_positives = np.concatenate(([0], np.cumsum(~hits)[ends]))
    # Dividing integer counts is correctly rounded, so k/n compares exactly with a literal fpr.
    return false_positives / false_positives[-1], true_positives / true_positives[-1]


def roc_curve(scores: ArrayLike, is_member: ArrayLike) -> tuple[FloatArray, FloatArray]:
    """ROC curve of the threshold attack "member if score ≥ τ", one point per distinct score.

    Args:
        scores: (N,) membership scores, higher = more likely a member.
        is_member: (N,) bool, the true membership of each example.

    Returns:
        ``(fpr, tpr)``, each (D + 1,) for D distinct scores, ordered by descending threshold:
        from (0, 0) (τ above every score) to (1, 1) (τ at the lowest score). Tied scores form a
        single step.

    Raises:
        FreekdError: different lengths, no examples, only one class, or non-finite scores.
    """
    return _roc(*_member_split(scores, is_member))


def auc(scores: ArrayLike, is_member: ArrayLike) -> float:
    """Area under the ROC curve = P(score_member > score_non_member) + ½ P(tie).

    The Mann–Whitney U statistic from mid-ranks (tied scores share their average rank), which
    equals the trapezoidal area under ``roc_curve``; O(N log N).

    Args:
        scores: (N,) membership scores, higher = more likely a member.
        is_member: (N,) bool, the true membership of each example.

    Returns:
        The AUC in [0, 1]; 0.5 is chance, 1 perfect separation, 0 perfectly reversed.

    Raises:
        FreekdError: as ``roc_curve``.
    """
    values, members = _member_split(scores, is_member)
    order = np.argsort(values, kind="stable")
    ordered = values[order]
    starts = np.concatenate(([0], np.flatnonzero(ordered[1:] != ordered[:-1]) + 1))
    stops = np.append(starts[1:], len(ordered))
    # 1-based positions starts+1 … stops share the mid-rank (starts + 1 + stops) / 2
    ranks = np.empty(len(values))
    ranks[order] = np.repeat((starts + 1 + stops) / 2.0, stops - starts)
    positives = int(members.sum())
    negatives = len(members) - positives
    u_statistic = float(ranks[members].sum()) - positives * (positives + 1) / 2.0
    return u_statistic / (positives * negatives)


def _check_fpr(fpr: float) -> float:
    if not 0.0 < fpr <= 1.0:  # also rejects NaN
        raise FreekdError(f"fpr must be in (0, 1], got {fpr}; pass e.g. 0.001 for 0.1 %")
    return float(fpr)


def _tpr_at(fpr_curve: FloatArray, tpr_curve: FloatArray, fpr: float) -> float:
    return float(tpr_curve[fpr_curve <= fpr].max())  # (0, 0) is always a point


def tpr_at_fpr(scores: ArrayLike, is_member: ArrayLike, *, fpr: float) -> float:
    """The largest TPR among ROC points whose FPR is at most ``fpr``, without interpolation.

    How Carlini et al. 2022 (arXiv:2112.03570) report attacks at low FPR: a threshold that
    really achieves FPR ≤ ``fpr`` on the non-members. With fewer than 1/``fpr`` non-members only
    the (0, 0) point qualifies unless the top scores are all members.

    Args:
        scores: (N,) membership scores, higher = more likely a member.
        is_member: (N,) bool, the true membership of each example.
        fpr: the false-positive rate budget, in (0, 1].

    Returns:
        The TPR in [0, 1].

    Raises:
        FreekdError: as ``roc_curve``, or ``fpr`` outside (0, 1].
    """
    budget = _check_fpr(fpr)
    return _tpr_at(*roc_curve(scores, is_member), budget)


def balanced_accuracy(scores: ArrayLike, is_member: ArrayLike) -> float:
    """The best balanced accuracy (TPR + 1 − FPR) / 2 of any threshold, chosen on this data.

    Optimistic for the attacker: the threshold is picked after seeing the labels. Thresholds
    above or below every score count, so the result is at least 0.5.

    Args:
        scores: (N,) membership scores, higher = more likely a member.
        is_member: (N,) bool, the true membership of each example.

    Returns:
        The maximum over thresholds, in [0.5, 1].

    Raises:
        FreekdError: as ``roc_curve``.
    """
    fpr, tpr = roc_curve(scores, is_member)
    return float(((tpr + 1.0 - fpr) / 2.0).max())


def advantage(scores: ArrayLike, is_member: ArrayLike) -> float:
    """The best membership advantage TPR − FPR of any threshold, chosen on this data.

    Yeom et al. 2018 ("Privacy Risk in Machine Learning", arXiv:1709.01604) Def. 4: the
    membership advantage of an adversary is P[guess member | member] − P[guess member |
    non-member]. Here it is maximised over the threshold on the evaluated data, which is
    optimistic for the attacker; it equals 2 · ``balanced_accuracy`` − 1.

    Args:
        scores: (N,) membership scores, higher = more likely a member.
        is_member: (N,) bool, the true membership of each example.

    Returns:
        The maximum over thresholds, in [0, 1] (the trivial thresholds give 0).

    Raises:
        FreekdError: as ``roc_curve``.
    """
    fpr, tpr = roc_curve(scores, is_member)
    return float((tpr - fpr).max())


def attack_metrics(
    scores: ArrayLike, is_member: ArrayLike, *, fprs: Sequence[float] = DEFAULT_FPRS
) -> dict[str, Any]:
    """All metrics of one membership-inference attack, from one ROC computation.

    Args:
        scores: (N,) membership scores, higher = more likely a member.
        is_member: (N,) bool, the true membership of each example.
        fprs: false-positive rates, each in (0, 1], at which to report the TPR.

    Returns:
        ``{"auc", "tpr_at_fpr": {str(fpr): tpr, ...}, "balanced_accuracy", "advantage",
        "members", "non_members"}``; balanced accuracy and advantage are at the best threshold
        on this data (optimistic for the attacker).

    Raises:
        FreekdError: as ``roc_curve``, or an fpr outside (0, 1].
    """
    budgets = [_check_fpr(fpr) for fpr in fprs]
    values, members = _member_split(scores, is_member)
    fpr_curve, tpr_curve = _roc(values, members)
    return {
        "auc": auc(values, members),
        "tpr_at_fpr": {
            str(f): _tpr_at(fpr_curve, tpr_curve, b) for f, b in zip(fprs, budgets, strict=True)
        },
        "balanced_accuracy": float(((tpr_curve + 1.0 - fpr_curve) / 2.0).max()),
        "advantage": float((tpr_curve - fpr_curve).max()),
        "members": int(members.sum()),
        "non_members": int((~members).sum()),
    }
