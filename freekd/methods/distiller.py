"""``Distiller``: the methods whose loss reads one forward pass of each network.

A distiller names the features it reads (``methods.taps``: layer paths, stages, the embedding),
both networks run once per step with those taps recorded, and :meth:`Distiller.distill_losses`
turns the two ``Views`` into named loss terms; the hard-label cross-entropy is added once, by the
base class. Because every distiller reads views instead of running the networks itself, several
of them combine into one method that still runs each network once (``methods.combine``).

``FeatureDistiller`` adds the layer pairing users configure: ``student_layers`` and
``teacher_layers`` (module paths, paired in order), or the method's automatic choice among the
two networks' resolution stages (``taps.stage_pairs``). A pair that cannot work is refused when
the method is built, before any training, in one line naming the layers found.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import ClassVar

import torch
from torch import Tensor, nn

from freekd.data.batch import Batch
from freekd.errors import FreekdError, shown
from freekd.losses import cross_entropy
from freekd.methods.base import Method, StepOutput
from freekd.methods.taps import EMBEDDING, capture, layer_paths, probe, stage_pairs


@dataclass
class Views:
    """What one forward pass of a network showed: its logits and its tapped features."""

    logits: Tensor
    features: dict[str, Tensor]

    def pick(self, taps: Sequence[str]) -> list[Tensor]:
        """The features of ``taps``, in order."""
        return [self.features[tap] for tap in taps]


class Distiller(Method):
    """Base of the methods that read one forward pass of the student and of the teacher.

    Subclasses set ``student_taps`` and ``teacher_taps`` (what to record) in their constructor
    and implement :meth:`distill_losses`.

    Args:
        student: the network being trained (takes [0, 1] images).
        teacher: frozen teacher.
        ce_weight: weight of the hard-label cross-entropy, added on labelled batches only.
    """

    def __init__(self, student: nn.Module, teacher: nn.Module, *, ce_weight: float) -> None:
        super().__init__()
        if ce_weight < 0:
            raise ValueError(f"ce_weight must be non-negative, got {ce_weight}")
        self.student = student
        self.teacher = teacher
        self.ce_weight = ce_weight
        self.student_taps: list[str] = []
        self.teacher_taps: list[str] = []

    def distill_losses(self, student: Views, teacher: Views, batch: Batch) -> dict[str, Tensor]:
        """The method's weighted loss terms by name (the cross-entropy is not one of them)."""
        raise NotImplementedError

    def look(self, batch: Batch) -> tuple[Views, Views]:
        """One forward pass of each network with the taps recorded; the teacher's under no_grad."""
        with torch.no_grad(), capture(self.teacher, self.teacher_taps, who="teacher") as read:
            teacher = Views(self.teacher(batch.images), dict(read()))
        with capture(self.student, self.student_taps, who="student") as read:
            student = Views(self.student(batch.images), dict(read()))
        return student, teacher

    def training_step(self, batch: Batch) -> StepOutput:
        student, teacher = self.look(batch)
        losses = self.distill_losses(student, teacher, batch)
        if batch.labels is not None and self.ce_weight > 0:
            losses["ce"] = self.ce_weight * cross_entropy(student.logits, batch.labels)
        return StepOutput(losses=losses, logits=student.logits)


def input_shape_of(teacher: nn.Module) -> tuple[int, ...]:
    """The (C, H, W) a teacher takes (a ``teachers.Teacher`` knows it)."""
    shape = getattr(teacher, "input_shape", None)
    if shape is None:
        raise FreekdError("internal: feature methods need a teachers.Teacher (it knows its input)")
    return tuple(int(n) for n in shape)


class FeatureDistiller(Distiller):
    """A distiller that matches pairs of features: named layers, or stages chosen automatically.

    Args:
        student: the network being trained.
        teacher: frozen teacher (a ``teachers.Teacher``).
        ce_weight: weight of the hard-label cross-entropy on labelled batches.
        student_layers: module paths of the student's features, paired in order with
            ``teacher_layers``; ``None``: the method's automatic choice (:meth:`default_pairs`).
        teacher_layers: module paths of the teacher's features.

    Attributes:
        pairs: (student tap, teacher tap) of each matched feature.
        student_shapes, teacher_shapes: each tap's feature shape (batch dimension left out),
            from one probe pass of blank images.
    """

    #: The name errors use (``"attention transfer"``).
    title: ClassVar[str] = "this method"

    def __init__(
        self,
        student: nn.Module,
        teacher: nn.Module,
        *,
        ce_weight: float = 1.0,
        student_layers: Sequence[str] | None = None,
        teacher_layers: Sequence[str] | None = None,
    ) -> None:
        super().__init__(student, teacher, ce_weight=ce_weight)
        input_shape = input_shape_of(teacher)
        if (student_layers is None) != (teacher_layers is None):
            raise FreekdError(
                "name both student_layers and teacher_layers (paired in order), or neither"
            )
        for setting, names in (
            ("student_layers", student_layers),
            ("teacher_layers", teacher_layers),
        ):
            if names is not None and (
                isinstance(names, (str, bytes)) or not isinstance(names, Sequence)
                or not all(isinstance(name, str) and name for name in names)
            ):  # fmt: skip
                raise FreekdError(
                    f"{setting} must be a list of layer names (e.g. "
                    f"method.params.{setting}=\"['features.3']\"), got {shown(names)}"
                )
        if student_layers is not None and teacher_layers is not None:
            if not student_layers or len(student_layers) != len(teacher_layers):
                raise FreekdError(
                    f"student_layers and teacher_layers pair up in order: got "
                    f"{len(student_layers)} and {len(teacher_layers)} names"
                )
            pairs = list(zip(map(str, student_layers), map(str, teacher_layers), strict=True))
        else:
            pairs = self.default_pairs(stage_pairs(student, teacher, input_shape))
            if not pairs:
                raise FreekdError(
                    f"{self.title} found no features to pair automatically (student layers: "
                    f"{', '.join(layer_paths(student)[:8]) or 'none'}); name them with "
                    f"method.params.student_layers and teacher_layers"
                )
        self.pairs = pairs
        self.student_taps = [s for s, _ in pairs]
        self.teacher_taps = [t for _, t in pairs]
        student_shapes = probe(student, self.student_taps, input_shape, who="student")
        teacher_shapes = probe(teacher, self.teacher_taps, input_shape, who="teacher")
        self.student_shapes = [student_shapes[tap] for tap in self.student_taps]
        self.teacher_shapes = [teacher_shapes[tap] for tap in self.teacher_taps]
        self.check_pairs()

    def default_pairs(self, stages: list[tuple[str, str]]) -> list[tuple[str, str]]:
        """The pairs used when no layers are named; ``stages`` are the networks' stages paired by
        ``taps.stage_pairs``. Default: the embeddings (penultimate features)."""
        return [(EMBEDDING, EMBEDDING)]

    def check_pairs(self) -> None:
        """Refuse pairs the method cannot match (one line naming them); default: any pair."""

    def describe_pairs(self) -> str:
        """The pairs with their shapes, for error messages."""
        return "; ".join(
            f"student {s} {list(ss)} ↔ teacher {t} {list(ts)}"
            for (s, t), ss, ts in zip(
                self.pairs, self.student_shapes, self.teacher_shapes, strict=True
            )
        )

    def require_maps(self) -> None:
        """Refuse a pair that is not two (C, H, W) feature maps."""
        for shapes in (self.student_shapes, self.teacher_shapes):
            if any(len(shape) != 3 for shape in shapes):
                raise FreekdError(
                    f"{self.title} matches (C, H, W) feature maps, got {self.describe_pairs()}; "
                    f"name convolutional layers with method.params.student_layers/teacher_layers"
                )
