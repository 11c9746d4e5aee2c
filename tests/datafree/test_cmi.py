"""CMI (contrastive model inversion) on the tiny digits teacher: terms, bank, state, restart."""

from __future__ import annotations

import copy
from pathlib import Path

import pytest
import torch

from freekd.config import TeacherSourceConfig
from freekd.datafree.synthesizers.cmi import CMI, local_view
from freekd.errors import FreekdError
from freekd.hooks import last_linear
from freekd.teachers import Teacher, load_teacher
from tests.datafree.test_contract import SHAPE, make_student


@pytest.fixture(scope="module")
def teacher(tiny_teacher_path: Path) -> Teacher:
    return load_teacher(TeacherSourceConfig(path=str(tiny_teacher_path)))


def make(seed: int = 0, **params: object) -> CMI:
    values: dict[str, object] = {"batch_size": 16, "iterations": 3, "contrast_negatives": 32}
    values.update(params)
    return CMI(
        image_shape=SHAPE,
        num_classes=10,
        rng=torch.Generator().manual_seed(seed),
        device=torch.device("cpu"),
        **values,  # type: ignore[arg-type]
    )


def one_batch(synthesizer: CMI) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """A fixed batch, its local view and targets, as one synthesis step sees them."""
    images = synthesizer.generator(synthesizer.latent)
    rng = torch.Generator().manual_seed(5)
    local = local_view(images, min_scale=0.5, flip=False, rng=rng)
    return images, local, torch.arange(len(images)) % 10


def test_every_loss_term_gives_the_generator_a_gradient(teacher: Teacher) -> None:
    synthesizer = make()
    student = make_student()
    synthesizer.synthesize(teacher, student)  # fills the bank, so the negatives take part too
    negatives = synthesizer._negative_features(teacher)
    assert negatives is not None
    terms = synthesizer._loss_terms(teacher, student, *one_batch(synthesizer), negatives)
    assert set(terms) == {"onehot", "bn_statistics", "adversarial", "contrastive"}
    parameters = list(synthesizer.generator.parameters())
    for name, term in terms.items():
        gradients = torch.autograd.grad(term, parameters, retain_graph=True, allow_unused=True)
        norm = sum(float(g.norm()) for g in gradients if g is not None)
        assert norm > 0, name
    assert synthesizer.head is not None
    head_gradients = torch.autograd.grad(terms["contrastive"], list(synthesizer.head.parameters()))
    assert all(float(g.norm()) > 0 for g in head_gradients)


def test_the_student_gets_no_gradient_and_keeps_its_mode(teacher: Teacher) -> None:
    student = make_student().train()
    make().synthesize(teacher, student)
    assert student.training
    assert all(p.grad is None for p in student.parameters())
    assert all(p.grad is None for p in teacher.parameters())


def test_memory_bank_images_are_the_extra_negatives(teacher: Teacher) -> None:
    synthesizer = make()
    student = make_student()
    synthesizer.synthesize(teacher, student)
    assert len(synthesizer.memory) == 16
    batch = one_batch(synthesizer)
    empty = synthesizer._loss_terms(teacher, student, *batch, None)
    negatives = synthesizer._negative_features(teacher)
    assert negatives is not None
    assert negatives.shape == (16, 32)  # min(contrast_negatives, bank) × the teacher's features
    full = synthesizer._loss_terms(teacher, student, *batch, negatives)
    for name in ("onehot", "bn_statistics", "adversarial"):
        torch.testing.assert_close(full[name], empty[name])
    assert full["contrastive"].item() > empty["contrastive"].item()
    # synthesize() queries the teacher about the bank once per batch: 3 steps × 2 views × 16
    # images, plus the 16 bank images (the first batch had an empty bank).
    before = synthesizer.teacher_queries
    synthesizer.synthesize(teacher, student)
    assert synthesizer.teacher_queries - before == 3 * 2 * 16 + 16
    assert before == 3 * 2 * 16 + 16  # the direct _negative_features call above counts too


def test_state_round_trip_resumes_bitwise(teacher: Teacher) -> None:
    student = make_student()
    first = make(seed=3)
    first.synthesize(teacher, student)
    state = copy.deepcopy(first.state_dict())
    expected_statistics = first.synthesize(teacher, student)
    expected_sample = first.sample(8)
    for used in (False, True):
        second = make(seed=99)
        if used:
            second.synthesize(teacher, student)  # already has a head and Adam state
        second.load_state_dict(state)
        assert second.synthesize(teacher, student) == expected_statistics
        assert first.memory.images is not None
        assert second.memory.images is not None
        assert torch.equal(second.memory.images, first.memory.images)
        assert torch.equal(second.sample(8), expected_sample)
        assert second.teacher_queries == first.teacher_queries


def test_a_state_before_the_first_batch_loads_too(teacher: Teacher) -> None:
    fresh_state = copy.deepcopy(make(seed=4).state_dict())
    used = make(seed=7)
    used.synthesize(teacher, make_student())
    used.load_state_dict(fresh_state)
    assert used.head is None
    assert len(used.memory) == 0
    statistics = used.synthesize(teacher, make_student())
    assert statistics == make(seed=4).synthesize(teacher, make_student())


def test_reinitialize_starts_afresh_with_scaled_learning_rates(teacher: Teacher) -> None:
    synthesizers = [make(seed=1), make(seed=1)]
    for synthesizer in synthesizers:
        synthesizer.synthesize(teacher, make_student())
    synthesizer = synthesizers[0]
    assert synthesizer.head is not None
    generator_before = copy.deepcopy(synthesizer.generator.state_dict())
    head_before = copy.deepcopy(synthesizer.head.state_dict())
    lrs_before = [group["lr"] for group in synthesizer.optimizer.param_groups]
    assert len(lrs_before) == 3  # generator, latent code, projection head
    for each in synthesizers:
        each.reinitialize(lr_scale=0.5)
    for name, value in synthesizer.generator.named_parameters():
        if value.dim() > 1:  # linear and convolution weights (BatchNorm starts at 1 and 0)
            assert not torch.equal(value, generator_before[name]), name
    for name, value in synthesizer.head.state_dict().items():
        assert not torch.equal(value, head_before[name]), name
    assert [group["lr"] for group in synthesizer.optimizer.param_groups] == pytest.approx(
        [0.5 * lr for lr in lrs_before]
    )
    assert synthesizer.lr == pytest.approx(0.5 * 5e-3)
    assert not synthesizer.optimizer.state
    assert len(synthesizer.memory) == 0
    with pytest.raises(FreekdError, match="empty"):
        synthesizer.sample(1)
    # Reproducible: the same seed and calls give the same fresh weights.
    twin = synthesizers[1]
    for name, value in synthesizer.generator.state_dict().items():
        assert torch.equal(value, twin.generator.state_dict()[name]), name
    synthesizer.synthesize(teacher, make_student())
    assert synthesizer.sample(2).shape == (2, *SHAPE)


def test_local_view_crops_within_range_and_is_the_identity_at_full_scale() -> None:
    images = torch.rand(4, *SHAPE, generator=torch.Generator().manual_seed(0))
    rng = torch.Generator().manual_seed(1)
    crops = local_view(images, min_scale=0.5, flip=True, rng=rng)
    assert crops.shape == images.shape
    assert float(crops.min()) >= 0
    assert float(crops.max()) <= 1
    assert not torch.allclose(crops, images)
    whole = local_view(images, min_scale=1.0, flip=False, rng=rng)
    torch.testing.assert_close(whole, images)


def test_teacher_features_fall_back_to_logits_without_a_linear_layer(teacher: Teacher) -> None:
    images = torch.rand(3, *SHAPE, generator=torch.Generator().manual_seed(0))
    logits, features = CMI._teacher_features(teacher, images, None)
    assert features is logits
    _, penultimate = CMI._teacher_features(teacher, images, last_linear(teacher))
    assert penultimate.shape == (3, 32)


def test_synthesized_images_are_classified_as_their_targets(teacher: Teacher) -> None:
    """A few real rounds: the teacher agrees with the targets far more often than chance (10 %)."""
    synthesizer = make(batch_size=32, iterations=20)
    student = make_student()
    agreement = []
    for _ in range(3):
        synthesizer.synthesize(teacher, student)
        assert synthesizer.memory.images is not None
        newest = synthesizer.memory.images[-32:]
        with torch.no_grad():
            predicted = teacher(newest).argmax(dim=1)
        agreement.append(float((predicted == synthesizer.targets).float().mean()))
    assert min(agreement) > 0.5, agreement
    assert len(synthesizer.memory) == 3 * 32
    assert synthesizer.images_synthesized == 3 * 32
