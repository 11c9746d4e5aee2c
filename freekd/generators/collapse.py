"""Detect a collapsed synthesizer: images that are all alike, or that the teacher files under few
classes.

A generator that collapses (mode collapse in DAFL/DFAD-style games, a diverged learning rate,
saturated sigmoids) keeps producing batches and the student keeps training on them, silently
ending with a bad student. Two cheap measurements on a probe batch reveal it:

- **diversity**: the mean pairwise root-mean-square pixel distance of the images. It is 0 for a
  generator whose output no longer depends on the latent code, about 0.41 for uniform noise
  (E|x − y|² = 1/6 per pixel) and about 0.4 for real MNIST digits;
- **label balance**: the entropy of the histogram of the teacher's predicted labels, divided by
  its largest possible value. It is 0 when every image gets the same label and 1 when the labels
  are spread evenly (DAFL's information-entropy loss, Chen et al. 2019 Eq. 4, pushes the *soft*
  version of this towards 1).

``train.sources.SyntheticSource`` calls :class:`CollapseMonitor` every few synthesis rounds and,
on collapse, re-initializes the synthesizer (``Synthesizer.reinitialize``).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import torch
from torch import Tensor


def image_diversity(images: Tensor) -> float:
    """Mean pairwise root-mean-square distance between images, in [0, 1] for [0, 1] pixels.

    Args:
        images: (B, C, H, W) with B ≥ 2.

    Returns:
        mean over i ≠ j of ‖x_i − x_j‖₂ / √(C·H·W): 0 for identical images.
    """
    if len(images) < 2:
        raise ValueError("diversity needs at least two images")
    flat = images.detach().flatten(1).double()
    distances = torch.cdist(flat, flat)  # (B, B), zero diagonal
    n = len(flat)
    return float(distances.sum() / (n * (n - 1)) / math.sqrt(flat.shape[1]))


def label_balance(teacher_logits: Tensor) -> float:
    """Normalized entropy of the teacher's predicted-label histogram, in [0, 1].

    Args:
        teacher_logits: (B, K) scores.

    Returns:
        H(histogram of argmax labels) / log(min(B, K)): 0 when one class takes every image,
        1 when the labels are as evenly spread as B images allow.
    """
    batch, classes = teacher_logits.shape
    largest = math.log(min(batch, classes))
    if largest == 0:
        return 1.0
    counts = torch.bincount(teacher_logits.detach().argmax(dim=1), minlength=classes).double()
    p = counts[counts > 0] / batch
    return float(-(p * p.log()).sum() / largest)


@dataclass
class CollapseCheck:
    """One check: the probe's measurements and whether the synthesizer counts as collapsed."""

    diversity: float
    balance: float
    low: bool
    collapsed: bool


class CollapseMonitor:
    """Flag collapse when diversity or label balance stays below its threshold.

    Args:
        diversity_threshold: :func:`image_diversity` below this is low.
        balance_threshold: :func:`label_balance` below this is low.
        patience: consecutive low checks before the synthesizer counts as collapsed.
    """

    def __init__(
        self, *, diversity_threshold: float, balance_threshold: float, patience: int
    ) -> None:
        if patience < 1:
            raise ValueError("patience must be at least 1")
        self.diversity_threshold = diversity_threshold
        self.balance_threshold = balance_threshold
        self.patience = patience
        self.low_streak = 0

    def check(self, images: Tensor, teacher_logits: Tensor) -> CollapseCheck:
        """Measure one probe: (B, C, H, W) images and the teacher's (B, K) logits on them."""
        diversity = image_diversity(images)
        balance = label_balance(teacher_logits)
        low = diversity < self.diversity_threshold or balance < self.balance_threshold
        self.low_streak = self.low_streak + 1 if low else 0
        return CollapseCheck(diversity, balance, low, self.low_streak >= self.patience)

    def reset(self) -> None:
        """Forget the low streak (after the synthesizer has been re-initialized)."""
        self.low_streak = 0

    def state_dict(self) -> dict[str, Any]:
        return {"low_streak": self.low_streak}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.low_streak = int(state["low_streak"])
