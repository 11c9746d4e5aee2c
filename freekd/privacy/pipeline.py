"""Composition roots of the ``freekd privacy`` calculators."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from freekd.errors import FreekdError, check_regular_file
from freekd.privacy.config import NOISE_MULTIPLIERS
from freekd.privacy.rdp import DEFAULT_ORDERS
from freekd.privacy.release import checked_sanitized_release
from freekd.privacy.report import dpsgd_privacy, pate_privacy, with_figures
from freekd.runs import first_line


def load_array(path: Path, what: str) -> Any:
    """One array from a ``.npy`` file, or from a ``.npz`` holding one array (or one named
    ``what``); a one-line error for anything else (text, an empty file, pickled objects)."""

    path = Path(path)
    fix = "save it with numpy.save"
    check_regular_file(path, f"{what} file")
    if not path.is_file():
        raise FreekdError(f"{what} file {path} does not exist; check the path")
    try:
        # allow_pickle=False: a .npy of objects would unpickle code.
        loaded = np.load(path, allow_pickle=False)
    except (ValueError, OSError, EOFError) as error:  # an empty file raises EOFError
        with path.open("rb") as stream:
            magic = stream.read(6)
        reason = (
            f"{error}".splitlines()[0][:120]
            if magic == b"\x93NUMPY"
            else "not a .npy file: no NUMPY header"
        )
        raise FreekdError(
            f"{what} file {path} is not a numeric .npy array ({reason}); {fix}"
        ) from None
    if not isinstance(loaded, np.lib.npyio.NpzFile):
        return loaded
    with loaded:
        names = list(loaded.files)
        if len(names) != 1 and what not in names:
            raise FreekdError(
                f"{what} file {path} holds arrays {names[:5]}; give a .npy file, or a .npz with "
                f"one array or one named {what!r}"
            )
        try:
            return loaded[what if what in names else names[0]]
        except (ValueError, OSError, EOFError) as error:
            raise FreekdError(
                f"{what} file {path} is not a numeric .npy array ({first_line(error)}); {fix}"
            ) from None


def _checked_votes(path: Path) -> Any:
    """The (N queries, K classes) vote counts in ``path``: whole, non-negative, finite."""

    votes = load_array(path, "votes")
    if votes.ndim != 2 or votes.shape[0] < 1 or votes.shape[1] < 2:
        raise FreekdError(
            f"votes in {path} have shape {tuple(votes.shape)}; expected (N queries, K ≥ 2 "
            "classes) of vote counts"
        )
    real = np.issubdtype(votes.dtype, np.integer) or np.issubdtype(votes.dtype, np.floating)
    if not real or not np.all(np.isfinite(votes)):
        raise FreekdError(f"votes in {path} must be finite numbers, got {votes.dtype}")
    if np.any(votes < 0) or np.any(votes != np.round(votes)):
        raise FreekdError(f"votes in {path} must be non-negative whole counts")
    return votes


def _checked_answered(path: Path, *, queries: int) -> Any:
    """The ``--answered`` flags in ``path``: one boolean (or 0/1) per query."""

    answered = load_array(path, "answered")
    if answered.shape != (queries,):
        raise FreekdError(
            f"--answered has shape {tuple(answered.shape)}; expected ({queries},), "
            "one flag per query in --votes"
        )
    if answered.dtype != np.bool_ and not (
        np.issubdtype(answered.dtype, np.number) and np.isin(answered, (0, 1)).all()
    ):
        raise FreekdError(f"--answered in {path} must hold booleans (or 0/1), got {answered.dtype}")
    return answered.astype(bool)


def run_privacy_pate(
    votes_path: Path,
    *,
    sigma: float,
    delta: float,
    sigma_threshold: float | None = None,
    threshold: float | None = None,
    answered_path: Path | None = None,
    orders: list[float] | None = None,
    sanitize: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """``freekd privacy pate``: the (ε, δ) of answering queries with these teacher votes.

    ``sanitize`` (keys ``noise`` (σ_s), ``beta``, ``order``, ``seed``; ``None`` values take the
    defaults) adds the smooth-sensitivity release of the data-dependent ε as ``sanitized``.
    """

    votes = _checked_votes(votes_path)
    if (sigma_threshold is None) != (threshold is None):
        raise FreekdError("Confident-GNMax needs both --sigma1 and --threshold (or neither)")
    answered = None
    if answered_path is not None:
        answered = _checked_answered(answered_path, queries=votes.shape[0])
        if sigma_threshold is None and not np.all(answered):
            raise FreekdError("plain GNMax answers every query; give --sigma1 and --threshold")
    for name, value in (("--sigma2", sigma), ("--sigma1", sigma_threshold)):
        if value is not None and not value > 0:
            raise FreekdError(f"{name} must be positive, got {value}")
    if not 0 < delta < 1:
        raise FreekdError(f"--delta must lie in (0, 1), got {delta}")
    if orders is not None and any(order <= 1 for order in orders):
        raise FreekdError("Rényi --orders must all be greater than 1")
    result = pate_privacy(
        votes,
        sigma=sigma,
        delta=delta,
        sigma_threshold=sigma_threshold,
        threshold=threshold or 0.0,
        answered=answered,
        orders=tuple(orders) if orders else DEFAULT_ORDERS,
    )
    if sanitize is not None:
        teachers = votes.sum(axis=1)
        if not np.all(teachers == teachers[0]):
            raise FreekdError(
                f"--sanitize needs every query voted on by the same number of teachers; the rows "
                f"of {votes_path} sum to {int(teachers.min())}…{int(teachers.max())}"
            )
        result["sanitized"] = checked_sanitized_release(
            votes,
            sigma=sigma,
            delta=delta,
            teachers=int(teachers[0]),
            sigma_threshold=sigma_threshold,
            threshold=threshold or 0.0,
            answered=answered,
            **sanitize,
        )
        result = with_figures(result)
    return result


def run_privacy_dpsgd(
    *, sample_rate: float, noise_multiplier: float, steps: int, delta: float
) -> dict[str, Any]:
    """``freekd privacy dpsgd``: the (ε, δ) of a DP-SGD run (Opacus' RDP analysis)."""

    if not 0 < sample_rate <= 1:
        raise FreekdError(f"--sample-rate must lie in (0, 1], got {sample_rate}")
    low, high = NOISE_MULTIPLIERS
    if not low <= noise_multiplier <= high:
        raise FreekdError(
            f"--noise-multiplier must lie in [{low:g}, {high:g}], got {noise_multiplier:g}"
        )
    if steps < 0:
        raise FreekdError(f"--steps must be ≥ 0, got {steps}")
    if not 0 < delta < 1:
        raise FreekdError(f"--delta must lie in (0, 1), got {delta}")
    return dpsgd_privacy(
        sample_rate=sample_rate, noise_multiplier=noise_multiplier, steps=steps, delta=delta
    )
