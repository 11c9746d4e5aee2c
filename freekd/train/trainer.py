"""The one training loop.

Teacher training, classic KD, data-free, PATE-student and cross-modal runs all go through
:class:`Trainer`; they differ only in the ``Method``, the ``BatchSource`` and the callbacks.
The loop reads top to bottom; logging, progress, evaluation and checkpoints are callbacks.
"""

from __future__ import annotations

import contextlib
import math
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol

import torch
from torch import nn

from freekd.config import TrainerConfig
from freekd.data.batch import Batch
from freekd.errors import FreekdError
from freekd.methods.base import Method, StepOutput
from freekd.train.distributed import DistInfo
from freekd.train.optim import learning_rate_at


@dataclass
class TrainState:
    """Where the loop is. Checkpoints store it; a resumed run continues from it.

    Attributes:
        epoch: current epoch (0-based).
        step: optimizer steps done in total.
        step_in_epoch: optimizer steps done in the current epoch.
        epoch_finished: whether ``epoch`` has run to its end (callbacks included).
        metrics: latest evaluation results, e.g. ``{"eval_accuracy": 0.98}``.
        horizon: steps the learning-rate schedule spans when a time or CPU budget fitted it
            (``StopOnBudget(fit_schedule=True)``); ``None``: epochs × steps per epoch. Saved,
            so a resumed run anneals over the same steps.
    """

    epoch: int = 0
    step: int = 0
    step_in_epoch: int = 0
    epoch_finished: bool = False
    metrics: dict[str, float] = field(default_factory=dict)
    horizon: int | None = None

    def state_dict(self) -> dict[str, Any]:
        return {
            "epoch": self.epoch,
            "step": self.step,
            "step_in_epoch": self.step_in_epoch,
            "epoch_finished": self.epoch_finished,
            "metrics": dict(self.metrics),
            "horizon": self.horizon,
        }

    @classmethod
    def from_state_dict(cls, data: dict[str, Any]) -> TrainState:
        return cls(
            epoch=int(data["epoch"]),
            step=int(data["step"]),
            step_in_epoch=int(data["step_in_epoch"]),
            epoch_finished=bool(data["epoch_finished"]),
            metrics={k: float(v) for k, v in data["metrics"].items()},
            # Checkpoints written before budgets fitted the schedule have no horizon.
            horizon=None if data.get("horizon") is None else int(data["horizon"]),
        )


class BatchSource(Protocol):
    """Where the inputs of a step come from (a data loader, a synthesizer, labelled queries)."""

    def steps_per_epoch(self) -> int:
        """Optimizer steps in one epoch."""
        ...

    def batches(self, state: TrainState) -> Iterable[Batch]:
        """This epoch's batches, starting after ``state.step_in_epoch`` already-done steps."""
        ...


class Callback:
    """No-op hooks; subclasses override the ones they need."""

    def on_fit_start(self, trainer: Trainer, state: TrainState) -> None: ...
    def on_epoch_start(self, trainer: Trainer, state: TrainState) -> None: ...
    def on_step_end(self, trainer: Trainer, state: TrainState, output: StepOutput) -> None: ...
    def on_epoch_end(self, trainer: Trainer, state: TrainState) -> None: ...
    def on_fit_end(self, trainer: Trainer, state: TrainState) -> None: ...


class Trainer:
    """Runs a ``Method`` over a ``BatchSource`` for ``config.epochs`` epochs.

    Args:
        method: the training rule (owns the student and, if any, the frozen teacher).
        optimizer: over ``method.trainable_parameters()``.
        config: loop settings (epochs, schedule, clipping, AMP, ...).
        device: where the method lives and batches are moved to.
        callbacks: hooks run in order at each event.
        dist: process-group information; under ``torchrun`` the modules named by
            ``method.distributed_modules()`` are wrapped in DistributedDataParallel.
    """

    HOOKS = ("on_fit_start", "on_epoch_start", "on_step_end", "on_epoch_end", "on_fit_end")

    def __init__(
        self,
        method: Method,
        optimizer: torch.optim.Optimizer,
        *,
        config: TrainerConfig,
        device: torch.device,
        callbacks: Sequence[Callback] = (),
        dist: DistInfo | None = None,
    ) -> None:
        self.method = method
        self.optimizer = optimizer
        self.config = config
        self.device = device
        self.callbacks = list(callbacks)
        self.dist = dist or DistInfo()
        self.total_steps = 0
        # A callback sets this (e.g. when a time or image budget is spent); the loop then ends
        # after the current step, runs the epoch-end and fit-end hooks, and returns.
        self.stop_requested = False
        # A callback asks the checkpoint to be saved after the current step (a schedule horizon
        # just fitted must survive a crash before the next regular checkpoint).
        self.save_requested = False
        self._base_lrs = [group["lr"] for group in optimizer.param_groups]

    def _call(self, hook: str, *args: Any) -> None:
        for callback in self.callbacks:
            getattr(callback, hook)(self, *args)

    def fit(self, source: BatchSource, *, state: TrainState | None = None) -> TrainState:
        """Train; with ``state`` (from a checkpoint) continue exactly where that run stopped."""
        state = state or TrainState()
        # The schedule's horizon: the planned steps, or fewer when a budget fitted it.
        self.total_steps = state.horizon or self.config.epochs * source.steps_per_epoch()
        self.method.to(self.device)
        with self._distributed():
            self.method.train()
            self._call("on_fit_start", state)
            first_epoch = state.epoch + 1 if state.epoch_finished else state.epoch
            for state.epoch in range(first_epoch, self.config.epochs):
                if state.epoch != first_epoch or state.epoch_finished:
                    state.step_in_epoch = 0
                state.epoch_finished = False
                self._call("on_epoch_start", state)
                # A run resumed past its end (a fitted horizon) draws no batch: a synthesizer
                # would otherwise run a round for a step that never happens.
                batches = () if self.stop_requested else source.batches(state)
                for batch in batches:
                    output = self._step(batch.to(self.device), state)
                    state.step += 1
                    state.step_in_epoch += 1
                    self._call("on_step_end", state, output)
                    if self.stop_requested:
                        break
                # A stop part way (a budget) leaves the epoch unfinished: a resume continues it
                # from the next step instead of skipping the rest of it.
                state.epoch_finished = (
                    not self.stop_requested or state.step_in_epoch >= source.steps_per_epoch()
                )
                self._call("on_epoch_end", state)
                if self.stop_requested:
                    break
            self._call("on_fit_end", state)
        return state

    def _step(self, batch: Batch, state: TrainState) -> StepOutput:
        self._set_learning_rate(state.step)
        with self._autocast():
            output = self.method.training_step(batch)
        loss = output.loss
        if not math.isfinite(loss.item()):
            bad = [name for name, term in output.losses.items() if not torch.isfinite(term).all()]
            terms = f" in {', '.join(bad)}" if bad else ""
            if state.step == 0:  # no update yet: the learning rate cannot be the cause
                raise FreekdError(
                    f"the loss became {loss.item()} at the first step{terms}, before any update; "
                    "check the loss weights (method.params) and that the data is finite"
                )
            raise FreekdError(
                f"the loss became {loss.item()} at step {state.step + 1} (epoch "
                f"{state.epoch + 1}){terms}; lower --lr (or set trainer.max_grad_norm) and start "
                "again with --overwrite"
            )
        self.optimizer.zero_grad(set_to_none=True)
        loss.backward()
        self._average_unwrapped_gradients()
        if self.config.max_grad_norm is not None:
            nn.utils.clip_grad_norm_(
                list(self.method.trainable_parameters()), self.config.max_grad_norm
            )
        self.optimizer.step()
        return output

    def _average_unwrapped_gradients(self) -> None:
        """Under DDP, average across processes the gradients of the trainable parameters that no
        DistributedDataParallel wrapper syncs (a method's adapters: FitNets' regressors, CRD's
        heads). They start equal (every rank seeds alike), so they stay equal."""
        if not self.dist.enabled:
            return
        wrapped = {
            id(p)
            for name in self.method.distributed_modules()
            for p in getattr(self.method, name).parameters()
        }
        for parameter in self.method.trainable_parameters():
            if id(parameter) not in wrapped and parameter.grad is not None:
                torch.distributed.all_reduce(parameter.grad)
                parameter.grad /= self.dist.world_size

    def _set_learning_rate(self, step: int) -> None:
        # The schedule is a pure function of the step, so a resumed run needs no scheduler state.
        factor = learning_rate_at(step, total_steps=self.total_steps, config=self.config)
        for group, base in zip(self.optimizer.param_groups, self._base_lrs, strict=True):
            group["lr"] = base * factor

    def current_lr(self) -> float:
        return float(self.optimizer.param_groups[0]["lr"])

    def _autocast(self) -> contextlib.AbstractContextManager[Any]:
        # bfloat16 needs no loss scaling (float32's exponent range), so no GradScaler.
        on_cpu = self.device.type == "cpu" and self.config.amp_cpu
        if self.config.amp and (self.device.type == "cuda" or on_cpu):
            return torch.autocast(self.device.type, dtype=torch.bfloat16)
        return contextlib.nullcontext()

    @contextlib.contextmanager
    def _distributed(self) -> Iterator[None]:
        """Wrap the trainable modules in DDP for the duration of ``fit`` (saved unwrapped)."""
        if not self.dist.enabled:
            yield
            return
        from torch.nn.parallel import DistributedDataParallel

        names = self.method.distributed_modules()
        originals = {name: getattr(self.method, name) for name in names}
        device_ids = [self.device.index] if self.device.type == "cuda" else None
        for name, module in originals.items():
            setattr(self.method, name, DistributedDataParallel(module, device_ids=device_ids))
        try:
            yield
        finally:
            for name, module in originals.items():
                setattr(self.method, name, module)

    def unwrapped(self, name: str = "student") -> nn.Module:
        """``method.<name>`` without a DDP wrapper (what checkpoints save)."""
        module = getattr(self.method, name)
        return getattr(module, "module", module)  # type: ignore[no-any-return]
