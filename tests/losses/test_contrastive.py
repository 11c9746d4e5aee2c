"""InfoNCE against its identities and an independent cross-entropy formulation."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F

from freekd.losses.contrastive import info_nce


def randn(*shape: int, seed: int = 0) -> torch.Tensor:
    return torch.randn(*shape, generator=torch.Generator().manual_seed(seed))


@pytest.mark.parametrize("batch", [1, 4, 9])
def test_equal_embeddings_give_log_batch(batch: int) -> None:
    same = torch.ones(batch, 5)
    loss = info_nce(same, same, temperature=0.1)
    assert loss.item() == pytest.approx(math.log(batch), abs=1e-6)


def test_non_negative_and_small_for_matching_distinct_pairs() -> None:
    for seed in range(5):
        loss = info_nce(randn(6, 8, seed=seed), randn(6, 8, seed=seed + 10), temperature=0.5)
        assert loss.item() >= 0
    orthogonal = torch.eye(4) * 3  # each query matches only its own key
    assert info_nce(orthogonal, orthogonal, temperature=0.05).item() < 1e-6


def test_agrees_with_an_independent_cross_entropy_reference() -> None:
    queries, keys, negatives = randn(5, 7), randn(5, 7, seed=1), randn(3, 7, seed=2)
    temperature = 0.2

    def unit(x: torch.Tensor) -> torch.Tensor:
        return x / x.norm(dim=1, keepdim=True)

    # Row i: [similarity to every key, similarity to every negative]; the answer is column i.
    candidates = torch.cat([unit(keys), unit(negatives)])
    logits = torch.stack([unit(queries)[i] @ candidates.T for i in range(5)]) / temperature
    expected = torch.stack(
        [F.cross_entropy(logits[i : i + 1], torch.tensor([i])) for i in range(5)]
    )
    got = info_nce(queries, keys, temperature=temperature, negatives=negatives)
    torch.testing.assert_close(got, expected.mean())
    without = info_nce(queries, keys, temperature=temperature)
    torch.testing.assert_close(without, F.cross_entropy(logits[:, :5], torch.arange(5)))


def test_negatives_raise_the_loss() -> None:
    queries, keys = randn(6, 4), randn(6, 4, seed=1)
    base = info_nce(queries, keys, temperature=0.3)
    more = info_nce(queries, keys, temperature=0.3, negatives=randn(10, 4, seed=2))
    assert more.item() > base.item()
    empty = info_nce(queries, keys, temperature=0.3, negatives=torch.zeros(0, 4))
    torch.testing.assert_close(empty, base)


def test_scale_invariant_and_rejects_bad_inputs() -> None:
    queries, keys = randn(3, 4), randn(3, 4, seed=1)
    torch.testing.assert_close(
        info_nce(5 * queries, 0.1 * keys, temperature=0.1), info_nce(queries, keys, temperature=0.1)
    )
    with pytest.raises(ValueError, match="temperature"):
        info_nce(queries, keys, temperature=0.0)
    with pytest.raises(ValueError, match="one shape"):
        info_nce(queries, keys[:2], temperature=0.1)
