"""Fast: Up to 100× Faster Data-free Knowledge Distillation (Fang et al. 2022, arXiv:2112.06253)."""

from __future__ import annotations

import copy
from dataclasses import dataclass
from typing import ClassVar

import torch
from torch import Tensor, nn

from freekd.datafree.batches import MemoryBank, balanced_targets
from freekd.datafree.bn_hooks import batchnorm_statistics, require_batchnorm
from freekd.datafree.nets import Generator
from freekd.datafree.synthesizers.base import (
    GENERATOR_BETAS,
    SYNTHESIZERS,
    BatchSynthesizer,
    draw_normal_,
    inversion_terms,
    logged,
    optimizer_step,
    reset_weights,
    restart_optimizer,
    total,
)
from freekd.errors import FreekdError
from freekd.hooks import eval_mode
from freekd.teachers import Teacher


@SYNTHESIZERS.register("fast")
@dataclass(kw_only=True, eq=False)
class Fast(BatchSynthesizer):
    """A meta-learned generator that needs only a few steps for every new batch (FastDFKD).

    Fang et al. 2022 (AAAI'22) replace per-batch optimization from scratch (DeepInversion) with
    *common feature reuse* (§3, "Meta Synthesizer"): a shared generator G(z; θ) holds what all
    batches have in common, and each new batch is synthesized by a short adaptation from it. One
    ``synthesize`` call is one meta-learning task:

    1. copy the shared initialization, θ' ← θ, and draw a fresh learnable latent code z (B, d)
       and balanced class targets y;
    2. take ``generator_steps`` Adam steps on (θ', z) for the synthesis objective

           L = L_oh(T(x), y) + bn_weight·L_bn(x) + adversarial_weight·(−JS(T(x), S(x))),
           x = G(z; θ'),

       i.e. the teacher's cross-entropy on the targets, the BatchNorm-statistics regularizer of
       DeepInversion (Yin et al. 2020, arXiv:1912.08795 Eq. 4) and the adversarial term that
       seeks inputs where the student, in eval mode as it currently is, disagrees with the
       teacher;
    3. store G(z; θ') in the FIFO memory bank that ``sample`` draws from (the paper's data pool:
       the student learns from everything synthesized so far, not only the newest batch);
    4. meta-update the shared initialization with the first-order, Reptile-style rule of §3
       (Nichol et al. 2018, arXiv:1803.02999 Alg. 1): θ ← θ + meta_lr·(θ' − θ).

    The first call, when θ is still random, adapts for ``warmup_steps`` instead of
    ``generator_steps`` (one long task gives the meta-initialization a start; freekd's addition).

    The generator is unconditional, as in the paper: with only a few steps the teacher is far
    from sure of the targets (L_oh ≈ 1.9 on digits), and that is fine for distillation. A
    class-conditional variant (z plus a learned class embedding) made the teacher 97 % confident
    but taught the student less (91.9 % vs 95.6 % on digits, same 100 tasks and 500 KD steps).

    Deviations from the paper: the adversarial term is −JS rather than −KL (bounded, so it
    cannot swamp the other terms on CPU-sized batches); the meta-update is the plain Reptile
    interpolation rather than an optimizer step on the meta-gradient; the inner Adam starts
    fresh for every task; targets are balanced over classes; the BatchNorm statistics are those
    of the current batch only (no momentum across batches); the generator is freekd's DCGAN
    ``Generator`` (sigmoid output in [0, 1]) rather than the paper's. The memory bank is bounded
    (FIFO, ``memory_size``) instead of keeping every image.

    Args:
        image_shape: (C, H, W) of the teacher's input.
        num_classes: the teacher's class count (targets are drawn from it).
        rng: latent codes, targets and memory-bank draws come from it.
        device: where the generators, latent code and memory bank live.
        batch_size: images per task (BatchNorm statistics are batch statistics).
        generator_steps: inner adaptation steps per new batch (the paper's "Fast-k").
        warmup_steps: inner steps of the first task.
        latent_dim: size of the latent code z.
        generator_width: channels of the generator's first feature map.
        lr: inner Adam learning rate of the generator weights θ'.
        latent_lr: inner Adam learning rate of the latent code z.
        meta_lr: Reptile step size ε of the shared initialization (1 would simply carry the
            last adapted generator over; smaller values average over tasks).
        onehot_weight: weight of L_oh.
        bn_weight: weight of L_bn.
        adversarial_weight: weight of the adversarial term.
        memory_size: images kept in the memory bank.
    """

    needs_batchnorm = True
    taps_teacher = True
    # Many student steps per synthesis round, as in the paper's schedule: with one KD step per
    # round a 10-minute CPU budget reached 13.2 % on MNIST (ResNet-8 teacher), with 10 it reached
    # 68.5 % (single runs, `freekd datafree --method fast --budget 10m`).
    recommended_synthesize_every = 10

    generator_steps: int = 2
    warmup_steps: int = 50
    latent_dim: int = 100
    generator_width: int = 64
    lr: float = 5e-3
    latent_lr: float = 0.05
    meta_lr: float = 0.5
    onehot_weight: float = 1.0
    bn_weight: float = 1.0
    adversarial_weight: float = 1.0
    memory_size: int = 20_000

    def __post_init__(self) -> None:
        if self.generator_steps < 1 or self.warmup_steps < 0 or self.batch_size < 1:
            raise FreekdError("fast needs generator_steps ≥ 1, warmup_steps ≥ 0, batch_size ≥ 1")
        if not 0 < self.meta_lr <= 1:
            raise FreekdError(f"fast's meta_lr is a step size in (0, 1], got {self.meta_lr}")
        # The shared initialization θ (meta-learned) and the per-task copy θ' that adapts.
        self.generator = Generator(
            latent_dim=self.latent_dim, image_shape=self.image_shape, width=self.generator_width
        ).to(self.device)
        self.fast_generator = copy.deepcopy(self.generator)
        self.latent = nn.Parameter(
            torch.zeros((self.batch_size, self.latent_dim), device=self.device)
        )
        # One inner optimizer for the run, reset for every task, so state_dict() can hold it.
        self.optimizer = torch.optim.Adam(
            [
                {"params": list(self.fast_generator.parameters()), "lr": self.lr},
                {"params": [self.latent], "lr": self.latent_lr},
            ],
            betas=GENERATOR_BETAS,
        )
        self.memory = MemoryBank(self.memory_size)
        self.tasks = 0

    def _loss_terms(
        self, teacher: Teacher, student: nn.Module, images: Tensor, targets: Tensor
    ) -> dict[str, Tensor]:
        with batchnorm_statistics(teacher) as statistics:
            teacher_logits = teacher(images)
        require_batchnorm(statistics, who="fast")
        return inversion_terms(self, statistics, teacher_logits, targets, lambda: student(images))

    def synthesize(self, teacher: Teacher, student: nn.Module) -> dict[str, float]:
        self.fast_generator.load_state_dict(self.generator.state_dict())  # θ' ← θ
        self.fast_generator.train()  # batch statistics in the generator, as it was trained
        draw_normal_(self.latent, self.rng)
        self.optimizer.state.clear()  # a fresh inner Adam for every task
        targets = balanced_targets(self.batch_size, self.num_classes, self.rng).to(self.device)
        steps = self.warmup_steps if self.tasks == 0 and self.warmup_steps > 0 else None
        terms: dict[str, Tensor] = {}
        with eval_mode(student):
            iterations = steps or self.generator_steps
            cut = False
            for iteration in range(iterations):
                if self._round_spent(iteration):
                    cut = True
                    break
                self._iterated(iteration + 1, iterations)
                images = self.fast_generator(self.latent)
                terms = self._loss_terms(teacher, student, images, targets)
                optimizer_step(self.optimizer, total(terms))
                self.teacher_queries += self.batch_size
        with torch.no_grad():
            self.memory.add(self.fast_generator(self.latent))
            self._meta_update()
        if not (cut and steps):  # a warm-up cut by the time budget runs again on a resume
            self.tasks += 1
        self.images_synthesized += self.batch_size
        return logged(terms)

    def _meta_update(self) -> None:
        """Reptile (Nichol et al. 2018 Alg. 1): move θ a step ``meta_lr`` towards θ'."""
        adapted = dict(self.fast_generator.named_parameters())
        for name, parameter in self.generator.named_parameters():
            parameter.add_(adapted[name] - parameter, alpha=self.meta_lr)
        # BatchNorm running statistics are not learned; the generator always runs on batch
        # statistics, so the adapted ones are simply carried over.
        adapted_buffers = dict(self.fast_generator.named_buffers())
        for name, buffer in self.generator.named_buffers():
            buffer.copy_(adapted_buffers[name])

    def sample(self, n: int) -> Tensor:
        return self.memory.sample(n, self.rng)

    def reinitialize(self, *, lr_scale: float) -> None:
        reset_weights(self.generator, self.rng)
        self.fast_generator.load_state_dict(self.generator.state_dict())
        with torch.no_grad():
            self.latent.zero_()
        restart_optimizer(self.optimizer, lr_scale=lr_scale)
        self.memory.clear()
        self.tasks = 0  # the next task is a warm-up again, as for a new run

    STATE: ClassVar[tuple[str, ...]] = (
        "generator",
        "fast_generator",
        "latent",
        "optimizer",
        "memory",
        "rng",
        "tasks",
        "images_synthesized",
        "teacher_queries",
    )
