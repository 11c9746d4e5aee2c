"""Semi-supervised regularizers for students trained on a few labels and many unlabelled images."""

from __future__ import annotations

from collections.abc import Callable

import torch
import torch.nn.functional as F
from torch import Tensor


def _unit(directions: Tensor) -> Tensor:
    """Each sample's direction scaled to unit L2 norm (over all its non-batch dimensions)."""
    norms = directions.flatten(1).norm(dim=1).clamp_min(1e-12)
    return directions / norms.view(-1, *([1] * (directions.dim() - 1)))


def _kl_from_logits(clean_logits: Tensor, perturbed_logits: Tensor) -> Tensor:
    """Mean over the batch of KL(softmax(clean) ‖ softmax(perturbed))."""
    return F.kl_div(
        F.log_softmax(perturbed_logits, dim=1),
        F.log_softmax(clean_logits, dim=1),
        log_target=True,
        reduction="batchmean",
    )


def virtual_adversarial(
    model: Callable[[Tensor], Tensor],
    images: Tensor,
    clean_logits: Tensor,
    *,
    epsilon: float = 2.0,
    xi: float = 1e-3,
    power_iterations: int = 1,
    generator: torch.Generator | None = None,
) -> Tensor:
    """Local distributional smoothness, virtual adversarial training (Miyato et al. 2018, TPAMI,
    arXiv:1704.03976) §3.3, Eqs. 5–13.

    The virtual adversarial direction is the dominant eigenvector of the Hessian of
    D(r) = KL(p(·|x) ‖ p(·|x + r)) at r = 0, found by ``power_iterations`` steps of the power
    method with finite differences of size ``xi`` (Eqs. 11–12). The loss is
    D(r_vadv) with r_vadv = ``epsilon`` · unit direction (Eq. 13). As in §3.3 the clean
    distribution is a constant: no gradient flows through ``clean_logits``. No label is used, so
    the term works on unlabelled images.

    Args:
        model: maps (B, …) images to (B, K) logits.
        images: (B, …) inputs.
        clean_logits: (B, K) the model's logits on ``images``.
        epsilon: L2 norm of the adversarial perturbation per image (MNIST in §4.1: 2.0 on
            [0, 1] pixels).
        xi: finite-difference step of the power iteration. §3.3 uses 1e-6; in float32 that
            step is lost to rounding and the power step finds no direction (tested), so 1e-3.
        power_iterations: power-method steps (§4: one suffices).
        generator: random source of the initial direction.
    """
    target = clean_logits.detach()
    noise = torch.randn(images.shape, generator=generator, device="cpu").to(images.device)
    direction = _unit(noise.to(images.dtype))
    for _ in range(power_iterations):
        direction.requires_grad_(True)
        divergence = _kl_from_logits(target, model(images + xi * direction))
        (gradient,) = torch.autograd.grad(divergence, direction)
        direction = _unit(gradient.detach())
    return _kl_from_logits(target, model(images + epsilon * direction))


def conditional_entropy(logits: Tensor) -> Tensor:
    """Mean entropy −Σ_k p_k log p_k of the model's predictions (Grandvalet & Bengio 2005,
    "Semi-supervised learning by entropy minimization"; VAT+EntMin in Miyato et al. 2018 §4.1.2).

    Minimizing it on unlabelled images pushes decision boundaries away from them.

    Args:
        logits: (B, K).
    """
    log_probabilities = F.log_softmax(logits, dim=1)
    return -(log_probabilities.exp() * log_probabilities).sum(dim=1).mean()
