"""Training rules for image–text models, run by the one Trainer.

The CLIP-to-CLIP distillation methods register in the one method registry, ``methods.METHODS``,
with ``distills = CLIP``; ``freekd crossmodal distill`` accepts exactly those
(``CROSSMODAL_METHODS``, a view of ``METHODS``), ``freekd distill`` none of them. The one-tower
rule (``TowerContrastive``) and the teacher-free baselines are built directly by their pipeline.
"""

from __future__ import annotations

import math
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from freekd.crossmodal.clip import ClipModel
from freekd.crossmodal.towers import Tower
from freekd.data.batch import Batch
from freekd.errors import FreekdError
from freekd.hostmemory import check_fits
from freekd.losses.contrastive import (
    clip_contrastive,
    contrastive_relational,
    feature_distillation,
    info_nce,
    interactive_contrastive,
)
from freekd.methods.base import METHODS, Method, StepOutput
from freekd.methods.context import MethodContext

CLIP = "clip"
"""``Method.distills`` of methods from a CLIP teacher into a CLIP student, on paired batches."""


class ClipContrastive(Method):
    """Train a CLIP from paired batches with CLIP's own loss (Radford et al. 2021, §2.3).

    Batches carry images and their captions' token ids (``Batch.texts``). This trains the tiny
    open_clip teachers of the cross-modal benchmark and, on a student, the baseline without a
    teacher.

    Args:
        student: the CLIP being trained.
    """

    student: ClipModel

    def __init__(self, student: ClipModel) -> None:
        super().__init__()
        self.student = student

    def training_step(self, batch: Batch) -> StepOutput:
        if batch.texts is None:
            raise FreekdError("CLIP training needs paired batches (images with caption tokens)")
        images = self.student.encode_image(batch.images)
        texts = self.student.encode_text(batch.texts)
        loss = clip_contrastive(images, texts, logit_scale=self.student.logit_scale())
        return StepOutput(losses={"clip": loss}, logits=None)


def _check_weight(name: str, value: Any) -> None:
    """A loss weight must be a finite, non-negative number. The commands read YAML's and
    ``--set``'s strings as numbers before this (``runs.check_params``); what reaches it from
    Python as text or a boolean is refused, naming the value."""
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise ValueError(f"{name} must be a number, got {value!r}")
    if not math.isfinite(value) or value < 0:
        raise ValueError(f"{name} must be non-negative and finite, got {value}")


class _ClipDistill(Method):
    """A CLIP student learning from a frozen CLIP teacher on paired batches.

    The student keeps CLIP's own loss on its pairs (``clip_weight``) and adds a distillation
    term (``weight``) computed through linear projection heads from the student's embedding
    dimension to the teacher's (Tian et al. 2020 §3.2; Yang et al. 2024 §3.2), one per tower;
    a method with ``projects = False`` (``relational``) gets the student's embeddings as they are.
    The teacher runs without gradients and stays in eval mode.

    Args:
        student: the CLIP being trained.
        teacher: the frozen CLIP teacher (same tokenizer context length).
        weight: weight of the distillation term (at the first step, with ``weight_end``).
        clip_weight: weight of the student's own CLIP loss.
        weight_end: the distillation weight at the run's last planned step, reached linearly
            from ``weight`` at the first (below ``weight``: the teacher guides early and lets
            go late, so a student whose own pairs come to teach more than the teacher knows is
            not held back at the end; cf. Annealing-KD, Jafari et al. 2021 §3, which anneals
            the teacher's signal over training; above it: a ramp-up). ``None``: constant.
        total_steps: the run's planned steps, wired from the run (``MethodContext``); needed
            by ``weight_end``. A run resumed with more epochs plans more steps, and the
            schedule (like the learning rate's) is recomputed over the new total: the weight
            jumps back toward ``weight`` at the resume.
    """

    distills = CLIP
    student: ClipModel
    projects = True
    """Whether the term compares student and teacher embeddings directly (through the heads);
    a relational term compares each model's similarities within its own space instead."""

    def __init__(
        self,
        student: ClipModel,
        teacher: ClipModel,
        *,
        weight: float = 1.0,
        clip_weight: float = 1.0,
        weight_end: float | None = None,
        total_steps: int | None = None,
    ) -> None:
        super().__init__()
        for name, value in (("weight", weight), ("clip_weight", clip_weight)) + (
            () if weight_end is None else (("weight_end", weight_end),)
        ):
            _check_weight(name, value)
        if weight_end is not None and not total_steps:
            raise ValueError("weight_end needs the run's planned steps (total_steps)")
        if student.context_length != teacher.context_length:
            raise FreekdError(
                f"student and teacher tokenize to {student.context_length} and "
                f"{teacher.context_length} tokens; give the student the teacher's context_length"
            )
        self.student = student
        self.teacher = teacher.eval().requires_grad_(False)
        head = (
            (lambda: nn.Linear(student.embed_dim, teacher.embed_dim))
            if self.projects
            else nn.Identity
        )
        self.image_head, self.text_head = head(), head()
        self.weight = weight
        self.clip_weight = clip_weight
        self.weight_end = weight_end
        self.total_steps = total_steps or 0
        if weight_end is not None:
            # Steps taken, saved with the method so a resumed run continues the schedule
            # (only with a schedule: runs with a constant weight keep their old state).
            self.register_buffer("steps", torch.zeros((), dtype=torch.long))

    @classmethod
    def from_context(cls, context: MethodContext, **params: Any) -> _ClipDistill:
        student, teacher = context.student, context.required_teacher
        if not isinstance(student, ClipModel) or not isinstance(teacher, ClipModel):
            raise FreekdError("CLIP distillation needs a CLIP student and a CLIP teacher")
        return cls(student, teacher, total_steps=context.total_steps, **params)

    def distill_weight(self) -> float:
        """The distillation term's weight at this step (and, training, count the step)."""
        if self.weight_end is None:
            return self.weight
        steps = self.get_buffer("steps")
        progress = min(1.0, float(steps) / max(1, self.total_steps - 1))
        if self.training:
            steps += 1
        return (1.0 - progress) * self.weight + progress * self.weight_end  # exact at both ends

    def train(self, mode: bool = True) -> _ClipDistill:
        super().train(mode)
        self.teacher.eval()  # the teacher is always in eval mode
        return self

    def training_step(self, batch: Batch) -> StepOutput:
        if batch.texts is None:
            raise FreekdError("cross-modal distillation needs paired batches (images + captions)")
        student_images = self.student.encode_image(batch.images)
        student_texts = self.student.encode_text(batch.texts)
        with torch.no_grad():
            teacher_images = F.normalize(self.teacher.encode_image(batch.images), dim=-1)
            teacher_texts = F.normalize(self.teacher.encode_text(batch.texts), dim=-1)
        losses = {
            "clip": self.clip_weight
            * clip_contrastive(
                student_images, student_texts, logit_scale=self.student.logit_scale()
            ),
            self.term: self.distill_weight()
            * self.distill(
                self.image_head(student_images),
                self.text_head(student_texts),
                teacher_images,
                teacher_texts,
            ),
        }
        return StepOutput(losses=losses, logits=None)

    term: str = "distill"

    def distill(
        self, images: Tensor, texts: Tensor, teacher_images: Tensor, teacher_texts: Tensor
    ) -> Tensor:
        raise NotImplementedError


CROSSMODAL_METHODS = METHODS.fitting(CLIP, kind="cross-modal method")
"""The registered methods ``freekd crossmodal distill --method`` takes besides ``auto``:
``contrastive``, ``feature``, ``icl``, ``relational``."""

AUTO = "auto"
"""``--method auto`` (the default): ``relational`` for a CLIP teacher, ``contrastive`` for one
tower (resolved by the pipelines, so a run records the method it ran)."""


def method_label(requested: str, resolved: str) -> str:
    """How errors name a method: ``auto`` says what it ran as."""
    return f"method {resolved}" + (
        f" (what --method {AUTO} runs here)" if requested == AUTO else ""
    )


def check_method_name(name: str) -> None:
    """Refuse an unknown ``--method`` in one line that lists ``auto`` with the registered ones."""
    if name != AUTO and name not in CROSSMODAL_METHODS:
        known = ", ".join([AUTO, *CROSSMODAL_METHODS.names()])
        raise FreekdError(f"unknown cross-modal method {name!r}; known: {known}")


class EmbeddingQueue(nn.Module):
    """A FIFO queue of the ``size`` most recent teacher embeddings, the negatives of MoCo
    (He et al. 2020, arXiv:1911.05722 §3.2): memory that does not grow with the data set."""

    embeddings: Tensor
    filled: Tensor
    pointer: Tensor

    def __init__(self, size: int, dim: int) -> None:
        super().__init__()
        check_fits(4 * size * dim, f"a queue of {size:,} embeddings", "lower queue_size")
        self.size = size
        self.register_buffer("embeddings", torch.zeros(size, dim))
        self.register_buffer("filled", torch.zeros((), dtype=torch.long))
        self.register_buffer("pointer", torch.zeros((), dtype=torch.long))

    def negatives(self) -> Tensor:
        """The queued embeddings (a copy: the queue changes after the loss is built)."""
        return self.embeddings[: int(self.filled)].clone()

    @torch.no_grad()
    def push(self, batch: Tensor) -> None:
        if self.size == 0:
            return
        count = min(len(batch), self.size)
        start = int(self.pointer)
        slots = (torch.arange(count, device=batch.device) + start) % self.size
        self.embeddings[slots] = batch[:count]
        self.pointer.fill_((start + count) % self.size)
        self.filled.fill_(min(int(self.filled) + count, self.size))


@METHODS.register("contrastive")
class ContrastiveDistill(_ClipDistill):
    """The contrastive heterogeneous module: InfoNCE between student and teacher embeddings
    with a MoCo-style queue of negatives and a learnable temperature.

    CRD (Tian et al. 2020, arXiv:1910.10699 §3.2–3.4) maximizes a bound on the mutual information
    between student and teacher representations by telling the teacher embedding of the same
    item (positive) from those of other items (negatives). CRD draws negatives from an N × d
    memory bank of the whole data set; here they come from a FIFO queue of the teacher's
    embeddings of recent batches (He et al. 2020, MoCo, arXiv:1911.05722 §3.2), ``queue_size``
    × d, which does not grow with the data. Per student tower: InfoNCE(project(student),
    teacher positive; negatives = the batch and the queue of the positive's modality), τ
    learnable (initial ``temperature``), the terms averaged. With the default ``pairing="cross"``
    the positive of the student's image embedding is the teacher's embedding of its caption
    and the reverse: the teacher's cross-modal geometry is what the student distills.

    Args:
        queue_size: teacher embeddings kept as negatives, per tower.
        temperature: initial τ.
        pairing: which teacher embedding is the positive of a student embedding: ``cross``
            (the default: the pair's other modality, as in CLIP-KD's ICL but with the queue and
            the learnable temperature: student image ↔ teacher text, student text ↔ teacher
            image), ``same`` (the teacher's embedding of the same item in the same modality) or
            ``both`` (the mean of the four terms). On Fashion-MNIST (1 epoch, medians of seeds
            0–2 / fresh seeds 3–5) ``cross`` beats CLIP's loss alone on zero-shot accuracy and
            recall@1; ``same`` wins zero-shot by more but loses recall@1
            (experiments/crossmodal/README.md).
    """

    term = "contrastive"
    PAIRINGS = ("same", "cross", "both")

    def __init__(
        self,
        student: ClipModel,
        teacher: ClipModel,
        *,
        weight: float = 1.0,
        clip_weight: float = 1.0,
        queue_size: int = 4096,
        temperature: float = 0.07,
        pairing: str = "cross",
        weight_end: float | None = None,
        total_steps: int | None = None,
    ) -> None:
        super().__init__(
            student, teacher, weight=weight, clip_weight=clip_weight, weight_end=weight_end,
            total_steps=total_steps,
        )  # fmt: skip
        if queue_size < 0 or temperature <= 0:
            raise FreekdError("contrastive needs queue_size ≥ 0 and temperature > 0")
        if pairing not in self.PAIRINGS:
            raise FreekdError(
                f"contrastive pairing must be one of {', '.join(self.PAIRINGS)}, got {pairing!r}"
            )
        self.pairing = pairing
        self.log_temperature = nn.Parameter(torch.tensor(math.log(temperature)))
        self.image_queue = EmbeddingQueue(queue_size, teacher.embed_dim)
        self.text_queue = EmbeddingQueue(queue_size, teacher.embed_dim)

    def distill(
        self, images: Tensor, texts: Tensor, teacher_images: Tensor, teacher_texts: Tensor
    ) -> Tensor:
        temperature = _temperature(self.log_temperature)
        image_negatives = self.image_queue.negatives()
        text_negatives = self.text_queue.negatives()
        pairs = []  # (student, teacher positive, teacher negatives)
        if self.pairing in ("same", "both"):
            pairs += [
                (images, teacher_images, image_negatives),
                (texts, teacher_texts, text_negatives),
            ]
        if self.pairing in ("cross", "both"):
            pairs += [
                (images, teacher_texts, text_negatives),
                (texts, teacher_images, image_negatives),
            ]
        loss = torch.stack(
            [
                info_nce(query, key, temperature=temperature, negatives=negatives)
                for query, key, negatives in pairs
            ]
        ).mean()
        self.image_queue.push(teacher_images)
        self.text_queue.push(teacher_texts)
        return loss


def _temperature(log_temperature: Tensor) -> Tensor:
    """τ = exp(log τ), kept in [0.01, 1]."""
    return log_temperature.clamp(min=math.log(0.01), max=0.0).exp()


@METHODS.register("feature")
class FeatureDistill(_ClipDistill):
    """CLIP-KD's feature distillation (Yang et al. 2024, arXiv:2307.12732 §3.2, FD): the
    projected student embeddings regress the teacher's, per tower (normalized MSE)."""

    term = "feature"

    def distill(
        self, images: Tensor, texts: Tensor, teacher_images: Tensor, teacher_texts: Tensor
    ) -> Tensor:
        return 0.5 * (
            feature_distillation(images, teacher_images)
            + feature_distillation(texts, teacher_texts)
        )


@METHODS.register("icl")
class InteractiveDistill(_ClipDistill):
    """CLIP-KD's interactive contrastive learning (Yang et al. 2024 §3.2, ICL): student images
    against teacher texts and student texts against teacher images, at the teacher's scale."""

    term = "icl"

    def distill(
        self, images: Tensor, texts: Tensor, teacher_images: Tensor, teacher_texts: Tensor
    ) -> Tensor:
        scale = self.teacher.logit_scale().detach()
        return 0.5 * (
            interactive_contrastive(images, teacher_texts, logit_scale=scale)
            + interactive_contrastive(texts, teacher_images, logit_scale=scale)
        )


@METHODS.register("relational")
class RelationalDistill(_ClipDistill):
    """CLIP-KD's contrastive relational distillation (Yang et al. 2024, arXiv:2307.12732 §3.1,
    CRD; TinyCLIP's affinity mimicking, Wu et al. 2023 §3.1): the student's image-to-text and
    text-to-image similarity distributions within the batch follow the teacher's (KL), each at
    its own model's temperature (the student's learnable logit scale, the teacher's fixed one).
    No projection heads: the two models' similarities are compared, not their embeddings."""

    term = "relational"
    projects = False

    def distill(
        self, images: Tensor, texts: Tensor, teacher_images: Tensor, teacher_texts: Tensor
    ) -> Tensor:
        return contrastive_relational(
            images, texts, teacher_images, teacher_texts,
            student_scale=self.student.logit_scale(),
            teacher_scale=self.teacher.logit_scale().detach(),
        )  # fmt: skip


class TowerContrastive(Method):
    """The contrastive heterogeneous module between one-modality towers: a student tower of
    one modality learns to embed its half of each pair where a frozen teacher tower of the
    *other* modality embeds the other half (image → text: captions where the teacher puts their
    images; text → image: images where the teacher puts their captions).

    CRD's objective (Tian et al. 2020, arXiv:1910.10699 §3.2–3.4) across modalities: InfoNCE
    with the student's embedding of item i as the query, the teacher's embedding of its pair as
    the positive, and as negatives the teacher's embeddings of the other pairs in the batch and
    of a MoCo-style FIFO queue of recent batches (He et al. 2020, arXiv:1911.05722 §3.2), τ
    learnable (initial ``temperature``). The student tower already ends in the teacher's
    dimension, so no separate projection head is needed.

    Args:
        student: the trained tower (``crossmodal.towers.TextStudent`` or ``ImageStudent``).
        teacher: the frozen tower of the other modality.
        queue_size: teacher embeddings kept as negatives.
        temperature: initial τ.
    """

    def __init__(
        self,
        student: Tower,
        teacher: Tower,
        *,
        queue_size: int = 4096,
        temperature: float = 0.07,
    ) -> None:
        super().__init__()
        if student.modality == teacher.modality:
            raise FreekdError(
                f"student and teacher both encode {student.modality}s; a one-tower teacher "
                "teaches a student of the other modality"
            )
        if student.dim != teacher.dim:
            raise FreekdError(
                f"the student embeds into {student.dim} dimensions, the teacher into "
                f"{teacher.dim}; build the student with the teacher's dimension"
            )
        if queue_size < 0 or temperature <= 0:
            raise FreekdError("contrastive needs queue_size ≥ 0 and temperature > 0")
        self.student: Tower = student
        self.teacher: Tower = teacher.eval().requires_grad_(False)
        self.log_temperature = nn.Parameter(torch.tensor(math.log(temperature)))
        self.queue = EmbeddingQueue(queue_size, int(teacher.dim))

    def train(self, mode: bool = True) -> TowerContrastive:
        super().train(mode)
        self.teacher.eval()
        return self

    def training_step(self, batch: Batch) -> StepOutput:
        if batch.texts is None:
            raise FreekdError("cross-modal distillation needs paired batches (images + captions)")
        image_student = self.student.modality == "image"
        student_inputs, teacher_inputs = (
            (batch.images, batch.texts) if image_student else (batch.texts, batch.images)
        )
        student = self.student.encode(student_inputs)
        with torch.no_grad():
            teacher = F.normalize(self.teacher.encode(teacher_inputs).float(), dim=-1)
        loss = info_nce(
            student,
            teacher,
            temperature=_temperature(self.log_temperature),
            negatives=self.queue.negatives(),
        )
        self.queue.push(teacher)
        return StepOutput(losses={"contrastive": loss}, logits=None)


class DualContrastive(Method):
    """Two towers trained together from scratch with CLIP's symmetric loss (Radford et al. 2021
    §2.3, learnable logit scale): the baseline of a one-tower distillation — the same student
    tower, its partner learned alongside instead of given by a teacher.

    Args:
        student: the student tower.
        partner: a fresh tower of the other modality with the same output dimension.
    """

    def __init__(self, student: Tower, partner: Tower) -> None:
        super().__init__()
        self.student: Tower = student
        self.partner: Tower = partner
        self.log_scale = nn.Parameter(torch.tensor(math.log(1 / 0.07)))

    def training_step(self, batch: Batch) -> StepOutput:
        if batch.texts is None:
            raise FreekdError("CLIP training needs paired batches (images with caption tokens)")
        towers: dict[str, Tower] = {t.modality: t for t in (self.student, self.partner)}
        images = towers["image"].encode(batch.images)
        texts = towers["text"].encode(batch.texts)
        scale = self.log_scale.clamp(max=math.log(100)).exp()
        return StepOutput(
            losses={"clip": clip_contrastive(images, texts, logit_scale=scale)}, logits=None
        )
