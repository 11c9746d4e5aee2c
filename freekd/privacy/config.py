"""DP-SGD settings shared by every command that trains with DP-SGD (Abadi et al. 2016)."""

from __future__ import annotations

from dataclasses import dataclass

from freekd.config import Checks

#: The noise multipliers (σ/C) freekd accounts for: wider than any DP-SGD run uses.
NOISE_MULTIPLIERS = (1e-3, 1e6)


@dataclass(frozen=True)
class DPConfig:
    """DP-SGD for ``freekd teacher train --dp`` (Abadi et al. 2016, arXiv:1607.00133, Alg. 1).

    Per-example gradients are clipped to ``max_grad_norm`` and Gaussian noise of standard
    deviation ``noise_multiplier · max_grad_norm`` is added to their sum (Opacus'
    ``DPOptimizer``); batches are Poisson samples at rate ``batch_size / N``. The privacy cost
    is Opacus' RDP analysis of the sampled Gaussian mechanism, converted to (ε, δ).

    Attributes:
        enabled: train with DP-SGD.
        epsilon: target ε for the whole run; the noise multiplier is chosen to meet it
            (Opacus' ``get_noise_multiplier``) unless ``noise_multiplier`` is given.
        delta: δ of the guarantee (below 1/N: 1e-5 for 60,000 images).
        max_grad_norm: per-example clipping norm C.
        noise_multiplier: σ/C; overrides ``epsilon`` when given.
    """

    enabled: bool = False
    epsilon: float | None = None
    delta: float = 1e-5
    max_grad_norm: float = 1.0
    noise_multiplier: float | None = None

    def __post_init__(self) -> None:
        check = Checks(self)
        check.positive("epsilon", optional=True)
        check.within("delta", 0, 1, closed="()")
        check.positive("max_grad_norm")
        # Below 1e-3 the ε is effectively infinite, and Opacus' RDP analysis divides by zero
        # at 1e-300 and overflows at 1e8.
        check.within("noise_multiplier", *NOISE_MULTIPLIERS, closed="[]", optional=True)
