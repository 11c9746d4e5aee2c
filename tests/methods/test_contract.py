"""The contract every registered distillation method honours (STYLE.md §4.7)."""

from __future__ import annotations

import copy
from pathlib import Path

import pytest
import torch

from freekd.config import TeacherSourceConfig
from freekd.data import Batch, ImageDataset
from freekd.methods import CLASSIFIER_METHODS, Supervised
from freekd.models import ImageClassifier, build_model
from freekd.teachers import Teacher, load_teacher


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


def make_student(name: str) -> ImageClassifier:
    """The MLP, or a CNN for methods that match feature maps (they need spatial activations)."""
    needs_maps = getattr(CLASSIFIER_METHODS.get(name), "needs_feature_maps", False)
    return classifier("tiny-cnn" if needs_maps else "mlp", 1)


def fixed_batch(data: ImageDataset, labelled: bool = True) -> Batch:
    batch = data.batch(torch.arange(64))
    return batch if labelled else Batch(batch.images, None)


@pytest.mark.parametrize("name", CLASSIFIER_METHODS.names())
def test_teacher_frozen_eval_and_gets_no_grad(name: str, digits_train: ImageDataset) -> None:
    teacher = make_teacher()
    method = CLASSIFIER_METHODS.get(name)(make_student(name), teacher)
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


@pytest.mark.parametrize("name", CLASSIFIER_METHODS.names())
@pytest.mark.parametrize("labelled", [True, False])
def test_finite_scalar_losses_with_stable_keys(
    name: str, labelled: bool, digits_train: ImageDataset
) -> None:
    method = CLASSIFIER_METHODS.get(name)(make_student(name), make_teacher())
    first = method.training_step(fixed_batch(digits_train, labelled))
    second = method.training_step(fixed_batch(digits_train, labelled))
    assert first.losses.keys() == second.losses.keys()
    for value in first.losses.values():
        assert value.dim() == 0
        assert torch.isfinite(value)
    assert first.logits is not None
    assert first.logits.shape == (64, 10)


@pytest.mark.parametrize("name", CLASSIFIER_METHODS.names())
def test_overfits_one_batch(name: str, digits_train: ImageDataset, tiny_teacher_path: Path) -> None:
    teacher = load_teacher(TeacherSourceConfig(path=str(tiny_teacher_path)))
    method = CLASSIFIER_METHODS.get(name)(make_student(name), teacher)
    optimizer = torch.optim.SGD(method.trainable_parameters(), lr=0.05, momentum=0.9)
    batch = fixed_batch(digits_train)
    losses = []
    for _ in range(30):
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
