"""The method factory: MethodContext, build_method, Method.from_context and the one registry."""

from __future__ import annotations

import copy
import re
from pathlib import Path
from typing import Any

import pytest
import torch
from torch import nn

from freekd.config import TeacherSourceConfig
from freekd.crossmodal.methods import CLIP, CROSSMODAL_METHODS
from freekd.errors import FreekdError, UnknownNameError
from freekd.methods import (
    CLASSIFIER_METHODS,
    METHODS,
    ONLINE_METHODS,
    AttentionKD,
    LogitKD,
    Method,
    MethodContext,
    build_method,
)
from freekd.methods.context import FeatureShapes
from freekd.models import ImageClassifier, build_model
from freekd.runs import build_method as build_freekd_method
from freekd.runs import check_params, hyperparameters
from freekd.teachers import Teacher, load_teacher


def student(arch: str = "tiny-cnn") -> ImageClassifier:
    torch.manual_seed(1)
    net = build_model(arch, num_classes=10, input_shape=(1, 8, 8))
    return ImageClassifier(
        net, arch=arch, arch_kwargs={}, num_classes=10, input_shape=(1, 8, 8), mean=[0.3], std=[0.4]
    )


@pytest.fixture
def teacher(tiny_teacher_path: Path) -> Teacher:
    return load_teacher(TeacherSourceConfig(path=str(tiny_teacher_path)))


def test_build_method_passes_params_and_the_context(teacher: Teacher) -> None:
    context = MethodContext.for_teacher(student(), teacher, train_size=1500)
    assert (context.num_classes, context.input_shape) == (10, (1, 8, 8))
    method = build_method("kd", context, {"temperature": 2.0})
    assert isinstance(method, LogitKD)
    assert method.temperature == 2.0
    assert method.student is context.student
    assert method.teacher is teacher
    assert isinstance(build_method("kd-at", context, {}), AttentionKD)


@pytest.mark.parametrize("params", [{"temperature": 0.0}, {"temperature": -1.0}, {"kd_weight": -5}])
def test_kd_refuses_a_temperature_or_weight_out_of_range(teacher: Teacher, params: dict) -> None:
    # A negative temperature trained silently, and a huge one turned the loss into NaN.
    context = MethodContext.for_teacher(student(), teacher, train_size=1500)
    with pytest.raises(FreekdError, match="temperature must be positive and kd_weight"):
        build_freekd_method("kd", context, params)


def test_build_method_refuses_unknown_names_and_other_kinds(teacher: Teacher) -> None:
    context = MethodContext.for_teacher(student(), teacher, train_size=None)
    with pytest.raises(UnknownNameError, match="unknown method 'kdd'; known: .*kd"):
        build_method("kdd", context, {})
    with pytest.raises(FreekdError, match="method icl distills between clip models"):
        build_method("icl", context, {})


class MemoryBankKD(LogitKD):
    """A CRD-shaped method: a table over the training set and a head at the teacher's width."""

    def __init__(
        self,
        student: nn.Module,
        teacher: Teacher,
        *,
        train_size: int,
        feature_shapes: FeatureShapes,
        feature_dim: int = 8,
    ) -> None:
        super().__init__(student, teacher)
        assert feature_shapes.student.embedding is not None
        assert feature_shapes.teacher.embedding is not None
        self.memory = nn.Parameter(torch.zeros(train_size, feature_dim), requires_grad=False)
        self.head = nn.Linear(feature_shapes.student.embedding, feature_shapes.teacher.embedding)

    @classmethod
    def from_context(cls, context: MethodContext, **params: Any) -> MemoryBankKD:
        assert context.train_size is not None
        assert isinstance(context.teacher, Teacher)
        return cls(
            context.student,
            context.teacher,
            train_size=context.train_size,
            feature_shapes=context.feature_shapes,
            **params,
        )


def test_a_crd_style_method_builds_from_train_size_and_feature_shapes(teacher: Teacher) -> None:
    context = MethodContext.for_teacher(student("mlp"), teacher, train_size=1500)
    method = MemoryBankKD.from_context(context, feature_dim=4)
    assert method.memory.shape == (1500, 4)
    shapes = context.feature_shapes
    assert method.head.in_features == shapes.student.embedding
    assert method.head.out_features == shapes.teacher.embedding
    # The context's wired values are never config hyperparameters.
    assert list(hyperparameters(MemoryBankKD)) == ["feature_dim"]
    with pytest.raises(FreekdError, match="has no parameter 'train_size'"):
        check_params(MemoryBankKD, {"train_size": 3}, what="method crd")


def test_feature_shapes_come_from_one_cached_probe_that_changes_nothing(teacher: Teacher) -> None:
    net = student().train()
    before = copy.deepcopy(net.state_dict())
    context = MethodContext.for_teacher(net, teacher, train_size=None)
    shapes = context.feature_shapes
    assert context.feature_shapes is shapes  # probed once
    assert shapes.student.output == shapes.teacher.output == (10,)
    assert shapes.student.blocks, "a CNN has spatial stages"
    assert all(len(block) == 3 for block in shapes.teacher.blocks)
    assert shapes.shared_sizes() == [s for s in shapes.student.sizes if s in shapes.teacher.sizes]
    assert net.training
    assert all(m.training for m in net.modules())
    for key, value in net.state_dict().items():  # BatchNorm running statistics untouched
        assert torch.equal(value, before[key]), key
    for model in (net, teacher):
        assert all(not m._forward_hooks and not m._forward_pre_hooks for m in model.modules())
    with pytest.raises(FreekdError, match="input_shape"):
        _ = MethodContext(student=net, teacher=teacher).feature_shapes


def test_one_registry_two_views() -> None:
    assert set(CROSSMODAL_METHODS.names()) == {"contrastive", "feature", "icl", "relational"}
    assert set(CLASSIFIER_METHODS.names()) >= {"kd", "kd-at", "logit-l1"}
    assert set(ONLINE_METHODS.names()) == {"dml", "one"}
    assert set(METHODS.names()) == (
        set(CROSSMODAL_METHODS.names())
        | set(CLASSIFIER_METHODS.names())
        | set(ONLINE_METHODS.names())
    )
    with pytest.raises(UnknownNameError, match="unknown online method 'kd'; known: dml, one"):
        ONLINE_METHODS.get("kd")
    assert "dml" not in CLASSIFIER_METHODS
    assert all(METHODS.get(name).distills == CLIP for name in CROSSMODAL_METHODS.names())
    assert "icl" in METHODS
    assert "icl" not in CLASSIFIER_METHODS
    with pytest.raises(UnknownNameError, match="unknown method 'icl'; known: at, cc, crd, dkd"):
        CLASSIFIER_METHODS.get("icl")
    with pytest.raises(UnknownNameError, match="unknown cross-modal method 'kd'; known: contr"):
        CROSSMODAL_METHODS.get("kd")
    assert issubclass(CLASSIFIER_METHODS.get("kd"), Method)


@pytest.mark.parametrize(
    ("method", "params", "message"),
    [
        ("at", {"weight": -5}, "method at: weight must be at least 0, got -5"),
        ("rkd", {"angle_weight": -1.0}, "method rkd: angle_weight must be at least 0"),
        ("kd", {"temperature": 1e300}, "method kd: temperature must lie in (0, 1000]"),
        ("dkd", {"temperature": "0"}, "method dkd: temperature must lie in (0, 1000], got 0"),
    ],
)
def test_negative_weights_and_unusable_temperatures_are_refused_by_name(
    method: str, params: dict[str, Any], message: str
) -> None:
    # A negative weight trained (the term pushed the student away from the teacher) and a
    # temperature of 1e300 died in an OverflowError traceback at the first step.
    with pytest.raises(FreekdError, match=re.escape(message)):
        check_params(METHODS.get(method), dict(params), what=f"method {method}")


@pytest.mark.parametrize(
    ("plugin", "name", "value"),
    [
        ("deepinversion", "iterations", 10**9),
        ("nayer", "generator_steps", 200_000),
        ("fast", "warmup_steps", 10**6),
        ("vat", "power_iterations", 10**6),
    ],
)
def test_loops_inside_one_step_are_capped(plugin: str, name: str, value: int) -> None:
    # A billion DeepInversion iterations made one synthesis round outlast any --budget.
    from freekd.datafree.synthesizers import SYNTHESIZERS
    from freekd.methods.semi import VirtualAdversarial

    cls = VirtualAdversarial if plugin == "vat" else SYNTHESIZERS.get(plugin)
    message = f"{plugin}: {name} must be at most 100,000 (every training step runs that many), got"
    with pytest.raises(FreekdError, match=re.escape(message)):
        check_params(cls, {name: value}, what=f"synthesizer {plugin}")
    check_params(cls, {name: 100_000}, what=f"synthesizer {plugin}")


@pytest.mark.parametrize(
    ("plugin", "name"),
    [("impressions", "batch_size"), ("dafl", "batch_size"), ("deepinversion", "memory_size")],
)
def test_sizes_in_images_are_at_least_one(plugin: str, name: str) -> None:
    # batch_size=0 reached the memory plan, which blamed memory ("a synthesis batch of 2 images
    # needs about 0 MB").
    from freekd.datafree.synthesizers import SYNTHESIZERS

    message = f"synthesizer {plugin}: {name} must be at least 1, got 0"
    with pytest.raises(FreekdError, match=re.escape(message)):
        check_params(SYNTHESIZERS.get(plugin), {name: 0}, what=f"synthesizer {plugin}")
    check_params(SYNTHESIZERS.get(plugin), {name: 1}, what=f"synthesizer {plugin}")
