"""MAD's moving average of the adversarial generator (``generator_momentum``, Do et al. 2022)."""

from __future__ import annotations

import copy
from pathlib import Path

import pytest
import torch
from torch import nn

from freekd.config import TeacherSourceConfig
from freekd.teachers import Teacher, load_teacher
from tests.datafree.test_adversarial import make_adversarial
from tests.datafree.test_contract import make_student


@pytest.fixture(scope="module")
def teacher(tiny_teacher_path: Path) -> Teacher:
    return load_teacher(TeacherSourceConfig(path=str(tiny_teacher_path)))


def weights(module: nn.Module) -> list[torch.Tensor]:
    return [p.detach().clone() for p in module.parameters()]


def test_the_copy_follows_the_generator_by_its_momentum_after_every_step(
    teacher: Teacher,
) -> None:
    synthesizer = make_adversarial("zskt", generator_momentum=0.9, generator_steps=2)
    averaged = synthesizer.momentum_generator
    assert averaged is not None
    assert all(not p.requires_grad for p in averaged.parameters())
    start = weights(synthesizer.generator)
    assert all(torch.equal(a, s) for a, s in zip(weights(averaged), start, strict=True))
    # Record the generator after each of the round's two steps.
    after_steps: list[list[torch.Tensor]] = []
    step = synthesizer.optimizer.step

    def recording_step(*args: object, **kwargs: object) -> None:
        step(*args, **kwargs)  # type: ignore[arg-type]
        after_steps.append(weights(synthesizer.generator))

    synthesizer.optimizer.step = recording_step  # type: ignore[method-assign]
    statistics = synthesizer.synthesize(teacher, make_student())
    assert len(after_steps) == 2
    for index, initial in enumerate(start):
        first, second = after_steps[0][index], after_steps[1][index]
        expected = 0.9 * (0.9 * initial + 0.1 * first) + 0.1 * second
        torch.testing.assert_close(list(averaged.parameters())[index], expected)
    current = torch.cat([p.flatten() for p in synthesizer.generator.parameters()])
    behind = torch.cat([p.flatten() for p in averaged.parameters()])
    assert statistics["momentum_distance"] == pytest.approx(
        float((current - behind).detach().norm() / current.detach().norm()), rel=1e-5
    )
    assert statistics["momentum_distance"] > 0
    # Buffers (the teacher's pixel statistics for the output layer) are the generator's.
    for copied, source in zip(averaged.buffers(), synthesizer.generator.buffers(), strict=True):
        assert torch.equal(copied, source)


def test_half_of_each_student_batch_comes_from_the_copy_and_the_probe_from_the_generator(
    teacher: Teacher,
) -> None:
    synthesizer = make_adversarial("zskt", generator_momentum=0.5)
    for _ in range(3):
        synthesizer.synthesize(teacher, make_student())
    averaged = synthesizer.momentum_generator
    assert averaged is not None
    state = synthesizer.rng.get_state()
    batch = synthesizer.sample(9)
    replay = torch.Generator().set_state(state)
    current_codes = torch.randn((5, synthesizer.latent_dim), generator=replay)
    averaged_codes = torch.randn((4, synthesizer.latent_dim), generator=replay)
    with torch.no_grad():
        # The first 9 // 2 images from the copy, the rest from the generator (train mode).
        torch.testing.assert_close(batch[:4], averaged.train()(averaged_codes))
        torch.testing.assert_close(batch[4:], synthesizer.generator.train()(current_codes))
        state = synthesizer.rng.get_state()
        probe = synthesizer.probe(6)
        codes = torch.randn((6, synthesizer.latent_dim), generator=replay.set_state(state))
        torch.testing.assert_close(probe, synthesizer.generator(codes))
    assert not torch.allclose(batch[:4], synthesizer.generator(averaged_codes))


def test_the_copy_resumes_exactly_and_restarts_with_the_generator(teacher: Teacher) -> None:
    student = make_student()
    synthesizer = make_adversarial("zskt", generator_momentum=0.95)
    synthesizer.synthesize(teacher, student)
    resumed = make_adversarial("zskt", generator_momentum=0.95, seed=7)
    resumed.load_state_dict(copy.deepcopy(synthesizer.state_dict()))
    for each in (synthesizer, resumed):
        each.synthesize(teacher, student)
    assert torch.equal(synthesizer.sample(8), resumed.sample(8))
    synthesizer.reinitialize(lr_scale=0.5)
    averaged = synthesizer.momentum_generator
    assert averaged is not None
    pairs = zip(weights(averaged), weights(synthesizer.generator), strict=True)
    assert all(torch.equal(a, g) for a, g in pairs)


def test_off_by_default_leaves_the_state_and_statistics_as_before(teacher: Teacher) -> None:
    synthesizer = make_adversarial("zskt")
    assert synthesizer.momentum_generator is None
    assert "momentum_generator" not in synthesizer.state_dict()
    assert "momentum_distance" not in synthesizer.synthesize(teacher, make_student())
    for value in (1.0, -0.1):
        with pytest.raises(ValueError, match="generator_momentum must lie in"):
            make_adversarial("zskt", generator_momentum=value)


def test_counters_replay_and_a_conditional_ensemble_with_the_copy(teacher: Teacher) -> None:
    """Every image drawn counts; a round (its generator steps and the batch it stores in the
    replay memory) never runs the copy; conditional codes and several generators draw through
    the copy too."""
    synthesizer = make_adversarial(
        "zskt", generator_momentum=0.9, replay_fraction=0.5, class_weight=1.0, generators=2
    )
    averaged = synthesizer.momentum_generator
    assert averaged is not None
    calls: list[int] = []
    averaged.register_forward_hook(lambda *_: calls.append(1))
    student = make_student()
    synthesizer.synthesize(teacher, student)
    assert not calls  # the memory's batch is the generator's
    stored = synthesizer.memory.images
    assert stored is not None
    state = synthesizer.rng.get_state()
    before = synthesizer.images_synthesized
    batch = synthesizer.sample(16)  # 8 replayed, 4 from the copy, 4 from the generator
    assert batch.shape == (16, *synthesizer.image_shape)
    assert synthesizer.images_synthesized - before == 8
    assert len(calls) == 1
    assert all(any(torch.equal(image, s) for s in stored) for image in batch[8:])
    synthesizer.rng.set_state(state)  # redraw the codes: the generator's first
    current, _ = synthesizer._latent(4)
    from_copy, _ = synthesizer._latent(4)
    with torch.no_grad():
        torch.testing.assert_close(batch[:4], averaged.train()(from_copy))
        torch.testing.assert_close(batch[4:8], synthesizer.generator.train()(current))


def test_a_checkpoint_saved_without_the_copy_starts_it_from_the_generator(
    teacher: Teacher,
) -> None:
    plain = make_adversarial("zskt")
    plain.synthesize(teacher, make_student())
    resumed = make_adversarial("zskt", generator_momentum=0.9, seed=3)
    resumed.load_state_dict(copy.deepcopy(plain.state_dict()))
    averaged = resumed.momentum_generator
    assert averaged is not None
    pairs = zip(weights(averaged), weights(plain.generator), strict=True)
    assert all(torch.equal(a, g) for a, g in pairs)
