"""The ``privacy`` section of a report: mechanisms, parameters, RDP curve, ε, δ and what ε means.

Every figure carries one of three labels (DESIGN.md, privacy model):

* ``data-independent``: holds for every data set; publishable;
* ``data-dependent-sanitized``: data-dependent, released through smooth sensitivity;
* ``data-dependent-unsanitized``: data-dependent and **not** private to publish as is.

:func:`epsilon_figures` lists every ε of a record with its kind, the guarantee first; records
keep it as ``epsilons`` and the CLI prints from it.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
from numpy.typing import ArrayLike

from freekd.privacy import rdp as analysis
from freekd.privacy.accounting import ConfidentGNMaxAccountant, DPSGDAccountant
from freekd.privacy.rdp import DEFAULT_ORDERS

DATA_INDEPENDENT = "data-independent"
DATA_DEPENDENT_SANITIZED = "data-dependent-sanitized"
DATA_DEPENDENT_UNSANITIZED = "data-dependent-unsanitized"

#: What each kind of ε is, as the CLI prints it.
MEANING = {
    DATA_INDEPENDENT: "a guarantee",
    DATA_DEPENDENT_SANITIZED: "smooth-sensitivity release, publishable",
    DATA_DEPENDENT_UNSANITIZED: "NOT private to publish",
}

#: The accountant behind a DP-SGD record's ε.
DPSGD_ACCOUNTANT = "DP-SGD, Opacus RDP"

#: What ``budget_on: data-dependent-unsanitized`` means for the figures (the report's note).
BUDGET_NOTE = (
    "the budget was enforced on the data-dependent ε, so how many queries were answered "
    "depends on the private votes: the data-independent ε is the only guarantee, and it bounds "
    "the answers, not where labelling stopped (budget_on: data-independent covers both)"
)
#: The same, said of one figure.
STOP_CAVEAT = "bounds the answers, not where labelling stopped (budget on the data-dependent ε)"
BUDGET_CAVEAT = "labelling stopped on the data-dependent ε"
ORDER_CAVEAT = "Rényi order picked from the private votes (fix sanitize_order or --ss-order first)"


def _curve(values: np.ndarray) -> list[float]:
    return [float(v) for v in values]


def pate_privacy(
    votes: ArrayLike,
    *,
    sigma: float,
    delta: float,
    sigma_threshold: float | None = None,
    threshold: float = 0.0,
    answered: ArrayLike | None = None,
    orders: Sequence[float] = DEFAULT_ORDERS,
) -> dict[str, Any]:
    """The privacy cost of answering queries with these vote histograms (GNMax or Confident-GNMax).

    Args:
        votes: (N, K) vote counts of every query (answered or not).
        sigma: σ₂, the GNMax noise of answers.
        delta: δ of the (ε, δ) figures.
        sigma_threshold: σ₁ of Confident-GNMax's check (None: plain GNMax, every query answered).
        threshold: T of the check.
        answered: (N,) booleans, which queries were answered (default: all).
        orders: Rényi orders.

    Returns:
        ``epsilon`` (data-dependent, unsanitized), ``data_independent_epsilon``, ``delta``,
        ``orders``, ``rdp`` (data-dependent total curve), ``data_independent_rdp``, ``answered``,
        ``queries``, the best orders, ``mechanisms``, ``kind`` (what ``epsilon`` is) and
        ``epsilons`` (:func:`epsilon_figures`).
    """
    counts = np.atleast_2d(np.asarray(votes, dtype=np.float64))
    mask = (
        np.ones(len(counts), dtype=bool)
        if answered is None
        else np.asarray(answered, dtype=bool).reshape(-1)
    )
    accountant = ConfidentGNMaxAccountant(
        sigma=sigma, sigma_threshold=sigma_threshold, threshold=threshold, orders=tuple(orders)
    )
    accountant.record(counts, mask)
    dependent, independent = accountant.data_dependent_rdp(), accountant.rdp()
    epsilon, order = analysis.epsilon_from_rdp(dependent, accountant.orders, delta=delta)
    independent_epsilon, independent_order = analysis.epsilon_from_rdp(
        independent, accountant.orders, delta=delta
    )
    mechanisms: list[dict[str, Any]] = []
    if sigma_threshold is not None:
        mechanisms.append(
            {
                "name": "threshold",
                "sigma": sigma_threshold,
                "threshold": threshold,
                "queries": int(len(counts)),
            }
        )
    mechanisms.append({"name": "gnmax", "sigma": sigma, "queries": int(mask.sum())})
    record = {
        "epsilon": epsilon,
        "delta": delta,
        "kind": DATA_DEPENDENT_UNSANITIZED,
        "data_independent_epsilon": independent_epsilon,
        "order": order,
        "data_independent_order": independent_order,
        "queries": int(len(counts)),
        "answered": int(mask.sum()),
        "mechanisms": mechanisms,
        "orders": list(accountant.orders),
        "rdp": _curve(dependent),
        "data_independent_rdp": _curve(independent),
        "note": "epsilon depends on the private votes and is not private to publish without "
        "a smooth-sensitivity release; data_independent_epsilon is",
    }
    return with_figures(record)


def dpsgd_privacy(
    *,
    sample_rate: float,
    noise_multiplier: float,
    steps: int,
    delta: float,
    orders: Sequence[float] = DEFAULT_ORDERS,
) -> dict[str, Any]:
    """The (ε, δ) of a DP-SGD run (Opacus' RDP analysis of the sampled Gaussian mechanism)."""
    accountant = DPSGDAccountant(
        sample_rate=sample_rate,
        noise_multiplier=noise_multiplier,
        steps=steps,
        orders=tuple(orders),
    )
    curve = accountant.rdp()
    epsilon, order = analysis.epsilon_from_rdp(curve, accountant.orders, delta=delta)
    record = {
        "epsilon": epsilon,
        "delta": delta,
        "kind": DATA_INDEPENDENT,
        "order": order,
        "mechanisms": [
            {
                "name": "dpsgd",
                "sample_rate": sample_rate,
                "noise_multiplier": noise_multiplier,
                "steps": steps,
            }
        ],
        "orders": list(accountant.orders),
        "rdp": _curve(curve),
    }
    return with_figures(record)


def epsilon_figures(record: dict[str, Any] | None) -> list[dict[str, Any]]:
    """Every ε of a privacy record with its kind, the guarantee first, then the publishable.

    Works on the records of :func:`pate_privacy`, :func:`dpsgd_privacy`, the labeler (with
    its ``sanitized`` release) and on records copied from them (students, checkpoints, older
    files without ``epsilons``). Each figure: ``field`` (where the ε sits in the record),
    ``epsilon``, ``delta``, ``kind``, ``guarantee`` (a DP bound on everything released),
    ``publishable`` (the number itself may be published) and, where the kind alone does not
    say it, ``accountant`` and ``caveat``.

    A data-dependent figure is never a guarantee (PATE 2018 §4.2: it is a function of the
    votes). The sanitized one is a guarantee only when nothing else was decided from the
    private votes: the budget enforced on the data-independent ε and the release's Rényi order
    fixed in advance.
    """
    if not record or record.get("private") is False:
        return []
    delta = record.get("delta")
    budget_on = (record.get("budget") or {}).get("on")
    mechanisms = [m.get("name") for m in record.get("mechanisms") or [] if isinstance(m, dict)]
    figures: list[dict[str, Any]] = []

    def add(field: str, epsilon: Any, kind: str, **extra: Any) -> None:
        if epsilon is None:
            return
        guarantee = kind == DATA_INDEPENDENT
        figures.append(
            {
                "field": field,
                "epsilon": float(epsilon),
                "delta": delta,
                "kind": kind,
                "guarantee": guarantee,
                "publishable": kind in (DATA_INDEPENDENT, DATA_DEPENDENT_SANITIZED),
                **extra,
            }
        )

    top_kind = record.get("kind")
    if record.get("data_independent_epsilon") is not None:
        add("data_independent_epsilon", record["data_independent_epsilon"], DATA_INDEPENDENT)
    elif top_kind == DATA_INDEPENDENT:
        extra = {"accountant": DPSGD_ACCOUNTANT} if mechanisms == ["dpsgd"] else {}
        add("epsilon", record.get("epsilon"), DATA_INDEPENDENT, **extra)
    if budget_on == DATA_DEPENDENT_UNSANITIZED and figures:
        figures[0]["caveat"] = STOP_CAVEAT
    sanitized = record.get("sanitized")
    if isinstance(sanitized, dict) or top_kind == DATA_DEPENDENT_SANITIZED:
        release = sanitized if isinstance(sanitized, dict) else record
        caveats = [BUDGET_CAVEAT] if budget_on == DATA_DEPENDENT_UNSANITIZED else []
        if release.get("order_from_data", True):
            caveats.append(ORDER_CAVEAT)
        field = "epsilon" if release is record else "sanitized.epsilon"
        add(field, release.get("epsilon"), DATA_DEPENDENT_SANITIZED)
        if figures and figures[-1]["kind"] == DATA_DEPENDENT_SANITIZED:
            figures[-1]["guarantee"] = not caveats
            if caveats:
                figures[-1]["caveat"] = "; ".join(caveats)
    if record.get("data_dependent_epsilon") is not None:
        add("data_dependent_epsilon", record["data_dependent_epsilon"], DATA_DEPENDENT_UNSANITIZED)
    elif top_kind == DATA_DEPENDENT_UNSANITIZED:
        add("epsilon", record.get("epsilon"), DATA_DEPENDENT_UNSANITIZED)
    if not figures and record.get("epsilon") is not None:  # a record of no known kind
        add("epsilon", record["epsilon"], str(top_kind or "unknown"))
    # Stable: data-independent, then sanitized, then unsanitized within each group.
    figures.sort(key=lambda figure: (not figure["guarantee"], not figure["publishable"]))
    return figures


def guarantee(record: dict[str, Any] | None) -> dict[str, Any] | None:
    """The figure of ``record`` that is its DP guarantee (data-independent first), or None."""
    return next((f for f in epsilon_figures(record) if f["guarantee"]), None)


def with_figures(record: dict[str, Any]) -> dict[str, Any]:
    """``record`` with ``epsilons`` (:func:`epsilon_figures`) set from its current content."""
    record["epsilons"] = epsilon_figures(record)
    return record


def describe(figure: dict[str, Any]) -> str:
    """One line naming the figure's kind, e.g. ``ε = 4.43 at δ = 1e-05, data-independent: a
    guarantee``, with the figure's caveat after it."""
    kind = figure["kind"]
    meaning = MEANING.get(kind, "of unknown kind: do not publish")
    if kind == DATA_INDEPENDENT and figure.get("caveat"):
        meaning = "the only guarantee"
    if kind == DATA_DEPENDENT_SANITIZED and not figure["guarantee"]:
        meaning += ", not a guarantee"
    if figure.get("accountant"):
        kind = f"{kind} ({figure['accountant']})"
    delta = "" if figure.get("delta") is None else f" at δ = {figure['delta']:g}"
    line = f"ε = {figure['epsilon']:.4g}{delta}, {kind}: {meaning}"
    return f"{line}; {figure['caveat']}" if figure.get("caveat") else line


def inherit(record: dict[str, Any], note: str, **fields: Any) -> dict[str, Any]:
    """A copy of ``record`` for a model made from it by post-processing, every figure kept.

    ``notes`` lists every earlier note (oldest first) and ``note`` joins them with ``note``,
    so a warning such as "not private to publish" is never replaced by a later step's note.
    """
    notes = list(record.get("notes") or ([record["note"]] if record.get("note") else []))
    notes.append(note)
    return with_figures({**record, **fields, "notes": notes, "note": "; ".join(notes)})
