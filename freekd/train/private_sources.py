"""Sources for private training and its audits: Poisson-sampled batches (DP-SGD) and batches
for K models at once, each from its own subset (PATE's teacher shards, audit shadow models)."""

from __future__ import annotations

from collections.abc import Iterator

import torch
from torch import Tensor

from freekd.data.batch import Batch
from freekd.data.datasets import ImageDataset
from freekd.errors import FreekdError
from freekd.train.sources import Augment, seeded_generator
from freekd.train.trainer import TrainState


class PoissonSource:
    """Poisson-sampled batches for DP-SGD: each image joins each batch independently.

    Every step includes each of the N images with probability ``sample_rate`` (so batches
    vary in size around ``sample_rate · N``); this is the sampling under which Opacus' RDP
    analysis of DP-SGD holds (Mironov, Talwar & Zhang 2019, arXiv:1908.10530). An epoch is
    ``round(1 / sample_rate)`` steps. Step ``i`` of epoch ``e`` draws from a generator seeded
    with ``(seed, e, i)``, so a resumed run sees the batches an uninterrupted one would.

    Args:
        dataset: the images and labels.
        sample_rate: inclusion probability q per image and step.
        seed: the run's seed.
        augment: optional batch augmentation ``fn(images, rng=generator)``.
    """

    def __init__(
        self,
        dataset: ImageDataset,
        *,
        sample_rate: float,
        seed: int,
        augment: Augment | None = None,
    ) -> None:
        if not 0 < sample_rate <= 1:
            raise FreekdError(f"the sample rate must lie in (0, 1], got {sample_rate}")
        self.dataset = dataset
        self.sample_rate = sample_rate
        self.seed = seed
        self.augment = augment

    def steps_per_epoch(self) -> int:
        return max(1, round(1 / self.sample_rate))

    def batches(self, state: TrainState) -> Iterator[Batch]:
        for index in range(state.step_in_epoch, self.steps_per_epoch()):
            rng = seeded_generator(self.seed, state.epoch, index)
            chosen = torch.rand(len(self.dataset), generator=rng) < self.sample_rate
            indices = chosen.nonzero().flatten()
            if len(indices) == 0:
                # Probability (1 − q)^N. DP-SGD must still add noise on such a step, and
                # substituting an image would break the sampling the accounting assumes.
                raise FreekdError(
                    f"a Poisson batch came out empty (probability (1 − {self.sample_rate:g})^"
                    f"{len(self.dataset)}); raise --batch-size"
                )
            batch = self.dataset.batch(indices)
            images = batch.images if self.augment is None else self.augment(batch.images, rng=rng)
            yield Batch(images, batch.labels, indices=indices)


class SubsetSource:
    """Batches for K models at once, model k's batch drawn from its own index set ``subsets[k]``.

    Each step yields images (K, B, C, H, W), labels (K, B) and indices (K, B) into ``dataset``.
    Epoch ``e`` orders every subset
    with a generator seeded by ``(seed, e)``, so the source has no state to checkpoint. The
    subsets may overlap (audit shadow models each train on a random half of one pool) or be
    disjoint (:class:`ShardSource`, PATE's partition).

    Args:
        dataset: the training data.
        subsets: (K, n) indices into ``dataset``; every model sees n images per epoch.
        batch_size: B, images per model and step.
        seed: the run's seed.
        augment: optional batch augmentation ``fn(images, rng=generator)``.
        what: how the K models are named in errors ("teachers", "shadow models").
        fix: what the too-small-subsets error tells the user to change.
    """

    def __init__(
        self,
        dataset: ImageDataset,
        subsets: Tensor,
        *,
        batch_size: int,
        seed: int,
        augment: Augment | None = None,
        what: str = "models",
        fix: str = "lower --batch-size or give them more data",
    ) -> None:
        if subsets.dim() != 2 or subsets.shape[0] < 1:
            raise FreekdError(
                f"internal: subsets must be (K, n) indices, got {tuple(subsets.shape)}"
            )
        if subsets.shape[1] < batch_size:
            raise FreekdError(
                f"{subsets.shape[0]} {what} get {subsets.shape[1]} images each, fewer than one "
                f"batch of {batch_size}; {fix}"
            )
        self.dataset = dataset
        self.subsets = subsets.long()
        self.models = int(subsets.shape[0])
        self.batch_size = batch_size
        self.seed = seed
        self.augment = augment

    @property
    def subset_size(self) -> int:
        return int(self.subsets.shape[1])

    def steps_per_epoch(self) -> int:
        return self.subset_size // self.batch_size

    def batches(self, state: TrainState) -> Iterator[Batch]:
        rng = seeded_generator(self.seed, state.epoch)
        within = torch.rand(self.subsets.shape, generator=rng).argsort(dim=1)
        ordered = self.subsets.gather(1, within)
        for index in range(state.step_in_epoch, self.steps_per_epoch()):
            chosen = ordered[:, index * self.batch_size : (index + 1) * self.batch_size]
            batch = self.dataset.batch(chosen.flatten())
            images = batch.images
            if self.augment is not None:
                images = self.augment(images, rng=seeded_generator(self.seed, state.epoch, index))
            assert batch.labels is not None
            yield Batch(
                images.view(self.models, self.batch_size, *images.shape[1:]),
                batch.labels.view(self.models, self.batch_size),
                indices=chosen,
            )


class ShardSource(SubsetSource):
    """Batches for K teachers at once, each from its own disjoint shard (PATE's partition).

    The data set is permuted once with ``seed`` and cut into K shards of ``len(dataset) // K``
    images (the remainder is left unused, so shards are equal); see :class:`SubsetSource`.

    Args:
        dataset: the private training data.
        teachers: K.
        batch_size: B, images per teacher and step.
        seed: the run's seed.
        augment: optional batch augmentation ``fn(images, rng=generator)``.
    """

    def __init__(
        self,
        dataset: ImageDataset,
        *,
        teachers: int,
        batch_size: int,
        seed: int,
        augment: Augment | None = None,
    ) -> None:
        if teachers < 1:
            raise FreekdError(f"the number of teachers must be positive, got {teachers}")
        shard = len(dataset) // teachers
        if shard < batch_size:
            raise FreekdError(
                f"{len(dataset)} images give {teachers} teachers {shard} images each, fewer than "
                f"one batch of {batch_size}; lower --batch-size or --teachers"
            )
        self.teachers = teachers
        order = torch.randperm(len(dataset), generator=seeded_generator(seed))
        super().__init__(
            dataset,
            order[: teachers * shard].view(teachers, shard),
            batch_size=batch_size,
            seed=seed,
            augment=augment,
            what="teachers",
        )

    @property
    def shards(self) -> Tensor:
        return self.subsets

    @property
    def shard_size(self) -> int:
        return self.subset_size
