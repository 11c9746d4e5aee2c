"""VirtualAdversarial on mixed batches, and the SemiSupervisedSource that makes them."""

from __future__ import annotations

import pytest
import torch

from freekd.data import Batch, ImageDataset
from freekd.errors import FreekdError
from freekd.losses import kd_kl
from freekd.methods.semi import UNLABELLED, LabelsAndTeacher, VirtualAdversarial
from freekd.models import ImageClassifier, build_model
from freekd.train import SemiSupervisedSource, TrainState


def student(seed: int = 0) -> ImageClassifier:
    torch.manual_seed(seed)
    net = build_model("tiny-cnn", num_classes=10, input_shape=(1, 8, 8))
    return ImageClassifier(
        net, arch="tiny-cnn", arch_kwargs={}, num_classes=10, input_shape=(1, 8, 8),
        mean=[0.3], std=[0.4],
    )  # fmt: skip


def test_cross_entropy_on_labelled_images_only(digits_train: ImageDataset) -> None:
    batch = digits_train.batch(torch.arange(40))
    assert batch.labels is not None
    labels = batch.labels.clone()
    labels[8:] = UNLABELLED
    method = VirtualAdversarial(student(), entropy_weight=0.0).eval()  # BatchNorm: fixed statistics
    torch.manual_seed(3)
    mixed = method.training_step(Batch(batch.images, labels))
    assert set(mixed.losses) == {"ce", "vat"}
    expected = torch.nn.functional.cross_entropy(method.student(batch.images[:8]), labels[:8])
    torch.testing.assert_close(mixed.losses["ce"], expected)
    torch.manual_seed(3)
    unlabelled = method.training_step(Batch(batch.images, torch.full_like(labels, UNLABELLED)))
    assert set(unlabelled.losses) == {"vat"}
    # The smoothness term ignores labels: the same images and random start give the same value.
    torch.testing.assert_close(unlabelled.losses["vat"], mixed.losses["vat"])
    mixed.loss.backward()
    assert all(p.grad is not None for p in method.student.parameters())


def test_entropy_term_and_bad_settings(digits_train: ImageDataset) -> None:
    batch = digits_train.batch(torch.arange(16))
    output = VirtualAdversarial(student()).training_step(batch)
    assert set(output.losses) == {"ce", "vat", "entropy"}
    assert all(torch.isfinite(value) for value in output.losses.values())
    with pytest.raises(FreekdError, match="epsilon > 0"):
        VirtualAdversarial(student(), epsilon=0.0)
    with pytest.raises(FreekdError, match="some labels"):
        VirtualAdversarial(student()).training_step(Batch(batch.images, None))


def test_semi_supervised_training_beats_the_labels_alone(
    digits_train: ImageDataset, digits_test: ImageDataset
) -> None:
    # 30 labels and the rest of digits:train unlabelled: VAT must use the unlabelled images.
    from freekd.train.evaluate import evaluate

    labelled = digits_train.subset(torch.arange(30))
    accuracies = {}
    for name in ("supervised", "vat"):
        net = student(1)
        method = VirtualAdversarial(
            net, epsilon=0.5, vat_weight=1.0 if name == "vat" else 0.0, entropy_weight=0.0
        )
        source = SemiSupervisedSource(
            labelled, digits_train, batch_size=64, labelled_batch_size=30, seed=0
        )
        optimizer = torch.optim.Adam(net.parameters(), lr=3e-3)
        torch.manual_seed(0)
        for _ in range(6):
            for batch in source.batches(TrainState()):
                loss = method.training_step(batch).loss
                optimizer.zero_grad()
                loss.backward()
                optimizer.step()
        accuracies[name] = evaluate(net.eval(), digits_test, device=torch.device("cpu"))["accuracy"]
    assert accuracies["vat"] > accuracies["supervised"] + 0.02, accuracies


def test_source_mixes_and_resumes(digits_train: ImageDataset) -> None:
    labelled = digits_train.subset(torch.arange(20))
    unlabelled = digits_train.subset(torch.arange(20, len(digits_train)))
    source = SemiSupervisedSource(
        labelled, unlabelled, batch_size=50, labelled_batch_size=8, seed=4
    )
    assert source.steps_per_epoch() == len(unlabelled) // 50
    batches = list(source.batches(TrainState(epoch=1)))
    assert len(batches) == source.steps_per_epoch()
    for batch in batches:
        assert batch.labels is not None
        assert len(batch) == 58
        assert (batch.labels[:8] >= 0).all()
        assert (batch.labels[8:] == UNLABELLED).all()
    seen = torch.cat([b.images[:8] for b in batches]).flatten(1)
    assert len(torch.unique(seen, dim=0)) == len(labelled)  # the labelled images cycle
    resumed = list(source.batches(TrainState(epoch=1, step_in_epoch=3)))
    for a, b in zip(batches[3:], resumed, strict=True):
        assert torch.equal(a.images, b.images)
        assert torch.equal(a.labels, b.labels)


def test_labels_and_teacher_adds_soft_targets_on_every_image(digits_train: ImageDataset) -> None:
    batch = digits_train.batch(torch.arange(40))
    assert batch.labels is not None
    labels = batch.labels.clone()
    labels[8:] = UNLABELLED
    teacher = student(seed=1).eval().requires_grad_(False)
    method = LabelsAndTeacher(student(), teacher, kd_weight=2.0, temperature=3.0).eval()
    mixed = method.training_step(Batch(batch.images, labels))
    assert set(mixed.losses) == {"ce", "kd"}
    logits = method.student(batch.images)
    torch.testing.assert_close(mixed.losses["kd"], 2.0 * kd_kl(logits, teacher(batch.images),
                                                               temperature=3.0))  # fmt: skip
    torch.testing.assert_close(
        mixed.losses["ce"], torch.nn.functional.cross_entropy(logits[:8], labels[:8])
    )
    soft_only = Batch(batch.images, torch.full_like(labels, UNLABELLED))
    unlabelled = method.training_step(soft_only)
    assert set(unlabelled.losses) == {"kd"}
    # Steps on the soft targets alone bring the student to its teacher; the teacher stays put.
    optimizer = torch.optim.SGD(method.student.parameters(), lr=0.5)
    before = float(unlabelled.losses["kd"])
    for _ in range(20):
        optimizer.zero_grad()
        method.training_step(
            Batch(batch.images, torch.full_like(labels, UNLABELLED))
        ).loss.backward()
        optimizer.step()
    after = float(
        method.training_step(Batch(batch.images, torch.full_like(labels, UNLABELLED))).loss
    )
    assert after < before / 2
    assert all(p.grad is None for p in teacher.parameters())
    with pytest.raises(FreekdError, match="temperature > 0"):
        LabelsAndTeacher(student(), teacher, temperature=0.0)
