"""What synthesized batches are made of: the memory bank, balanced targets and augmentations.

Shared by the synthesizers (``datafree.synthesizers``): the memory-bank ones (``deepinversion``,
``fast``, ``cmi``, the adversarial ones with replay) keep their images in a :class:`MemoryBank`.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import Tensor
from torch.nn import functional as F

from freekd.errors import FreekdError


class MemoryBank:
    """A first-in first-out store of synthesized images that ``sample`` draws from.

    The memory-bank synthesizers (``deepinversion``, ``fast``, ``cmi``, and the adversarial ones
    when they replay) keep their images here: the student trains on everything synthesized
    recently, not only on the newest batch.

    Args:
        capacity: images kept; the oldest are dropped first.
    """

    def __init__(self, capacity: int) -> None:
        if capacity < 1:
            raise FreekdError(f"memory_size must be positive, got {capacity}")
        self.capacity = capacity
        self.images: Tensor | None = None

    def __len__(self) -> int:
        return 0 if self.images is None else len(self.images)

    def add(self, images: Tensor) -> None:
        """Append (B, C, H, W) images, dropping the oldest beyond ``capacity``."""
        images = images.detach()
        # .to: a resumed memory is loaded on the CPU; it joins the device of what is added.
        stored = (
            images if self.images is None else torch.cat([self.images.to(images.device), images])
        )
        self.images = stored[-self.capacity :]

    def clear(self) -> None:
        """Drop every stored image."""
        self.images = None

    def sample(self, n: int, rng: torch.Generator) -> Tensor:
        """``n`` images drawn uniformly with replacement (indices from ``rng``)."""
        if self.images is None:
            raise FreekdError("the memory bank is empty: call synthesize() before sample()")
        index = torch.randint(len(self.images), (n,), generator=rng)
        return self.images[index.to(self.images.device)]

    def state_dict(self) -> dict[str, Any]:
        return {"images": self.images}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.images = state["images"]


def balanced_targets(n: int, num_classes: int, rng: torch.Generator) -> Tensor:
    """(n,) class targets, every class ⌊n/K⌋ or ⌈n/K⌉ times, in an order drawn from ``rng``.

    Random targets (DeepInversion §3.2 synthesizes "class-conditional" images for sampled
    classes) but balanced, so a small batch never leaves a class out of the memory bank. The
    classes that get one more (all n of them when n < K: a big teacher's batch cut to fit in
    memory) are drawn from ``rng`` too; they were classes 0, 1, … every time.
    """
    whole, extra = divmod(n, num_classes)
    targets = torch.arange(num_classes).repeat(whole)
    if extra:
        targets = torch.cat([targets, torch.randperm(num_classes, generator=rng)[:extra]])
    return targets[torch.randperm(n, generator=rng)]


def jitter_flip(images: Tensor, *, jitter: int, flip: bool, rng: torch.Generator) -> Tensor:
    """DeepInversion §3.2's augmentation during optimization: a random cyclic shift of up to
    ``jitter`` pixels in each direction, then (if ``flip``) a horizontal flip with probability ½.

    The same shift and flip apply to the whole batch; shapes are unchanged.

    Args:
        images: (B, C, H, W).
        jitter: largest shift in pixels (0: none).
        flip: allow the horizontal flip.
        rng: where the shift and the coin come from.
    """
    if jitter > 0:
        dy, dx = torch.randint(-jitter, jitter + 1, (2,), generator=rng).tolist()
        images = torch.roll(images, shifts=(dy, dx), dims=(2, 3))
    if flip and bool(torch.rand((), generator=rng) < 0.5):
        images = images.flip(dims=(3,))
    return images


def random_shift(images: Tensor, *, pixels: int, rng: torch.Generator) -> Tensor:
    """Every image moved by its own random whole-pixel shift of up to ``pixels`` in each
    direction, the uncovered border filled with zeros: torchvision's
    ``RandomCrop(size, padding=pixels)`` applied per image (Krizhevsky et al. 2012 §4.1's
    translation augmentation), on a batch and reproducibly from ``rng``.

    Args:
        images: (B, C, H, W).
        pixels: largest shift (0: the images unchanged).
        rng: where the shifts come from.

    Returns:
        (B, C, H, W), the same dtype and device.
    """
    if pixels < 0:
        raise ValueError(f"pixels must be non-negative, got {pixels}")
    if pixels == 0:
        return images
    n, _, height, width = images.shape
    padded = F.pad(images, (pixels, pixels, pixels, pixels))
    offsets = torch.randint(0, 2 * pixels + 1, (n, 2), generator=rng)
    shifted = torch.empty_like(images)
    # One slice per distinct offset ((2p + 1)² at most) instead of a gather per pixel.
    for dy, dx in torch.unique(offsets, dim=0).tolist():
        chosen = ((offsets[:, 0] == dy) & (offsets[:, 1] == dx)).nonzero().squeeze(1)
        chosen = chosen.to(images.device)
        shifted[chosen] = padded[chosen, :, dy : dy + height, dx : dx + width]
    return shifted


def mix_pairs(images: Tensor, *, fraction: float, rng: torch.Generator) -> Tensor:
    """A share of a batch replaced by convex combinations of two of its images (mixup, Zhang et
    al. 2018, ICLR, Eq. 1, on inputs only: the teacher labels the mixtures).

    Mixup is the augmentation Beyer et al. (2022, CVPR, "Knowledge distillation: A good teacher
    is patient and consistent", §3.2) found to widen the support on which a student matches its
    teacher's function: the teacher sees exactly the mixed image the student sees, so no label
    is interpolated. Image i of the first round(fraction · B) positions of a random order becomes
    λ_i · x_i + (1 − λ_i) · x_j with a partner j drawn from the whole batch and λ_i ~ U(0, 1) (a
    Beta(1, 1) mixing coefficient; freekd's choice), all from ``rng``; the others are returned
    unchanged.

    Args:
        images: (B, C, H, W) in [0, 1] (mixtures stay in [0, 1]).
        fraction: share of the batch to mix, in [0, 1] (0, or a batch of one image: the images
            unchanged, nothing drawn from ``rng``).
        rng: where the order, the partners and the coefficients come from.

    Returns:
        (B, C, H, W), the same dtype and device.
    """
    if not 0 <= fraction <= 1:
        raise ValueError(f"fraction must lie in [0, 1], got {fraction}")
    n = len(images)
    mixed_count = round(fraction * n)  # as the replayed share is counted
    if mixed_count == 0 or n < 2:
        return images
    chosen = torch.randperm(n, generator=rng)[:mixed_count]
    partners = torch.randint(n, (mixed_count,), generator=rng)
    weights = torch.rand((mixed_count, 1, 1, 1), generator=rng).to(images)
    chosen, partners = chosen.to(images.device), partners.to(images.device)
    mixed = images.clone()
    mixed[chosen] = weights * images[chosen] + (1 - weights) * images[partners]
    return mixed
