"""A fixed set of images the teacher is sure of, and the student's agreement with it there: a
data-free measurement of the student between epochs (``DataFreeConfig.confident_probe``).

The generator's images sit near the teacher's decision boundaries (session 30 of
``experiments/2026-12-datafree-zoo``: the teacher's top probability on them 0.29–0.75, on real
digits 0.79–0.99), and the student's accuracy on real digits can fall for several epochs while
its KL to the teacher on the generator's images moves no more than in runs that do not fall
(sessions 24 and 31). Whether the student still agrees with its teacher on inputs the teacher is
*sure* of can be measured without data: class-conditional model inversion draws such inputs from
the teacher alone (what it optimizes for; the teacher's mean top probability on the result is
recorded as ``probe/teacher_confidence``).

The inversion is DeepInversion's image update without its BatchNorm term (Yin et al. 2020,
arXiv:1912.08795, Eq. 3 and 8; the same objective as Nayak et al.'s and Mordvintsev et al.'s
class visualizations): from noise, ``iterations`` Adam steps on

    L = CE(teacher(jitter(x)), y) + R_TV(x) + R_l2(x)

with x = sigmoid(logits) in [0, 1] (freekd's pixel range), ``per_class`` images for every class y,
and each step's batch shifted by up to 2 pixels (§3.2's jitter). It draws its noise and shifts
from its own generator, seeded by the run's seed, and queries the teacher only: without a time
or CPU budget a run measured with it trains exactly as a run without it. The drawing is done
before a budget's clocks start; the measurement after each epoch (one student pass over the
images, with the teacher's logits kept from the drawing) counts in a budget, as the collapse
check does. ``report.json`` counts its images and teacher queries apart (``confident_probe``),
not in the run's ``teacher_queries``; a resumed run draws them again.
"""

from __future__ import annotations

import logging
import math
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from freekd.datafree.batches import jitter_flip
from freekd.datafree.config import DataFreeConfig
from freekd.errors import FreekdError
from freekd.hooks import eval_mode
from freekd.losses.inversion import kl_discrepancy, l2_prior, total_variation
from freekd.teachers import Teacher
from freekd.train.averaging import WeightAverage
from freekd.train.trainer import Callback, Trainer, TrainState

logger = logging.getLogger(__name__)

#: Adam steps, learning rate and largest shift of the inversion (DeepInversion's small-image
#: settings at a CPU budget; not tuned).
ITERATIONS = 200
LEARNING_RATE = 0.1
JITTER = 2
#: Images inverted together. Each image has its own loss term, but a chunk shares its shifts and
#: draws its noise after the previous chunk's shifts: the images depend on it.
CHUNK = 256
#: The most the probe's images may take (float32, MB): a measurement must not crowd out the
#: run. Neither they nor the inversion's autograd buffers count in the memory fit
#: (``datafree.memory``), which sizes the synthesizer's batches.
MAX_MEGABYTES = 256


def confident_images(
    teacher: nn.Module,
    *,
    per_class: int,
    num_classes: int,
    image_shape: tuple[int, ...],
    rng: torch.Generator,
    device: torch.device,
    iterations: int = ITERATIONS,
) -> tuple[Tensor, Tensor]:
    """``per_class`` images of every class the teacher is sure of, class by class in turn
    (0, 1, …, K−1, 0, 1, …), and the teacher's logits on them."""
    targets = torch.arange(num_classes, device=device).repeat(per_class)
    images, logits = [], []
    with eval_mode(teacher):
        for start in range(0, len(targets), CHUNK):
            wanted = targets[start : start + CHUNK]
            noise = torch.randn((len(wanted), *image_shape), generator=rng).to(device)
            pixels = noise.requires_grad_(True)
            optimizer = torch.optim.Adam([pixels], lr=LEARNING_RATE)
            for _ in range(iterations):
                drawn = torch.sigmoid(pixels)
                shifted = jitter_flip(drawn, jitter=JITTER, flip=False, rng=rng)
                loss = (
                    F.cross_entropy(teacher(shifted), wanted)
                    + total_variation(drawn)
                    + l2_prior(drawn)
                )
                (gradient,) = torch.autograd.grad(loss, pixels)
                pixels.grad = gradient
                optimizer.step()
            with torch.no_grad():
                final = torch.sigmoid(pixels)
                images.append(final)
                logits.append(teacher(final))
    return torch.cat(images), torch.cat(logits)


class ConfidentProbe(Callback):
    """After every epoch, the evaluated student's KL(teacher ‖ student) and argmax agreement with
    the teacher on ``confident_images`` (drawn once, at the start of the fit), written to
    ``state.metrics`` as ``probe/kl`` and ``probe/agreement`` (``metrics.jsonl``'s epoch lines),
    and the teacher's mean top probability on them as ``probe/teacher_confidence``.

    The evaluated student is the weight average when the run keeps one (what ``eval_accuracy``
    measures and ``model.pt`` holds), else the student. With ``per_class`` 0 it measures nothing
    and only clears the ``probe/`` values a resumed checkpoint carries.
    """

    def __init__(
        self,
        teacher: nn.Module,
        *,
        per_class: int,
        num_classes: int,
        image_shape: tuple[int, ...],
        seed: int,
        device: torch.device,
        iterations: int = ITERATIONS,
    ) -> None:
        self.teacher = teacher
        self.per_class = per_class
        self.num_classes = num_classes
        self.image_shape = image_shape
        self.seed = seed
        self.device = device
        self.iterations = iterations
        self.images: Tensor | None = None
        self.teacher_logits: Tensor | None = None

    def report(self) -> dict[str, int]:
        """``report.json``'s ``confident_probe``: its images and the teacher queries they cost
        (every image through the teacher at each inversion step and once more at the end)."""
        images = self.per_class * self.num_classes
        return {"images": images, "teacher_queries": images * (self.iterations + 1)}

    def on_fit_start(self, trainer: Trainer, state: TrainState) -> None:
        # A run resumed from a checkpoint that was measured keeps the last values in its
        # state; measured again or not at all from here on, they must not be logged as new.
        for key in [key for key in state.metrics if key.startswith("probe/")]:
            del state.metrics[key]
        if self.images is not None or not self.per_class:
            return
        rng = torch.Generator().manual_seed(self.seed)
        self.images, self.teacher_logits = confident_images(
            self.teacher,
            per_class=self.per_class,
            num_classes=self.num_classes,
            image_shape=self.image_shape,
            rng=rng,
            device=self.device,
            iterations=self.iterations,
        )

    @torch.no_grad()
    def on_epoch_end(self, trainer: Trainer, state: TrainState) -> None:
        if self.per_class:
            state.metrics.update(self.measure(_evaluated(trainer)))

    @torch.no_grad()
    def measure(self, student: nn.Module) -> dict[str, float]:
        """``probe/kl``, ``probe/agreement`` and ``probe/teacher_confidence`` of ``student``."""
        if self.images is None or self.teacher_logits is None:
            raise RuntimeError("ConfidentProbe.measure before on_fit_start drew the images")
        with eval_mode(student):
            student_logits = torch.cat(
                [student(self.images[i : i + CHUNK]) for i in range(0, len(self.images), CHUNK)]
            )
        agreement = (student_logits.argmax(1) == self.teacher_logits.argmax(1)).float().mean()
        confidence = self.teacher_logits.softmax(1).max(1).values.mean()
        return {
            "probe/kl": float(kl_discrepancy(student_logits, self.teacher_logits)),
            "probe/agreement": float(agreement),
            "probe/teacher_confidence": float(confidence),
        }


def _evaluated(trainer: Trainer) -> Any:
    """The weight average if the run keeps one, else the student."""
    for callback in trainer.callbacks:
        if isinstance(callback, WeightAverage):
            return callback.module
    return trainer.unwrapped("student")


def confident_probe(
    config: DataFreeConfig, teacher: Teacher, *, synthesizing: bool, device: torch.device
) -> ConfidentProbe:
    """The run's ``confident_probe`` callback; off (``per_class`` 0) unless the run asks for
    it, and for a proxy-data run, which has real images to measure on."""
    per_class = config.confident_probe
    if per_class and not synthesizing:
        logger.warning(
            "confident_probe is ignored with --proxy-data: the run is measured on real images"
        )
        per_class = 0
    images = per_class * teacher.num_classes
    megabytes = images * math.prod(teacher.input_shape) * 4 / 1e6
    if megabytes > MAX_MEGABYTES:
        raise FreekdError(
            f"confident_probe={per_class} keeps {images:,} images of {teacher.num_classes} "
            f"classes ({megabytes:,.0f} MB, more than {MAX_MEGABYTES} MB); "
            "lower --set confident_probe"
        )
    return ConfidentProbe(
        teacher,
        per_class=per_class,
        num_classes=teacher.num_classes,
        image_shape=teacher.input_shape,
        seed=config.seed,
        device=device,
    )
