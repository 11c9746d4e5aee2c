"""Callbacks of the one loop: metrics, progress, evaluation, saving, resumable checkpoints."""

from __future__ import annotations

import json
import os
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any, Protocol

import torch
from torch import Tensor, nn

from freekd.checkpoint import save_checkpoint
from freekd.data.datasets import ImageDataset
from freekd.errors import FreekdError
from freekd.io import atomic_write, atomic_write_text
from freekd.methods.base import StepOutput
from freekd.models import ImageClassifier
from freekd.train.evaluate import evaluate
from freekd.train.resume import RESUME_FILE as RESUME_FILE
from freekd.train.resume import Stateful as Stateful
from freekd.train.resume import load_resume_state as load_resume_state
from freekd.train.resume import restore as restore
from freekd.train.resume import resume_state_dict
from freekd.train.trainer import Callback, Trainer, TrainState

#: Which network a callback evaluates or saves: a module of the method by name (``"student"``,
#: a second student of online KD), or a function of the trainer (the weight average, an ensemble).
ModuleChoice = str | Callable[[Trainer], nn.Module]


def pick_module(trainer: Trainer, choice: ModuleChoice) -> nn.Module:
    """The network ``choice`` names, without a DistributedDataParallel wrapper."""
    return trainer.unwrapped(choice) if isinstance(choice, str) else choice(trainer)


class LogMetrics(Callback):
    """Append one JSON object per ``every`` steps and per epoch to ``metrics.jsonl``.

    Step lines hold the mean of each loss term since the previous line, the learning rate and the
    throughput; epoch lines hold the evaluation metrics. On resume, lines past the checkpoint's
    step are dropped first so that the file reads like one uninterrupted run.

    ``extra`` (optional) returns more named values for every step line, e.g. a synthetic source's
    latest synthesis statistics and collapse measurements.
    """

    def __init__(
        self,
        path: Path,
        *,
        every: int,
        enabled: bool = True,
        extra: Callable[[], dict[str, float]] | None = None,
    ) -> None:
        self.path = Path(path)
        self.every = max(1, every)
        self.enabled = enabled
        self.extra = extra
        self._sums: dict[str, float] = {}
        self._count = 0
        self._correct = 0
        self._seen = 0
        self._started = time.perf_counter()

    def on_fit_start(self, trainer: Trainer, state: TrainState) -> None:
        if not self.enabled:
            return
        if self.path.exists():
            kept = [
                line
                for line in self.path.read_text().splitlines()
                if line.strip() and json.loads(line).get("step", 0) <= state.step
            ]
            atomic_write_text(self.path, "".join(line + "\n" for line in kept))
        self._started = time.perf_counter()

    def on_step_end(self, trainer: Trainer, state: TrainState, output: StepOutput) -> None:
        if not self.enabled:
            return
        # One host sync per term per step; the loop already synced on the summed loss.
        for name, value in output.losses.items():
            self._sums[name] = self._sums.get(name, 0.0) + float(value.detach())
        self._count += 1
        if state.step % self.every == 0:
            self._flush(trainer, state)

    def _flush(self, trainer: Trainer, state: TrainState) -> None:
        if self._count == 0:
            return
        elapsed = max(time.perf_counter() - self._started, 1e-9)
        record: dict[str, Any] = {
            "step": state.step,
            "epoch": state.epoch + 1,
            "lr": trainer.current_lr(),
        }
        record.update({f"loss/{k}": v / self._count for k, v in self._sums.items()})
        record["loss"] = sum(self._sums.values()) / self._count
        record["steps_per_second"] = self._count / elapsed
        if self.extra is not None:
            record.update(self.extra())
        self._write(record)
        self._sums, self._count, self._started = {}, 0, time.perf_counter()

    def on_epoch_end(self, trainer: Trainer, state: TrainState) -> None:
        if not self.enabled:
            return
        self._flush(trainer, state)
        # CPU seconds of this process so far, start-up included (a resumed run's restart at
        # its start-up): what a user waits for, for curves of accuracy against CPU time.
        cpu = round(time.process_time(), 2)
        self._write(
            {
                "step": state.step,
                "epoch": state.epoch + 1,
                "process_cpu_seconds": cpu,
                **state.metrics,
            }
        )

    def _write(self, record: dict[str, Any]) -> None:
        """Append one whole line: a write that fails (a full disk) leaves no half line."""
        remaining = memoryview((json.dumps(record) + "\n").encode())
        with self.path.open("ab", buffering=0) as stream:
            size = stream.seek(0, os.SEEK_END)
            try:
                while remaining:
                    remaining = remaining[stream.write(remaining) or 0 :]
            except OSError as error:
                stream.truncate(size)
                raise OSError(error.errno, error.strerror, str(self.path)) from None


class Evaluate(Callback):
    """Evaluate a network (the student) on held-out data every ``every`` epochs and at the end.

    Results go into ``state.metrics`` as ``eval_accuracy`` and ``eval_loss``; each network of
    ``also`` is measured on the same data as ``eval_accuracy/NAME`` at every epoch-end
    evaluation (not at an extra one when the fit ends, after the averages have been loaded).
    It only measures: writing the trained network is :class:`SaveModel`'s job.
    """

    def __init__(
        self,
        dataset: ImageDataset,
        *,
        every: int,
        batch_size: int = 512,
        module: ModuleChoice = "student",
        also: dict[str, ModuleChoice] | None = None,
    ) -> None:
        self.dataset = dataset
        self.every = every
        self.batch_size = batch_size
        self.module = module
        self.also = dict(also or {})
        self._evaluated_at = -1

    def _run(self, trainer: Trainer, state: TrainState, *, side_by_side: bool = True) -> None:
        module = pick_module(trainer, self.module)
        result = evaluate(module, self.dataset, device=trainer.device, batch_size=self.batch_size)
        state.metrics["eval_accuracy"] = result["accuracy"]
        state.metrics["eval_loss"] = result["loss"]
        for name, choice in self.also.items() if side_by_side else ():
            other = evaluate(
                pick_module(trainer, choice),
                self.dataset,
                device=trainer.device,
                batch_size=self.batch_size,
            )
            state.metrics[f"eval_accuracy/{name}"] = other["accuracy"]
        self._evaluated_at = state.step

    def on_fit_start(self, trainer: Trainer, state: TrainState) -> None:
        self._evaluated_at = -1

    def on_epoch_end(self, trainer: Trainer, state: TrainState) -> None:
        last = state.epoch + 1 == trainer.config.epochs
        if last or (self.every > 0 and (state.epoch + 1) % self.every == 0):
            self._run(trainer, state)

    def on_fit_end(self, trainer: Trainer, state: TrainState) -> None:
        if self._evaluated_at != state.step or "eval_accuracy" not in state.metrics:
            # Not side by side: the fit's end has loaded the averages into the student.
            self._run(trainer, state, side_by_side=False)


class Progress(Callback):
    """A rich progress bar over all steps with the loss and the latest eval accuracy.

    The loss shown is the mean over the steps since the bar or line was last drawn, as
    ``metrics.jsonl``'s ``loss`` is the mean since its previous line (one step's loss jumps
    with its batch).

    When stderr is not a terminal (a log file, a pipe, a batch job) a bar cannot redraw and
    rich would cut its one final line to 80 columns, so plain lines are written instead: one when
    training starts, one per epoch and one a minute within a long epoch
    (``description: epoch E/N, loss L, eval acc A%, step S/T, M:SS elapsed``).
    """

    #: Seconds between the plain lines written within one epoch.
    PLAIN_EVERY = 60.0

    def __init__(self, *, description: str, enabled: bool = True) -> None:
        self.description = description
        self.enabled = enabled
        self._progress: Any = None
        self._task: Any = None
        self._loss: float | None = None
        self._last_refresh = 0.0
        self._plain: Any = None  # the stderr console of the line-per-epoch mode
        self._started = 0.0
        self._loss_sum: Tensor | None = None  # since the last drawing, on the loss's device
        self._loss_steps = 0

    def on_fit_start(self, trainer: Trainer, state: TrainState) -> None:
        if not self.enabled:
            return
        from rich.console import Console

        console = Console(stderr=True)
        if not console.is_terminal:
            self._plain, self._started = console, time.perf_counter()
            self._last_refresh = self._started
            note = "resuming" if state.step else "starting"
            self._plain_line(trainer, state, note, upcoming=True)
            return
        from rich.progress import (
            BarColumn,
            MofNCompleteColumn,
            TextColumn,
            TimeElapsedColumn,
            TimeRemainingColumn,
        )
        from rich.progress import Progress as RichProgress

        self._progress = RichProgress(
            TextColumn("{task.description}", markup=False),
            BarColumn(bar_width=20),
            MofNCompleteColumn(),
            TimeElapsedColumn(),
            TimeRemainingColumn(),
            TextColumn("{task.fields[info]}"),
            console=console,
            transient=False,
        )
        self._progress.start()
        self._task = self._progress.add_task(
            self.description, total=trainer.total_steps, completed=state.step, info=""
        )

    def on_step_end(self, trainer: Trainer, state: TrainState, output: StepOutput) -> None:
        if self._plain is None and self._progress is None:
            return
        loss = output.loss.detach().float()  # a bfloat16 sum stops growing near 256
        self._loss_sum = loss if self._loss_sum is None else self._loss_sum + loss
        self._loss_steps += 1
        if self._plain is not None:
            if time.perf_counter() - self._last_refresh >= self.PLAIN_EVERY:
                self._plain_line(trainer, state)
            return
        now = time.perf_counter()
        if now - self._last_refresh < 0.2 and state.step < trainer.total_steps:
            return  # updating at most 5 times a second keeps the bar out of the step time
        self._last_refresh = now
        self._take_loss()
        self._progress.update(
            self._task,
            completed=state.step,
            total=trainer.total_steps,  # a budget may have fitted a shorter horizon
            info=self._info(trainer, state),
        )

    def _take_loss(self) -> None:
        """The mean loss since the last drawing becomes the one shown (kept if no step ran)."""
        if self._loss_sum is not None and self._loss_steps:
            self._loss = float(self._loss_sum) / self._loss_steps
        self._loss_sum, self._loss_steps = None, 0

    def status(self, text: str) -> None:
        """Show ``text`` as the bar's info now (work between steps: a synthesis round)."""
        if self._progress is not None:  # rich redraws on its own clock: this only sets a field
            self._progress.update(self._task, info=text)

    def _info(self, trainer: Trainer, state: TrainState, *, upcoming: bool = False) -> str:
        """The epoch, loss and eval accuracy; ``upcoming``: name the epoch the next step is in
        (a resumed run's state names the epoch it finished last)."""
        epoch = state.epoch + 1 + (upcoming and state.epoch_finished and state.step > 0)
        parts = [f"epoch {min(epoch, trainer.config.epochs)}/{trainer.config.epochs}"]
        if self._loss is not None:
            parts.append(f"loss {self._loss:.4f}")
        if "eval_accuracy" in state.metrics:
            parts.append(f"eval acc {100 * state.metrics['eval_accuracy']:.2f}%")
        return "  ".join(parts)

    def _plain_line(
        self, trainer: Trainer, state: TrainState, note: str = "", *, upcoming: bool = False
    ) -> None:
        """One whole progress line on stderr (no terminal)."""
        self._take_loss()
        self._last_refresh = time.perf_counter()
        minutes, seconds = divmod(int(self._last_refresh - self._started), 60)
        info = self._info(trainer, state, upcoming=upcoming).replace("  ", ", ")
        line = f"{self.description}: {info}, step {state.step}/{trainer.total_steps}"
        line += f", {minutes}:{seconds:02d} elapsed" + (f", {note}" if note else "")
        self._plain.print(line, soft_wrap=True, highlight=False, markup=False)

    def on_epoch_end(self, trainer: Trainer, state: TrainState) -> None:
        if self._plain is not None:
            self._plain_line(trainer, state)
        if self._progress is not None:
            self._take_loss()
            self._progress.update(self._task, completed=state.step, info=self._info(trainer, state))

    def on_fit_end(self, trainer: Trainer, state: TrainState) -> None:
        self._plain = None
        if self._progress is not None:
            self._take_loss()
            self._progress.update(self._task, completed=state.step, info=self._info(trainer, state))
            self._progress.stop()
            self._progress = None


class ModelWriter(Protocol):
    """Writes one trained network in a format of its own, with the run's resolved config."""

    def __call__(self, path: Path, module: nn.Module, *, config: dict[str, Any]) -> None: ...


class SaveModel(Callback):
    """Write one trained network to ``path`` when the fit ends (a run's ``model.pt``).

    By default the network is the method's ``student`` and the file a freekd checkpoint
    (:func:`freekd.checkpoint.save_checkpoint`: the weights, their ``weights_sha256``, the run's
    resolved ``config`` and, given ``privacy``, the run's privacy record computed from the final
    state). A run that trains several networks (online KD's students, their ensemble) passes one
    ``SaveModel`` for each. ``write`` saves another format (a teacher ensemble, a CLIP).

    Placed after :class:`WeightAverage`, it saves the average, which that callback loads into
    the student at the end of the fit.

    Args:
        path: the file to write (atomically).
        config: the run's resolved config, stored in the file.
        module: which network to save (see :data:`ModuleChoice`).
        privacy: the run's privacy record from its final state, or ``None`` for no record.
        write: ``write(path, module, config=config)`` instead of a freekd checkpoint.
    """

    def __init__(
        self,
        path: Path,
        *,
        config: dict[str, Any],
        module: ModuleChoice = "student",
        privacy: Callable[[TrainState], dict[str, Any] | None] | None = None,
        write: ModelWriter | None = None,
    ) -> None:
        self.path = Path(path)
        self.config = config
        self.module = module
        self.privacy = privacy
        self.write = write

    def on_fit_end(self, trainer: Trainer, state: TrainState) -> None:
        module = pick_module(trainer, self.module)
        if self.write is not None:
            self.write(self.path, module, config=self.config)
            return
        if not isinstance(module, ImageClassifier):
            raise TypeError(
                f"SaveModel writes an ImageClassifier as a freekd checkpoint, not a "
                f"{type(module).__name__}; pass write= to save another format"
            )
        record = None if self.privacy is None else self.privacy(state)
        save_checkpoint(self.path, module, config=self.config, privacy=record)


class Checkpoint(Callback):
    """Atomically write ``checkpoint.pt`` every ``every`` steps and at every epoch end."""

    def __init__(
        self,
        path: Path,
        *,
        every: int,
        config: dict[str, Any],
        enabled: bool = True,
        extras: dict[str, Stateful] | None = None,
    ) -> None:
        self.path = Path(path)
        self.every = every
        self.config = config
        self.enabled = enabled
        self.extras = extras or {}

    def _save(self, trainer: Trainer, state: TrainState) -> None:
        if not self.enabled:
            return
        data = resume_state_dict(trainer, state, config=self.config, extras=self.extras)
        atomic_write(self.path, lambda stream: torch.save(data, stream))

    def on_step_end(self, trainer: Trainer, state: TrainState, output: StepOutput) -> None:
        if (self.every > 0 and state.step % self.every == 0) or trainer.save_requested:
            self._save(trainer, state)
            trainer.save_requested = False

    def on_epoch_end(self, trainer: Trainer, state: TrainState) -> None:
        self._save(trainer, state)


def _span(minutes: float) -> str:
    """A budget for people: ``10 s`` below a minute (``0.166667 min`` read badly), else
    ``15 min``."""
    return f"{60 * minutes:.4g} s" if minutes < 1 else f"{minutes:g} min"


class StopOnBudget(Callback):
    """End training once a wall-clock, CPU-time or synthesized-image budget is spent.

    With ``fit_schedule``, a time or CPU budget also shortens the learning-rate schedule to the
    steps it can pay for, so the run ends annealed instead of cut off part way down a schedule
    planned for more steps: once ``fit_after`` of the budget is spent, the cost of the steps
    so far gives the horizon (``state.horizon``, never beyond the planned steps; the tighter
    of the two budgets decides). The run then stops at its horizon or when its budget is spent,
    whichever comes first. The horizon is saved with the state, so a resumed run anneals over
    the same steps; it is fitted once, on the first fit that has a budget.

    Args:
        minutes: wall-clock budget of the fit, or ``None``.
        cpu_minutes: CPU-time budget of the fit (this process, all threads), or ``None``; unlike
            wall-clock time it does not shrink when other work shares the machine.
        images: budget of synthesized images, or ``None``.
        images_spent: returns the images synthesized so far.
        fit_schedule: fit the schedule's horizon to the time or CPU budget.
        fit_after: fraction of the budget to spend measuring the cost of a step before the
            horizon is fitted, counted from the end of the fit's first step (start-up work such
            as a synthesizer's first, longer round would otherwise be priced as every step's).
    """

    def __init__(
        self,
        *,
        minutes: float | None = None,
        cpu_minutes: float | None = None,
        images: int | None = None,
        images_spent: Callable[[], int] | None = None,
        fit_schedule: bool = False,
        fit_after: float = 0.1,
    ) -> None:
        if not 0 < fit_after < 1:
            raise FreekdError(f"fit_after must lie in (0, 1), got {fit_after}")
        self.minutes = minutes
        self.cpu_minutes = cpu_minutes
        self.images = images
        self.images_spent = images_spent
        self.fit_schedule = fit_schedule
        self.fit_after = fit_after
        self.reason: str | None = None
        #: ``{"step": ..., "horizon": ..., "planned": ...}`` once this fit fitted the schedule.
        self.fitted: dict[str, int] | None = None
        self._started = time.perf_counter()
        self._cpu_started = time.process_time()
        self._first_step = 0
        self._fitting = fit_schedule
        # (step, seconds spent of each budget) at the end of the fit's first step: the window
        # that prices a step starts there.
        self._window: tuple[int, list[float]] | None = None

    def on_fit_start(self, trainer: Trainer, state: TrainState) -> None:
        self._started = time.perf_counter()
        self._cpu_started = time.process_time()
        self._first_step = state.step
        self._window = None
        self._fitting = self.fit_schedule and state.horizon is None
        if state.horizon is not None and state.step >= state.horizon:  # resumed at its end
            self.reason = f"the schedule fitted to the budget ended at step {state.step}"
            trainer.stop_requested = True

    def time_spent(self) -> bool:
        """Whether a wall-clock or CPU budget of this fit is spent (work inside one long step,
        such as a synthesizer's warm-up, asks it to stop early)."""
        return any(used >= allowed for used, allowed in self._spent())

    def _spent(self) -> list[tuple[float, float]]:
        """(seconds spent, seconds allowed) of each time budget that is set."""
        spent = []
        if self.minutes is not None:
            spent.append((time.perf_counter() - self._started, 60 * self.minutes))
        if self.cpu_minutes is not None:
            spent.append((time.process_time() - self._cpu_started, 60 * self.cpu_minutes))
        return spent

    def _fit(self, trainer: Trainer, state: TrainState) -> None:
        budgets = self._spent()
        if not budgets:
            self._fitting = False
            return
        if self._window is None:
            self._window = (state.step, [used for used, _ in budgets])
            return
        first_step, first_used = self._window
        steps = state.step - first_step
        measured = [used - start for (used, _), start in zip(budgets, first_used, strict=True)]
        if max(m / allowed for m, (_, allowed) in zip(measured, budgets, strict=True)) < (
            self.fit_after
        ):
            return
        horizon = min(
            state.step + int((allowed - used) * steps / max(m, 1e-9))
            for (used, allowed), m in zip(budgets, measured, strict=True)
        )
        planned = trainer.total_steps
        self._fitting = False  # once: a later change would bend the schedule part way
        if horizon < planned:
            state.horizon = trainer.total_steps = max(horizon, state.step + 1)
            self.fitted = {"step": state.step, "horizon": state.horizon, "planned": planned}
            trainer.save_requested = True  # a resume must anneal over the same steps

    def on_step_end(self, trainer: Trainer, state: TrainState, output: StepOutput) -> None:
        if self._fitting:
            self._fit(trainer, state)
        if self.minutes is not None and time.perf_counter() - self._started >= 60 * self.minutes:
            self.reason = f"time budget of {_span(self.minutes)} spent at step {state.step}"
        elif (
            self.cpu_minutes is not None
            and time.process_time() - self._cpu_started >= 60 * self.cpu_minutes
        ):
            self.reason = f"CPU budget of {_span(self.cpu_minutes)} spent at step {state.step}"
        elif (
            self.images is not None
            and self.images_spent is not None
            and self.images_spent() >= self.images
        ):
            self.reason = f"image budget of {self.images} spent at step {state.step}"
        elif state.horizon is not None and state.step >= state.horizon:
            self.reason = f"the schedule fitted to the budget ended at step {state.step}"
        if self.reason is not None:
            trainer.stop_requested = True
