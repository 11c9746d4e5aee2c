"""The smooth-sensitivity release of a data-dependent ε, with user errors as one line."""

from __future__ import annotations

from typing import Any

from freekd.errors import FreekdError
from freekd.privacy.smooth import DEFAULT_SIGMA, sanitized_release


def checked_sanitized_release(
    votes: Any,
    *,
    noise: float | None,
    beta: float | None,
    order: float | None,
    seed: int,
    **arguments: Any,
) -> dict[str, Any]:
    """``privacy.smooth.sanitized_release`` with None meaning its default, errors as one line."""

    noise = DEFAULT_SIGMA if noise is None else noise
    if not noise > 0 or (beta is not None and not beta > 0):
        raise FreekdError(f"the smooth-sensitivity σ_s and β must be positive, got {noise}, {beta}")
    if order is not None and not 1 < order <= MAX_ORDER:  # 1e308 was a "math domain error"
        raise FreekdError(
            f"the smooth-sensitivity order must lie in (1, {MAX_ORDER:g}], got {order:g}"
        )
    try:
        return sanitized_release(votes, noise=noise, beta=beta, order=order, seed=seed, **arguments)
    except (ValueError, ArithmeticError) as error:
        raise FreekdError(
            f"smooth-sensitivity release: {error}; check the order, σ_s and β (--ss-order, "
            "--ss-sigma, --ss-beta)"
        ) from None


#: The largest Rényi order of a release: the largest freekd accounts over (``DEFAULT_ORDERS``).
MAX_ORDER = 1024.0
