"""Privacy budgets: how many queries an (ε, δ) budget allows, decided before anything is spent."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from freekd.privacy.accounting import Accountant


@dataclass(frozen=True)
class PrivacyBudget:
    """A target (ε, δ): nothing may be released that would push ε past ``epsilon`` at ``delta``."""

    epsilon: float
    delta: float

    def __post_init__(self) -> None:
        if not self.epsilon > 0:
            raise ValueError(f"a privacy budget needs ε > 0, got {self.epsilon}")
        if not 0 < self.delta < 1:
            raise ValueError(f"a privacy budget needs δ in (0, 1), got {self.delta}")

    def allows(self, accountant: Accountant) -> bool:
        return accountant.epsilon(delta=self.delta) <= self.epsilon


def max_queries(
    accountant_after: Callable[[int], Accountant], budget: PrivacyBudget, *, limit: int = 10**9
) -> int:
    """The largest Q ≤ ``limit`` with ε(Q) ≤ budget, by bisection (ε only grows with Q).

    The counterpart of Opacus' ``get_noise_multiplier`` for a fixed mechanism: the answer is
    computed before any query is spent, so a run that answers at most this many never exceeds
    the budget.

    Args:
        accountant_after: Q ↦ the accountant after Q queries (data-independent curves only:
            a bound that depends on the answers cannot be planned ahead).
        budget: the (ε, δ) target.
        limit: the largest Q worth considering.

    Returns:
        Q with ε(Q) ≤ ε_budget < ε(Q + 1), or ``limit`` if even that fits.
    """
    if budget.allows(accountant_after(limit)):
        return limit
    low, high = 0, limit  # ε(low) ≤ budget < ε(high)
    while high - low > 1:
        middle = (low + high) // 2
        if budget.allows(accountant_after(middle)):
            low = middle
        else:
            high = middle
    return low
