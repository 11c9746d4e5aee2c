"""How a run builds its method: the ``MethodContext`` and the one factory, ``build_method``."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from functools import cached_property
from typing import Any

import torch
from torch import nn

from freekd.errors import FreekdError
from freekd.hooks import capture_input, eval_mode, last_linear, spatial_blocks
from freekd.methods.base import CLASSIFIER, METHODS, Method
from freekd.teachers import Teacher


@dataclass(frozen=True)
class NetworkShapes:
    """The shapes of one network's features on one example (batch dimension left out).

    Attributes:
        blocks: (C, H, W) of the end of each resolution stage, in forward order
            (``hooks.spatial_blocks``: the maps attention transfer or FitNets match).
        embedding: width of the penultimate features, the flattened input of the last
            ``nn.Linear`` (what CRD's embedding heads read); ``None`` without a linear layer.
        output: the shape of the network's output (``(K,)`` for a K-class classifier).
    """

    blocks: tuple[tuple[int, int, int], ...]
    embedding: int | None
    output: tuple[int, ...]

    @property
    def sizes(self) -> list[tuple[int, int]]:
        """The (H, W) of each block."""
        return [(h, w) for _, h, w in self.blocks]


@dataclass(frozen=True)
class FeatureShapes:
    """The feature shapes of a student and its teacher, from one probe pass each."""

    student: NetworkShapes
    teacher: NetworkShapes

    def shared_sizes(self) -> list[tuple[int, int]]:
        """The spatial sizes both networks produce, in the student's forward order."""
        teacher = set(self.teacher.sizes)
        return [size for size in self.student.sizes if size in teacher]


def _device(module: nn.Module) -> torch.device:
    parameter = next(module.parameters(), None)
    return parameter.device if parameter is not None else torch.device("cpu")


def probe_shapes(
    model: nn.Module, input_shape: Sequence[int], *, who: str = "model"
) -> NetworkShapes:
    """``model``'s feature shapes from one forward pass of two blank images of ``input_shape``.

    The pass runs under no_grad with every submodule in eval mode (BatchNorm statistics do not
    move) and restores each submodule's mode after; the hooks are removed on exit.
    """
    probe = torch.zeros((2, *input_shape), device=_device(model))
    layer = last_linear(model)
    with torch.no_grad(), eval_mode(model), spatial_blocks(model, who=who) as blocks:
        if layer is None:
            output = model(probe)
            embedding = None
        else:
            with capture_input(layer) as captured:
                output = model(probe)
            assert captured.value is not None  # the probe went through the layer
            embedding = int(captured.value.flatten(1).shape[1])
    return NetworkShapes(
        blocks=tuple((int(b.shape[1]), int(b.shape[2]), int(b.shape[3])) for b in blocks.values()),
        embedding=embedding,
        output=tuple(int(n) for n in output.shape[1:]),
    )


def probe_feature_shapes(
    student: nn.Module, teacher: nn.Module, input_shape: Sequence[int]
) -> FeatureShapes:
    """The feature shapes of ``student`` and ``teacher`` (see :func:`probe_shapes`)."""
    return FeatureShapes(
        student=probe_shapes(student, input_shape, who="student"),
        teacher=probe_shapes(teacher, input_shape, who="teacher"),
    )


@dataclass(frozen=True, kw_only=True)
class MethodContext:
    """Everything a method may need to build itself for a run (``Method.from_context``).

    Attributes:
        student: the network being trained.
        teacher: the frozen teacher (a ``teachers.Teacher`` for classifier methods).
        num_classes: classes of the teacher's output, when it has classes.
        train_size: examples in the training set, so that ``Batch.indices`` index a table of
            that size (a CRD memory bank); ``None`` when batches have no dataset (data-free).
        input_shape: (C, H, W) of the inputs, for probe passes.
        distills: what the run distills between (``Method.distills``); ``build_method`` refuses
            a method of another kind.
        total_steps: optimizer steps the run plans (epochs × steps per epoch), for methods with a
            schedule of their own (DKD's warm-up); ``None`` when the run does not say.
        peers: the networks an online method trains together (``freekd online``: DML's peers,
            the one network ONE branches), each a fresh ``ImageClassifier``; ``student`` is the
            first. Empty for methods with a teacher.
    """

    student: nn.Module
    teacher: nn.Module | None = None
    num_classes: int | None = None
    train_size: int | None = None
    input_shape: tuple[int, ...] | None = None
    distills: str = CLASSIFIER
    total_steps: int | None = None
    peers: tuple[nn.Module, ...] = ()

    @classmethod
    def for_teacher(
        cls,
        student: nn.Module,
        teacher: Teacher,
        *,
        train_size: int | None,
        total_steps: int | None = None,
    ) -> MethodContext:
        """The context of a classifier run: classes and input shape are the teacher's."""
        return cls(
            student=student,
            teacher=teacher,
            num_classes=teacher.num_classes,
            train_size=train_size,
            input_shape=tuple(teacher.input_shape),
            total_steps=total_steps,
        )

    @property
    def required_teacher(self) -> nn.Module:
        """The teacher, for a method that distills from one.

        Raises:
            FreekdError: the run has no teacher (an online run).
        """
        if self.teacher is None:
            raise FreekdError("this method distills from a teacher and the run has none")
        return self.teacher

    @cached_property
    def feature_shapes(self) -> FeatureShapes:
        """Student and teacher feature shapes, from one probe pass each (made on first use).

        Raises:
            FreekdError: the context has no ``input_shape`` to probe with.
        """
        if self.input_shape is None:
            raise FreekdError("internal: feature shapes need the context's input_shape")
        return probe_feature_shapes(self.student, self.required_teacher, self.input_shape)


def build_method(name: str, context: MethodContext, params: Mapping[str, Any]) -> Method:
    """The registered method ``name`` for a run: ``METHODS.get(name).from_context(context,
    **params)``. The one way pipelines and the Python API build a method.

    Raises:
        UnknownNameError: no method is registered as ``name``.
        FreekdError: the method distills between other models than the context's.
    """
    method_class = METHODS.get(name)
    if method_class.distills != context.distills:
        raise FreekdError(
            f"method {name} distills between {method_class.distills} models, this run between "
            f"{context.distills} models"
        )
    return method_class.from_context(context, **params)
