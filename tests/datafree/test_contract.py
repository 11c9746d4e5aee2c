"""The contract every registered synthesizer honours (STYLE.md §4.7), on real tiny teachers."""

from __future__ import annotations

import copy
from pathlib import Path

import pytest
import torch
from torch import nn

from freekd.config import TeacherSourceConfig
from freekd.datafree.synthesizers import SYNTHESIZERS
from freekd.models import ImageClassifier, build_model
from freekd.teachers import Teacher, load_teacher

SHAPE = (1, 8, 8)


def make_student(seed: int = 1) -> ImageClassifier:
    torch.manual_seed(seed)
    net = build_model("tiny-cnn", num_classes=10, input_shape=SHAPE)
    return ImageClassifier(
        net,
        arch="tiny-cnn",
        arch_kwargs={},
        num_classes=10,
        input_shape=SHAPE,
        mean=[0.3],
        std=[0.4],
    )


def make_synthesizer(name: str, seed: int = 0) -> object:
    cls = SYNTHESIZERS.get(name)
    # Contract checks need a few cheap iterations, not the defaults sized for real runs.
    cheap = {"batch_size": 16, "iterations": 5, "warmup_steps": 2, "generator_steps": 1}
    accepted = cls.__init__.__code__.co_varnames
    params = {key: value for key, value in cheap.items() if key in accepted}
    return cls(
        image_shape=SHAPE,
        num_classes=10,
        rng=torch.Generator().manual_seed(seed),
        device=torch.device("cpu"),
        **params,
    )


@pytest.fixture(scope="module")
def teacher(tiny_teacher_path: Path) -> Teacher:
    return load_teacher(TeacherSourceConfig(path=str(tiny_teacher_path)))


@pytest.fixture(scope="module")
def teacher_without_batchnorm() -> Teacher:
    torch.manual_seed(0)
    net = build_model("tiny-cnn-nobn", num_classes=10, input_shape=SHAPE)
    model = ImageClassifier(
        net,
        arch="tiny-cnn-nobn",
        arch_kwargs={},
        num_classes=10,
        input_shape=SHAPE,
        mean=[0.3],
        std=[0.4],
    )
    return Teacher(model, num_classes=10, input_shape=SHAPE, description="test")


NAMES = SYNTHESIZERS.names()


@pytest.mark.parametrize("name", NAMES)
def test_sample_and_probe_shape_range_and_no_graph(name: str, teacher: Teacher) -> None:
    synthesizer = make_synthesizer(name)
    synthesizer.synthesize(teacher, make_student())
    for images in (synthesizer.sample(5), synthesizer.probe(5)):  # probe: the collapse check's
        assert images.shape == (5, *SHAPE)
        assert images.min() >= 0
        assert images.max() <= 1
        assert not images.requires_grad
    assert synthesizer.images_synthesized >= 5


@pytest.mark.parametrize("name", NAMES)
@pytest.mark.parametrize("student_training", [True, False])
def test_synthesis_leaves_no_hooks_keeps_modes_and_never_touches_the_teacher(
    name: str, student_training: bool, teacher: Teacher
) -> None:
    student = make_student().train(student_training)
    before = copy.deepcopy(teacher.state_dict())
    synthesizer = make_synthesizer(name)
    synthesizer.synthesize(teacher, student)
    for module in [*teacher.modules(), *student.modules()]:
        assert len(module._forward_hooks) == 0
        assert len(module._forward_pre_hooks) == 0
    assert student.training == student_training
    assert not teacher.training
    assert all(p.grad is None for p in teacher.parameters())
    for key, value in teacher.state_dict().items():
        assert torch.equal(value, before[key]), key


@pytest.mark.parametrize("name", NAMES)
def test_every_active_term_gives_the_generator_a_gradient(name: str, teacher: Teacher) -> None:
    """Distinct teacher and student (catches Fast-Datafree's student=teacher)."""
    synthesizer = make_synthesizer(name)
    parameters = [p for m in _trainable_modules(synthesizer) for p in m.parameters()]
    if not parameters:
        pytest.skip(f"{name} has no trainable generator")
    student = make_student()
    statistics = synthesizer.synthesize(teacher, student)
    assert statistics, "synthesize() reports its loss terms"
    for term in statistics:
        gradient = _term_gradient(synthesizer, term, teacher, student)
        assert gradient > 0, f"{name}: term {term} gives no gradient"


def _trainable_modules(synthesizer: object) -> list[nn.Module]:
    return [value for value in vars(synthesizer).values() if isinstance(value, nn.Module)]


def _term_gradient(synthesizer: object, term: str, teacher: Teacher, student: nn.Module) -> float:
    """Re-run synthesis with only ``term`` weighted and measure the generator's gradient norm."""
    weights = {k: v for k, v in vars(synthesizer).items() if k.endswith("_weight")}
    matching = [k for k in weights if k.removesuffix("_weight") in term]
    if not matching:
        pytest.skip(f"term {term} has no weight attribute to isolate")
    clone = copy.deepcopy(synthesizer)
    for key in weights:
        setattr(clone, key, weights[key] if key in matching else 0.0)
    modules = _trainable_modules(clone)
    optimizer = clone.optimizer
    original_step = optimizer.step
    norms: list[float] = []

    def record_then_step(*args: object, **kwargs: object) -> object:
        norms.append(
            sum(float(p.grad.norm()) for m in modules for p in m.parameters() if p.grad is not None)
        )
        return original_step(*args, **kwargs)

    optimizer.step = record_then_step
    clone.synthesize(teacher, student)
    return norms[0] if norms else 0.0


@pytest.mark.parametrize("name", NAMES)
def test_state_dict_round_trip_resumes_exactly(name: str, teacher: Teacher) -> None:
    first = make_synthesizer(name, seed=3)
    first.synthesize(teacher, make_student())
    state = copy.deepcopy(first.state_dict())
    expected = [first.sample(4) for _ in range(2)]
    second = make_synthesizer(name, seed=99)
    second.load_state_dict(state)
    got = [second.sample(4) for _ in range(2)]
    for a, b in zip(expected, got, strict=True):
        torch.testing.assert_close(a, b)


@pytest.mark.parametrize("name", [n for n in NAMES if not SYNTHESIZERS.get(n).needs_batchnorm])
def test_batchnorm_free_synthesizers_run_on_a_batchnorm_free_teacher(
    name: str, teacher_without_batchnorm: Teacher
) -> None:
    synthesizer = make_synthesizer(name)
    synthesizer.synthesize(teacher_without_batchnorm, make_student())
    assert synthesizer.sample(3).shape == (3, *SHAPE)


def _optimizers(synthesizer: object) -> list[torch.optim.Optimizer]:
    return [v for v in vars(synthesizer).values() if isinstance(v, torch.optim.Optimizer)]


def _learning_rates(synthesizer: object) -> list[float]:
    return [group["lr"] for o in _optimizers(synthesizer) for group in o.param_groups]


@pytest.mark.parametrize("name", NAMES)
def test_reinitialize_restarts_synthesis_reproducibly_and_scales_the_learning_rate(
    name: str, teacher: Teacher
) -> None:
    student = make_student()
    synthesizer = make_synthesizer(name)
    synthesizer.synthesize(teacher, student)
    learning_rates = _learning_rates(synthesizer)
    kept = copy.deepcopy(synthesizer)
    twin = copy.deepcopy(synthesizer)
    synthesizer.reinitialize(lr_scale=0.5)
    twin.reinitialize(lr_scale=0.5)
    assert _learning_rates(synthesizer) == pytest.approx([0.5 * lr for lr in learning_rates])
    assert all(not optimizer.state for optimizer in _optimizers(synthesizer))
    memory = getattr(synthesizer, "memory", None)
    assert memory is None or len(memory) == 0
    # Re-initialization is a function of the synthesizer's rng: a copy restarts identically.
    for module, twin_module in zip(
        _trainable_modules(synthesizer), _trainable_modules(twin), strict=True
    ):
        for key, value in module.state_dict().items():
            assert torch.equal(value, twin_module.state_dict()[key]), key
    # From here on both draw the same random numbers: any difference comes from the restart.
    synthesizer.rng.set_state(kept.rng.get_state())
    synthesizer.synthesize(teacher, student)
    kept.synthesize(teacher, student)
    restarted, continued = synthesizer.sample(8), kept.sample(8)
    if _optimizers(synthesizer):
        assert not torch.allclose(restarted, continued)
    else:  # nothing to restart (noise): re-initializing is a no-op
        assert torch.equal(restarted, continued)


@pytest.mark.parametrize("name", NAMES)
def test_a_round_shows_its_progress_from_the_first_second(name: str, teacher: Teacher) -> None:
    from freekd.datafree.source import SyntheticSource
    from freekd.train.trainer import TrainState

    synthesizer = make_synthesizer(name)
    shown: list[str] = []
    source = SyntheticSource(
        synthesizer,  # type: ignore[arg-type]
        teacher=teacher,
        student=make_student(),
        steps_per_epoch=1,
        batch_size=4,
    )
    source.status = shown.append
    next(iter(source.batches(TrainState())))
    # Before the first step: the round is named, and rounds of many iterations count them.
    assert shown[0].startswith("synthesis round 1 (")
    iterations = getattr(synthesizer, "iterations", None) or getattr(synthesizer, "warmup_steps", 0)
    if name in {"cmi", "deepinversion", "fast"}:
        assert shown[-1].endswith(f"iteration {iterations}/{iterations}"), shown
    assert synthesizer.on_iteration is None  # unhooked after the round


@pytest.mark.parametrize("name", NAMES)
def test_a_spent_time_budget_ends_a_long_round_after_its_first_iteration(
    name: str, teacher: Teacher
) -> None:
    """A round of many optimization steps checks the run's time budget between steps
    (``budget_spent``) and ends after its first step when it is spent, keeping the images it has
    made; the adversarial generators' few steps per round, the noise and DAFL's single step run
    to the end (the budget is checked again after the student's next step)."""
    whole = make_synthesizer(name)
    whole.synthesize(teacher, make_student())
    cut = make_synthesizer(name)
    cut.budget_spent = lambda: True
    cut.synthesize(teacher, make_student())
    if name in LONG_ROUNDS:
        assert cut.teacher_queries < whole.teacher_queries, name
    else:
        assert cut.teacher_queries == whole.teacher_queries, name
    assert cut.sample(3).shape == (3, *SHAPE)


#: The synthesizers whose rounds are many optimization steps (cut by a spent time budget).
LONG_ROUNDS = {"deepinversion", "fast", "cmi", "nayer", "impressions"}
