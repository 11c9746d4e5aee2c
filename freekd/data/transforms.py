"""Batch augmentations on (B, C, H, W) image tensors in [0, 1].

Every augmentation has the signature ``fn(images, *, rng) -> images``: it takes a whole batch, draws
all its randomness from the CPU ``torch.Generator`` it is given (so a seeded generator makes a run
reproducible whatever device the images live on), works on the batch without a Python loop over the
samples, and returns a tensor of the same shape, dtype and device without modifying its input
(``none`` hands back the input itself).
Gradients flow through the augmentations (they only gather and flip pixels), so synthesizers may
augment generated images before the teacher sees them.

``AUGMENTATIONS`` maps the names used in configs to ready-made augmentations:

* ``none``: the images unchanged.
* ``crop``: :func:`random_crop` with 2 pixels of zero padding (MNIST-like 28×28 digits).
* ``crop-flip``: :func:`random_crop` with 4 pixels of padding, then :func:`random_horizontal_flip`
  (the standard CIFAR recipe of He et al. 2016, arXiv:1512.03385 §4.2).
"""

from __future__ import annotations

from typing import Protocol

import torch
from torch import Tensor
from torch.nn import functional

from freekd.registry import Registry


class Augmentation(Protocol):
    """A random batch augmentation: ``(B, C, H, W)`` images in, same shape out."""

    def __call__(self, images: Tensor, *, rng: torch.Generator) -> Tensor: ...


AUGMENTATIONS: Registry[Augmentation] = Registry("augmentation")


def _check_images(images: Tensor) -> None:
    if images.dim() != 4:
        raise ValueError(f"augmentations take (B, C, H, W) images, got shape {tuple(images.shape)}")


def random_crop(images: Tensor, *, rng: torch.Generator, padding: int = 4) -> Tensor:
    """Zero-pads each image by ``padding`` pixels per side and crops it back at a random offset.

    Each sample gets its own offset, drawn uniformly from ``[0, 2 * padding]`` in both directions,
    so an image moves by up to ``padding`` pixels and the uncovered border is black (zero).

    Args:
        images: (B, C, H, W) float images in [0, 1], on any device.
        rng: CPU generator that draws the offsets.
        padding: pixels added on each side before cropping; 0 returns the images unchanged.

    Returns:
        (B, C, H, W) shifted images on the device of ``images``.
    """
    _check_images(images)
    if padding < 0:
        raise ValueError(f"padding must be >= 0, got {padding}")
    if padding == 0:
        return images.clone()
    batch_size, channels, height, width = images.shape
    padded = functional.pad(images, (padding, padding, padding, padding))
    row_offsets = torch.randint(0, 2 * padding + 1, (batch_size,), generator=rng)
    column_offsets = torch.randint(0, 2 * padding + 1, (batch_size,), generator=rng)
    row_offsets = row_offsets.to(images.device)
    column_offsets = column_offsets.to(images.device)
    # Per-sample crop as two gathers: first pick H rows, then W columns, each shifted per sample.
    rows = row_offsets[:, None] + torch.arange(height, device=images.device)  # (B, H)
    columns = column_offsets[:, None] + torch.arange(width, device=images.device)  # (B, W)
    row_index = rows[:, None, :, None].expand(batch_size, channels, height, padded.shape[3])
    cropped_rows = padded.gather(2, row_index)  # (B, C, H, W + 2 * padding)
    column_index = columns[:, None, None, :].expand(batch_size, channels, height, width)
    return cropped_rows.gather(3, column_index)


def random_horizontal_flip(
    images: Tensor, *, rng: torch.Generator, probability: float = 0.5
) -> Tensor:
    """Mirrors each image left-right with probability ``probability``, independently per sample.

    Args:
        images: (B, C, H, W) images, on any device.
        rng: CPU generator that draws which samples flip.
        probability: chance that a sample is flipped.

    Returns:
        (B, C, H, W) images on the device of ``images``.
    """
    _check_images(images)
    if not 0.0 <= probability <= 1.0:
        raise ValueError(f"probability must lie in [0, 1], got {probability}")
    flip = torch.rand(images.shape[0], generator=rng) < probability
    flip = flip.to(images.device)[:, None, None, None]
    return torch.where(flip, images.flip(-1), images)


@AUGMENTATIONS.register("none")
def no_augmentation(images: Tensor, *, rng: torch.Generator) -> Tensor:
    """The images unchanged (``rng`` is not used)."""
    _check_images(images)
    return images


@AUGMENTATIONS.register("crop")
def digit_crop(images: Tensor, *, rng: torch.Generator) -> Tensor:
    """Random shifts of up to 2 pixels: the usual augmentation for 28×28 MNIST-like images."""
    return random_crop(images, rng=rng, padding=2)


@AUGMENTATIONS.register("crop-flip")
def cifar_crop_flip(images: Tensor, *, rng: torch.Generator) -> Tensor:
    """Random shifts of up to 4 pixels and random left-right flips: the standard CIFAR recipe."""
    return random_horizontal_flip(random_crop(images, rng=rng, padding=4), rng=rng)
