"""Attention transfer (Zagoruyko & Komodakis 2017) against its closed form and invariances."""

from __future__ import annotations

import pytest
import torch
from hypothesis import given
from hypothesis import strategies as st

from freekd.losses import attention_map, attention_transfer


def features(seed: int, shape: tuple[int, int, int, int] = (4, 6, 7, 7)) -> torch.Tensor:
    return torch.randn(shape, generator=torch.Generator().manual_seed(seed))


def test_map_is_normalized_channel_mean_of_squares() -> None:
    x = features(0)
    by_hand = (x**2).mean(dim=1).reshape(4, -1)
    by_hand = by_hand / by_hand.norm(dim=1, keepdim=True)
    torch.testing.assert_close(attention_map(x), by_hand)
    assert torch.allclose(attention_map(x).norm(dim=1), torch.ones(4))


def test_map_ignores_channel_count_and_scale() -> None:
    """Repeating channels or scaling activations leaves the map unchanged: the teacher and
    student may have different widths and magnitudes."""
    x = features(1)
    torch.testing.assert_close(attention_map(torch.cat([x, x, x], dim=1)), attention_map(x))
    torch.testing.assert_close(attention_map(5 * x), attention_map(x))


@given(seed=st.integers(0, 10_000))
def test_loss_zero_on_identical_maps_and_bounded(seed: int) -> None:
    student, teacher = features(seed), features(seed + 1, (4, 3, 7, 7))
    assert attention_transfer([student], [student]).item() == pytest.approx(0.0, abs=1e-7)
    loss = attention_transfer([student], [teacher]).item()
    # two unit vectors are at most 2 apart: mean of squares ≤ 4 / (H·W)
    assert 0.0 <= loss <= 4.0 / 49 + 1e-6


def test_loss_sums_blocks_by_hand() -> None:
    s1, t1, s2, t2 = features(2), features(3), features(4, (4, 2, 3, 3)), features(5, (4, 5, 3, 3))
    by_hand = ((attention_map(s1) - attention_map(t1)) ** 2).mean() + (
        (attention_map(s2) - attention_map(t2)) ** 2
    ).mean()
    torch.testing.assert_close(attention_transfer([s1, s2], [t1, t2]), by_hand)


def test_mismatched_blocks_are_refused() -> None:
    with pytest.raises(ValueError, match="spatial"):
        attention_transfer([features(0)], [features(1, (4, 6, 5, 5))])
    with pytest.raises(ValueError, match="number"):
        attention_transfer([], [])
