"""Virtual adversarial training's smoothness term and the entropy term against closed forms."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F
from hypothesis import given, settings
from hypothesis import strategies as st

from freekd.losses.semi import conditional_entropy, virtual_adversarial


def one_pixel_model(images: torch.Tensor) -> torch.Tensor:
    """Logits that depend on pixel (0, 0, 0) alone: the Hessian of the KL has rank one."""
    pixel = images[:, 0, 0, 0]
    return torch.stack([3 * pixel, -3 * pixel, torch.zeros_like(pixel)], dim=1)


def kl(clean: torch.Tensor, perturbed: torch.Tensor, *, per_sample: bool = False) -> torch.Tensor:
    p = F.softmax(clean, dim=1)
    divergence = (p * (F.log_softmax(clean, dim=1) - F.log_softmax(perturbed, dim=1))).sum(1)
    return divergence if per_sample else divergence.mean()


def test_finds_the_only_sensitive_direction() -> None:
    # With a rank-one Hessian the power step returns ±e₀ per image whatever the random start, so
    # each image's term is its KL at x + ε·e₀ or at x − ε·e₀.
    torch.manual_seed(0)
    images = torch.rand(5, 1, 4, 4)
    clean = one_pixel_model(images)
    loss = virtual_adversarial(one_pixel_model, images, clean, epsilon=0.5)
    shift = torch.zeros_like(images)
    shift[:, 0, 0, 0] = 0.5
    both = torch.stack(
        [kl(clean, one_pixel_model(images + sign * shift), per_sample=True) for sign in (1, -1)]
    )
    assert both.min(0).values.mean().item() - 1e-5 <= loss.item()
    assert loss.item() <= both.max(0).values.mean().item() + 1e-5


def test_the_papers_finite_difference_step_vanishes_in_float32() -> None:
    # Why the default xi is 1e-3, not §3.3's 1e-6: the 1e-6 step is lost to float32 rounding,
    # the power step then has no gradient and the perturbation comes out (nearly) zero.
    torch.manual_seed(0)
    images = torch.rand(5, 1, 4, 4)
    clean = one_pixel_model(images)
    default = virtual_adversarial(one_pixel_model, images, clean, epsilon=0.5).item()
    tiny = virtual_adversarial(one_pixel_model, images, clean, epsilon=0.5, xi=1e-6).item()
    assert tiny < 0.2 * default


def test_beats_a_random_direction_of_the_same_norm() -> None:
    torch.manual_seed(1)
    net = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(16, 32), torch.nn.Tanh(),
                              torch.nn.Linear(32, 4))  # fmt: skip
    images = torch.rand(64, 1, 4, 4)
    clean = net(images)
    adversarial = virtual_adversarial(net, images, clean, epsilon=0.3, xi=1e-3).item()
    noise = torch.randn_like(images)
    noise = 0.3 * noise / noise.flatten(1).norm(dim=1).view(-1, 1, 1, 1)
    assert adversarial > 2 * kl(clean, net(images + noise)).item()


def test_no_gradient_through_the_clean_distribution() -> None:
    net = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(16, 3))
    images = torch.rand(8, 1, 4, 4)
    clean = net(images)
    loss = virtual_adversarial(net, images, clean, epsilon=0.5)
    (through_clean,) = torch.autograd.grad(loss, clean, allow_unused=True)
    assert through_clean is None
    loss.backward()
    assert all(p.grad is not None and p.grad.abs().sum() > 0 for p in net.parameters())


@settings(max_examples=25, deadline=None)
@given(seed=st.integers(0, 10_000), epsilon=st.floats(0.01, 5.0))
def test_non_negative_and_zero_for_a_constant_model(seed: int, epsilon: float) -> None:
    generator = torch.Generator().manual_seed(seed)
    images = torch.rand(4, 1, 3, 3, generator=generator)

    def constant(x: torch.Tensor) -> torch.Tensor:
        return torch.zeros(x.shape[0], 5) + 0 * x.sum()

    assert virtual_adversarial(constant, images, constant(images), epsilon=epsilon) == 0
    net = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(9, 5))
    loss = virtual_adversarial(net, images, net(images), epsilon=epsilon, generator=generator)
    assert loss.item() >= -1e-7


def test_conditional_entropy_closed_forms() -> None:
    assert conditional_entropy(torch.zeros(3, 7)).item() == pytest.approx(math.log(7))
    confident = torch.tensor([[50.0, 0.0, 0.0], [0.0, 0.0, 50.0]])
    assert conditional_entropy(confident).item() == pytest.approx(0.0, abs=1e-12)
    logits = torch.tensor([[1.0, 2.0]])
    p = torch.softmax(logits, dim=1)
    assert conditional_entropy(logits).item() == pytest.approx(-(p * p.log()).sum().item())
