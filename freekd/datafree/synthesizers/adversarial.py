"""Adversarial synthesizers: a generator that seeks where student and teacher disagree.

DFAD (Fang et al. 2019, arXiv:1912.11006) and ZSKT (Micaelli & Storkey 2019, arXiv:1905.09768)
play the same two-player game and differ in the discrepancy they measure: the generator
*maximizes* a teacher–student discrepancy on its images, the student *minimizes* it on fresh
images from the same generator. Only the generator's half lives here (``dfad.py`` and
``zskt.py`` choose the discrepancy); the student's half is an ordinary method (``logit-l1`` for
DFAD, ``kd`` at T = 1 for ZSKT) run by the one Trainer on the batches of
``datafree.source.SyntheticSource``, which calls ``synthesize`` once every ``synthesize_every``
student steps (the papers' k student steps per generator step).
"""

from __future__ import annotations

import copy
import math
from dataclasses import dataclass
from typing import Any, ClassVar

import torch
from torch import Tensor, nn

from freekd.datafree.batches import MemoryBank, balanced_targets, mix_pairs, random_shift
from freekd.datafree.collapse import label_balance
from freekd.datafree.synthesizers.base import (
    GeneratorSynthesizer,
    logged,
    scale_learning_rates,
    total,
)
from freekd.hooks import eval_mode
from freekd.losses.inversion import information_entropy, onehot, total_variation
from freekd.teachers import Teacher


@dataclass(kw_only=True, eq=False)
class AdversarialSynthesizer(GeneratorSynthesizer):
    """A DCGAN generator trained to maximize ``discrepancy(student, teacher)`` on its images.

    Each ``synthesize`` call runs ``generator_steps`` Adam steps, each on a fresh batch of latent
    codes, on the loss −adversarial_weight · discrepancy (reported under ``"adversarial"``).
    ``sample`` draws new codes, so the student never trains on the exact images the generator
    was updated on (both papers sample anew for the student steps).

    Gradients reach the generator through both the frozen teacher and the student, but only the
    generator's parameters accumulate them (``backward(inputs=...)``): the student's ``.grad``
    is left exactly as it was, so the student's optimizer, which steps right after, never sees a
    generator-step gradient. The student runs in eval mode during the generator step (its mode is
    restored afterwards): BatchNorm running statistics of the student are not moved by images it
    is not trained on, and dropout would draw from the global RNG rather than ``rng``.

    Subclasses set ``discrepancy`` and the recommended student side.

    Args:
        image_shape: (C, H, W) of the teacher's input.
        num_classes: the teacher's class count (unused by the adversarial loss).
        rng: latent codes are drawn from it.
        device: where the generator lives.
        batch_size: latent codes per generator step.
        latent_dim: size of the latent code.
        lr: Adam learning rate of the generator.
        adversarial_weight: weight of the (negated) discrepancy in the generator loss.
        balance_weight: weight of DAFL's information-entropy term (Chen et al. 2019 Eq. 4,
            ``losses.inversion.information_entropy``) on the teacher's outputs, which keeps every
            class about equally frequent in the generator's batches (a freekd addition to both
            papers' generator loss; 0 turns it off). Reported under ``"balance"``.
        balance_target: apply the balance term only on generator steps whose batch the teacher
            labels unevenly: its ``collapse.label_balance`` (the normalized entropy of the
            histogram of the teacher's argmax labels, 1 for a perfectly even batch) below this
            value (1: every step, as DAFL does). Meant to spare teachers whose labels on the
            generator's images are already even (a freekd experiment, session 29; at 0.93 it
            still cost two tuning teachers 2.8 and 8.5 points, see
            experiments/2026-12-datafree-zoo/README.md). On a step it skips, the generator still
            moves by the Adam momentum of earlier steps.
        balance_after: generator steps (counted over the whole run, across resumes and collapse
            restarts) before the balance term may act (0: from the first, as DAFL does). A
            freekd experiment (session 29): whether the term's first rounds are what costs the
            teachers it hurts. With either option set, the share of a ``synthesize`` call's
            generator steps the term acted on is logged as ``"balance_active"``; ``"balance"``
            is the last step's term, 0 when it did not act.
        generator_steps: generator updates per ``synthesize`` call.
        generator_width: channels of the generator's first feature map (``nets.Generator``); its
            last convolution at full resolution dominates the cost of every step on a CPU.
        generator_output: the generator's output layer (``nets.Generator``): ``batchnorm``,
            DAFL's (images with the teacher's input mean and std before the clamp to [0, 1]),
            ``matched`` (the same mean and std after the clamp: for MNIST's statistics, mostly
            black images with white strokes, as real digits), ``matched-st`` (``matched``
            through a straight-through clamp), ``matched-blur`` (``matched`` anti-aliased by a
            3×3 Gaussian) or ``sigmoid``.
        generator_kind: ``dcgan`` (``nets.Generator``, both papers' generator) or
            ``strokes`` (``nets.StrokeGenerator``: images of a few anti-aliased pen strokes on
            black, drawn from their distance fields; ``generator_width`` does not apply to it,
            and ``generator_output`` and ``generator_frame`` are refused with it; a freekd
            experiment, session 30).
        generators: number of independent generators (``nets.GeneratorEnsemble``; 1: one, as
            in both papers). Every batch, for the generator's step, the student and the collapse
            probe, is split into equal contiguous parts, one per generator (a student batch
            or probe of fewer images than generators is drawn by the first ones; the
            generator batch, ``batch_size``, must have one image per generator at least, or
            some generators would never train), so a round costs about what one generator's
            does. Each generator is trained on the discrepancy and the
            smoothness prior of its own images; the balance term, its gate and the relative
            prior's weight are measured on the whole batch. More generators cover more of the
            teacher's input space (Choi et al. 2020, CVPR Workshops, arXiv:2005.04136, which
            proposes multiple generators for diverse adversarial samples; a freekd experiment,
            session 30). The collapse checks pool the whole probe, and a restart redraws
            every generator.
        generator_frame: width, in pixels, of a border the generator's images leave black (0:
            none, as in both papers). MNIST's digits keep 3 % of their intensity in the outer 4
            pixels (49 % of the area), a default generator's images 37–49 %: a teacher's
            weights there may never have seen ink (a freekd experiment, session 28: on one
            tuning teacher it learned faster, then fell below the default; see
            experiments/2026-12-datafree-zoo/README.md).
        replay_fraction: share of every student batch drawn from a memory of earlier generator
            batches instead of the current generator (0: none, as in both papers). Replaying
            past synthetic samples counters the student forgetting what earlier generators
            showed it (Binici et al. 2022, WACV, "Preventing Catastrophic Forgetting and
            Distribution Mismatch in Knowledge Distillation via Synthetic Data", §3).
        memory_size: images the replay memory keeps (first in, first out); every ``synthesize``
            call stores one fresh batch of the updated generator.
        class_weight: weight of a class-conditional term (0: off, an unconditional generator as
            in both papers). When positive the generator is conditional, as in a conditional GAN
            (Mirza & Osindero 2014, arXiv:1411.1784 §3.2: the one-hot class is appended to z),
            every batch asks for every class equally often (``balanced_targets``) and the
            generator also minimizes class_weight · CE(teacher(G(z, y)), y), as CGDD does (Yu et
            al. 2021, arXiv:2112.15358 §3.2): no class can drop out of the student's batches.
            Reported under ``"class"`` (a freekd addition to both papers).
        confidence_weight: weight of DAFL's one-hot loss L_oh (Chen et al. 2019, Eq. 2,
            ``losses.inversion.onehot``: the cross-entropy between the teacher's outputs on the
            generator's images and its own argmax), which moves the images toward inputs the
            teacher classifies confidently, as it does real ones (0: off, as in both papers).
            The adversarial game alone draws images on the teacher's decision boundaries: on
            the zoo the teachers' mean top probability on the last generator's images is
            0.29–0.75, against 0.79–0.99 on real digits (a freekd experiment, session 30).
            Scaled by ``relative_prior`` as the smoothness prior is. Reported under
            ``"confidence"``.
        generator_momentum: momentum m of an exponential moving average of the generator's weights
            (0: none, as in both papers). When positive, a copy G̃ of the generator follows it
            (θ̃ ← m·θ̃ + (1 − m)·θ after every generator step), and half of the fresh images of every
            student batch (the first half, rounded down; with replay, half of the part not replayed)
            are drawn from G̃ instead of the generator, so ``samples.png`` and ``--save-queries``
            see them too: Momentum Adversarial Distillation (MAD; Do et al. 2022, NeurIPS,
            arXiv:2209.10359, §3), whose student trains on samples of both the generator and its EMA
            copy so that it does not adapt too quickly to a generator that moves far in a few
            rounds. The paper's generator is class-conditional (its Fig. 1); here the two halves of
            one batch weigh the same in the student's loss and the generator is whichever
            this synthesizer builds (a freekd re-implementation of the EMA copy only, session 32).
            The collapse probe and the replay memory draw from the generator itself; a collapse
            restart restarts G̃ from the new generator. The relative distance ‖θ − θ̃‖ / ‖θ‖ after
            each round is reported under ``"momentum_distance"``.
        temperature: softmax temperature of ZSKT's KL discrepancy (the paper's 1). DFAD's
            discrepancy is on logits and has none: it refuses any other value.
        standardize: z-score both networks' logits inside ZSKT's KL discrepancy (logit
            standardization, Sun et al. 2024, CVPR, §3.2): the generator then seeks a
            disagreement in the shape of the two distributions, not in the teacher's logit
            scale. DFAD's discrepancy refuses it, as it refuses a temperature (a freekd addition).
        student_shift: largest random translation, in pixels, applied per image to the batches
            the student trains on (``batches.random_shift``; 0: none, as in both papers).
            The teacher labels the shifted images, so every generator image yields views it
            never drew itself, as CMI and Fast do with crops of their synthetic data (a freekd
            addition).
        student_mixup: share of every student batch replaced by mixtures of two of its images
            (``batches.mix_pairs``; 0: none, as in both papers). The teacher labels each
            mixture, so the student matches the teacher's function between the generator's
            images too, as in Beyer et al.'s function matching (2022, CVPR, §3.2; a freekd
            addition). Applied before ``student_shift``.
        total_variation_weight: weight of DeepInversion's total-variation image prior R_TV on
            the generator's images (Yin et al. 2020, arXiv:1912.08795, Eq. 3;
            ``losses.inversion.total_variation``; 0: off, as in both papers, and the default of
            dfad; zskt defaults to 1, see ``ZSKT``). It favours smooth
            strokes over the pixel-level texture an unconstrained generator draws. Reported under
            ``"total_variation"`` (a freekd addition).
        relative_prior: scale the smoothness prior (and the confidence term) with the
            discrepancy the generator finds: its weight is ``total_variation_weight`` (or
            ``confidence_weight``) × min(1, (running mean of the discrepancy) /
            ``REFERENCE_DISCREPANCY``), never above the weight given. A teacher
            with soft outputs (label smoothing) leaves a discrepancy 30 times smaller than
            LeNet-5's, and a fixed weight then lets the prior drown the adversarial signal
            (experiments/2026-12-datafree-zoo/README.md). Off: the weight as given (a freekd
            addition).
        follow_student_schedule: anneal the generator's learning rate with the student's (the
            trainer's schedule, e.g. cosine to zero): before every round the generator's Adam
            rate is ``lr`` × the student's multiplier at that step. ZSKT anneals both players
            with cosine (Micaelli & Storkey 2019, §4; the authors' code schedules both optimizers
            over the run's length); with a
            constant generator rate the game ends with the generator winning while the
            student's rate is near zero, and the student is trained on batches it can no
            longer follow (experiments/2026-12-datafree-zoo/README.md). Off: the constant
            ``lr``.
        schedule_power: with ``follow_student_schedule``, the generator's rate is ``lr`` × the
            student's multiplier to this power (1: the student's own schedule, as in ZSKT). Above
            1 the generator slows down sooner than the student, so late in the run the student
            learns against a generator that moves less: the two players on two time scales, as
            in the two time-scale update rule for GANs (Heusel et al. 2017, NeurIPS, §2), here
            with the minimizing player faster at the end (a freekd experiment, session 34: at 2
            it lowered every tuning teacher it finished on, ``pixel-groupnorm`` by 7.5 points).
    """

    needs_batchnorm = False
    #: Whether ``discrepancy`` compares softmax outputs (and so takes ``temperature``).
    has_temperature: ClassVar[bool] = True
    #: The student-side method (``METHODS`` name) and its parameters the paper pairs with.
    recommended_method: ClassVar[str]
    recommended_method_params: ClassVar[dict[str, Any]] = {}
    #: Student steps per generator round in the paper (``DataFreeConfig.synthesize_every``).
    recommended_synthesize_every: ClassVar[int]
    #: ``CollapseConfig.discrepancy_factor`` when unset: the game can end with the generator
    #: winning once the student's learning rate has decayed (datafree.collapse).
    recommended_discrepancy_factor: ClassVar[float] = 3.0
    #: The discrepancy (nats) at which ``relative_prior`` leaves the prior's weight as given:
    #: zskt's KL on the reference LeNet-5 teacher in the middle of a default run (0.36–0.44
    #: nats at steps 400–850), where its weight of 1 was chosen (experiments/datafree/).
    REFERENCE_DISCREPANCY: ClassVar[float] = 0.4
    #: Weight of the newest step in the running mean of the discrepancy.
    DISCREPANCY_MOMENTUM: ClassVar[float] = 0.1

    adversarial_weight: float = 1.0
    balance_weight: float = 0.0
    balance_target: float = 1.0
    balance_after: int = 0
    generator_steps: int = 1
    generator_width: int = 32
    generator_output: str = "batchnorm"
    generator_frame: int = 0
    generator_kind: str = "dcgan"
    generators: int = 1
    replay_fraction: float = 0.0
    memory_size: int = 20_000
    generator_momentum: float = 0.0
    student_shift: int = 0
    student_mixup: float = 0.0
    class_weight: float = 0.0
    confidence_weight: float = 0.0
    temperature: float = 1.0
    standardize: bool = False
    total_variation_weight: float = 0.0
    relative_prior: bool = False
    follow_student_schedule: bool = False
    schedule_power: float = 1.0

    def __post_init__(self) -> None:
        self._check_hyperparameters()
        self.discrepancy_scale = 0.0  # running mean of the discrepancy; 0: none measured yet
        self.memory = MemoryBank(self.memory_size)
        self._build_generator(
            width=self.generator_width,
            output=self.generator_output,
            frame=self.generator_frame,
            count=self.generators,
            kind=self.generator_kind,
            condition_dim=self.num_classes if self.class_weight > 0 else 0,
        )
        # MAD's EMA copy of the generator (generator_momentum); None when off.
        self.momentum_generator: nn.Module | None = None
        if self.generator_momentum > 0:
            self.momentum_generator = copy.deepcopy(self.generator).requires_grad_(False)

    def _check_hyperparameters(self) -> None:
        """Refuse values out of range (``ValueError``, which the pipeline reports as a usage
        error naming ``synthesizer.params``)."""
        if self.batch_size < 1 or self.generator_steps < 1:
            raise ValueError("batch_size and generator_steps must be positive")
        if self.generator_kind == "strokes" and (
            self.generator_output != "batchnorm" or self.generator_frame != 0
        ):
            raise ValueError(
                "generator_output and generator_frame shape the dcgan generator's images; the "
                "strokes generator draws strokes on black: leave them unset"
            )
        if isinstance(self.generators, bool) or not isinstance(self.generators, int):
            raise ValueError(f"generators must be a whole number, got {self.generators!r}")
        if not 1 <= self.generators <= self.batch_size:
            raise ValueError(
                f"generators must lie in [1, batch_size = {self.batch_size}] (each generator "
                f"trains on its own part of every generator batch), got {self.generators}; "
                "lower generators or raise synthesizer.params.batch_size (or the memory limit)"
            )
        if not 0 <= self.replay_fraction < 1:
            raise ValueError(f"replay_fraction must lie in [0, 1), got {self.replay_fraction}")
        if not 0 <= self.generator_momentum < 1:
            raise ValueError(
                f"generator_momentum must lie in [0, 1), got {self.generator_momentum}"
            )
        if self.student_shift < 0:
            raise ValueError(f"student_shift must be non-negative, got {self.student_shift}")
        if not 0 <= self.student_mixup <= 1:
            raise ValueError(f"student_mixup must lie in [0, 1], got {self.student_mixup}")
        if self.class_weight < 0:
            raise ValueError(f"class_weight must be non-negative, got {self.class_weight}")
        if self.confidence_weight < 0:
            raise ValueError(
                f"confidence_weight must be non-negative, got {self.confidence_weight}"
            )
        if self.balance_weight < 0:
            raise ValueError(f"balance_weight must be non-negative, got {self.balance_weight}")
        if self.balance_after < 0:
            raise ValueError(f"balance_after must be non-negative, got {self.balance_after}")
        if not 0 < self.balance_target <= 1:
            raise ValueError(f"balance_target must lie in (0, 1], got {self.balance_target}")
        if self.schedule_power != 1 and not self.follow_student_schedule:
            raise ValueError(
                "schedule_power shapes the generator's schedule when it follows the student's: "
                "leave it 1, or set follow_student_schedule=true"
            )
        if not (math.isfinite(self.schedule_power) and self.schedule_power > 0):
            raise ValueError(
                f"schedule_power must be a finite number above 0, got {self.schedule_power}"
            )
        if self.temperature <= 0:
            raise ValueError(f"temperature must be positive, got {self.temperature}")
        if (self.temperature != 1.0 or self.standardize) and not self.has_temperature:
            raise ValueError(
                "this discrepancy is on logits: it has no temperature (leave it 1) and no "
                "standardize (leave it false)"
            )
        if self.total_variation_weight < 0:
            raise ValueError(
                f"total_variation_weight must be non-negative, got {self.total_variation_weight}"
            )

    def discrepancy(self, student_logits: Tensor, teacher_logits: Tensor) -> Tensor:
        """The scalar the generator maximizes and the student minimizes; (B, K) logits each."""
        raise NotImplementedError

    def _latent(self, n: int) -> tuple[Tensor, Tensor | None]:
        """n generator inputs and, for a conditional generator, the classes they ask for."""
        codes = torch.randn((n, self.latent_dim), generator=self.rng)
        if self.class_weight <= 0:
            return codes.to(self.device), None
        targets = balanced_targets(n, self.num_classes, self.rng)
        one_hot = nn.functional.one_hot(targets, self.num_classes).to(codes.dtype)
        return torch.cat([codes, one_hot], dim=1).to(self.device), targets.to(self.device)

    def synthesize(self, teacher: Teacher, student: nn.Module) -> dict[str, float]:
        self._start_round(teacher)
        parameters = list(self.generator.parameters())
        terms: dict[str, Tensor] = {}
        balance_active = 0
        with eval_mode(student):
            for _ in range(self.generator_steps):
                codes, targets = self._latent(self.batch_size)
                images = self.generator(codes)
                # No no_grad on either model: the gradient flows through both into the images.
                teacher_logits = teacher(images)
                student_logits = student(images)
                discrepancy = self.discrepancy(student_logits, teacher_logits)
                terms = {"adversarial": -self.adversarial_weight * discrepancy}
                if targets is not None:
                    terms["class"] = self.class_weight * nn.functional.cross_entropy(
                        teacher_logits, targets
                    )
                if self.total_variation_weight > 0 or self.confidence_weight > 0:
                    relative = self._relative_scale(float(discrepancy.detach()))
                    if self.total_variation_weight > 0:
                        terms["total_variation"] = (
                            self.total_variation_weight * relative * total_variation(images)
                        )
                    if self.confidence_weight > 0:
                        terms["confidence"] = (
                            self.confidence_weight * relative * onehot(teacher_logits)
                        )
                if self.balance_weight > 0:
                    terms["balance"], active = self._balance_term(teacher_logits)
                    balance_active += active
                self.optimizer.zero_grad(set_to_none=True)
                # inputs=: only the generator accumulates gradients (never the student's .grad).
                total(terms).backward(inputs=parameters)
                self.optimizer.step()
                self._follow_generator()
                self.teacher_queries += self.batch_size
                self.images_synthesized += self.batch_size
        if self.replay_fraction > 0:
            self.memory.add(self._fresh(self.batch_size))
        statistics = logged(terms)
        if self.balance_weight > 0 and (self.balance_target < 1 or self.balance_after > 0):
            statistics["balance_active"] = balance_active / self.generator_steps
        if self.momentum_generator is not None:
            statistics["momentum_distance"] = self._momentum_distance()
        return statistics

    @torch.no_grad()
    def _follow_generator(self) -> None:
        """One step of MAD's moving average θ̃ ← m·θ̃ + (1 − m)·θ (``generator_momentum``);
        buffers (the pixel statistics, BatchNorm's running statistics, unused in train mode)
        are copied."""
        if self.momentum_generator is None:
            return
        pairs = zip(self.momentum_generator.parameters(), self.generator.parameters(), strict=True)
        for averaged, current in pairs:
            averaged.lerp_(current, 1.0 - self.generator_momentum)
        buffers = zip(self.momentum_generator.buffers(), self.generator.buffers(), strict=True)
        for copied, source in buffers:
            copied.copy_(source)

    @torch.no_grad()
    def _momentum_distance(self) -> float:
        """‖θ − θ̃‖ / ‖θ‖ over all of the generator's parameters."""
        assert self.momentum_generator is not None
        current = torch.cat([p.flatten() for p in self.generator.parameters()])
        averaged = torch.cat([p.flatten() for p in self.momentum_generator.parameters()])
        return float((current - averaged).norm() / current.norm().clamp_min(1e-12))

    def _balance_term(self, teacher_logits: Tensor) -> tuple[Tensor, bool]:
        """DAFL's information entropy times ``balance_weight`` when the batch's label balance
        is below ``balance_target`` (always when the target is 1), else a zero that carries no
        gradient; and whether the term acted. Off for the first ``balance_after`` generator
        steps (``teacher_queries`` counts them: one batch each, resumed with the run)."""
        if self.teacher_queries < self.balance_after * self.batch_size:
            return teacher_logits.new_zeros(()), False
        if self.balance_target < 1 and label_balance(teacher_logits) >= self.balance_target:
            return teacher_logits.new_zeros(()), False
        return self.balance_weight * information_entropy(teacher_logits), True

    def _relative_scale(self, discrepancy: float) -> float:
        """What the priors' weights are multiplied by this step: with ``relative_prior``, the
        running mean of the discrepancy over ``REFERENCE_DISCREPANCY``, at most 1; without it,
        1. Every call moves the running mean by ``discrepancy``: call it once per generator
        step."""
        if not self.relative_prior:
            return 1.0
        momentum = self.DISCREPANCY_MOMENTUM if self.discrepancy_scale > 0 else 1.0
        self.discrepancy_scale += momentum * (discrepancy - self.discrepancy_scale)
        return min(1.0, self.discrepancy_scale / self.REFERENCE_DISCREPANCY)

    @torch.no_grad()
    def sample(self, n: int) -> Tensor:
        replayed = round(n * self.replay_fraction) if len(self.memory) else 0
        averaged = (n - replayed) // 2 if self.momentum_generator is not None else 0
        images = self._fresh(n - replayed - averaged)
        if averaged:
            images = torch.cat([self._fresh_averaged(averaged), images])
        if replayed:
            # .to: a resumed memory is loaded on the CPU.
            images = torch.cat([images, self.memory.sample(replayed, self.rng).to(images.device)])
        return self._as_student_input(images)

    @torch.no_grad()
    def probe(self, n: int) -> Tensor:
        """The current generator's images only (with replay, ``sample`` draws part of a batch
        from earlier generators, and with ``generator_momentum`` from its moving average: their
        variety would hide this one's collapse). Without either, the same images, from the
        same random draws, as ``sample``."""
        return self._as_student_input(self._fresh(n))

    @torch.no_grad()
    def _fresh_averaged(self, n: int) -> Tensor:
        """n images of fresh latent codes from MAD's EMA copy (in train mode, as ``_fresh``)."""
        assert self.momentum_generator is not None
        self.momentum_generator.train()
        self.images_synthesized += n
        return self.momentum_generator(self._latent(n)[0])  # type: ignore[no-any-return]

    def _as_student_input(self, images: Tensor) -> Tensor:
        """Mixup (``student_mixup``) and the random shift (``student_shift``) of a batch."""
        if self.student_mixup > 0:
            images = mix_pairs(images, fraction=self.student_mixup, rng=self.rng)
        return random_shift(images, pixels=self.student_shift, rng=self.rng)

    def follow_schedule(self, multiplier: float) -> None:
        if self.follow_student_schedule:
            scale_learning_rates(self.optimizer, multiplier**self.schedule_power)

    def reinitialize(self, *, lr_scale: float) -> None:
        super().reinitialize(lr_scale=lr_scale)
        self.memory.clear()
        self.discrepancy_scale = 0.0  # a new game: measured afresh
        if self.momentum_generator is not None:
            self.momentum_generator.load_state_dict(self.generator.state_dict())

    def state_dict(self) -> dict[str, Any]:
        state = super().state_dict()
        if self.momentum_generator is not None:
            state["momentum_generator"] = self.momentum_generator.state_dict()
        return state

    def load_state_dict(self, state: dict[str, Any]) -> None:
        super().load_state_dict(state)
        if self.momentum_generator is None:
            return
        if "momentum_generator" not in state:  # saved without the option: start from here
            self.momentum_generator.load_state_dict(self.generator.state_dict())
        else:
            self.momentum_generator.load_state_dict(state["momentum_generator"])

    STATE: ClassVar[tuple[str, ...]] = (*GeneratorSynthesizer.STATE, "memory", "discrepancy_scale")
