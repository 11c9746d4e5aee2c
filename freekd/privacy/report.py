"""The ``privacy`` section of a report: mechanisms, parameters, RDP curve, ε, δ and what ε means.

Every figure carries one of three labels (DESIGN.md, privacy model):

* ``data-independent``: holds for every data set; publishable;
* ``data-dependent-sanitized``: data-dependent, released through smooth sensitivity;
* ``data-dependent-unsanitized``: data-dependent and **not** private to publish as is.
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
DATA_DEPENDENT_UNSANITIZED = "data-dependent-unsanitized"


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
        ``queries``, the best orders, ``mechanisms`` and ``kind`` (what ``epsilon`` is).
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
    return {
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
    return {
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
