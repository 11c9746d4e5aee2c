"""DeepInversion: Dreaming to Distill (Yin et al. 2020, arXiv:1912.08795)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

import torch
from torch import Tensor, nn

from freekd.datafree.batches import MemoryBank, balanced_targets, jitter_flip
from freekd.datafree.bn_hooks import batchnorm_statistics, require_batchnorm
from freekd.datafree.synthesizers.base import (
    SYNTHESIZERS,
    BatchSynthesizer,
    draw_normal_,
    logged,
    optimizer_step,
    restart_optimizer,
    total,
)
from freekd.errors import FreekdError
from freekd.hooks import eval_mode
from freekd.losses.inversion import (
    bn_statistics,
    competition,
    l2_prior,
    onehot,
    total_variation,
)
from freekd.teachers import Teacher


class _Pixels(nn.Module):
    """The batch being optimized, as unconstrained logits (images = sigmoid(logits))."""

    def __init__(self, shape: tuple[int, ...]) -> None:
        super().__init__()
        self.logits = nn.Parameter(torch.zeros(shape))

    def forward(self) -> Tensor:
        return torch.sigmoid(self.logits)


@SYNTHESIZERS.register("deepinversion")
@dataclass(kw_only=True, eq=False)
class DeepInversion(BatchSynthesizer):
    """Optimize pixels so the teacher's BatchNorm statistics look like its training data's.

    Each ``synthesize`` call turns one batch of noise into images by ``iterations`` Adam steps on
    (Yin et al. 2020, Eq. 8 with Eq. 3–6):

        L = L_CE(teacher(x̂), y) + bn_weight·R_feature(x̂) + total_variation_weight·R_TV(x̂)
            + l2_weight·R_l2(x̂) + competition_weight·(1 − JS(teacher(x̂), student(x̂)))

    with targets y balanced over classes (see ``batches.balanced_targets``), R_feature the distance
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
    taps_teacher = True
    # One new batch per 100 student steps (the student learns from the memory bank in between,
    # like the paper's synthesize-then-distill schedule). Per step, a batch costs ``iterations``
    # teacher forward and backward passes: with 100 iterations a ResNet-8 teacher on one CPU
    # core spends about 30 s per batch, so synthesizing for every step would leave a 15-minute
    # budget some 30 student steps. Chosen by that arithmetic, not tuned.
    recommended_synthesize_every = 100

    iterations: int = 100
    lr: float = 0.25
    onehot_weight: float = 1.0
    bn_weight: float = 1.0
    first_bn_multiplier: float = 1.0
    total_variation_weight: float = 1e-3
    l2_weight: float = 1e-4
    competition_weight: float = 1.0
    jitter: int = 2
    flip: bool = False
    memory_size: int = 10_000

    def __post_init__(self) -> None:
        if self.iterations < 1 or self.batch_size < 1:
            raise FreekdError("deepinversion needs iterations ≥ 1 and batch_size ≥ 1")
        self.pixels = _Pixels((self.batch_size, *self.image_shape)).to(self.device)
        # One optimizer object for the run (its state is reset for every new batch), so that
        # state_dict() can hold it and a resumed run continues with the same settings.
        self.optimizer = torch.optim.Adam(self.pixels.parameters(), lr=self.lr)
        self.memory = MemoryBank(self.memory_size)
        # The class targets of the newest batch (informational; each batch draws its own).
        self.targets = torch.zeros(0, dtype=torch.long, device=self.device)

    def _feature_loss(self, teacher: Teacher, images: Tensor) -> tuple[Tensor, Tensor]:
        """Teacher logits and R_feature (Eq. 4) for one forward pass of ``images``."""
        with batchnorm_statistics(teacher) as statistics:
            teacher_logits = teacher(images)
        require_batchnorm(statistics, who="deepinversion")
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
        draw_normal_(self.pixels.logits, self.rng)
        self.optimizer.state.clear()  # a fresh Adam for a fresh batch
        targets = balanced_targets(self.batch_size, self.num_classes, self.rng).to(self.device)
        self.targets = targets
        terms: dict[str, Tensor] = {}
        with eval_mode(student):
            for iteration in range(self.iterations):
                if self._round_spent(iteration):
                    break
                self._iterated(iteration + 1, self.iterations)
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
                optimizer_step(self.optimizer, total(terms))
                self.teacher_queries += self.batch_size
        with torch.no_grad():
            self.memory.add(self.pixels())
        self.images_synthesized += self.batch_size
        return logged(terms)

    def sample(self, n: int) -> Tensor:
        return self.memory.sample(n, self.rng)

    def reinitialize(self, *, lr_scale: float) -> None:
        # Every round already starts from fresh noise drawn from ``rng``; what a restart adds is
        # the lower learning rate and a memory bank without the collapsed images.
        with torch.no_grad():
            self.pixels.logits.zero_()
        restart_optimizer(self.optimizer, lr_scale=lr_scale)
        self.memory.clear()

    STATE: ClassVar[tuple[str, ...]] = (
        "pixels",
        "optimizer",
        "memory",
        "rng",
        "images_synthesized",
        "teacher_queries",
    )
