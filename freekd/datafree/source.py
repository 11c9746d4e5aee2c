"""``SyntheticSource``: the training batches of a data-free run, drawn from a synthesizer."""

from __future__ import annotations

import logging
import math
from collections.abc import Callable, Iterator
from functools import partial
from typing import Any

import torch
from torch import nn

from freekd.data.batch import Batch
from freekd.datafree.collapse import CollapseCheck, CollapseMonitor, probe_discrepancy
from freekd.datafree.config import CollapseConfig, DataFreeConfig
from freekd.datafree.synthesizers.base import Synthesizer
from freekd.errors import FreekdError
from freekd.hooks import eval_mode
from freekd.teachers import Teacher
from freekd.train.optim import learning_rate_at
from freekd.train.trainer import TrainState

logger = logging.getLogger(__name__)


class SyntheticSource:
    """Batches drawn from a synthesizer that is updated inside the training loop.

    Data-free distillation on the student side is plain KD on synthetic batches: every
    ``synthesize_every`` steps this source runs one synthesis round against the current student,
    then yields unlabelled ``sample(batch_size)`` batches. The Trainer, the method and the callbacks
    are the same as for real data.

    With a ``monitor``, every ``check_every`` synthesis rounds a probe of ``probe_size`` images is
    measured (``datafree.collapse``; the teacher and the student, in eval mode, both label it);
    on collapse the synthesizer is re-initialized with its learning rates × ``lr_scale`` and
    synthesizes again, at most ``max_recoveries`` times. After that the collapse is recorded as
    not recovered and a warning is logged; the run goes on.

    Args:
        synthesizer: any ``datafree.synthesizers.Synthesizer``.
        teacher: the frozen teacher the synthesizer inverts.
        student: the student being trained (the same module the method updates, unwrapped).
        steps_per_epoch: optimizer steps in one epoch.
        batch_size: images per step (per process under DDP).
        synthesize_every: steps between synthesis rounds.
        monitor: collapse detector, or ``None`` for no checks.
        check_every: synthesis rounds between collapse checks.
        probe_size: images per check (each costs one teacher query).
        max_recoveries: re-initializations allowed in the run.
        lr_scale: factor on the synthesizer's learning rates at each re-initialization.
        schedule: the student's learning-rate multiplier at a step, given the horizon a
            budget fitted (``TrainState.horizon``, or ``None``); before every round the
            synthesizer is told it (``follow_schedule``), so one that anneals with the student
            can. ``None``: nothing is told.
        keep_per_check: images of every probe kept with the teacher's logits on them; at each
            check the student's KL to the teacher on those of earlier checks is logged as
            ``collapse/earlier_discrepancy`` (forgetting; no teacher query). 0: none kept.
        keep_size: at most this many kept, the oldest dropped first.
    """

    def __init__(
        self,
        synthesizer: Synthesizer,
        *,
        teacher: Teacher,
        student: nn.Module,
        steps_per_epoch: int,
        batch_size: int,
        synthesize_every: int = 1,
        monitor: CollapseMonitor | None = None,
        check_every: int = 10,
        probe_size: int = 128,
        max_recoveries: int = 3,
        lr_scale: float = 0.5,
        schedule: Callable[[int, int | None], float] | None = None,
        keep_per_check: int = 0,
        keep_size: int = 1024,
    ) -> None:
        if steps_per_epoch < 1 or batch_size < 1 or synthesize_every < 1:
            raise FreekdError("steps per epoch, batch size and synthesize_every must be positive")
        if check_every < 1 or probe_size < 2 or max_recoveries < 0 or lr_scale <= 0:
            raise FreekdError(
                "collapse checks need check_every ≥ 1, probe_size ≥ 2, max_recoveries ≥ 0 "
                "and lr_scale > 0"
            )
        if keep_per_check < 0 or keep_size < 0:
            raise FreekdError("collapse.keep_per_check and collapse.keep_size must be ≥ 0")
        self.synthesizer = synthesizer
        self.teacher = teacher
        self.student = student
        self._steps = steps_per_epoch
        self.batch_size = batch_size
        self.synthesize_every = synthesize_every
        self.monitor = monitor
        self.check_every = check_every
        self.probe_size = probe_size
        self.max_recoveries = max_recoveries
        self.lr_scale = lr_scale
        self.schedule = schedule
        self.keep_per_check = keep_per_check
        self.keep_size = keep_size
        #: Images kept from earlier probes and the teacher's logits on them (``keep_per_check``).
        self.kept_images: torch.Tensor | None = None
        self.kept_logits: torch.Tensor | None = None
        self.last_statistics: dict[str, float] = {}
        self.rounds = 0
        self.checks = 0
        self.probe_queries = 0
        self.recoveries = 0
        self.gave_up = False
        self.last_check: dict[str, float] = {}
        #: Sum over the probe images of the teacher's softmax (float64, on the CPU) and how many
        #: images it holds (those with finite logits): their ratio is the class prior of the
        #: synthesizer's fresh images over the run's checks.
        self.prior_sum: torch.Tensor | None = None
        self.prior_images = 0
        self.events: list[dict[str, Any]] = []
        #: Shows what a synthesis round is doing (the run's progress bar wires it).
        self.status: Callable[[str], None] = _ignore

    def steps_per_epoch(self) -> int:
        return self._steps

    def batches(self, state: TrainState) -> Iterator[Batch]:
        for index in range(state.step_in_epoch, self._steps):
            if index % self.synthesize_every == 0:
                self._synthesize(step=state.step, horizon=state.horizon)
            yield Batch(self.synthesizer.sample(self.batch_size), None)

    def _synthesize(self, *, step: int, horizon: int | None = None) -> None:
        if self.schedule is not None:
            self.synthesizer.follow_schedule(self.schedule(step, horizon))
        self.last_statistics = self._round()
        self.rounds += 1
        if self.monitor is None or self.rounds % self.check_every:
            return
        probe = self.synthesizer.probe(self.probe_size)
        with torch.no_grad(), eval_mode(self.student):  # a measurement: nothing is updated
            teacher_logits = self.teacher(probe)
            student_logits = self.student(probe)
        self.probe_queries += len(probe)
        self.checks += 1
        self._add_to_prior(teacher_logits)
        check = self.monitor.check(probe, teacher_logits, student_logits)
        self.last_check = {"diversity": check.diversity, "balance": check.balance}
        if check.discrepancy is not None and math.isfinite(check.discrepancy):
            self.last_check["discrepancy"] = check.discrepancy
        earlier = self._earlier_discrepancy()
        if earlier is not None:
            self.last_check["earlier_discrepancy"] = earlier
        self._keep(probe, teacher_logits)
        if not check.collapsed or self.gave_up:
            return
        event = {
            "step": step,
            "check": self.checks,
            **self.last_check,
            "reasons": list(check.reasons),
        }
        what = _describe(check, self.monitor.best_discrepancy)
        name = type(self.synthesizer).__name__
        if self.recoveries >= self.max_recoveries:
            self.gave_up = True
            self.events.append({**event, "action": "unrecovered"})
            logger.warning(
                "the %s synthesizer collapsed at step %d (%s) and %d re-initializations did not "
                "help; the student is trained on collapsed batches",
                name,
                step,
                what,
                self.recoveries,
            )
            return
        self.recoveries += 1
        self.events.append({**event, "action": "reinitialize"})
        logger.warning(
            "the %s synthesizer collapsed at step %d (%s); re-initializing it with its learning "
            "rates x %g (recovery %d of %d)",
            name,
            step,
            what,
            self.lr_scale,
            self.recoveries,
            self.max_recoveries,
        )
        self.synthesizer.reinitialize(lr_scale=self.lr_scale)
        self.monitor.reset()
        self.last_statistics = self._round()

    def _add_to_prior(self, teacher_logits: torch.Tensor) -> None:
        """Add a probe's teacher probabilities to ``prior_sum`` (rows with non-finite logits
        are left out; float64 on the CPU, which every device can hand over)."""
        logits = teacher_logits.detach().float().cpu().double()
        logits = logits[torch.isfinite(logits).all(dim=1)]
        if not len(logits):
            return
        probabilities = logits.softmax(1).sum(0)
        self.prior_sum = probabilities if self.prior_sum is None else self.prior_sum + probabilities
        self.prior_images += len(logits)

    def _earlier_discrepancy(self) -> float | None:
        """The student's KL(teacher ‖ student) on the images kept from earlier probes, in nats
        (``None`` before anything was kept, or when it is not finite)."""
        if self.kept_images is None or self.kept_logits is None:
            return None
        device = next(self.student.parameters()).device  # kept on the CPU (and so resumed)
        with torch.no_grad(), eval_mode(self.student):  # in probe-sized chunks, as sized
            student_logits = torch.cat(
                [
                    self.student(part.to(device)).cpu()
                    for part in self.kept_images.split(self.probe_size)
                ]
            )
        value = probe_discrepancy(student_logits, self.kept_logits)
        return value if math.isfinite(value) else None

    def _keep(self, probe: torch.Tensor, teacher_logits: torch.Tensor) -> None:
        """Keep ``keep_per_check`` probe images spread evenly over the probe (the probe is
        random, so any would do for one generator; a ``GeneratorEnsemble`` draws the probe in
        contiguous parts, and a spread takes images of every generator)."""
        # At most KEPT_VALUES pixel values (32 MB): 1,024 MNIST images, 55 at 224 × 224 × 3.
        size = min(self.keep_size, self.KEPT_VALUES // probe[0].numel())
        if self.keep_per_check == 0 or size == 0:
            return
        count = min(self.keep_per_check, len(probe))
        spread = torch.linspace(0, len(probe) - 1, count).round().long()
        images = probe[spread].detach().cpu()
        logits = teacher_logits[spread.to(teacher_logits.device)].detach().float().cpu()
        if self.kept_images is not None and self.kept_logits is not None:
            images = torch.cat([self.kept_images, images])
            logits = torch.cat([self.kept_logits, logits])
        # Copies on the CPU: a slice would keep (and checkpoint) the whole storage it came from.
        self.kept_images, self.kept_logits = images[-size:].clone(), logits[-size:].clone()

    KEPT_VALUES = 2**23

    def _round(self) -> dict[str, float]:
        """One synthesis round, shown on the progress bar as it goes."""
        what = f"synthesis round {self.rounds + 1} ({type(self.synthesizer).__name__})"
        self.status(what)

        def tick(done: int, total: int) -> None:
            self.status(f"{what}: iteration {done}/{total}")

        self.synthesizer.on_iteration = tick
        try:
            return self.synthesizer.synthesize(self.teacher, self.student)
        finally:
            self.synthesizer.on_iteration = None

    def extra_metrics(self) -> dict[str, float]:
        """The latest synthesis statistics and collapse measurements, for ``metrics.jsonl``."""
        metrics = {f"synthesis/{name}": value for name, value in self.last_statistics.items()}
        metrics.update({f"collapse/{name}": value for name, value in self.last_check.items()})
        return metrics

    def collapse_report(self) -> dict[str, Any]:
        """``report.json["collapse"]``: checks, events, recoveries and the last measurements.

        ``recovered`` is false when the run gave up (re-initializations exhausted), or when it
        collapsed and the restarted synthesizer has not shown that it is healthy again: the
        latest check was low, or there was no check after the last re-initialization.
        ``student_damaged`` is true when a check found the student far from its teacher
        (``discrepancy``): the student trained on those batches whatever happened next.
        """
        # Low at the end, or re-initialized at the last check: nothing shows the restart helped.
        unverified = (self.monitor is not None and self.monitor.low_streak > 0) or (
            bool(self.events) and self.events[-1].get("check") == self.checks
        )
        return {
            "enabled": self.monitor is not None,
            "checks": self.checks,
            "probe_queries": self.probe_queries,
            "events": [dict(event) for event in self.events],
            "recoveries": self.recoveries,
            "recovered": not self.gave_up and not (self.events and unverified),
            # Restarting the generator cannot undo steps taken on batches where the student
            # had lost its teacher.
            "student_damaged": any(
                "discrepancy" in event.get("reasons", ()) for event in self.events
            ),
            "last_diversity": self.last_check.get("diversity"),
            "last_balance": self.last_check.get("balance"),
            "last_discrepancy": self.last_check.get("discrepancy"),
            "best_discrepancy": None
            if self.monitor is None or self.monitor.best_discrepancy == math.inf
            else self.monitor.best_discrepancy,
            "discrepancy_factor": None if self.monitor is None else self.monitor.discrepancy_factor,
            # The teacher's mean class probabilities over the run's probes: the class prior of
            # the synthesizer's fresh images at the collapse checks, measured without data.
            "synthetic_prior": None
            if self.prior_sum is None or not self.prior_images
            else [float(f"{v:.6g}") for v in (self.prior_sum / self.prior_images).tolist()],
        }

    COUNTERS = ("rounds", "checks", "probe_queries", "recoveries", "gave_up")

    def state_dict(self) -> dict[str, Any]:
        state: dict[str, Any] = {"synthesizer": self.synthesizer.state_dict()}
        state.update({name: getattr(self, name) for name in self.COUNTERS})
        state["last_check"] = dict(self.last_check)
        state["last_statistics"] = dict(self.last_statistics)
        state["events"] = [dict(event) for event in self.events]
        if self.monitor is not None:
            state["monitor"] = self.monitor.state_dict()
        if self.kept_images is not None:
            state["kept_images"], state["kept_logits"] = self.kept_images, self.kept_logits
        if self.prior_sum is not None:
            state["prior_sum"], state["prior_images"] = self.prior_sum, self.prior_images
        return state

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.synthesizer.load_state_dict(state["synthesizer"])
        for name in self.COUNTERS:
            setattr(self, name, type(getattr(self, name))(state.get(name, getattr(self, name))))
        self.last_check = dict(state.get("last_check", {}))
        self.last_statistics = dict(state.get("last_statistics", {}))
        self.events = [dict(event) for event in state.get("events", [])]
        if self.monitor is not None and "monitor" in state:
            self.monitor.load_state_dict(state["monitor"])
        self.kept_images = state.get("kept_images")
        self.kept_logits = state.get("kept_logits")
        # A run saved before the prior was recorded starts it afresh (the ratio stays a mean).
        self.prior_sum = state.get("prior_sum")
        self.prior_images = int(state.get("prior_images", 0)) if self.prior_sum is not None else 0


def _describe(check: CollapseCheck, best_discrepancy: float) -> str:
    """What was low, for the log: e.g. "diversity 0.001, label balance 0.950"."""
    parts = [f"diversity {check.diversity:.3f}", f"label balance {check.balance:.3f}"]
    if "discrepancy" in check.reasons and check.discrepancy is not None:
        if not math.isfinite(check.discrepancy):
            parts.append("the student's outputs are not finite")
        else:
            ratio = (
                f", {check.discrepancy / best_discrepancy:.1f}x its lowest {best_discrepancy:.3f}"
                if best_discrepancy > 0
                else ""
            )
            parts.append(
                f"the student's KL to the teacher {check.discrepancy:.3f} nats{ratio}: "
                "the generator is winning the game"
            )
    return ", ".join(parts)


def _ignore(text: str) -> None:
    """No progress bar: a status goes nowhere."""


def synthetic_source(
    config: DataFreeConfig,
    synthesizer: Any,
    teacher: Teacher,
    student: nn.Module,
    *,
    synthesize_every: int,
) -> SyntheticSource:
    """The run's ``SyntheticSource``: its collapse checks from ``config.collapse`` and the
    student's learning-rate schedule (``trainer``) for a synthesizer that anneals with it."""
    collapse = config.collapse
    monitor = None
    if collapse.enabled:
        try:
            monitor = CollapseMonitor(
                diversity_threshold=collapse.diversity_threshold,
                balance_threshold=collapse.balance_threshold,
                patience=collapse.patience,
                discrepancy_factor=discrepancy_factor(collapse, synthesizer),
                discrepancy_floor=collapse.discrepancy_floor,
            )
        except ValueError as error:
            raise FreekdError(
                f"collapse {error}; set a valid one with --set collapse.NAME=VALUE"
            ) from None
    return SyntheticSource(
        synthesizer,
        teacher=teacher,
        student=student,
        steps_per_epoch=config.steps_per_epoch,
        batch_size=config.trainer.batch_size,
        synthesize_every=synthesize_every,
        monitor=monitor,
        check_every=collapse.check_every,
        probe_size=collapse.probe_size,
        max_recoveries=collapse.max_recoveries,
        lr_scale=collapse.lr_scale,
        keep_per_check=collapse.keep_per_check,
        keep_size=collapse.keep_size,
        schedule=partial(
            _multiplier, planned=config.trainer.epochs * config.steps_per_epoch, config=config
        ),
    )


def _multiplier(step: int, horizon: int | None, *, planned: int, config: DataFreeConfig) -> float:
    """The student's learning-rate multiplier, over the horizon a budget fitted if it did."""
    return learning_rate_at(step, total_steps=horizon or planned, config=config.trainer)


def discrepancy_factor(collapse: CollapseConfig, synthesizer: Any) -> float:
    """``collapse.discrepancy_factor``, or the synthesizer's recommendation when it is unset."""
    if collapse.discrepancy_factor is not None:
        return collapse.discrepancy_factor
    return float(synthesizer.recommended_discrepancy_factor)
