"""``limit_pairs``: a seeded, class-balanced part of the training pairs."""

from __future__ import annotations

import torch

from freekd.crossmodal.data import limit_pairs, subset_pairs, templated_pairs
from freekd.data import ImageDataset


def test_limited_pairs_are_class_balanced_seeded_and_a_subset(digits_train: ImageDataset) -> None:
    pairs = templated_pairs(digits_train)
    chosen = limit_pairs(pairs, 55, generator=torch.Generator().manual_seed(0))
    counts = chosen.images.labels.bincount(minlength=10)
    assert len(chosen) == 55
    assert int(counts.max() - counts.min()) <= 1  # 5 or 6 of every digit
    again = limit_pairs(pairs, 55, generator=torch.Generator().manual_seed(0))
    assert torch.equal(again.images.images, chosen.images.images)
    other = limit_pairs(pairs, 55, generator=torch.Generator().manual_seed(1))
    assert not torch.equal(other.images.images, chosen.images.images)
    assert limit_pairs(pairs, len(pairs) + 1, generator=torch.Generator()) is pairs
    # Unlabelled (users' own) pairs: any count of them, no balancing possible.
    own = subset_pairs(pairs, torch.arange(20))
    own.labelled = False
    own.captions = [f"caption {i}" for i in range(20)]
    few = limit_pairs(own, 7, generator=torch.Generator().manual_seed(0))
    assert len(few) == 7
    assert set(few.captions or []) <= set(own.captions)
