"""The default student for teachers of any family (``models.students``)."""

from __future__ import annotations

import pytest

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
