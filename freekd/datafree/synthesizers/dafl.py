"""DAFL: Data-Free Learning of Student Networks (Chen et al. 2019, arXiv:1904.01186)."""

from __future__ import annotations

from dataclasses import dataclass

from torch import Tensor, nn

from freekd.datafree.synthesizers.base import SYNTHESIZERS, GeneratorSynthesizer, logged, total
from freekd.errors import FreekdError
from freekd.hooks import capture_input, last_linear
from freekd.losses.inversion import activation, information_entropy, onehot
from freekd.teachers import Teacher


@SYNTHESIZERS.register("dafl")
@dataclass(kw_only=True, eq=False)
class DAFL(GeneratorSynthesizer):
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
    taps_teacher = True  # the input of its last nn.Linear
    # Student steps per generator step. Algorithm 1 alternates one and one; on a CPU the
    # generator step costs ~7 student steps, and 5 student steps per generator step reached
    # 52.7 % vs 24.3 % after 3 minutes (LeNet-5 → LeNet-5-half, MNIST, one thread, seed 0).
    recommended_synthesize_every = 5

    onehot_weight: float = 1.0
    activation_weight: float = 0.1
    entropy_weight: float = 5.0
    generator_width: int = 32
    generator_output: str = "batchnorm"

    def __post_init__(self) -> None:
        self._build_generator(width=self.generator_width, output=self.generator_output)

    def synthesize(self, teacher: Teacher, student: nn.Module) -> dict[str, float]:
        classifier = last_linear(teacher)
        if classifier is None and self.activation_weight > 0:
            raise FreekdError(
                "dafl's activation loss reads the teacher's last nn.Linear layer, and this "
                "teacher has none; set synthesizer.params.activation_weight=0"
            )
        self._start_round(teacher)
        images = self.generator(self._latent(self.batch_size)[0])
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

    def sample(self, n: int) -> Tensor:
        return self._fresh(n)  # the statistics the generator was trained with (DAFL Alg. 1)
