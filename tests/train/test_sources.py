"""Batch sources give each example's index in its dataset (Batch.indices)."""

from __future__ import annotations

import torch

from freekd.data import Batch, ImageDataset
from freekd.train import (
    LoaderSource,
    PairedSource,
    PoissonSource,
    SemiSupervisedSource,
    SubsetSource,
    TrainState,
)


def assert_indexes(data: ImageDataset, batch: Batch) -> None:
    assert batch.indices is not None
    assert batch.indices.dtype == torch.int64
    expected = data.batch(batch.indices.flatten())
    assert torch.equal(batch.images.flatten(0, batch.indices.dim() - 1), expected.images)
    if batch.labels is not None:
        assert expected.labels is not None
        assert torch.equal(batch.labels.flatten(), expected.labels)


def test_loader_batches_carry_their_dataset_indices(digits_train: ImageDataset) -> None:
    source = LoaderSource(digits_train, batch_size=100, seed=3)
    batches = list(source.batches(TrainState()))
    for batch in batches:
        assert_indexes(digits_train, batch)
    seen = torch.cat([b.indices for b in batches if b.indices is not None])
    assert len(seen.unique()) == len(seen) == 100 * source.steps_per_epoch()  # one pass
    # Under DDP each rank's indices are its slice of the global batch.
    ranks = [
        LoaderSource(digits_train, batch_size=100, seed=3, rank=r, world_size=2) for r in (0, 1)
    ]
    first = [next(iter(r.batches(TrainState()))).indices for r in ranks]
    assert torch.equal(torch.cat(first), batches[0].indices)  # type: ignore[arg-type]
    # With augmentation and without labels the indices are the same ones.
    hidden = LoaderSource(
        digits_train, batch_size=100, seed=3, labelled=False, augment=lambda x, rng: x
    )
    unlabelled = next(iter(hidden.batches(TrainState())))
    assert unlabelled.labels is None
    assert torch.equal(unlabelled.indices, batches[0].indices)  # type: ignore[arg-type]


def test_other_real_data_sources_carry_indices(digits_train: ImageDataset) -> None:
    state = TrainState()
    poisson = next(iter(PoissonSource(digits_train, sample_rate=0.05, seed=1).batches(state)))
    assert_indexes(digits_train, poisson)
    subsets = torch.stack([torch.arange(0, 200), torch.arange(100, 300)])
    stacked = next(iter(SubsetSource(digits_train, subsets, batch_size=32, seed=1).batches(state)))
    assert stacked.indices is not None
    assert stacked.indices.shape == (2, 32)
    assert_indexes(digits_train, stacked)
    assert all(
        set(row.tolist()) <= set(s.tolist())
        for row, s in zip(stacked.indices, subsets, strict=True)
    )
    texts = lambda chosen, rng: chosen.view(-1, 1)  # noqa: E731  (the caption of i is i)
    paired = next(iter(PairedSource(digits_train, texts, batch_size=16, seed=1).batches(state)))
    assert_indexes(digits_train, paired)
    assert torch.equal(paired.texts.flatten(), paired.indices)  # type: ignore[union-attr,arg-type]


def test_paired_source_augments_images_only_and_repeatably(digits_train: ImageDataset) -> None:
    from freekd.data import AUGMENTATIONS

    # captions drawn from their generator: an augmentation that consumed it would change them
    texts = lambda chosen, rng: torch.randint(0, 1000, (len(chosen), 1), generator=rng)  # noqa: E731
    shift = AUGMENTATIONS.get("crop")

    def first(augment: object) -> Batch:
        source = PairedSource(digits_train, texts, batch_size=16, seed=1, augment=augment)  # type: ignore[arg-type]
        return next(iter(source.batches(TrainState())))

    plain, shifted, again = first(None), first(shift), first(shift)
    assert torch.equal(plain.indices, shifted.indices)  # type: ignore[arg-type]
    assert torch.equal(plain.texts, shifted.texts)  # type: ignore[arg-type]
    assert not torch.equal(plain.images, shifted.images)
    assert torch.equal(shifted.images, again.images)
    assert shifted.images.shape == plain.images.shape


def test_semi_supervised_indices_index_each_half_in_its_own_dataset(
    digits_train: ImageDataset,
) -> None:
    labelled, unlabelled = (
        digits_train.subset(torch.arange(40)),
        digits_train.subset(torch.arange(40, 1000)),
    )
    source = SemiSupervisedSource(
        labelled, unlabelled, batch_size=64, labelled_batch_size=8, seed=2
    )
    batch = next(iter(source.batches(TrainState())))
    assert batch.indices is not None
    assert batch.indices.shape == (72,)
    assert_indexes(labelled, Batch(batch.images[:8], batch.labels[:8], indices=batch.indices[:8]))  # type: ignore[index]
    assert_indexes(unlabelled, Batch(batch.images[8:], None, indices=batch.indices[8:]))


def test_batch_to_moves_indices() -> None:
    batch = Batch(torch.rand(2, 1, 4, 4), torch.tensor([1, 2]), indices=torch.tensor([5, 9]))
    moved = batch.to("meta")
    assert moved.indices is not None
    assert moved.indices.device.type == "meta"
    assert moved.labels is not None
    assert moved.labels.device.type == "meta"
    assert Batch(torch.rand(1, 1, 2, 2)).to("cpu").indices is None
