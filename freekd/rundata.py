"""The data a run trains and evaluates on: splits, normalization, augmentation, the loader.

Shared by the feature pipelines through :mod:`freekd.runs`, which re-exports every name here.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import torch

from freekd.config import TrainerConfig
from freekd.data import AUGMENTATIONS, ImageDataset, load_dataset
from freekd.errors import FreekdError
from freekd.train import DistInfo, LoaderSource

logger = logging.getLogger(__name__)


def dataset_statistics(dataset: ImageDataset) -> tuple[list[float], list[float]]:
    """Per-channel mean and std of a dataset's [0, 1] images (the model's normalization)."""
    total = torch.zeros(dataset.input_shape[0], dtype=torch.float64)
    squares = torch.zeros_like(total)
    count = 0
    for start in range(0, len(dataset), 4096):
        images = dataset.batch(torch.arange(start, min(start + 4096, len(dataset)))).images
        images = images.double().transpose(0, 1).flatten(1)
        total += images.sum(dim=1)
        squares += (images**2).sum(dim=1)
        count += images.shape[1]
    mean = total / count
    std = (squares / count - mean**2).clamp_min(1e-12).sqrt()
    return [round(float(v), 6) for v in mean], [round(float(max(v, 1e-3)), 6) for v in std]


def resolve_augmentation(name: str, input_shape: tuple[int, int, int]) -> str:
    """The augmentation ``name`` stands for; ``auto`` shifts images of 24 pixels and more only.

    Raises:
        UnknownNameError: ``name`` is neither ``auto`` nor registered.
    """
    if name == "auto":
        return "crop" if min(input_shape[1:]) >= 24 else "none"
    AUGMENTATIONS.get(name)
    return name


def load_split(spec: str, *, default_split: str, root: str | None, download: bool) -> ImageDataset:
    return load_dataset(
        spec, default_split=default_split, root=Path(root) if root else None, download=download
    )


def train_and_eval_sets(config: Any) -> tuple[ImageDataset, ImageDataset]:
    """``config.dataset``'s train split and its held-out data (``config.eval_dataset``)."""
    train_set = load_split(
        config.dataset, default_split="train", root=config.data_root, download=config.download
    )
    eval_set = load_split(
        eval_spec(config.dataset, config.eval_dataset),
        default_split="test",
        root=config.data_root,
        download=config.download,
    )
    return train_set, eval_set


def eval_spec(dataset: str, eval_dataset: str | None) -> str:
    """The held-out spec: given, else the ``test`` split of the training data's registry name."""
    if eval_dataset:
        return eval_dataset
    if ":" in dataset or dataset.endswith(".npz") or Path(dataset).exists():
        raise FreekdError(
            f"no held-out data for {dataset}; pass --eval-data (e.g. mnist:test or a .npz file)"
        )
    return f"{dataset}:test"


def loader_source(
    train_set: ImageDataset,
    trainer_config: TrainerConfig,
    *,
    seed: int,
    dist: DistInfo,
    labelled: bool = True,
    max_steps_per_epoch: int | None = None,
    fixed_steps_per_epoch: int | None = None,
) -> LoaderSource:
    augment_name = resolve_augmentation(trainer_config.augment, train_set.input_shape)
    return LoaderSource(
        train_set,
        batch_size=trainer_config.batch_size,
        seed=seed,
        augment=None if augment_name == "none" else AUGMENTATIONS.get(augment_name),
        labelled=labelled,
        max_steps_per_epoch=max_steps_per_epoch,
        fixed_steps_per_epoch=fixed_steps_per_epoch,
        rank=dist.rank,
        world_size=dist.world_size,
    )


def warn_empty_classes(train_set: ImageDataset) -> None:
    """One warning line when some classes have no training image (their outputs never learn)."""
    counts = torch.bincount(train_set.labels, minlength=train_set.num_classes)
    empty = [train_set.classes[k] for k in torch.nonzero(counts == 0).flatten().tolist()]
    if empty:
        shown = ", ".join(empty[:5]) + (" ..." if len(empty) > 5 else "")
        logger.warning(
            "%s has no training image of %d of its %d classes (%s); the model will never "
            "predict them",
            train_set.name,
            len(empty),
            train_set.num_classes,
            shown,
        )


#: Fewer optimizer steps than this in a whole ``teacher train`` run draw a warning. The default
#: recipe (10 epochs of 128) was tuned on 60,000 images, 4,690 steps; on 500 MNIST images it makes
#: 30 steps and ends at 16.6 % (experiments/2026-12-small-data-recipe).
FEW_STEPS = 300


def warn_few_steps(train_set: ImageDataset, trainer: TrainerConfig, steps_per_epoch: int) -> None:
    """One warning line before training when the recipe gives a small set too few steps.

    Measured on 500 MNIST images (LeNet-5, seed 0): the defaults make 30 SGD steps and reach
    16.6 % on mnist:test; ``--batch-size 32 --epochs 60`` (900 steps, what this suggests for
    500 images) reaches 95.1 % (experiments/2026-12-small-data-recipe). The schedule itself is
    left as given: the README's full-dataset figures depend on it.
    """
    steps = steps_per_epoch * trainer.epochs
    if steps >= FEW_STEPS:
        return
    batch = min(trainer.batch_size, 32)
    per_epoch = max(1, len(train_set) // batch)
    epochs = -(-3 * FEW_STEPS // per_epoch)
    logger.warning(
        "%s has %d images: %d epoch(s) at batch size %d make only %d optimizer steps, too few "
        "to train (the defaults suit 60,000 images); try --batch-size %d --epochs %d",
        train_set.name,
        len(train_set),
        trainer.epochs,
        trainer.batch_size,
        steps,
        batch,
        epochs,
    )


def as_float(images: torch.Tensor) -> torch.Tensor:
    """Floating images in [0, 1] (uint8 pixels divided by 255)."""
    return images.float() / 255.0 if images.dtype == torch.uint8 else images


def split_validation(
    dataset: ImageDataset, fraction: float, *, seed: int
) -> tuple[ImageDataset, ImageDataset]:
    """``dataset`` split into (training part, validation part): ``fraction`` of its images,
    drawn at random with ``seed``, held out for choices made without the test set.

    Raises:
        FreekdError: either part would be empty.
    """
    count = round(fraction * len(dataset))
    if count < 1 or count >= len(dataset):
        raise FreekdError(
            f"{dataset.name} has {len(dataset)} images: too few to hold out "
            f"{fraction:.0%} for validation and train on the rest; use more data or change "
            "validation_fraction"
        )
    generator = torch.Generator().manual_seed(seed)
    order = torch.randperm(len(dataset), generator=generator)
    validation = dataset.subset(order[:count].sort().values)
    training = dataset.subset(order[count:].sort().values)
    return training, validation
