"""Deep mutual learning's mimicry terms (losses.kd.mutual_kl)."""

from __future__ import annotations

import pytest
import torch
from hypothesis import given
from hypothesis import strategies as st

from freekd.losses.kd import mutual_kl


def kl(target: torch.Tensor, prediction: torch.Tensor) -> torch.Tensor:
    p, q = target.softmax(1), prediction.softmax(1)
    return (p * (p.log() - q.log())).sum(1).mean()


def test_two_peers_each_match_the_other() -> None:
    torch.manual_seed(0)
    a, b = torch.randn(6, 5), torch.randn(6, 5)
    terms = mutual_kl([a, b])
    torch.testing.assert_close(terms, torch.stack([kl(b, a), kl(a, b)]))


def test_each_peer_averages_over_the_others() -> None:
    torch.manual_seed(1)
    peers = [torch.randn(4, 3) for _ in range(3)]
    terms = mutual_kl(peers)
    torch.testing.assert_close(terms[0], (kl(peers[1], peers[0]) + kl(peers[2], peers[0])) / 2)


def test_targets_are_detached() -> None:
    torch.manual_seed(2)
    peers = [torch.randn(4, 3, requires_grad=True) for _ in range(3)]
    gradients = torch.autograd.grad(mutual_kl(peers)[0], peers, allow_unused=True)
    assert gradients[0] is not None
    assert gradients[0].abs().sum() > 0
    # Peer 0's term moves peer 0 only: the others' predictions are its fixed targets.
    assert all(g is None or not g.abs().sum() for g in gradients[1:])


@given(st.integers(2, 5), st.integers(0, 10_000))
def test_identical_peers_have_nothing_to_learn(count: int, seed: int) -> None:
    logits = torch.randn(3, 4, generator=torch.Generator().manual_seed(seed))
    terms = mutual_kl([logits.clone() for _ in range(count)])
    torch.testing.assert_close(terms, torch.zeros(count), atol=1e-6, rtol=0)


def test_one_peer_is_refused() -> None:
    with pytest.raises(ValueError, match="at least two peers"):
        mutual_kl([torch.randn(2, 3)])
