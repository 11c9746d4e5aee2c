"""DeepInversion: Dreaming to Distill (Yin et al. 2020, arXiv:1912.08795)."""

from __future__ import annotations

from typing import Any

import torch
from torch import Tensor, nn
from torch.nn import functional as F

from freekd.errors import FreekdError
from freekd.generators.base import load_state, restart_optimizer, save_state
from freekd.generators.hooks import batchnorm_statistics
from freekd.generators.registry import SYNTHESIZERS
from freekd.hooks import eval_mode
from freekd.losses.inversion import (
    bn_statistics,
    competition,
    l2_prior,
    onehot,
    total_variation,
)
from freekd.teachers import Teacher


class MemoryBank:
    """A first-in first-out store of synthesized images that ``sample`` draws from.

    Both memory-bank synthesizers (``deepinversion``, ``fast``) keep their images here: the
    student trains on everything synthesized recently, not only on the newest batch.

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
        stored = images if self.images is None else torch.cat([self.images, images])
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
    classes) but balanced, so a small batch never leaves a class out of the memory bank.
    """
    return (torch.arange(n) % num_classes)[torch.randperm(n, generator=rng)]


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


class _Pixels(nn.Module):
    """The batch being optimized, as unconstrained logits (images = sigmoid(logits))."""

    def __init__(self, shape: tuple[int, ...]) -> None:
        super().__init__()
        self.logits = nn.Parameter(torch.zeros(shape))

    def forward(self) -> Tensor:
        return torch.sigmoid(self.logits)


@SYNTHESIZERS.register("deepinversion")
class DeepInversion:
    """Optimize pixels so the teacher's BatchNorm statistics look like its training data's.

    Each ``synthesize`` call turns one batch of noise into images by ``iterations`` Adam steps on
    (Yin et al. 2020, Eq. 8 with Eq. 3–6):

        L = L_CE(teacher(x̂), y) + bn_weight·R_feature(x̂) + total_variation_weight·R_TV(x̂)
            + l2_weight·R_l2(x̂) + competition_weight·(1 − JS(teacher(x̂), student(x̂)))

    with targets y balanced over classes (see :func:`balanced_targets`), R_feature the distance
    between the batch's statistics at every teacher BatchNorm input and the layer's running
    statistics (Eq. 4), and the Adaptive DeepInversion competition term (§3.3, Eq. 6–8) computed
    with the student in eval mode, as it is at that moment. Every step sees a randomly jittered
    (and optionally flipped) copy of the batch (§3.2). The finished batch joins a FIFO memory
    bank of ``memory_size`` images; ``sample`` draws uniformly from the bank.

    Parametrization: x̂ = sigmoid(logits), so images stay in [0, 1] (freekd's pixel range; models
    normalize themselves) without clamping, and the optimizer works on unconstrained logits. The
    paper optimizes normalized pixels directly and clips them.

    Deviations from the paper: far fewer iterations by default (100; the paper runs thousands,
    §4.1 and §4.4); balanced rather than independent target classes; the first BatchNorm layer
    can be weighted separately (``first_bn_multiplier``, default 1 = the paper's Eq. 4, which
    weighs all layers alike); flips are off by default because handwritten digits are not
    mirror-symmetric (turn them on for natural images, as the paper does). The L2 prior acts on
    [0, 1] pixels, so it pulls towards black (the background of digits) rather than towards the
    mean image.

    Args:
        image_shape: (C, H, W) of the teacher's input.
        num_classes: the teacher's class count (targets are drawn from it).
        rng: initial noise, targets, jitter, flips and memory-bank draws come from it.
        device: where the pixels and the memory bank live.
        batch_size: images optimized together (BatchNorm statistics are batch statistics).
        iterations: Adam steps per batch.
        lr: Adam learning rate on the pixel logits.
        onehot_weight: weight of the teacher's cross-entropy on the targets (1 in the paper).
        bn_weight: α_f, weight of R_feature.
        first_bn_multiplier: extra factor on the first BatchNorm layer's part of R_feature.
        total_variation_weight: α_tv, weight of R_TV.
        l2_weight: α_l2, weight of R_l2.
        competition_weight: α_c, weight of the Adaptive DeepInversion term (0: plain DI).
        jitter: largest random shift in pixels during optimization.
        flip: random horizontal flips during optimization.
        memory_size: images kept in the memory bank.
    """

    needs_batchnorm = True
    # One new batch per 100 student steps (the student learns from the memory bank in between,
    # like the paper's synthesize-then-distill schedule). Per step, a batch costs ``iterations``
    # teacher forward and backward passes: with 100 iterations a ResNet-8 teacher on one CPU
    # core spends about 30 s per batch, so synthesizing for every step would leave a 15-minute
    # budget some 30 student steps. Chosen by that arithmetic, not tuned.
    recommended_synthesize_every = 100

    def __init__(
        self,
        *,
        image_shape: tuple[int, int, int],
        num_classes: int,
        rng: torch.Generator,
        device: torch.device,
        batch_size: int = 256,
        iterations: int = 100,
        lr: float = 0.25,
        onehot_weight: float = 1.0,
        bn_weight: float = 1.0,
        first_bn_multiplier: float = 1.0,
        total_variation_weight: float = 1e-3,
        l2_weight: float = 1e-4,
        competition_weight: float = 1.0,
        jitter: int = 2,
        flip: bool = False,
        memory_size: int = 10_000,
    ) -> None:
        if iterations < 1 or batch_size < 1:
            raise FreekdError("deepinversion needs iterations ≥ 1 and batch_size ≥ 1")
        self.image_shape = image_shape
        self.num_classes = num_classes
        self.rng = rng
        self.device = device
        self.batch_size = batch_size
        self.iterations = iterations
        self.onehot_weight = onehot_weight
        self.bn_weight = bn_weight
        self.first_bn_multiplier = first_bn_multiplier
        self.total_variation_weight = total_variation_weight
        self.l2_weight = l2_weight
        self.competition_weight = competition_weight
        self.jitter = jitter
        self.flip = flip
        self.pixels = _Pixels((batch_size, *image_shape)).to(device)
        # One optimizer object for the run (its state is reset for every new batch), so that
        # state_dict() can hold it and a resumed run continues with the same settings.
        self.optimizer = torch.optim.Adam(self.pixels.parameters(), lr=lr)
        self.memory = MemoryBank(memory_size)
        # The class targets of the newest batch (informational; each batch draws its own).
        self.targets = torch.zeros(0, dtype=torch.long, device=device)
        self.images_synthesized = 0
        self.teacher_queries = 0

    def _feature_loss(self, teacher: Teacher, images: Tensor) -> tuple[Tensor, Tensor]:
        """Teacher logits and R_feature (Eq. 4) for one forward pass of ``images``."""
        with batchnorm_statistics(teacher) as statistics:
            teacher_logits = teacher(images)
        if not statistics.batch_means:
            raise FreekdError(
                "deepinversion inverts BatchNorm statistics and this teacher has no BatchNorm "
                "layers; use a method without BatchNorm needs (e.g. dafl)"
            )
        s = statistics
        first = bn_statistics(
            s.batch_means[:1], s.batch_variances[:1], s.running_means[:1], s.running_variances[:1]
        )
        feature = self.first_bn_multiplier * first
        if len(s.batch_means) > 1:
            feature = feature + bn_statistics(
                s.batch_means[1:],
                s.batch_variances[1:],
                s.running_means[1:],
                s.running_variances[1:],
            )
        return teacher_logits, feature

    def synthesize(self, teacher: Teacher, student: nn.Module) -> dict[str, float]:
        with torch.no_grad():
            noise = torch.randn((self.batch_size, *self.image_shape), generator=self.rng)
            self.pixels.logits.copy_(noise.to(self.device))
        self.optimizer.state.clear()  # a fresh Adam for a fresh batch
        targets = balanced_targets(self.batch_size, self.num_classes, self.rng).to(self.device)
        self.targets = targets
        parameters = list(self.pixels.parameters())
        terms: dict[str, Tensor] = {}
        with eval_mode(student):
            for _ in range(self.iterations):
                images = self.pixels()
                seen = jitter_flip(images, jitter=self.jitter, flip=self.flip, rng=self.rng)
                teacher_logits, feature = self._feature_loss(teacher, seen)
                terms = {
                    "onehot": self.onehot_weight * onehot(teacher_logits, targets),
                    "bn_statistics": self.bn_weight * feature,
                    "total_variation": self.total_variation_weight * total_variation(images),
                    "l2_prior": self.l2_weight * l2_prior(images),
                }
                if self.competition_weight > 0:
                    terms["competition"] = self.competition_weight * competition(
                        student(seen), teacher_logits
                    )
                loss = torch.stack(list(terms.values())).sum()
                # autograd.grad, not backward(): the student's parameters must not collect
                # gradients from synthesis (the competition term runs through the student).
                gradients = torch.autograd.grad(loss, parameters)
                for parameter, gradient in zip(parameters, gradients, strict=True):
                    parameter.grad = gradient
                self.optimizer.step()
                self.optimizer.zero_grad(set_to_none=True)
                self.teacher_queries += self.batch_size
        with torch.no_grad():
            self.memory.add(self.pixels())
        self.images_synthesized += self.batch_size
        return {name: float(value.detach()) for name, value in terms.items()}

    def sample(self, n: int) -> Tensor:
        return self.memory.sample(n, self.rng)

    def reinitialize(self, *, lr_scale: float) -> None:
        # Every round already starts from fresh noise drawn from ``rng``; what a restart adds is
        # the lower learning rate and a memory bank without the collapsed images.
        with torch.no_grad():
            self.pixels.logits.zero_()
        restart_optimizer(self.optimizer, lr_scale=lr_scale)
        self.memory.clear()

    STATE = ("pixels", "optimizer", "memory", "rng", "images_synthesized", "teacher_queries")

    def state_dict(self) -> dict[str, Any]:
        return save_state(self, self.STATE)

    def load_state_dict(self, state: dict[str, Any]) -> None:
        load_state(self, self.STATE, state)
