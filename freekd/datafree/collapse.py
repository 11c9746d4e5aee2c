"""Detect a collapsed synthesizer: images that are all alike, that the teacher files under few
classes, or on which the student has lost the teacher (an adversarial generator that won).

A generator that collapses (mode collapse in DAFL/DFAD-style games, a diverged learning rate,
saturated sigmoids) keeps producing batches and the student keeps training on them, silently
ending with a bad student. Cheap measurements on a probe batch reveal it:

- **diversity**: the mean pairwise root-mean-square pixel distance of the images. It is 0 for a
  generator whose output no longer depends on the latent code, about 0.41 for uniform noise
  (E|x − y|² = 1/6 per pixel) and about 0.4 for real MNIST digits;
- **label balance**: the entropy of the histogram of the teacher's predicted labels, divided by
  its largest possible value. It is 0 when every image gets the same label and 1 when the labels
  are spread evenly (DAFL's information-entropy loss, Chen et al. 2019 Eq. 4, pushes the *soft*
  version of this towards 1);
- **discrepancy** (optional): KL(p_teacher ‖ p_student) on the probe, ZSKT's Eq. 1 at T = 1
  (``losses.inversion.kl_discrepancy``). In the adversarial game (ZSKT, DFAD) the generator
  raises it and the student lowers it; when the student's learning rate has decayed towards
  zero at the end of a long cosine schedule, the generator can win outright: the student's
  loss on synthetic batches jumps ten-fold in a few hundred steps, the student keeps stepping
  on those batches and loses accuracy, while diversity and balance stay healthy
  (experiments/datafree/README.md, 100-epoch runs). A discrepancy above ``discrepancy_factor``
  times the lowest one seen (and above ``discrepancy_floor``) counts as low, like the others.

``datafree.source.SyntheticSource`` calls :class:`CollapseMonitor` every few synthesis rounds and,
on collapse, re-initializes the synthesizer (``Synthesizer.reinitialize``).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import torch
from torch import Tensor

from freekd.losses.inversion import kl_discrepancy


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


def probe_discrepancy(student_logits: Tensor, teacher_logits: Tensor) -> float:
    """KL(p_teacher ‖ p_student) at T = 1 averaged over the probe, in nats; 0 when they agree
    (rounding below 0 is clamped; NaN when the student's outputs are not finite)."""
    value = float(kl_discrepancy(student_logits.detach(), teacher_logits.detach()))
    return 0.0 if value < 0 else value


@dataclass
class CollapseCheck:
    """One check: the probe's measurements and whether the synthesizer counts as collapsed.

    ``reasons`` names the measurements that were low (``diversity``, ``balance``,
    ``discrepancy``); ``discrepancy`` is ``None`` when the check had no student logits.
    """

    diversity: float
    balance: float
    low: bool
    collapsed: bool
    discrepancy: float | None = None
    reasons: tuple[str, ...] = ()


class CollapseMonitor:
    """Flag collapse when diversity, label balance or the student's discrepancy stays bad.

    Args:
        diversity_threshold: :func:`image_diversity` below this is low.
        balance_threshold: :func:`label_balance` below this is low.
        patience: consecutive low checks before the synthesizer counts as collapsed.
        discrepancy_factor: a :func:`probe_discrepancy` above this many times the lowest one
            seen so far counts as low (0: the discrepancy is measured but never low).
        discrepancy_floor: ... and only when it is also above this many nats, so that a
            student matching its teacher almost exactly may wobble.
    """

    def __init__(
        self,
        *,
        diversity_threshold: float,
        balance_threshold: float,
        patience: int,
        discrepancy_factor: float = 0.0,
        discrepancy_floor: float = 0.0,
    ) -> None:
        if patience < 1:
            raise ValueError("patience must be at least 1")
        if discrepancy_factor != 0 and discrepancy_factor <= 1:
            raise ValueError(
                f"discrepancy_factor must be above 1 (or 0 for off), got {discrepancy_factor}"
            )
        if discrepancy_floor < 0:
            raise ValueError(f"discrepancy_floor must be non-negative, got {discrepancy_floor}")
        self.diversity_threshold = diversity_threshold
        self.balance_threshold = balance_threshold
        self.patience = patience
        self.discrepancy_factor = discrepancy_factor
        self.discrepancy_floor = discrepancy_floor
        self.low_streak = 0
        self.best_discrepancy = math.inf

    def check(
        self, images: Tensor, teacher_logits: Tensor, student_logits: Tensor | None = None
    ) -> CollapseCheck:
        """Measure one probe: (B, C, H, W) images, the teacher's (B, K) logits on them and,
        optionally, the student's (B, K) logits on them."""
        diversity = image_diversity(images)
        balance = label_balance(teacher_logits)
        reasons = []
        if diversity < self.diversity_threshold:
            reasons.append("diversity")
        if balance < self.balance_threshold:
            reasons.append("balance")
        discrepancy = None
        if student_logits is not None:
            discrepancy = probe_discrepancy(student_logits, teacher_logits)
            limit = max(self.discrepancy_floor, self.discrepancy_factor * self.best_discrepancy)
            finite = math.isfinite(discrepancy)  # a diverged student is low whatever the factor
            if not finite or (self.discrepancy_factor > 0 and discrepancy > limit):
                reasons.append("discrepancy")
            if finite:
                self.best_discrepancy = min(self.best_discrepancy, discrepancy)
        low = bool(reasons)
        self.low_streak = self.low_streak + 1 if low else 0
        return CollapseCheck(
            diversity,
            balance,
            low,
            self.low_streak >= self.patience,
            discrepancy=discrepancy,
            reasons=tuple(reasons),
        )

    def reset(self) -> None:
        """Forget the low streak (after the synthesizer has been re-initialized).

        The lowest discrepancy is kept: it measures the student, which re-initializing the
        synthesizer does not touch.
        """
        self.low_streak = 0

    def state_dict(self) -> dict[str, Any]:
        return {"low_streak": self.low_streak, "best_discrepancy": self.best_discrepancy}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.low_streak = int(state["low_streak"])
        self.best_discrepancy = float(state.get("best_discrepancy", math.inf))
