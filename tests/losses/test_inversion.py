"""Data-free synthesis losses against identities and hand formulas."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F

from freekd.losses.inversion import (
    activation,
    bn_statistics,
    information_entropy,
    jensen_shannon,
    kl_discrepancy,
    l2_prior,
    logit_discrepancy,
    onehot,
    total_variation,
)


def randn(*shape: int, seed: int = 0) -> torch.Tensor:
    return torch.randn(*shape, generator=torch.Generator().manual_seed(seed))


def test_bn_statistics_zero_at_match_and_sums_norms() -> None:
    means, variances = [randn(4), randn(8, seed=1)], [randn(4, seed=2).abs(), randn(8).abs()]
    assert bn_statistics(means, variances, means, variances).item() == 0.0
    shifted = [m + 1 for m in means]
    expected = math.sqrt(4) + math.sqrt(8)  # ‖1‖₂ per layer, variances equal
    assert bn_statistics(shifted, variances, means, variances).item() == pytest.approx(expected)
    with pytest.raises(ValueError, match="at least one BatchNorm"):
        bn_statistics([], [], [], [])


def test_onehot_is_cross_entropy_with_own_argmax_or_targets() -> None:
    logits = randn(6, 10)
    torch.testing.assert_close(onehot(logits), F.cross_entropy(logits, logits.argmax(1)))
    targets = torch.arange(6)
    torch.testing.assert_close(onehot(logits, targets), F.cross_entropy(logits, targets))


def test_activation_is_negative_mean_l1() -> None:
    features = randn(5, 7)
    assert activation(features).item() == pytest.approx(-features.abs().sum(1).mean().item())


def test_information_entropy_extremes() -> None:
    uniform = torch.zeros(10, 4)  # every sample uniform → mean distribution uniform
    assert information_entropy(uniform).item() == pytest.approx(-math.log(4), abs=1e-6)
    balanced = torch.eye(4).repeat(2, 1) * 50  # confident, each class equally often
    assert information_entropy(balanced).item() == pytest.approx(-math.log(4), abs=1e-4)
    collapsed = torch.tensor([[50.0, 0, 0, 0]] * 8)  # every sample the same class
    assert information_entropy(collapsed).item() == pytest.approx(0.0, abs=1e-4)


def test_discrepancies_vanish_on_equal_logits() -> None:
    logits = randn(8, 10)
    assert logit_discrepancy(logits, logits).item() == 0.0
    assert kl_discrepancy(logits, logits).item() == pytest.approx(0.0, abs=1e-6)
    assert jensen_shannon(logits, logits).item() == pytest.approx(0.0, abs=1e-6)


def test_jensen_shannon_symmetric_bounded_and_differentiable() -> None:
    a, b = randn(8, 10) * 5, randn(8, 10, seed=3) * 5
    assert jensen_shannon(a, b).item() == pytest.approx(jensen_shannon(b, a).item(), rel=1e-5)
    assert 0 <= jensen_shannon(a, b).item() <= math.log(2) + 1e-6
    a64 = a.double().requires_grad_()
    assert torch.autograd.gradcheck(lambda x: jensen_shannon(x, b.double()), (a64,))


def test_image_priors() -> None:
    flat = torch.full((2, 3, 8, 8), 0.3)
    assert total_variation(flat).item() == 0.0
    assert l2_prior(flat).item() == pytest.approx(0.09)
    stripes = torch.zeros(1, 1, 4, 4)
    stripes[..., ::2] = 1.0  # alternating columns: every horizontal step changes by 1
    assert total_variation(stripes).item() == pytest.approx(1.0)
