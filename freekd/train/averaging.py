"""Weight averages of the student, used for evaluation and saving: the exponential moving
average (``trainer.ema_decay``) and the tail average (``trainer.swa_start``)."""

from __future__ import annotations

import copy
import math
from typing import Any

import torch
from torch import nn

from freekd.errors import FreekdError
from freekd.methods.base import StepOutput
from freekd.train.trainer import Callback, Trainer, TrainState


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


class TailAverage(Callback):
    """Stochastic weight averaging: the equal-weight average of the student's weights over the
    tail of the run, used for evaluation and saving once it has begun.

    Izmailov et al. 2018 (UAI, "Averaging Weights Leads to Wider Optima and Better
    Generalization", §3.2 and Algorithm 1: ``w_SWA ← (w_SWA·n + w)/(n + 1)``): from step
    ``⌊start·T⌋`` of the ``T`` steps the schedule plans (``trainer.total_steps``, the horizon a
    budget fitted if it did) the average takes in the student's weights after every optimizer
    step, computed as ``torch.optim.swa_utils``' averaging function does
    (``avg + (w − avg)/(n + 1)``). Every floating entry of the state dict is averaged,
    BatchNorm's running statistics included (the paper recomputes them with a pass over the
    training data instead); integer entries are copied, and buffers outside the state dict are
    left as they are. Two differences from the paper: it collects the weights once per cycle or
    epoch, and its SWA phase keeps a constant or cyclical learning rate; here every step is
    collected and the run's own schedule goes on, so this is the tail average of the annealed
    run (Polyak–Ruppert averaging over the tail; Jain et al. 2018, JMLR, "Parallelizing
    stochastic gradient descent for least squares regression", tail-averaging).

    Until the start :attr:`started` is false and the run evaluates what it evaluated before
    (the exponential average of :class:`WeightAverage` if the run keeps one); from then on it
    evaluates this average, and at the end of the fit this average is loaded into the student,
    so ``model.pt`` holds it (placed after :class:`WeightAverage`, whose ``on_fit_end`` loads
    the exponential average first). Once begun it takes in every later step, also when a run
    resumed with more epochs moves the start. ``Stateful`` for exact resume.
    """

    def __init__(self, student: nn.Module, *, start: float) -> None:
        if not 0 <= start < 1:
            raise FreekdError(f"trainer.swa_start must lie in [0, 1), got {start}")
        self.start = start
        self.module = copy.deepcopy(student).requires_grad_(False).eval()
        self.averaged = 0

    @property
    def started(self) -> bool:
        return self.averaged > 0

    def first_step(self, trainer: Trainer) -> int:
        """The step count after which the first optimizer step is averaged (the floor of
        ``start·T``, rounded first so that e.g. 0.57·100 gives 57)."""
        return math.floor(round(self.start * trainer.total_steps, 6))

    def on_fit_start(self, trainer: Trainer, state: TrainState) -> None:
        self.module.to(trainer.device)

    @torch.no_grad()
    def on_step_end(self, trainer: Trainer, state: TrainState, output: StepOutput) -> None:
        if not self.started and state.step <= self.first_step(trainer):
            return
        live = trainer.unwrapped("student").state_dict(keep_vars=True)
        for name, averaged in self.module.state_dict(keep_vars=True).items():
            value = live[name].detach()
            if averaged.is_floating_point() and self.started:
                averaged.copy_(averaged + (value - averaged) / (self.averaged + 1))
            else:
                averaged.copy_(value)
        self.averaged += 1

    @torch.no_grad()
    def on_fit_end(self, trainer: Trainer, state: TrainState) -> None:
        if self.started:
            trainer.unwrapped("student").load_state_dict(self.module.state_dict())

    def state_dict(self) -> dict[str, Any]:
        return {"module": self.module.state_dict(), "averaged": self.averaged}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.module.load_state_dict(state["module"])
        self.averaged = int(state["averaged"])
