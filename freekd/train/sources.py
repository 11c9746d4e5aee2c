"""Batch sources: where the inputs of each training step come from."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Any

import torch
from torch import Tensor, nn

from freekd.data.batch import Batch
from freekd.data.datasets import ImageDataset
from freekd.errors import FreekdError
from freekd.generators.base import Synthesizer
from freekd.teachers import Teacher
from freekd.train.trainer import TrainState

Augment = Callable[..., Tensor]


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
        rank: int = 0,
        world_size: int = 1,
    ) -> None:
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
        self.rank = rank
        self.world_size = world_size

    def steps_per_epoch(self) -> int:
        return len(self.dataset) // self.batch_size

    def _generator(self, *keys: int) -> torch.Generator:
        generator = torch.Generator()
        # A fixed mixing of (seed, epoch, batch) into one 63-bit seed.
        value = self.seed
        for key in keys:
            value = (value * 1_000_003 + key + 1) % (2**63 - 1)
        generator.manual_seed(value)
        return generator

    def batches(self, state: TrainState) -> Iterator[Batch]:
        order = torch.randperm(len(self.dataset), generator=self._generator(state.epoch))
        per_rank = self.batch_size // self.world_size
        mine = slice(self.rank * per_rank, (self.rank + 1) * per_rank)
        for index in range(state.step_in_epoch, self.steps_per_epoch()):
            start = index * self.batch_size
            if self.augment is None:
                batch = self.dataset.batch(order[start : start + self.batch_size][mine])
                images = batch.images
            else:
                # Augment the whole global batch, then take this rank's slice: every process
                # draws the same random offsets, so W processes see exactly one process's batch.
                batch = self.dataset.batch(order[start : start + self.batch_size])
                images = self.augment(batch.images, rng=self._generator(state.epoch, index))[mine]
                batch = Batch(images, None if batch.labels is None else batch.labels[mine])
            yield Batch(images, batch.labels if self.labelled else None)


class SyntheticSource:
    """Batches drawn from a synthesizer that is updated inside the training loop.

    Data-free distillation on the student side is plain KD on synthetic batches: every
    ``synthesize_every`` steps this source runs one synthesis round against the current student,
    then yields unlabelled ``sample(batch_size)`` batches. The Trainer, the method and the callbacks
    are the same as for real data.

    Args:
        synthesizer: any ``generators.Synthesizer``.
        teacher: the frozen teacher the synthesizer inverts.
        student: the student being trained (the same module the method updates, unwrapped).
        steps_per_epoch: optimizer steps in one epoch.
        batch_size: images per step (per process under DDP).
        synthesize_every: steps between synthesis rounds.
    """

    def __init__(
        self,
        synthesizer: Synthesizer,
        *,
        teacher: Teacher,
        student: nn.Module,
        steps_per_epoch: int,
        batch_size: int,
        synthesize_every: int = 1,
    ) -> None:
        if steps_per_epoch < 1 or batch_size < 1 or synthesize_every < 1:
            raise FreekdError("steps per epoch, batch size and synthesize_every must be positive")
        self.synthesizer = synthesizer
        self.teacher = teacher
        self.student = student
        self._steps = steps_per_epoch
        self.batch_size = batch_size
        self.synthesize_every = synthesize_every
        self.last_statistics: dict[str, float] = {}

    def steps_per_epoch(self) -> int:
        return self._steps

    def batches(self, state: TrainState) -> Iterator[Batch]:
        for index in range(state.step_in_epoch, self._steps):
            if index % self.synthesize_every == 0:
                self.last_statistics = self.synthesizer.synthesize(self.teacher, self.student)
            yield Batch(self.synthesizer.sample(self.batch_size), None)

    def state_dict(self) -> dict[str, Any]:
        return {"synthesizer": self.synthesizer.state_dict()}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.synthesizer.load_state_dict(state["synthesizer"])
