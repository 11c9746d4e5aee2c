"""The one loop: exact resume, determinism, divergence errors, schedule, callbacks."""

from __future__ import annotations

import json
import math
from collections.abc import Callable
from pathlib import Path

import pytest
import torch

from freekd.data import ImageDataset
from freekd.errors import FreekdError
from freekd.methods import Supervised
from freekd.methods.base import StepOutput
from freekd.models import ImageClassifier, build_model
from freekd.seeding import seed_everything
from freekd.train import Checkpoint, LoaderSource, LogMetrics, Trainer, TrainState
from freekd.train.averaging import TailAverage
from freekd.train.callbacks import Callback
from freekd.train.optim import learning_rate_at, make_optimizer
from freekd.train.resume import load_resume_state, restore
from tests.conftest import tiny_trainer


class Interrupt(Callback):
    """Simulates a crash (Ctrl-C) right after optimizer step ``at``."""

    def __init__(self, at: int) -> None:
        self.at = at

    def on_step_end(self, trainer: Trainer, state: TrainState, output: StepOutput) -> None:
        if state.step == self.at:
            raise KeyboardInterrupt


class RecordLosses(Callback):
    def __init__(self) -> None:
        self.losses: list[float] = []

    def on_step_end(self, trainer: Trainer, state: TrainState, output: StepOutput) -> None:
        self.losses.append(float(output.loss.detach()))


def make_trainer(
    data: ImageDataset, seed: int, callbacks: list[Callback], **changes: object
) -> tuple[Trainer, LoaderSource]:
    seed_everything(seed)
    config = tiny_trainer(augment="crop", **changes)
    net = build_model("tiny-cnn", num_classes=10, input_shape=data.input_shape)
    student = ImageClassifier(
        net,
        arch="tiny-cnn",
        arch_kwargs={},
        num_classes=10,
        input_shape=data.input_shape,
        mean=[0.3],
        std=[0.4],
    )
    method = Supervised(student)
    from freekd.data import AUGMENTATIONS

    source = LoaderSource(
        data, batch_size=config.batch_size, seed=seed, augment=AUGMENTATIONS.get("crop")
    )
    trainer = Trainer(
        method,
        make_optimizer(method.trainable_parameters(), config),
        config=config,
        device=torch.device("cpu"),
        callbacks=callbacks,
    )
    return trainer, source


def state_of(trainer: Trainer) -> dict[str, torch.Tensor]:
    return {k: v.clone() for k, v in trainer.method.student.state_dict().items()}


@pytest.mark.parametrize("interrupt_at", [7, 23, 30])  # mid-epoch, on a checkpoint, past one
def test_resume_gives_the_same_weights_as_an_uninterrupted_run(
    digits_train: ImageDataset, tmp_path: Path, interrupt_at: int
) -> None:
    straight_losses = RecordLosses()
    straight, source = make_trainer(digits_train, 3, [straight_losses])
    straight.fit(source)

    path = tmp_path / "checkpoint.pt"
    first_losses = RecordLosses()
    checkpoint = Checkpoint(path, every=5, config={})
    first, source = make_trainer(
        digits_train, 3, [first_losses, checkpoint, Interrupt(interrupt_at)]
    )
    with pytest.raises(KeyboardInterrupt):
        first.fit(source)

    # A new process: different global RNG until the checkpoint restores it.
    torch.manual_seed(12345)
    resumed_losses = RecordLosses()
    resumed, source = make_trainer(digits_train, 3, [resumed_losses])
    data = load_resume_state(path)
    state = restore(resumed, data)
    resumed_at = state.step
    assert resumed_at == (interrupt_at // 5) * 5
    resumed.fit(source, state=state)

    expected = state_of(straight)
    got = state_of(resumed)
    for key in expected:
        torch.testing.assert_close(got[key], expected[key], rtol=0, atol=0, msg=key)
    assert first_losses.losses[:resumed_at] + resumed_losses.losses == straight_losses.losses


def test_same_seed_is_bitwise_repeatable_and_another_seed_differs(
    digits_train: ImageDataset,
) -> None:
    runs = []
    for seed in (0, 0, 1):
        losses = RecordLosses()
        trainer, source = make_trainer(digits_train, seed, [losses], epochs=1)
        trainer.fit(source)
        runs.append(losses.losses)
    assert runs[0] == runs[1]
    assert runs[0] != runs[2]


def test_nan_loss_stops_with_the_step_named(digits_train: ImageDataset) -> None:
    trainer, source = make_trainer(digits_train, 0, [], lr=1e6, epochs=3)
    with pytest.raises(FreekdError, match=r"loss became (nan|inf) at step \d+ \(epoch \d+\)"):
        trainer.fit(source)


def test_loss_goes_down_and_metrics_are_logged(digits_train: ImageDataset, tmp_path: Path) -> None:
    metrics = tmp_path / "metrics.jsonl"
    trainer, source = make_trainer(digits_train, 0, [LogMetrics(metrics, every=5)], epochs=3)
    trainer.fit(source)
    records = [json.loads(line) for line in metrics.read_text().splitlines()]
    step_records = [r for r in records if "loss" in r]
    assert step_records[0]["step"] == 5
    assert step_records[-1]["loss"] < 0.85 * step_records[0]["loss"]
    assert {"lr", "loss/ce", "steps_per_second", "epoch"} <= set(step_records[0])


def test_learning_rate_schedules() -> None:
    config = tiny_trainer(warmup_steps=10, scheduler="cosine")
    factors = [learning_rate_at(s, total_steps=110, config=config) for s in range(110)]
    assert factors[0] == pytest.approx(0.1)
    assert factors[9] == pytest.approx(1.0)
    assert factors[10] == pytest.approx(1.0)
    assert factors[60] == pytest.approx(0.5)
    assert all(a >= b for a, b in zip(factors[10:], factors[11:], strict=False))
    step = tiny_trainer(scheduler="step")
    assert learning_rate_at(74, total_steps=100, config=step) == pytest.approx(0.1)
    assert learning_rate_at(75, total_steps=100, config=step) == pytest.approx(0.01)


def test_loader_source_shards_match_the_global_batch(digits_train: ImageDataset) -> None:
    whole = LoaderSource(digits_train, batch_size=64, seed=5)
    halves = [
        LoaderSource(digits_train, batch_size=64, seed=5, rank=r, world_size=2) for r in (0, 1)
    ]
    state = TrainState(epoch=2)
    for batch, first, second in zip(
        whole.batches(state), halves[0].batches(state), halves[1].batches(state), strict=True
    ):
        assert torch.equal(batch.images, torch.cat([first.images, second.images]))
    with pytest.raises(FreekdError, match="does not split over 3 processes"):
        LoaderSource(digits_train, batch_size=64, seed=5, world_size=3)
    with pytest.raises(FreekdError, match="fewer than one batch"):
        LoaderSource(digits_train.subset(torch.arange(10)), batch_size=64, seed=5)


def test_fixed_steps_per_epoch_goes_through_small_data_several_times() -> None:
    from freekd.data import load_dataset
    from freekd.train import LoaderSource, TrainState

    data = load_dataset("digits:train")  # 1500 images: 5 batches of 300 per pass
    source = LoaderSource(data, batch_size=300, seed=1, fixed_steps_per_epoch=12)
    batches = list(source.batches(TrainState()))
    assert source.steps_per_epoch() == len(batches) == 12
    first_pass = torch.cat([b.labels for b in batches[:5]])  # type: ignore[misc]
    assert sorted(first_pass.tolist()) == sorted(data.labels.tolist())
    assert not torch.equal(batches[0].images, batches[5].images)  # a new order per pass
    resumed = list(source.batches(TrainState(step_in_epoch=7)))
    assert all(torch.equal(a.images, b.images) for a, b in zip(resumed, batches[7:], strict=True))
    plain = LoaderSource(data, batch_size=300, seed=1)
    assert torch.equal(next(iter(plain.batches(TrainState()))).images, batches[0].images)


class RecordWeights(Callback):
    """The student's weights after every step (before any later callback changes them)."""

    def __init__(self) -> None:
        self.weights: list[dict[str, torch.Tensor]] = []

    def on_step_end(self, trainer: Trainer, state: TrainState, output: StepOutput) -> None:
        self.weights.append(state_of(trainer))


def test_weight_average_is_the_warmed_up_ema_and_ends_in_the_student(
    digits_train: ImageDataset,
) -> None:
    from freekd.train.averaging import WeightAverage

    record = RecordWeights()
    trainer, source = make_trainer(digits_train, 0, [record], epochs=1)
    average = WeightAverage(trainer.method.student, decay=0.8)
    initial = state_of(trainer)
    trainer.callbacks.insert(0, average)
    trainer.fit(source)

    expected = {k: v.clone() for k, v in initial.items()}
    for t, weights in enumerate(record.weights):
        d = min(0.8, (1 + t) / (10 + t))
        for key, value in weights.items():
            if value.is_floating_point():
                expected[key] = d * expected[key] + (1 - d) * value
            else:
                expected[key] = value.clone()
    final = state_of(trainer)
    for key in expected:
        torch.testing.assert_close(final[key], expected[key], msg=key)
    # The average is not the last raw weights (the EMA did something).
    assert not torch.equal(final["net.fc.weight"], record.weights[-1]["net.fc.weight"])


@pytest.mark.parametrize("decay", [0.0, 1.0, -0.5])
def test_weight_average_refuses_a_decay_outside_0_1(decay: float) -> None:
    from freekd.train.averaging import WeightAverage

    with pytest.raises(FreekdError, match="ema_decay must lie in"):
        WeightAverage(torch.nn.Linear(2, 2), decay=decay)


class AfterStep(Callback):
    """Calls ``hook(trainer, state)`` after every step, after every other callback."""

    def __init__(self, hook: Callable[[Trainer, TrainState], None]) -> None:
        self.hook = hook

    def on_step_end(self, trainer: Trainer, state: TrainState, output: StepOutput) -> None:
        self.hook(trainer, state)


def fit_with_tail(
    data: ImageDataset, start: float, hook: Callable[[Trainer, TrainState], None]
) -> tuple[Trainer, TailAverage, RecordWeights, int]:
    """One epoch of the tiny student with a tail average first among the callbacks, the raw
    weights recorded after every step, and ``hook`` after every step; also the epoch's steps."""
    record = RecordWeights()
    trainer, source = make_trainer(data, 0, [record], epochs=1)
    tail = TailAverage(trainer.method.student, start=start)
    trainer.callbacks = [tail, *trainer.callbacks, AfterStep(hook)]
    trainer.fit(source)
    return trainer, tail, record, source.steps_per_epoch()


@pytest.mark.parametrize("start", [0.0, 0.5])
def test_tail_average_is_the_equal_weight_mean_of_the_steps_after_its_start(
    digits_train: ImageDataset, start: float
) -> None:
    seen: list[bool] = []
    trainer, tail, record, steps = fit_with_tail(
        digits_train, start, lambda trainer, state: seen.append(trainer.callbacks[0].started)
    )
    first = int(start * steps)  # steps 1..first are left out, first+1..steps averaged
    assert len(record.weights) == steps == trainer.total_steps > 4
    assert seen == [step > first for step in range(1, steps + 1)]
    kept = record.weights[first:]
    final = state_of(trainer)
    for key, value in final.items():
        if value.is_floating_point():
            expected = torch.stack([weights[key] for weights in kept]).mean(0)
            torch.testing.assert_close(value, expected, msg=key)
        else:
            assert torch.equal(value, kept[-1][key]), key
    assert not torch.equal(final["net.fc.weight"], record.weights[-1]["net.fc.weight"])


def test_tail_average_before_its_start_leaves_the_student_as_trained(
    digits_train: ImageDataset,
) -> None:
    def stop_at_step_2(trainer: Trainer, state: TrainState) -> None:
        trainer.stop_requested = trainer.stop_requested or state.step == 2

    trainer, tail, record, _ = fit_with_tail(digits_train, 0.5, stop_at_step_2)
    # Stopped before the start: nothing was averaged, the raw weights are kept.
    assert len(record.weights) == 2
    assert not tail.started
    for key, value in state_of(trainer).items():
        assert torch.equal(value, record.weights[-1][key]), key


def test_tail_average_once_begun_takes_in_every_step_when_the_start_moves(
    digits_train: ImageDataset,
) -> None:
    def grow_the_plan(trainer: Trainer, state: TrainState) -> None:
        # As a run resumed with more epochs: right after the start the plan grows 4-fold.
        if state.step == int(0.25 * trainer.total_steps) + 1 and not grown:
            trainer.total_steps *= 4
            grown.append(state.step)

    grown: list[int] = []
    trainer, tail, record, steps = fit_with_tail(digits_train, 0.25, grow_the_plan)
    first = int(0.25 * steps)
    assert grown == [first + 1]
    assert len(record.weights) == steps > 8
    assert tail.averaged == steps - first  # no step skipped after the start moved to `steps`
    expected = torch.stack([w["net.fc.weight"] for w in record.weights[first:]]).mean(0)
    torch.testing.assert_close(state_of(trainer)["net.fc.weight"], expected)


@pytest.mark.parametrize("start", [1.0, -0.1])
def test_tail_average_refuses_a_start_outside_0_1(start: float) -> None:
    with pytest.raises(FreekdError, match="swa_start must lie in"):
        TailAverage(torch.nn.Linear(2, 2), start=start)


@pytest.mark.parametrize("amp_cpu", [True, False])
def test_amp_on_cpu_trains_in_bfloat16_only_when_asked(
    digits_train: ImageDataset, amp_cpu: bool
) -> None:
    # CI has no GPU: `trainer.amp_cpu` runs the Trainer's autocast path (bfloat16) on CPU.
    losses = RecordLosses()
    trainer, source = make_trainer(
        digits_train, 0, [losses], epochs=3, lr=0.1, amp=True, amp_cpu=amp_cpu
    )
    student = trainer.method.student
    seen: set[torch.dtype] = set()
    hook = student.net.fc.register_forward_hook(lambda m, i, output: seen.add(output.dtype))
    trainer.fit(source)
    hook.remove()
    assert seen == ({torch.bfloat16} if amp_cpu else {torch.float32})
    assert all(math.isfinite(loss) for loss in losses.losses)
    assert sum(losses.losses[-5:]) < 0.7 * sum(losses.losses[:5]), losses.losses
    # The weights stay float32 (autocast casts per operation) and the model learns the digits.
    assert all(p.dtype == torch.float32 for p in student.parameters())
    with torch.no_grad():
        predicted = student.eval()(digits_train.batch(torch.arange(300)).images).argmax(1)
    accuracy = (predicted == digits_train.labels[:300]).float().mean().item()
    assert accuracy > 0.4, accuracy  # chance: 0.1


class FakeClock(Callback):
    """Every step costs one second of wall-clock and CPU time (``StopOnBudget`` reads it)."""

    def __init__(self) -> None:
        self.now = 0.0

    def on_step_end(self, trainer: Trainer, state: TrainState, output: StepOutput) -> None:
        self.now += 1.0


class RecordRates(Callback):
    def __init__(self) -> None:
        self.rates: list[float] = []

    def on_step_end(self, trainer: Trainer, state: TrainState, output: StepOutput) -> None:
        self.rates.append(trainer.current_lr())


@pytest.mark.parametrize("fit", [True, False])
def test_a_cpu_budget_fits_the_schedule_and_resumes_it_exactly(
    digits_train: ImageDataset, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, fit: bool
) -> None:
    from types import SimpleNamespace

    from freekd.train import callbacks

    clock = FakeClock()
    fake_time = SimpleNamespace(perf_counter=lambda: clock.now, process_time=lambda: clock.now)
    monkeypatch.setattr(callbacks, "time", fake_time)

    def budget() -> callbacks.StopOnBudget:  # half the planned steps at a second a step
        return callbacks.StopOnBudget(cpu_minutes=planned / 2 / 60, fit_schedule=fit)

    _, source = make_trainer(digits_train, 3, [], epochs=4)
    planned = 4 * source.steps_per_epoch()
    rates, stop = RecordRates(), budget()
    straight, source = make_trainer(digits_train, 3, [clock, stop, rates], epochs=4)
    state = straight.fit(source)
    assert state.step == planned // 2
    base = straight.config.lr
    if not fit:  # cut off half-way down the cosine
        assert state.horizon is None
        assert rates.rates[-1] == pytest.approx(base * learning_rate_at(
            planned // 2 - 1, total_steps=planned, config=straight.config))  # fmt: skip
        assert rates.rates[-1] > 0.4 * base
        return
    # Fitted once a tenth of the budget was spent: the cosine spans the steps the budget pays.
    assert stop.fitted == {  # priced from the end of the first step on
        "step": 1 + math.ceil(planned / 20),
        "horizon": planned // 2,
        "planned": planned,
    }
    assert state.horizon == planned // 2
    assert rates.rates[-1] < 0.01 * base  # annealed, not cut off
    # Resumed from a checkpoint after the fit, under a fresh budget: the same horizon, the
    # same weights.
    path = tmp_path / "checkpoint.pt"
    clock.now = 0.0
    first, source = make_trainer(
        digits_train, 3, [clock, budget(), Checkpoint(path, every=5, config={}), Interrupt(12)],
        epochs=4,
    )  # fmt: skip
    with pytest.raises(KeyboardInterrupt):
        first.fit(source)
    resumed, source = make_trainer(digits_train, 3, [clock, budget()], epochs=4)
    restored = restore(resumed, load_resume_state(path))
    assert restored.horizon == planned // 2
    final = resumed.fit(source, state=restored)
    assert final.step == planned // 2
    expected, got = state_of(straight), state_of(resumed)
    for key in expected:
        torch.testing.assert_close(got[key], expected[key], rtol=0, atol=0, msg=key)
    # The fit is checkpointed at once (no regular checkpoint here): a crash right after it
    # still resumes with the horizon.
    fit_step = 1 + math.ceil(planned / 20)
    clock.now = 0.0
    saved = tmp_path / "fit.pt"
    crashed, source = make_trainer(
        digits_train, 3,
        [clock, budget(), Checkpoint(saved, every=10_000, config={}), Interrupt(fit_step + 1)],
        epochs=4,
    )  # fmt: skip
    with pytest.raises(KeyboardInterrupt):
        crashed.fit(source)
    at_fit = load_resume_state(saved)
    assert at_fit["state"]["step"] == fit_step
    assert at_fit["state"]["horizon"] == planned // 2
    # A run resumed at its horizon takes no further step.
    ended = tmp_path / "ended.pt"
    clock.now = 0.0
    done, source = make_trainer(
        digits_train, 3, [clock, budget(), Checkpoint(ended, every=10_000, config={})], epochs=4
    )
    done.fit(source)
    rates = RecordRates()
    again, source = make_trainer(digits_train, 3, [clock, budget(), rates], epochs=4)
    assert again.fit(source, state=restore(again, load_resume_state(ended))).step == planned // 2
    assert rates.rates == []


class SlowStart(FakeClock):
    """The first step costs 50 seconds (a synthesizer's first, longer round), later ones 1."""

    def on_step_end(self, trainer: Trainer, state: TrainState, output: StepOutput) -> None:
        self.now += 50.0 if state.step == 1 else 1.0


def test_start_up_work_is_not_priced_as_every_step(
    digits_train: ImageDataset, monkeypatch: pytest.MonkeyPatch
) -> None:
    from types import SimpleNamespace

    from freekd.train import callbacks

    clock = SlowStart()
    fake_time = SimpleNamespace(perf_counter=lambda: clock.now, process_time=lambda: clock.now)
    monkeypatch.setattr(callbacks, "time", fake_time)
    _, source = make_trainer(digits_train, 3, [], epochs=4)
    planned = 4 * source.steps_per_epoch()
    budget = planned / 2 + 49  # pays for the slow first step and half the plan
    stop = callbacks.StopOnBudget(cpu_minutes=budget / 60, fit_schedule=True)
    trainer, source = make_trainer(digits_train, 3, [clock, stop], epochs=4)
    state = trainer.fit(source)
    assert state.horizon == planned // 2  # priced with the first step included: far fewer
    assert state.step == planned // 2
