"""The contract every registered distillation method honours (STYLE.md §4.7)."""

from __future__ import annotations

import copy
from pathlib import Path

import pytest
import torch

from freekd.config import TeacherSourceConfig
from freekd.data import Batch, ImageDataset
from freekd.methods import CLASSIFIER_METHODS, Method, MethodContext, Supervised, build_method
from freekd.models import ImageClassifier, build_model
from freekd.teachers import Teacher, load_teacher

#: Every registered method, and combinations of each family with kd.
NAMES = [*CLASSIFIER_METHODS.names(), "kd+at", "kd+crd", "dkd+fitnet+rkd"]


def classifier(arch: str, seed: int) -> ImageClassifier:
    torch.manual_seed(seed)
    net = build_model(arch, num_classes=10, input_shape=(1, 8, 8))
    return ImageClassifier(
        net, arch=arch, arch_kwargs={}, num_classes=10, input_shape=(1, 8, 8), mean=[0.3], std=[0.4]
    )


def make_teacher() -> Teacher:
    return Teacher(
        classifier("tiny-cnn", 0), num_classes=10, input_shape=(1, 8, 8), description="test"
    )


#: Methods that match feature maps or pair stages: they need a student with spatial activations.
NEEDS_MAPS = {"kd-at", "at", "fitnet", "sp", "irg"}


def make_student(name: str) -> ImageClassifier:
    """The MLP, or a CNN for methods that match feature maps (they need spatial activations)."""
    needs_maps = any(part in NEEDS_MAPS for part in name.split("+"))
    return classifier("tiny-cnn" if needs_maps else "mlp", 1)


def make_method(name: str, teacher: Teacher | None = None) -> Method:
    """The method as a run builds it: through ``build_method`` and a ``MethodContext``."""
    teacher = teacher or make_teacher()
    context = MethodContext.for_teacher(make_student(name), teacher, train_size=64)
    # CRD's queue holds one batch here, so a fixed batch meets a fixed number of negatives.
    queue = {"queue_size": 64}
    params = {"crd": queue, "kd+crd": {"crd": queue}}.get(name, {})
    return build_method(name, context, params)


def fixed_batch(data: ImageDataset, labelled: bool = True) -> Batch:
    batch = data.batch(torch.arange(64))
    return batch if labelled else Batch(batch.images, None)


@pytest.mark.parametrize("name", NAMES)
def test_teacher_frozen_eval_and_gets_no_grad(name: str, digits_train: ImageDataset) -> None:
    teacher = make_teacher()
    method = make_method(name, teacher)
    method.train()
    assert not teacher.training
    assert all(not m.training for m in teacher.modules())
    assert all(not p.requires_grad for p in teacher.parameters())
    before = copy.deepcopy(teacher.state_dict())
    output = method.training_step(fixed_batch(digits_train))
    output.loss.backward()
    assert all(p.grad is None for p in teacher.parameters())
    for key, value in teacher.state_dict().items():  # BatchNorm running stats untouched
        assert torch.equal(value, before[key]), key
    assert all(p.grad is not None for p in method.student.parameters())
    # Every trainable parameter besides the student's (adapters, heads) learns from the loss.
    student = {id(p) for p in method.student.parameters()}
    for key, parameter in method.named_parameters():
        if parameter.requires_grad and id(parameter) not in student:
            assert parameter.grad is not None, key
            assert parameter.grad.abs().sum() > 0, key
    # No hook is left behind on either network.
    for module in [*teacher.modules(), *method.student.modules()]:
        assert not module._forward_hooks
        assert not module._forward_pre_hooks


@pytest.mark.parametrize("name", NAMES)
@pytest.mark.parametrize("labelled", [True, False])
def test_finite_scalar_losses_with_stable_keys(
    name: str, labelled: bool, digits_train: ImageDataset
) -> None:
    method = make_method(name)
    first = method.training_step(fixed_batch(digits_train, labelled))
    second = method.training_step(fixed_batch(digits_train, labelled))
    assert first.losses.keys() == second.losses.keys()
    for value in first.losses.values():
        assert value.dim() == 0
        assert torch.isfinite(value)
    assert first.logits is not None
    assert first.logits.shape == (64, 10)


@pytest.mark.parametrize("name", NAMES)
def test_overfits_one_batch(name: str, digits_train: ImageDataset, tiny_teacher_path: Path) -> None:
    teacher = load_teacher(TeacherSourceConfig(path=str(tiny_teacher_path)))
    method = make_method(name, teacher)
    optimizer = torch.optim.SGD(method.trainable_parameters(), lr=0.05, momentum=0.9)
    batch = fixed_batch(digits_train)
    losses = []
    # CRD's heads start from a student whose embeddings barely differ between inputs: its
    # contrastive term needs about 90 steps on one batch (measured) where the others need 30.
    for _ in range(120 if "crd" in name else 30):
        output = method.training_step(batch)
        optimizer.zero_grad()
        output.loss.backward()
        optimizer.step()
        losses.append(float(output.loss.detach()))
    assert losses[-1] < 0.5 * losses[0]


def test_supervised_needs_labels(digits_train: ImageDataset) -> None:
    from freekd.errors import FreekdError

    method = Supervised(classifier("mlp", 1))
    with pytest.raises(FreekdError, match="labelled"):
        method.training_step(fixed_batch(digits_train, labelled=False))
