"""Callbacks of the one loop: metrics, progress, evaluation, resumable checkpoints."""

from __future__ import annotations

import json
import os
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any, Protocol

import torch
from torch import nn

from freekd.data.datasets import ImageDataset
from freekd.errors import FreekdError
from freekd.io import atomic_write, atomic_write_text
from freekd.methods.base import StepOutput
from freekd.train.evaluate import evaluate
from freekd.train.trainer import Callback, Trainer, TrainState

RESUME_FORMAT = "freekd-resume/1"
RESUME_FILE = "checkpoint.pt"


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
        self._write({"step": state.step, "epoch": state.epoch + 1, **state.metrics})

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
    """Evaluate the student on held-out data every ``every`` epochs and at the end.

    Results go into ``state.metrics`` as ``eval_accuracy`` and ``eval_loss``.
    """

    def __init__(
        self,
        dataset: ImageDataset,
        *,
        every: int,
        batch_size: int = 512,
        module: Callable[[Trainer], nn.Module] | None = None,
    ) -> None:
        self.dataset = dataset
        self.every = every
        self.batch_size = batch_size
        self.module = module or (lambda trainer: trainer.unwrapped("student"))
        self._evaluated_at = -1

    def _run(self, trainer: Trainer, state: TrainState) -> None:
        result = evaluate(
            self.module(trainer), self.dataset, device=trainer.device, batch_size=self.batch_size
        )
        state.metrics["eval_accuracy"] = result["accuracy"]
        state.metrics["eval_loss"] = result["loss"]
        self._evaluated_at = state.step

    def on_fit_start(self, trainer: Trainer, state: TrainState) -> None:
        self._evaluated_at = -1

    def on_epoch_end(self, trainer: Trainer, state: TrainState) -> None:
        last = state.epoch + 1 == trainer.config.epochs
        if last or (self.every > 0 and (state.epoch + 1) % self.every == 0):
            self._run(trainer, state)

    def on_fit_end(self, trainer: Trainer, state: TrainState) -> None:
        if self._evaluated_at != state.step or "eval_accuracy" not in state.metrics:
            self._run(trainer, state)


class Progress(Callback):
    """A rich progress bar over all steps with the running loss and the latest eval accuracy."""

    def __init__(self, *, description: str, enabled: bool = True) -> None:
        self.description = description
        self.enabled = enabled
        self._progress: Any = None
        self._task: Any = None
        self._loss: float | None = None
        self._last_refresh = 0.0

    def on_fit_start(self, trainer: Trainer, state: TrainState) -> None:
        if not self.enabled:
            return
        from rich.console import Console
        from rich.progress import (
            BarColumn,
            MofNCompleteColumn,
            TextColumn,
            TimeElapsedColumn,
            TimeRemainingColumn,
        )
        from rich.progress import Progress as RichProgress

        self._progress = RichProgress(
            TextColumn("{task.description}"),
            BarColumn(bar_width=20),
            MofNCompleteColumn(),
            TimeElapsedColumn(),
            TimeRemainingColumn(),
            TextColumn("{task.fields[info]}"),
            console=Console(stderr=True),
            transient=False,
        )
        self._progress.start()
        self._task = self._progress.add_task(
            self.description, total=trainer.total_steps, completed=state.step, info=""
        )

    def on_step_end(self, trainer: Trainer, state: TrainState, output: StepOutput) -> None:
        if self._progress is None:
            return
        now = time.perf_counter()
        if now - self._last_refresh < 0.2 and state.step < trainer.total_steps:
            return  # updating at most 5 times a second keeps the bar out of the step time
        self._last_refresh = now
        self._loss = float(output.loss.detach())
        self._progress.update(self._task, completed=state.step, info=self._info(trainer, state))

    def _info(self, trainer: Trainer, state: TrainState) -> str:
        parts = [f"epoch {state.epoch + 1}/{trainer.config.epochs}"]
        if self._loss is not None:
            parts.append(f"loss {self._loss:.4f}")
        if "eval_accuracy" in state.metrics:
            parts.append(f"eval acc {100 * state.metrics['eval_accuracy']:.2f}%")
        return "  ".join(parts)

    def on_epoch_end(self, trainer: Trainer, state: TrainState) -> None:
        if self._progress is not None:
            self._progress.update(self._task, completed=state.step, info=self._info(trainer, state))

    def on_fit_end(self, trainer: Trainer, state: TrainState) -> None:
        if self._progress is not None:
            self._progress.update(self._task, completed=state.step, info=self._info(trainer, state))
            self._progress.stop()
            self._progress = None


class Stateful(Protocol):
    """Anything besides the method and optimizer that a resumed run must restore."""

    def state_dict(self) -> dict[str, Any]: ...

    def load_state_dict(self, state: dict[str, Any]) -> None: ...


def resume_state_dict(
    trainer: Trainer,
    state: TrainState,
    *,
    config: dict[str, Any],
    extras: dict[str, Stateful] | None = None,
) -> dict[str, Any]:
    """Everything needed to continue a run bit-for-bit (tensors and plain values only).

    ``extras`` (e.g. a synthesizer with its generator, optimizer and memory bank) are saved by name.
    """
    modules = {
        name: trainer.unwrapped(name).state_dict() for name in trainer.method.distributed_modules()
    }
    data: dict[str, Any] = {
        "format": RESUME_FORMAT,
        "modules": modules,
        "method": _method_state(trainer),
        "optimizer": trainer.optimizer.state_dict(),
        "state": state.state_dict(),
        "torch_rng": torch.get_rng_state(),
        "config": config,
        "extras": {name: item.state_dict() for name, item in (extras or {}).items()},
    }
    if torch.cuda.is_available():
        data["cuda_rng"] = torch.cuda.get_rng_state_all()
    return data


#: Method state a resume checkpoint leaves out: the frozen teacher (it is loaded from its file).
_NOT_SAVED = ("teacher.",)


def _method_state(trainer: Trainer) -> dict[str, Any]:
    """Everything the method holds besides the frozen teacher: extra heads, learnable
    temperatures, queues, a second trained model. Keys are those of the unwrapped method
    (a DistributedDataParallel wrapper's ``module.`` is dropped)."""
    wrapped = [f"{name}.module." for name in trainer.method.distributed_modules()]
    state = {}
    for key, value in trainer.method.state_dict().items():
        if key.startswith(_NOT_SAVED):
            continue
        for prefix in wrapped:
            if key.startswith(prefix):
                key = prefix.removesuffix("module.") + key[len(prefix) :]
        state[key] = value
    return state


def load_resume_state(path: Path) -> dict[str, Any]:
    """Read a resume checkpoint written by :class:`Checkpoint` (``weights_only``), its fields
    checked for type (a damaged file fails in one line, see :func:`resume_misfit`)."""
    from freekd.checkpoint import safe_torch_load

    path = Path(path)
    data = safe_torch_load(path, what="resume checkpoint")
    if not isinstance(data, dict) or data.get("format") != RESUME_FORMAT:
        raise FreekdError(f"{path} is not a freekd resume checkpoint; start without --resume")
    problem = _resume_structure_problem(data)
    if problem is not None:
        raise resume_misfit(path, problem)
    return data  # type: ignore[no-any-return]


def resume_misfit(source: Path | str, detail: str) -> FreekdError:
    """The one-line error for a resume checkpoint that is damaged or does not fit this run."""
    path = Path(source)
    return FreekdError(
        f"{path.name} in {path.parent} does not fit this run ({detail}); run without --resume "
        "or with --overwrite"
    )


def _is_tensor_map(value: Any) -> bool:
    return isinstance(value, dict) and all(
        isinstance(k, str) and isinstance(v, torch.Tensor) for k, v in value.items()
    )


def _resume_structure_problem(data: dict[str, Any]) -> str | None:
    """What is missing or of the wrong type in a resume mapping, or ``None``."""
    for key, kind in (("modules", dict), ("optimizer", dict), ("state", dict), ("config", dict)):
        if not isinstance(data.get(key), kind):
            return f"{key} is missing or not a mapping"
    for name, state_dict in data["modules"].items():
        if not _is_tensor_map(state_dict):
            return f"modules[{name!r}] is not a state_dict of tensors"
    if "method" in data and not _is_tensor_map(data["method"]):
        return "method is not a state_dict of tensors"
    if not isinstance(data.get("extras", {}), dict):
        return "extras is not a mapping"
    optimizer = data["optimizer"]
    if not isinstance(optimizer.get("state"), dict) or not isinstance(
        optimizer.get("param_groups"), list
    ):
        return "optimizer has no state and param_groups"
    rng = data.get("torch_rng")
    if not isinstance(rng, torch.Tensor) or rng.dtype != torch.uint8:
        return "torch_rng is missing or not a byte tensor"
    state = data["state"]
    for key in ("epoch", "step", "step_in_epoch"):
        value = state.get(key)
        if not isinstance(value, int) or isinstance(value, bool) or value < 0:
            return f"state.{key} is {value!r}, not a count"
    if not isinstance(state.get("epoch_finished"), bool):
        return "state.epoch_finished is not true or false"
    metrics = state.get("metrics")
    if not isinstance(metrics, dict) or not all(
        isinstance(v, int | float) and not isinstance(v, bool) for v in metrics.values()
    ):
        return "state.metrics is not a mapping of numbers"
    return None


def _state_dict_misfit(module: nn.Module, saved: dict[str, Any], name: str) -> str | None:
    """How ``saved`` does not fit ``module``'s state_dict (missing, unexpected, shapes)."""
    own = module.state_dict()
    missing = [key for key in own if key not in saved]
    unexpected = [key for key in saved if key not in own]
    mismatched = [
        f"{key} {list(saved[key].shape)} vs {list(own[key].shape)}"
        for key in own
        if key in saved and tuple(saved[key].shape) != tuple(own[key].shape)
    ]
    parts = []
    for label, items in (("missing", missing), ("unexpected", unexpected)):
        if items:
            parts.append(f"{name} {label} {', '.join(items[:2])}")
    if mismatched:
        parts.append(f"{name} shape {', '.join(mismatched[:2])}")
    return "; ".join(parts) or None


def _optimizer_misfit(optimizer: torch.optim.Optimizer, saved: dict[str, Any]) -> str | None:
    """How a saved optimizer state does not fit ``optimizer`` (groups, sizes, state shapes);
    torch's own ``load_state_dict`` does not compare the shapes of momentum buffers."""
    groups = optimizer.param_groups
    saved_groups = saved["param_groups"]
    if len(saved_groups) != len(groups):
        return f"optimizer has {len(saved_groups)} parameter groups, this run {len(groups)}"
    parameters = []
    for group, saved_group in zip(groups, saved_groups, strict=True):
        indices = saved_group.get("params") if isinstance(saved_group, dict) else None
        if not isinstance(indices, list) or len(indices) != len(group["params"]):
            return "optimizer parameter groups differ in size"
        parameters += list(zip(indices, group["params"], strict=True))
    by_index = dict(parameters)
    for index, state in saved["state"].items():
        if index not in by_index or not isinstance(state, dict):
            return f"optimizer state for an unknown parameter {index!r}"
        shape = tuple(by_index[index].shape)
        for key, value in state.items():
            if isinstance(value, torch.Tensor) and value.dim() > 0 and tuple(value.shape) != shape:
                return f"optimizer {key} {list(value.shape)} vs parameter {list(shape)}"
    return None


def restore(
    trainer: Trainer,
    data: dict[str, Any],
    *,
    extras: dict[str, Stateful] | None = None,
    source: Path | str = RESUME_FILE,
) -> TrainState:
    """Load modules, optimizer, extras and RNG from a resume checkpoint; return where to go on.

    Everything is compared with this run before anything is loaded: a checkpoint of another
    architecture, method or optimizer fails in one line naming what does not fit.

    Raises:
        FreekdError: the checkpoint does not fit this run.
    """
    expected = trainer.method.distributed_modules()
    if sorted(data["modules"]) != sorted(expected):
        raise resume_misfit(
            source, f"it saved modules {sorted(data['modules'])}, this run has {sorted(expected)}"
        )
    for name, state_dict in data["modules"].items():
        problem = _state_dict_misfit(trainer.unwrapped(name), state_dict, name)
        if problem is not None:
            raise resume_misfit(source, problem)
    problem = _optimizer_misfit(trainer.optimizer, data["optimizer"])
    if problem is not None:
        raise resume_misfit(source, problem)
    for name in extras or {}:
        if name not in data.get("extras", {}):
            raise resume_misfit(source, f"it has no saved {name}")
    try:
        for name, state_dict in data["modules"].items():
            trainer.unwrapped(name).load_state_dict(state_dict)
        if "method" in data:
            missing, unexpected = trainer.method.load_state_dict(data["method"], strict=False)
            lost = [key for key in missing if not key.startswith(_NOT_SAVED)]
            if lost or unexpected:
                raise resume_misfit(source, f"method state {(lost or unexpected)[0]}")
        for name, item in (extras or {}).items():
            item.load_state_dict(data["extras"][name])
        trainer.optimizer.load_state_dict(data["optimizer"])
        torch.set_rng_state(data["torch_rng"])
        if "cuda_rng" in data and torch.cuda.is_available():
            torch.cuda.set_rng_state_all(data["cuda_rng"])
    except (KeyError, TypeError, ValueError, RuntimeError, IndexError, AttributeError) as error:
        # What the checks above cannot see (an extra's own state, an RNG state of the wrong size).
        first = next((line.strip() for line in str(error).splitlines() if line.strip()), "")
        raise resume_misfit(source, first[:160] or type(error).__name__) from None
    return TrainState.from_state_dict(data["state"])


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
        if self.every > 0 and state.step % self.every == 0:
            self._save(trainer, state)

    def on_epoch_end(self, trainer: Trainer, state: TrainState) -> None:
        self._save(trainer, state)


class StopOnBudget(Callback):
    """End training once a wall-clock, CPU-time or synthesized-image budget is spent.

    Args:
        minutes: wall-clock budget of the fit, or ``None``.
        cpu_minutes: CPU-time budget of the fit (this process, all threads), or ``None``; unlike
            wall-clock time it does not shrink when other work shares the machine.
        images: budget of synthesized images, or ``None``.
        images_spent: returns the images synthesized so far.
    """

    def __init__(
        self,
        *,
        minutes: float | None = None,
        cpu_minutes: float | None = None,
        images: int | None = None,
        images_spent: Callable[[], int] | None = None,
    ) -> None:
        self.minutes = minutes
        self.cpu_minutes = cpu_minutes
        self.images = images
        self.images_spent = images_spent
        self.reason: str | None = None
        self._started = time.perf_counter()
        self._cpu_started = time.process_time()

    def on_fit_start(self, trainer: Trainer, state: TrainState) -> None:
        self._started = time.perf_counter()
        self._cpu_started = time.process_time()

    def on_step_end(self, trainer: Trainer, state: TrainState, output: StepOutput) -> None:
        if self.minutes is not None and time.perf_counter() - self._started >= 60 * self.minutes:
            self.reason = f"time budget of {self.minutes:g} min spent at step {state.step}"
        elif (
            self.cpu_minutes is not None
            and time.process_time() - self._cpu_started >= 60 * self.cpu_minutes
        ):
            self.reason = f"CPU budget of {self.cpu_minutes:g} min spent at step {state.step}"
        elif (
            self.images is not None
            and self.images_spent is not None
            and self.images_spent() >= self.images
        ):
            self.reason = f"image budget of {self.images} spent at step {state.step}"
        if self.reason is not None:
            trainer.stop_requested = True


class WeightAverage(Callback):
    """An exponential moving average of the student's weights, used for evaluation and saving.

    Polyak–Ruppert averaging in its exponential form (Polyak & Juditsky 1992; the EMA of
    Tarvainen & Valpola 2017, "Mean teachers", §2): after every optimizer step each floating
    parameter and buffer ``w`` of the student updates ``avg ← d·avg + (1 − d)·w``, with the decay
    warmed up as ``d = min(decay, (1 + t) / (10 + t))`` at step ``t`` so that early averages are
    not dominated by the random initialization. Integer buffers (BatchNorm's
    ``num_batches_tracked``) are copied. The held-out evaluation measures the average, and at the
    end of the fit the average is loaded into the student, so ``model.pt`` holds it.

    Averaging matters most where the student's target moves: in adversarial data-free runs the
    generator keeps shifting the inputs and the raw student weights oscillate from step to step.

    It is ``Stateful``: pass it among the resume ``extras`` so a resumed run averages exactly
    as an uninterrupted one.
    """

    def __init__(self, student: nn.Module, *, decay: float) -> None:
        if not 0 < decay < 1:
            raise FreekdError(f"trainer.ema_decay must lie in (0, 1), got {decay}")
        import copy

        self.decay = decay
        self.module = copy.deepcopy(student).requires_grad_(False).eval()
        self.updates = 0

    def _pairs(self, trainer: Trainer) -> list[tuple[torch.Tensor, torch.Tensor]]:
        live = trainer.unwrapped("student").state_dict(keep_vars=True)
        return [(value, live[name].detach()) for name, value in self._state().items()]

    def _state(self) -> dict[str, torch.Tensor]:
        return self.module.state_dict(keep_vars=True)

    def on_fit_start(self, trainer: Trainer, state: TrainState) -> None:
        self.module.to(trainer.device)

    @torch.no_grad()
    def on_step_end(self, trainer: Trainer, state: TrainState, output: StepOutput) -> None:
        decay = min(self.decay, (1 + self.updates) / (10 + self.updates))
        for averaged, live in self._pairs(trainer):
            if averaged.is_floating_point():
                averaged.lerp_(live, 1 - decay)
            else:
                averaged.copy_(live)
        self.updates += 1

    @torch.no_grad()
    def on_fit_end(self, trainer: Trainer, state: TrainState) -> None:
        trainer.unwrapped("student").load_state_dict(self.module.state_dict())

    def state_dict(self) -> dict[str, Any]:
        return {"module": self.module.state_dict(), "updates": self.updates}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.module.load_state_dict(state["module"])
        self.updates = int(state["updates"])
