"""Accountants: what has been released so far, as one RDP curve, and its (ε, δ).

Small, typed units over :mod:`freekd.privacy.rdp`. Mechanism parameters are fixed when an
accountant is built; a varying schedule is a :func:`compose` of accountants, whose curves add
order by order (RDP composition, Mironov 2017 Prop. 1). All accountants of one composition share
their orders. None subclasses Opacus' ``IAccountant``, whose ``step(noise_multiplier,
sample_rate)`` is DP-SGD shaped; :class:`DPSGDAccountant` carries a DP-SGD run's parameters into
the same protocol so that DP-SGD and PATE add into one curve.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol

import numpy as np
from numpy.typing import ArrayLike

from freekd.privacy import rdp as analysis
from freekd.privacy.rdp import DEFAULT_ORDERS, FloatArray


class Accountant(Protocol):
    """The accounting protocol every accountant and every composition honours."""

    @property
    def orders(self) -> tuple[float, ...]: ...

    def rdp(self) -> FloatArray: ...

    def epsilon(self, *, delta: float) -> float: ...

    def state_dict(self) -> dict[str, Any]: ...

    def load_state_dict(self, state: Mapping[str, Any]) -> None: ...


class _CurveMixin:
    """``epsilon`` and (de)serialization shared by the accountants below."""

    orders: tuple[float, ...]
    KIND: str = ""
    #: Fields that fix the mechanism: a saved state with other values is refused on load.
    MECHANISM: tuple[str, ...] = ()
    #: Fields that change as queries are answered.
    COUNTERS: tuple[str, ...] = ()

    def rdp(self) -> FloatArray:
        raise NotImplementedError

    def epsilon(self, *, delta: float) -> float:
        return analysis.epsilon_from_rdp(self.rdp(), self.orders, delta=delta)[0]

    def state_dict(self) -> dict[str, Any]:
        state: dict[str, Any] = {"kind": self.KIND, "orders": list(self.orders)}
        for name in (*self.MECHANISM, *self.COUNTERS):
            value = getattr(self, name)
            state[name] = value.tolist() if isinstance(value, np.ndarray) else value
        return state

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        expected = {"kind": self.KIND, "orders": list(self.orders)}
        expected.update({name: getattr(self, name) for name in self.MECHANISM})
        for name, value in expected.items():
            if state.get(name) != value:
                raise ValueError(
                    f"saved {self.KIND or 'accountant'} state has {name}={state.get(name)!r}, "
                    f"this accountant has {value!r}; a ledger continues only the mechanism it "
                    "started with"
                )
        for name in self.COUNTERS:
            current = getattr(self, name)
            value = state[name]
            setattr(
                self,
                name,
                np.asarray(value, dtype=np.float64) if isinstance(current, np.ndarray) else value,
            )


def _validated_orders(orders: Sequence[float]) -> tuple[float, ...]:
    values = tuple(float(order) for order in orders)
    analysis._orders(values)  # raises on orders ≤ 1 or non-finite ones
    return values


@dataclass
class GNMaxAccountant(_CurveMixin):
    """Data-independent RDP of GNMax answers, Papernot et al. 2018 Prop. 8: α/σ² per query.

    Args:
        sigma: the noise σ on every vote count.
        orders: Rényi orders of the curve.
        queries: answers released so far.
    """

    sigma: float
    orders: tuple[float, ...] = DEFAULT_ORDERS
    queries: int = 0
    KIND = "gnmax"
    MECHANISM = ("sigma",)
    COUNTERS = ("queries",)

    def __post_init__(self) -> None:
        self.orders = _validated_orders(self.orders)
        analysis._positive(self.sigma, "sigma")

    def step(self, *, count: int = 1) -> None:
        if count < 0:
            raise ValueError(f"count must be ≥ 0, got {count}")
        self.queries += count

    def rdp(self) -> FloatArray:
        return self.queries * analysis.gnmax_rdp(self.orders, sigma=self.sigma)


@dataclass
class LNMaxAccountant(_CurveMixin):
    """Data-independent RDP of LNMax answers (Papernot et al. 2017): each is (2γ, 0)-DP.

    Args:
        gamma: inverse scale of the Laplace noise.
        orders: Rényi orders of the curve.
        queries: answers released so far.
    """

    gamma: float
    orders: tuple[float, ...] = DEFAULT_ORDERS
    queries: int = 0
    KIND = "lnmax"
    MECHANISM = ("gamma",)
    COUNTERS = ("queries",)

    def __post_init__(self) -> None:
        self.orders = _validated_orders(self.orders)
        analysis._positive(self.gamma, "gamma")

    def step(self, *, count: int = 1) -> None:
        if count < 0:
            raise ValueError(f"count must be ≥ 0, got {count}")
        self.queries += count

    def rdp(self) -> FloatArray:
        return self.queries * analysis.laplace_rdp(self.orders, gamma=self.gamma)


@dataclass
class ConfidentGNMaxAccountant(_CurveMixin):
    """Confident-GNMax (Papernot et al. 2018 Alg. 1): threshold check, then GNMax if it passes.

    Keeps two curves side by side:

    * ``rdp()`` is **data-independent**: α/(2σ₁²) for every check plus α/σ₂² for every answer.
      It may be published as is, and budgets are enforced against it.
    * ``data_dependent_rdp()`` adds, per query, the exact data-dependent cost of the check
      (``rdp.threshold_data_dependent_rdp``) and, for answered queries, Thm 6's bound on the
      GNMax step (``rdp.gnmax_data_dependent_rdp``). It is a function of the private votes: its ε
      is not private to publish without a smooth-sensitivity release (§B), so reports label it
      data-dependent-unsanitized.

    ``sigma_threshold = None`` gives plain GNMax (no check) with the same two curves.

    Args:
        sigma: σ₂, the GNMax noise on the votes of answered queries.
        sigma_threshold: σ₁, the noise of the threshold check (None: no check).
        threshold: T, the noisy largest count that must be reached for an answer.
        orders: Rényi orders of both curves.
    """

    sigma: float
    sigma_threshold: float | None = None
    threshold: float = 0.0
    orders: tuple[float, ...] = DEFAULT_ORDERS
    checks: int = 0
    answered: int = 0
    dependent: FloatArray = field(default_factory=lambda: np.zeros(0))
    KIND = "confident-gnmax"
    MECHANISM = ("sigma", "sigma_threshold", "threshold")
    COUNTERS = ("checks", "answered", "dependent")

    def __post_init__(self) -> None:
        self.orders = _validated_orders(self.orders)
        analysis._positive(self.sigma, "sigma")
        if self.sigma_threshold is not None:
            analysis._positive(self.sigma_threshold, "sigma_threshold")
        if self.dependent.size == 0:
            self.dependent = np.zeros(len(self.orders))

    def record(self, votes: ArrayLike, answered: ArrayLike) -> None:
        """Account for queries with these vote histograms; ``answered`` marks the released ones.

        Args:
            votes: (N, K) vote counts of the queries.
            answered: (N,) booleans: the check passed and a label was released.
        """
        counts = np.atleast_2d(np.asarray(votes, dtype=np.float64))
        mask = np.atleast_1d(np.asarray(answered, dtype=bool))
        if mask.shape != (len(counts),):
            raise ValueError(f"answered has shape {mask.shape}, votes has {len(counts)} rows")
        if self.sigma_threshold is None and not mask.all():
            raise ValueError("plain GNMax (no threshold) answers every query")
        total = np.zeros(len(self.orders))
        if self.sigma_threshold is not None:
            self.checks += len(counts)
            total += analysis.threshold_data_dependent_rdp(
                counts, self.orders, threshold=self.threshold, sigma=self.sigma_threshold
            ).sum(axis=0)
        if mask.any():
            self.answered += int(mask.sum())
            log_q = analysis.gnmax_log_q(counts[mask], sigma=self.sigma)
            total += analysis.gnmax_data_dependent_rdp(log_q, self.orders, sigma=self.sigma).sum(
                axis=0
            )
        self.dependent = self.dependent + total

    def rdp(self) -> FloatArray:
        curve = self.answered * analysis.gnmax_rdp(self.orders, sigma=self.sigma)
        if self.sigma_threshold is not None:
            curve = curve + self.checks * analysis.threshold_rdp(
                self.orders, sigma=self.sigma_threshold
            )
        return curve

    def data_dependent_rdp(self) -> FloatArray:
        return np.asarray(self.dependent, dtype=np.float64).copy()

    def data_dependent_epsilon(self, *, delta: float) -> float:
        """ε of the data-dependent curve: **not private to publish** (see the class docstring)."""
        return analysis.epsilon_from_rdp(self.dependent, self.orders, delta=delta)[0]


@dataclass
class DPSGDAccountant(_CurveMixin):
    """A DP-SGD run (Opacus, Poisson sampling) as an accountant, so it composes with PATE.

    Args:
        sample_rate: Poisson sampling rate per step.
        noise_multiplier: Opacus' σ/C.
        steps: optimizer steps taken.
        orders: Rényi orders of the curve.
    """

    sample_rate: float
    noise_multiplier: float
    steps: int = 0
    orders: tuple[float, ...] = DEFAULT_ORDERS
    KIND = "dpsgd"
    MECHANISM = ("sample_rate", "noise_multiplier")
    COUNTERS = ("steps",)

    def __post_init__(self) -> None:
        self.orders = _validated_orders(self.orders)

    def step(self, *, count: int = 1) -> None:
        if count < 0:
            raise ValueError(f"count must be ≥ 0, got {count}")
        self.steps += count

    def rdp(self) -> FloatArray:
        return analysis.dpsgd_rdp(
            self.orders,
            sample_rate=self.sample_rate,
            noise_multiplier=self.noise_multiplier,
            steps=self.steps,
        )


@dataclass
class Composition:
    """Several accountants over one data set: their RDP curves add order by order."""

    parts: tuple[Accountant, ...]

    def __post_init__(self) -> None:
        if not self.parts:
            raise ValueError("compose() needs at least one accountant")
        first = self.parts[0].orders
        for part in self.parts[1:]:
            if part.orders != first:
                raise ValueError("composed accountants must use the same Rényi orders")

    @property
    def orders(self) -> tuple[float, ...]:
        return self.parts[0].orders

    def rdp(self) -> FloatArray:
        return np.sum([part.rdp() for part in self.parts], axis=0)

    def epsilon(self, *, delta: float) -> float:
        return analysis.epsilon_from_rdp(self.rdp(), self.orders, delta=delta)[0]

    def state_dict(self) -> dict[str, Any]:
        return {"kind": "composition", "parts": [part.state_dict() for part in self.parts]}

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        parts = state.get("parts", [])
        if state.get("kind") != "composition" or len(parts) != len(self.parts):
            raise ValueError("saved state is not a composition of the same accountants")
        for part, saved in zip(self.parts, parts, strict=True):
            part.load_state_dict(saved)


def compose(*accountants: Accountant) -> Composition:
    """The accountant of everything ``accountants`` released about one data set."""
    return Composition(tuple(accountants))
