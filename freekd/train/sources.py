"""Batch sources: where the inputs of each training step come from."""

from __future__ import annotations

from collections.abc import Callable, Iterator

import torch
from torch import Tensor

from freekd.data.batch import UNLABELLED, Batch
from freekd.data.datasets import ImageDataset
from freekd.errors import FreekdError
from freekd.train.trainer import TrainState

Augment = Callable[..., Tensor]


def seeded_generator(seed: int, *keys: int) -> torch.Generator:
    """A generator seeded by a fixed mixing of (seed, *keys) into one 63-bit seed."""
    generator = torch.Generator()
    value = seed
    for key in keys:
        value = (value * 1_000_003 + key + 1) % (2**63 - 1)
    generator.manual_seed(value)
    return generator


class LoaderSource:
    """Shuffled mini-batches of an in-memory dataset, resumable mid-epoch and shardable.

    The order of epoch ``e`` is a permutation drawn from a generator seeded with ``(seed, e)``,
    and batch ``i``'s augmentation from one seeded with ``(seed, e, i)``. The source therefore has
    no state to checkpoint: a resumed run skips the batches already done and sees exactly the
    batches an uninterrupted run would.

    Under DistributedDataParallel each of ``world_size`` processes takes its slice of every global
    batch, so W processes with ``batch_size // W`` images each see the same global batches as one
    process with ``batch_size`` (the last incomplete batch is dropped).

    Args:
        dataset: the images and labels.
        batch_size: global batch size.
        seed: the run's seed.
        augment: optional batch augmentation ``fn(images, rng=generator)``.
        labelled: yield labels (``False`` hides them, e.g. for label-free transfer sets).
        max_steps_per_epoch: end an epoch after this many batches (each epoch still draws a new
            order over the whole dataset); ``None``: one full pass.
        fixed_steps_per_epoch: make every epoch exactly this many batches, going through the
            data as many times as needed (pass ``p`` of epoch ``e`` in an order seeded with
            ``(seed, e, p)``); for small data sets that must match another run's step count.
        rank: this process's rank.
        world_size: number of processes.
    """

    def __init__(
        self,
        dataset: ImageDataset,
        *,
        batch_size: int,
        seed: int,
        augment: Augment | None = None,
        labelled: bool = True,
        max_steps_per_epoch: int | None = None,
        fixed_steps_per_epoch: int | None = None,
        rank: int = 0,
        world_size: int = 1,
    ) -> None:
        if max_steps_per_epoch is not None and fixed_steps_per_epoch is not None:
            raise FreekdError("give max_steps_per_epoch or fixed_steps_per_epoch, not both")
        if batch_size % world_size:
            raise FreekdError(
                f"batch size {batch_size} does not split over {world_size} processes; "
                f"use a multiple of {world_size}"
            )
        if len(dataset) < batch_size:
            raise FreekdError(
                f"dataset {dataset.name} has {len(dataset)} images, fewer than one batch of "
                f"{batch_size}; lower --batch-size"
            )
        self.dataset = dataset
        self.batch_size = batch_size
        self.seed = seed
        self.augment = augment
        self.labelled = labelled
        self.max_steps_per_epoch = max_steps_per_epoch
        self.fixed_steps_per_epoch = fixed_steps_per_epoch
        self.rank = rank
        self.world_size = world_size

    def steps_per_epoch(self) -> int:
        full_pass = len(self.dataset) // self.batch_size
        if self.fixed_steps_per_epoch is not None:
            return self.fixed_steps_per_epoch
        return min(full_pass, self.max_steps_per_epoch or full_pass)

    def _generator(self, *keys: int) -> torch.Generator:
        return seeded_generator(self.seed, *keys)

    def batches(self, state: TrainState) -> Iterator[Batch]:
        full_pass = len(self.dataset) // self.batch_size
        per_rank = self.batch_size // self.world_size
        mine = slice(self.rank * per_rank, (self.rank + 1) * per_rank)
        orders: dict[int, Tensor] = {}
        for index in range(state.step_in_epoch, self.steps_per_epoch()):
            passes, within = divmod(index, full_pass)
            if passes not in orders:
                keys = (state.epoch,) if passes == 0 else (state.epoch, -1 - passes)
                generator = self._generator(*keys)
                orders = {passes: torch.randperm(len(self.dataset), generator=generator)}
            start = within * self.batch_size
            chosen = orders[passes][start : start + self.batch_size]
            if self.augment is None:
                batch = self.dataset.batch(chosen[mine])
                images = batch.images
            else:
                # Augment the whole global batch, then take this rank's slice: every process
                # draws the same random offsets, so W processes see exactly one process's batch.
                batch = self.dataset.batch(chosen)
                images = self.augment(batch.images, rng=self._generator(state.epoch, index))[mine]
                batch = Batch(images, None if batch.labels is None else batch.labels[mine])
            labels = batch.labels if self.labelled else None
            yield Batch(images, labels, indices=chosen[mine])


class SemiSupervisedSource:
    """Mixed batches: ``labelled_batch_size`` labelled images, then ``batch_size`` unlabelled ones.

    For semi-supervised students (``methods.semi.VirtualAdversarial``): a few labelled images
    (e.g. the answered PATE queries) cycle as often as needed while the unlabelled set (the
    public pool) is gone through once per epoch. Unlabelled images carry the label
    ``data.batch.UNLABELLED`` (−1). Both halves are ``LoaderSource`` objects, so the source has no
    state to checkpoint.

    ``Batch.indices`` give each image's position in its own dataset: the labelled ones (first)
    in ``labelled``, the unlabelled ones in ``unlabelled``.

    Args:
        labelled: the labelled images.
        unlabelled: the unlabelled images (their labels, if any, are never yielded).
        batch_size: unlabelled images per step.
        labelled_batch_size: labelled images per step.
        seed: the run's seed.
        augment: optional batch augmentation ``fn(images, rng=generator)``.
    """

    def __init__(
        self,
        labelled: ImageDataset,
        unlabelled: ImageDataset,
        *,
        batch_size: int,
        labelled_batch_size: int,
        seed: int,
        augment: Augment | None = None,
    ) -> None:
        # A different seed for the unlabelled half, so its orders and augmentations are not the
        # labelled half's.
        self.unlabelled = LoaderSource(
            unlabelled, batch_size=batch_size, seed=seed + 1_000_003, augment=augment
        )
        self.labelled = LoaderSource(
            labelled,
            batch_size=min(labelled_batch_size, len(labelled)),
            seed=seed,
            augment=augment,
            fixed_steps_per_epoch=self.unlabelled.steps_per_epoch(),
        )

    def steps_per_epoch(self) -> int:
        return self.unlabelled.steps_per_epoch()

    def batches(self, state: TrainState) -> Iterator[Batch]:
        for labelled, unlabelled in zip(
            self.labelled.batches(state), self.unlabelled.batches(state), strict=True
        ):
            assert labelled.labels is not None
            assert labelled.indices is not None
            assert unlabelled.indices is not None
            missing = torch.full((len(unlabelled),), UNLABELLED, dtype=labelled.labels.dtype)
            yield Batch(
                torch.cat([labelled.images, unlabelled.images]),
                torch.cat([labelled.labels, missing]),
                indices=torch.cat([labelled.indices, unlabelled.indices]),
            )


class PairedSource:
    """Shuffled batches of images with their captions' token ids (cross-modal pairs).

    Epoch ``e`` shuffles with a generator seeded by ``(seed, e)``, and batch ``i`` draws its
    captions (e.g. one template per image) from one seeded by ``(seed, e, i)``, so the source
    has no state to checkpoint and a resumed run sees the same batches.

    Args:
        dataset: the images (labels: the classes the captions name).
        texts: ``texts(indices, generator)`` → (B, L) token ids of those images' captions.
        batch_size: pairs per step; the last incomplete batch of an epoch is dropped (a
            contrastive loss needs full batches of negatives).
        seed: the run's seed.
        augment: optional batch augmentation ``fn(images, rng=generator)`` of the images (the
            captions are untouched), drawn from a generator seeded by ``(seed, e, i, 0)``.
    """

    def __init__(
        self,
        dataset: ImageDataset,
        texts: Callable[[Tensor, torch.Generator], Tensor],
        *,
        batch_size: int,
        seed: int,
        augment: Augment | None = None,
    ) -> None:
        if len(dataset) < batch_size:
            raise FreekdError(
                f"{dataset.name} has {len(dataset)} pairs, fewer than one batch of {batch_size}; "
                "lower --batch-size"
            )
        self.dataset = dataset
        self.texts = texts
        self.batch_size = batch_size
        self.seed = seed
        self.augment = augment

    def steps_per_epoch(self) -> int:
        return len(self.dataset) // self.batch_size

    def batches(self, state: TrainState) -> Iterator[Batch]:
        order = torch.randperm(
            len(self.dataset), generator=seeded_generator(self.seed, state.epoch)
        )
        for index in range(state.step_in_epoch, self.steps_per_epoch()):
            chosen = order[index * self.batch_size : (index + 1) * self.batch_size]
            batch = self.dataset.batch(chosen)
            tokens = self.texts(chosen, seeded_generator(self.seed, state.epoch, index))
            images = batch.images
            if self.augment is not None:
                rng = seeded_generator(self.seed, state.epoch, index, 0)
                images = self.augment(images, rng=rng)
            yield Batch(images, batch.labels, tokens, indices=chosen)
