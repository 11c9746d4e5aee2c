"""DAFL: Data-Free Learning of Student Networks (Chen et al. 2019, arXiv:1904.01186)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

import torch
from torch import Tensor, nn

from freekd.datafree.bn_hooks import capture_input, last_linear
from freekd.datafree.nets import Generator, teacher_pixel_statistics
from freekd.datafree.synthesizers.base import (
    GENERATOR_BETAS,
    SYNTHESIZERS,
    SynthesizerBase,
    logged,
    reset_weights,
    restart_optimizer,
    total,
)
from freekd.errors import FreekdError
from freekd.losses.inversion import activation, information_entropy, onehot
from freekd.teachers import Teacher


@SYNTHESIZERS.register("dafl")
@dataclass(kw_only=True, eq=False)
class DAFL(SynthesizerBase):
    """A generator trained so that the teacher treats its images like real ones (DAFL §3.2–3.4).

    L_G = L_oh + α·L_a + β·L_ie (Eq. 5): confident one-hot teacher outputs (Eq. 2), strong
    penultimate activations (Eq. 3) and balanced classes (Eq. 4). The teacher needs no BatchNorm.
    Each ``synthesize`` call is one generator step on a fresh batch of latent codes; ``sample``
    draws new codes, so the student never sees the same image twice (Algorithm 1 alternates the
    two the same way).

    Deviations from the paper: the paper's output layer (tanh, then BatchNorm without affine) is
    kept as BatchNorm without affine, mapped through the teacher's normalization and clamped to
    [0, 1] pixels (freekd's convention; without it, sigmoid images half white reached 29 % in
    3 minutes, with it 53 %); the generator is 32 channels wide instead of 128 (a CPU budget:
    0.21 s instead of 1.8 s per generator step of 256 images on one core); the student takes
    ``recommended_synthesize_every`` steps per generator step.

    Args:
        image_shape: (C, H, W) of the teacher's input.
        num_classes: the teacher's class count (unused by DAFL's losses).
        rng: latent codes are drawn from it.
        device: where the generator lives.
        batch_size: latent codes per generator step.
        latent_dim: size of the latent code.
        lr: Adam learning rate of the generator.
        onehot_weight: weight of L_oh.
        activation_weight: α (0.1 in the paper).
        entropy_weight: β (5 in the paper for MNIST).
        generator_width: channels of the generator's first feature map (``nets.Generator``).
    """

    needs_batchnorm = False
    # Student steps per generator step. Algorithm 1 alternates one and one; on a CPU the
    # generator step costs ~7 student steps, and 5 student steps per generator step reached
    # 52.7 % vs 24.3 % after 3 minutes (LeNet-5 → LeNet-5-half, MNIST, one thread, seed 0).
    recommended_synthesize_every = 5

    batch_size: int = 256
    latent_dim: int = 100
    lr: float = 1e-3
    onehot_weight: float = 1.0
    activation_weight: float = 0.1
    entropy_weight: float = 5.0
    generator_width: int = 32
    generator_output: str = "batchnorm"

    def __post_init__(self) -> None:
        self.generator = Generator(
            latent_dim=self.latent_dim,
            image_shape=self.image_shape,
            width=self.generator_width,
            output=self.generator_output,
        ).to(self.device)
        self.optimizer = torch.optim.Adam(
            self.generator.parameters(), lr=self.lr, betas=GENERATOR_BETAS
        )

    def _latent(self, n: int) -> Tensor:
        return torch.randn((n, self.latent_dim), generator=self.rng).to(self.device)

    def synthesize(self, teacher: Teacher, student: nn.Module) -> dict[str, float]:
        classifier = last_linear(teacher)
        if classifier is None and self.activation_weight > 0:
            raise FreekdError(
                "dafl's activation loss reads the teacher's last nn.Linear layer, and this "
                "teacher has none; set synthesizer.params.activation_weight=0"
            )
        self.generator.train()
        self.generator.set_pixel_statistics(*teacher_pixel_statistics(teacher))
        images = self.generator(self._latent(self.batch_size))
        if classifier is not None:
            with capture_input(classifier) as features:
                teacher_logits = teacher(images)
            penultimate = features.value
        else:
            teacher_logits, penultimate = teacher(images), None
        terms = {
            "onehot": self.onehot_weight * onehot(teacher_logits),
            "information_entropy": self.entropy_weight * information_entropy(teacher_logits),
        }
        if penultimate is not None and self.activation_weight > 0:
            terms["activation"] = self.activation_weight * activation(penultimate.flatten(1))
        self.optimizer.zero_grad(set_to_none=True)
        total(terms).backward()
        self.optimizer.step()
        self.teacher_queries += self.batch_size
        self.images_synthesized += self.batch_size
        return logged(terms)

    @torch.no_grad()
    def sample(self, n: int) -> Tensor:
        self.generator.train()  # the statistics the generator was trained with (DAFL Alg. 1)
        self.images_synthesized += n
        return self.generator(self._latent(n))

    def reinitialize(self, *, lr_scale: float) -> None:
        reset_weights(self.generator, self.rng)
        restart_optimizer(self.optimizer, lr_scale=lr_scale)

    STATE: ClassVar[tuple[str, ...]] = (
        "generator",
        "optimizer",
        "rng",
        "images_synthesized",
        "teacher_queries",
    )
