"""The default student for teachers of any family (``models.students``)."""

from __future__ import annotations

from typing import Any

import pytest
from torch import Tensor, nn

from freekd.errors import FreekdError
from freekd.models.students import default_student, general_students, parameter_count

MNIST = (1, 28, 28)


def test_a_freekd_family_keeps_its_smaller_member() -> None:
    name, why = default_student("lenet5", num_classes=10, input_shape=MNIST, teacher_parameters=1)
    assert name == "lenet5-half"
    assert "family" in why


@pytest.mark.parametrize(
    ("shape", "expected"),
    [
        ((1, 28, 28), "lenet5-half"),
        ((3, 32, 32), "resnet8"),
        ((3, 224, 224), "torchvision:mobilenet_v3_small"),
    ],
)
def test_an_unknown_family_gets_a_general_student_for_its_input(
    shape: tuple[int, int, int], expected: str
) -> None:
    name, why = default_student(
        "zoo_models:Anything", num_classes=10, input_shape=shape, teacher_parameters=10**8
    )
    assert name == expected
    assert "parameters" in why


def test_the_student_is_smaller_than_the_teacher() -> None:
    resnet8 = parameter_count("resnet8", num_classes=10, input_shape=(3, 32, 32))
    half = parameter_count("lenet5-half", num_classes=10, input_shape=(3, 32, 32))
    assert half < resnet8
    # resnet8 itself has no smaller family member: the next general candidate is chosen.
    name, _ = default_student(
        "resnet8", num_classes=10, input_shape=(3, 32, 32), teacher_parameters=resnet8
    )
    assert name == "lenet5-half"
    assert general_students((3, 32, 32)) == ("resnet8", "lenet5-half")


def test_no_candidate_smaller_is_a_one_line_error() -> None:
    with pytest.raises(FreekdError, match="pass --student") as error:
        default_student(None, num_classes=10, input_shape=MNIST, teacher_parameters=500)
    assert "\n" not in str(error.value)


def test_channels_torchvision_cannot_take_get_a_cifar_style_student() -> None:
    name, _ = default_student(
        None, num_classes=10, input_shape=(4, 100, 100), teacher_parameters=10**8
    )
    assert name == "resnet8"


def test_a_family_without_a_smaller_member_says_the_student_is_the_teachers_own() -> None:
    # The log said "the smaller model of the teacher's family" of an equal tiny-cnn student.
    name, why = default_student("tiny-cnn", num_classes=10, input_shape=MNIST, teacher_parameters=1)
    assert name == "tiny-cnn"
    assert why == "the teacher's own architecture (tiny-cnn is the smallest of its family)"


@pytest.mark.parametrize(
    ("convolutions", "linears", "shape", "parameters", "expected"),
    [
        (1, 1, MNIST, 51_850, "shallow-cnn"),  # the zoo's wide-shallow: one 7x7 layer, 96 maps
        (2, 1, MNIST, 51_850, "lenet5-half"),
        (0, 3, MNIST, 51_850, "lenet5-half"),  # an MLP teacher
        (None, None, MNIST, 51_850, "lenet5-half"),  # not measured
        (1, 14, MNIST, 70_794, "lenet5-half"),  # a small ViT: its patch embedding is one conv
        (1, 2, MNIST, 51_850, "lenet5-half"),  # a hidden layer: not the shape measured
        (1, 1, MNIST, 16_000, "lenet5-half"),  # shallow-cnn (16,522) is not smaller
        (1, 1, (3, 224, 224), 10**8, "torchvision:mobilenet_v3_small"),  # not a small image
        (1, 1, (3, 32, 32), 10**8, "resnet8"),  # colour: no evidence for the rule there
    ],
)
def test_a_teacher_of_one_convolution_gets_a_student_of_one_convolution(
    convolutions: int | None,
    linears: int | None,
    shape: tuple[int, int, int],
    parameters: int,
    expected: str,
) -> None:
    name, why = default_student(
        "zoo_models:WideShallowCnn",
        num_classes=10,
        input_shape=shape,
        teacher_parameters=parameters,
        convolution_layers=convolutions,
        linear_layers=linears,
    )
    assert name == expected
    assert parameter_count(name, num_classes=10, input_shape=shape) < parameters
    assert ("one-convolution" in why) == (expected == "shallow-cnn")


class Pool(nn.Module):
    """Pools by calling ``function`` in ``forward``: no pooling module to see."""

    def __init__(self, function: Any, *args: Any) -> None:
        super().__init__()
        self.function, self.args = function, args or (4,)

    def forward(self, x: Tensor) -> Tensor:
        return self.function(x, *self.args)  # type: ignore[no-any-return]


def test_the_one_convolution_student_pools_as_its_teacher_does() -> None:
    import torch
    from torch import nn

    from freekd.models.students import default_student_kwargs
    from freekd.runs import default_student as run_default_student
    from freekd.teachers import Teacher

    def teacher(*pools: nn.Module, script: bool = False) -> Teacher:
        net = nn.Sequential(nn.Conv2d(1, 96, 7, padding=3), nn.ReLU(), *pools, nn.Flatten(),
                            nn.LazyLinear(10))  # fmt: skip
        net(torch.zeros(1, 1, 28, 28))  # materializes the linear layer
        module = torch.jit.script(net) if script else net
        return Teacher(module, num_classes=10, input_shape=MNIST, description="test")

    max_teacher, avg_teacher = teacher(nn.MaxPool2d(4)), teacher(nn.AvgPool2d(4))
    assert (max_teacher.pooling, avg_teacher.pooling) == ("max", "avg")
    assert (max_teacher.linear_layers, max_teacher.convolution_layers) == (1, 1)
    assert teacher(nn.AdaptiveMaxPool2d(3), script=True).linear_layers == 1
    assert teacher(nn.MaxPool2d(2), nn.AvgPool2d(2)).pooling is None
    assert teacher().pooling is None
    assert teacher(nn.AdaptiveAvgPool2d(7), script=True).pooling == "avg"
    # Pooling called in forward (PyTorch's MNIST example pools with F.max_pool2d) counts too.
    assert teacher(Pool(torch.nn.functional.avg_pool2d)).pooling == "avg"
    assert teacher(Pool(torch.nn.functional.adaptive_max_pool2d, 3)).pooling == "max"
    assert teacher(Pool(torch.nn.functional.avg_pool2d), nn.MaxPool2d(2)).pooling is None
    assert teacher(Pool(torch.nn.functional.lp_pool2d, 2.0, 2)).pooling is None
    assert default_student_kwargs("shallow-cnn", "avg") == {"pool": "avg"}
    assert default_student_kwargs("shallow-cnn", "max") == {}
    assert default_student_kwargs("shallow-cnn", None) == {}
    assert default_student_kwargs("lenet5-half", "avg") == {}

    assert run_default_student(avg_teacher, None, {}) == ("shallow-cnn", {"pool": "avg"})
    assert run_default_student(max_teacher, None, {}) == ("shallow-cnn", {})
    # The user's kwargs win over the rule's; a named student keeps exactly the user's.
    assert run_default_student(avg_teacher, None, {"pool": "max", "width": 16}) == (
        "shallow-cnn",
        {"pool": "max", "width": 16},
    )
    assert run_default_student(avg_teacher, "lenet5-half", {}) == ("lenet5-half", {})
