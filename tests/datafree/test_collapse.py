"""Collapse detection: the metrics, the monitor, and recovery inside ``SyntheticSource``."""

from __future__ import annotations

import copy
import logging
import math
from pathlib import Path

import pytest
import torch

from freekd.config import TeacherSourceConfig
from freekd.data import ImageDataset
from freekd.datafree.collapse import (
    CollapseMonitor,
    image_diversity,
    label_balance,
    probe_discrepancy,
)
from freekd.datafree.source import SyntheticSource
from freekd.datafree.synthesizers import SYNTHESIZERS
from freekd.teachers import Teacher, load_teacher
from freekd.train import TrainState
from tests.datafree.test_contract import SHAPE, make_student, make_synthesizer


def test_identical_images_have_no_diversity() -> None:
    image = torch.rand(1, 1, 8, 8, generator=torch.Generator().manual_seed(0))
    assert image_diversity(image.expand(16, -1, -1, -1)) == pytest.approx(0.0, abs=1e-12)


def test_real_digits_and_uniform_noise_are_diverse(digits_test: ImageDataset) -> None:
    digits = digits_test.batch(torch.arange(128)).images
    noise = torch.rand(128, 1, 8, 8, generator=torch.Generator().manual_seed(0))
    assert image_diversity(digits) > 0.3
    # E|x − y|² = 1/6 per pixel for independent uniform pixels.
    assert image_diversity(noise) == pytest.approx((1 / 6) ** 0.5, abs=0.03)


def test_label_balance_is_zero_for_one_class_and_one_when_even() -> None:
    one_class = torch.zeros(20, 10)
    one_class[:, 3] = 1
    assert label_balance(one_class) == pytest.approx(0.0, abs=1e-12)
    even = torch.eye(10).repeat(3, 1)
    assert label_balance(even) == pytest.approx(1.0)
    # Fewer images than classes: the best a batch of 4 can do counts as balanced.
    assert label_balance(torch.eye(10)[:4]) == pytest.approx(1.0)
    two_classes = torch.eye(10)[torch.tensor([0, 1] * 8)]
    assert label_balance(two_classes) == pytest.approx(math.log(2) / math.log(10))


def test_monitor_needs_patience_consecutive_low_checks() -> None:
    monitor = CollapseMonitor(diversity_threshold=0.05, balance_threshold=0.1, patience=2)
    constant = torch.full((8, 1, 4, 4), 0.5)
    diverse = torch.rand(8, 1, 4, 4, generator=torch.Generator().manual_seed(0))
    even = torch.eye(8, 10)
    first = monitor.check(constant, even)
    assert first.low
    assert not first.collapsed
    assert monitor.check(constant, even).collapsed  # the second low check in a row
    monitor.reset()
    assert not monitor.check(constant, even).collapsed
    assert not monitor.check(diverse, even).low  # a healthy check breaks the streak
    assert not monitor.check(constant, even).collapsed
    assert monitor.check(constant, even).collapsed


def test_probe_discrepancy_is_the_teachers_kl_to_the_student() -> None:
    teacher = torch.tensor([[2.0, 0.0, -1.0], [0.5, 0.5, 0.0]])
    assert probe_discrepancy(teacher.clone(), teacher) == pytest.approx(0.0, abs=1e-7)
    student = torch.tensor([[0.0, 1.0, 0.0], [1.0, 0.0, 0.0]])
    p, q = teacher.softmax(dim=1), student.softmax(dim=1)
    closed_form = float((p * (p / q).log()).sum(dim=1).mean())
    assert probe_discrepancy(student, teacher) == pytest.approx(closed_form, rel=1e-6)
    assert probe_discrepancy(student, teacher) != pytest.approx(probe_discrepancy(teacher, student))


def logits_at_kl(kl: float) -> tuple[torch.Tensor, torch.Tensor]:
    """(student, teacher) logits of 8 images whose probe_discrepancy is ``kl``: two classes, the
    teacher sure of class 0, the student at the probability q of class 0 that gives that KL."""
    # KL(p ‖ q) with p = (1, 0) is −log q.
    q = math.exp(-kl)
    student = torch.tensor([[math.log(q), math.log(1 - q)]]).expand(8, 2)
    teacher = torch.tensor([[30.0, 0.0]]).expand(8, 2)
    return student, teacher


def discrepancy_monitor(*, patience: int) -> CollapseMonitor:
    """Balance never low, diversity 0.05, discrepancy low above 4x its lowest and 0.5 nats."""
    return CollapseMonitor(
        diversity_threshold=0.05,
        balance_threshold=0.0,
        patience=patience,
        discrepancy_factor=4,
        discrepancy_floor=0.5,
    )


def random_images() -> torch.Tensor:
    return torch.rand(8, 1, 4, 4, generator=torch.Generator().manual_seed(0))


def test_monitor_flags_a_discrepancy_far_above_its_lowest() -> None:
    monitor = discrepancy_monitor(patience=2)
    images = random_images()
    history = []
    # A student learning (1.5 → 0.25), wobbling (0.9 < 4 × 0.25), then losing the teacher.
    for kl in (1.5, 0.6, 0.25, 0.9, 1.2, 1.4, 0.3):
        student, teacher = logits_at_kl(kl)
        check = monitor.check(images, teacher, student)
        assert check.discrepancy == pytest.approx(kl, rel=1e-4)
        history.append((check.reasons, check.collapsed))
    assert history == [
        ((), False),
        ((), False),
        ((), False),
        ((), False),
        (("discrepancy",), False),
        (("discrepancy",), True),  # the second in a row
        ((), False),
    ]
    assert monitor.best_discrepancy == pytest.approx(0.25, rel=1e-4)
    restored = CollapseMonitor(diversity_threshold=0.05, balance_threshold=0.0, patience=2)
    restored.load_state_dict(monitor.state_dict())
    assert restored.best_discrepancy == monitor.best_discrepancy


def test_discrepancy_below_the_floor_or_with_factor_zero_is_never_low() -> None:
    images = random_images()
    floored = discrepancy_monitor(patience=1)
    off = CollapseMonitor(diversity_threshold=0.05, balance_threshold=0.0, patience=1)
    for kl in (0.01, 0.4, 3.0):  # 40x its lowest, but under the floor; then far above
        student, teacher = logits_at_kl(kl)
        assert not off.check(images, teacher, student).low
        low = floored.check(images, teacher, student).low
    assert low
    student, teacher = logits_at_kl(0.4)
    assert not floored.check(images, teacher, student).low


def test_a_non_finite_discrepancy_is_low_and_a_zero_one_is_not_a_crash() -> None:
    images = random_images()
    teacher = torch.tensor([[300.0, 0.0]]).expand(8, 2)
    monitor = discrepancy_monitor(patience=1)
    # Saturated logits that agree: KL exactly 0, rounding never makes it negative.
    assert monitor.check(images, teacher, teacher * 2).discrepancy == 0.0
    assert monitor.best_discrepancy == 0.0
    diverged = monitor.check(images, teacher, torch.full((8, 2), math.nan))
    assert diverged.reasons == ("discrepancy",)
    assert diverged.collapsed
    assert monitor.best_discrepancy == 0.0  # a NaN is not a new lowest
    # Even with the check off, a student with non-finite outputs is not healthy.
    off = CollapseMonitor(diversity_threshold=0.05, balance_threshold=0.0, patience=1)
    assert off.check(images, teacher, torch.full((8, 2), math.inf)).low


@pytest.mark.parametrize("factor", [0.5, 1.0, -2.0])
def test_discrepancy_factor_must_be_above_one_or_zero(factor: float) -> None:
    with pytest.raises(ValueError, match="discrepancy_factor must be above 1"):
        CollapseMonitor(
            diversity_threshold=0.05,
            balance_threshold=0.1,
            patience=1,
            discrepancy_factor=factor,
        )


@pytest.fixture(scope="module")
def teacher(tiny_teacher_path: Path) -> Teacher:
    return load_teacher(TeacherSourceConfig(path=str(tiny_teacher_path)))


def collapsed_dafl() -> object:
    """A DAFL generator whose output ignores the latent code, stuck there by a tiny lr."""
    synthesizer = make_synthesizer("dafl")
    with torch.no_grad():
        synthesizer.generator.head.weight.zero_()
    for group in synthesizer.optimizer.param_groups:
        group["lr"] = 1e-9
    return synthesizer


def source_for(synthesizer: object, teacher: Teacher, **changes: object) -> SyntheticSource:
    settings: dict[str, object] = {
        "monitor": CollapseMonitor(diversity_threshold=0.05, balance_threshold=0.1, patience=1),
        "check_every": 1,
        "probe_size": 32,
        "max_recoveries": 2,
        "lr_scale": 0.5,
    }
    settings.update(changes)
    return SyntheticSource(
        synthesizer,  # type: ignore[arg-type]
        teacher=teacher,
        student=make_student(),
        steps_per_epoch=3,
        batch_size=8,
        **settings,  # type: ignore[arg-type]
    )


def test_a_collapsed_generator_is_reinitialized_with_a_lower_lr(teacher: Teacher) -> None:
    synthesizer = collapsed_dafl()
    head_before = synthesizer.generator.head.weight.clone()
    # Diversity only: with its 1e-9 lr the restarted generator cannot learn balanced labels.
    monitor = CollapseMonitor(diversity_threshold=0.05, balance_threshold=0.0, patience=1)
    source = source_for(synthesizer, teacher, monitor=monitor)
    batches = list(source.batches(TrainState()))
    assert len(batches) == 3
    (event,) = source.events
    assert event["action"] == "reinitialize"
    assert event["step"] == 0
    assert event["diversity"] < 0.01
    assert synthesizer.optimizer.param_groups[0]["lr"] == pytest.approx(0.5e-9)
    assert not torch.equal(synthesizer.generator.head.weight, head_before)
    report = source.collapse_report()
    assert report["recoveries"] == 1
    assert report["recovered"] is True
    assert report["checks"] == 3
    assert report["probe_queries"] == 3 * 32
    assert report["last_diversity"] > 0.05
    assert {"collapse/diversity", "collapse/balance", "synthesis/onehot"} <= set(
        source.extra_metrics()
    )


def test_a_student_that_lost_the_teacher_restarts_the_generator(
    teacher: Teacher, caplog: pytest.LogCaptureFixture
) -> None:
    """A zskt game the generator won: diversity and balance are fine, the student's KL is not."""
    synthesizer = make_synthesizer("zskt")
    monitor = CollapseMonitor(
        diversity_threshold=0.0,
        balance_threshold=0.0,
        patience=1,
        discrepancy_factor=4,
        discrepancy_floor=0.1,
    )
    source = source_for(synthesizer, teacher, monitor=monitor, max_recoveries=1)
    student = source.student
    list(source.batches(TrainState()))
    assert source.events == []
    lowest = monitor.best_discrepancy
    assert 0 < lowest < math.inf
    # The student loses the teacher: it answers class 0, sure of it, whatever it sees.
    last = [module for module in student.modules() if isinstance(module, torch.nn.Linear)][-1]
    with torch.no_grad():
        last.weight.zero_()
        last.bias.copy_(torch.eye(10)[0] * 20)
    with caplog.at_level(logging.WARNING):
        list(source.batches(TrainState(step=3)))
    # The restarted generator cannot mend the student: the next check gives up.
    assert [event["action"] for event in source.events] == ["reinitialize", "unrecovered"]
    event = source.events[0]
    assert (event["step"], event["reasons"]) == (3, ["discrepancy"])
    assert event["discrepancy"] > 4 * lowest
    assert synthesizer.optimizer.param_groups[0]["lr"] == pytest.approx(0.5e-3)
    assert "the generator is winning the game" in caplog.text
    report = source.collapse_report()
    assert report["student_damaged"] is True
    assert report["last_discrepancy"] == pytest.approx(source.last_check["discrepancy"])
    assert "collapse/discrepancy" in source.extra_metrics()


def test_the_probe_leaves_the_student_as_it_was(teacher: Teacher) -> None:
    student_source = source_for(make_synthesizer("zskt"), teacher)
    student = student_source.student
    student.train()
    before = copy.deepcopy(student.state_dict())
    list(student_source.batches(TrainState()))
    assert student.training
    assert all(parameter.grad is None for parameter in student.parameters())
    after = student.state_dict()
    assert all(torch.equal(before[name], after[name]) for name in before)


def test_collapse_without_recoveries_left_is_reported_and_logged(
    teacher: Teacher, caplog: pytest.LogCaptureFixture
) -> None:
    source = source_for(collapsed_dafl(), teacher, max_recoveries=0)
    with caplog.at_level(logging.WARNING):
        list(source.batches(TrainState()))
    assert [event["action"] for event in source.events] == ["unrecovered"]
    assert source.collapse_report()["recovered"] is False
    assert "did not help" in caplog.text


def test_a_re_initialization_at_the_last_check_is_not_called_recovered(teacher: Teacher) -> None:
    # Every check is low; with patience 3 the third and last check is the collapse.
    monitor = CollapseMonitor(diversity_threshold=2.0, balance_threshold=0.0, patience=3)
    source = source_for(make_synthesizer("dafl"), teacher, monitor=monitor)
    list(source.batches(TrainState()))
    assert [(event["check"], event["action"]) for event in source.events] == [(3, "reinitialize")]
    report = source.collapse_report()
    assert (report["recoveries"], report["recovered"], report["student_damaged"]) == (
        1,
        False,
        False,
    )


def test_a_healthy_generator_has_no_event(teacher: Teacher) -> None:
    source = source_for(make_synthesizer("dafl"), teacher)
    list(source.batches(TrainState()))
    assert source.events == []
    assert source.collapse_report()["recovered"] is True


def test_source_state_round_trip_keeps_events_and_counters(teacher: Teacher) -> None:
    source = source_for(collapsed_dafl(), teacher)
    list(source.batches(TrainState()))
    state = copy.deepcopy(source.state_dict())
    restored = source_for(make_synthesizer("dafl", seed=5), teacher)
    restored.load_state_dict(state)
    assert restored.events == source.events
    assert restored.collapse_report() == source.collapse_report()


def test_synthetic_prior_is_the_teachers_mean_probability_over_every_probe(
    teacher: Teacher,
) -> None:
    """The class prior of the probes over the run, measured as the checks go (no extra query):
    equal to the mean softmax of the teacher on the same probe images, recomputed here."""
    synthesizer = make_synthesizer("dafl")
    source = source_for(synthesizer, teacher)
    assert source.collapse_report()["synthetic_prior"] is None  # no check yet
    probes: list[torch.Tensor] = []
    probe = synthesizer.probe
    synthesizer.probe = lambda n: probes.append(probe(n)) or probes[-1]  # type: ignore[method-assign]
    list(source.batches(TrainState()))
    assert len(probes) == source.checks == 3
    with torch.no_grad():
        expected = torch.cat([teacher(p) for p in probes]).double().softmax(1).mean(0)
    prior = source.collapse_report()["synthetic_prior"]
    assert prior == pytest.approx(expected.tolist(), abs=1e-5)
    assert sum(prior) == pytest.approx(1.0, abs=1e-4)


def test_synthetic_prior_after_resuming_a_run_saved_before_it_was_recorded(
    teacher: Teacher,
) -> None:
    """An older checkpoint has probe counters but no prior: the resumed record is the mean over
    the checks made since, never a sum divided by the whole run's probes."""
    source = source_for(make_synthesizer("dafl"), teacher)
    list(source.batches(TrainState()))
    state = copy.deepcopy(source.state_dict())
    del state["prior_sum"], state["prior_images"]
    resumed = source_for(make_synthesizer("dafl"), teacher)
    resumed.load_state_dict(state)
    assert resumed.collapse_report()["synthetic_prior"] is None
    assert resumed.probe_queries == 96
    list(resumed.batches(TrainState()))
    assert resumed.prior_images == 96  # only the three new probes
    assert sum(resumed.collapse_report()["synthetic_prior"]) == pytest.approx(1.0, abs=1e-4)


def test_synthetic_prior_leaves_out_probe_rows_with_non_finite_logits(teacher: Teacher) -> None:
    source = source_for(make_synthesizer("dafl"), teacher)
    logits = torch.tensor([[0.0, math.log(3.0)], [math.nan, 0.0], [math.inf, 0.0]])
    source._add_to_prior(logits)
    assert source.prior_images == 1
    assert source.prior_sum is not None
    assert source.prior_sum.tolist() == pytest.approx([0.25, 0.75])


def test_kept_probe_images_are_spread_over_the_probe(teacher: Teacher) -> None:
    """A ``GeneratorEnsemble`` draws the probe in contiguous parts, one per generator: the kept
    images are spread over the whole probe, so every generator's part is kept."""
    source = source_for(make_synthesizer("zskt"), teacher, keep_per_check=4)
    probe = torch.arange(16.0).view(16, 1, 1, 1).expand(16, *SHAPE).contiguous()
    source._keep(probe, torch.arange(16.0).view(16, 1).expand(16, 10))
    assert source.kept_images is not None
    assert source.kept_logits is not None
    assert source.kept_images[:, 0, 0, 0].tolist() == [0.0, 5.0, 10.0, 15.0]
    assert source.kept_logits[:, 0].tolist() == [0.0, 5.0, 10.0, 15.0]


def test_earlier_probes_measure_what_the_student_forgot(
    teacher: Teacher, monkeypatch: pytest.MonkeyPatch
) -> None:
    torch.manual_seed(0)  # the generator's initial weights: the same run below, capped
    source = source_for(make_synthesizer("zskt"), teacher, keep_per_check=4, keep_size=12)
    list(source.batches(TrainState()))  # three checks: keeps 4, then 8, then 12
    assert source.kept_images is not None
    assert source.kept_logits is not None
    assert source.kept_images.shape == (12, *SHAPE)
    with torch.no_grad():  # the teacher's logits were kept with the images, not re-queried
        assert torch.allclose(source.kept_logits, teacher(source.kept_images), atol=1e-5)
        student_logits = source.student.eval()(source.kept_images)
    measured = source.last_check["earlier_discrepancy"]  # on the 8 kept before the third check
    expected = probe_discrepancy(student_logits[:8], source.kept_logits[:8])
    assert measured == pytest.approx(expected, rel=1e-5)
    assert "collapse/earlier_discrepancy" in source.extra_metrics()
    state = copy.deepcopy(source.state_dict())
    restored = source_for(make_synthesizer("zskt", seed=5), teacher, keep_per_check=4)
    restored.load_state_dict(state)
    assert restored.kept_images is not None
    assert torch.equal(restored.kept_images, source.kept_images)
    assert torch.equal(restored.kept_logits, source.kept_logits)
    # A student that forgets its teacher (class 0 whatever it sees) shows on the kept images.
    last = [m for m in source.student.modules() if isinstance(m, torch.nn.Linear)][-1]
    with torch.no_grad():
        last.weight.zero_()
        last.bias.copy_(torch.eye(10)[0] * 20)
    assert source._earlier_discrepancy() > 5 * measured
    # keep_size drops the oldest.
    torch.manual_seed(0)
    capped = source_for(make_synthesizer("zskt"), teacher, keep_per_check=4, keep_size=10)
    list(capped.batches(TrainState()))
    assert capped.kept_images is not None
    assert torch.equal(capped.kept_images, source.kept_images[2:])  # the same run, 2 dropped
    # ... and never more pixel values than KEPT_VALUES (32 MB): two images' worth here.
    monkeypatch.setattr(SyntheticSource, "KEPT_VALUES", 2 * math.prod(SHAPE))
    torch.manual_seed(0)
    tight = source_for(make_synthesizer("zskt"), teacher, keep_per_check=4)
    list(tight.batches(TrainState()))
    assert tight.kept_images is not None
    assert torch.equal(tight.kept_images, source.kept_images[-2:])
    # Nothing kept: nothing measured.
    plain = source_for(make_synthesizer("zskt"), teacher)
    list(plain.batches(TrainState()))
    assert plain.kept_images is None
    assert "earlier_discrepancy" not in plain.last_check


def test_every_synthesizer_implements_reinitialize() -> None:
    for name in SYNTHESIZERS.names():
        assert callable(getattr(SYNTHESIZERS.get(name), "reinitialize", None)), name
