"""What every pipeline does once: the run folder, resume checks, the training run, reports.

Each ``run_*`` composition root (one per command, in its feature package) takes a resolved config
and an output folder, builds its collaborators and calls ``run_training``, which runs the one
``Trainer`` and writes the files every run writes (DESIGN.md): ``model.pt``, ``report.json``,
``config.yaml``, ``metrics.jsonl``, ``curves.png``, plus ``checkpoint.pt`` for ``--resume``.
"""

from __future__ import annotations

import logging
import re
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import nn

from freekd import __version__, methods
from freekd.checkpoint import read_checkpoint, weights_checksum
from freekd.config import TrainerConfig, check_plugin_params, dump_yaml, to_dict
from freekd.data import ImageDataset
from freekd.errors import FreekdError
from freekd.io import atomic_write_json, atomic_write_text, check_not_inputs
from freekd.methods import Method, MethodContext
from freekd.models import (
    ImageClassifier,
    build_model,
    check_model,
    students,
)
from freekd.plots import plot_training_curves
from freekd.privacy.report import inherit
from freekd.registry import hyperparameters
from freekd.rundata import FEW_STEPS as FEW_STEPS
from freekd.rundata import as_float as as_float
from freekd.rundata import dataset_statistics
from freekd.rundata import eval_spec as eval_spec
from freekd.rundata import load_split as load_split
from freekd.rundata import loader_source as loader_source
from freekd.rundata import resolve_augmentation as resolve_augmentation
from freekd.rundata import split_validation as split_validation
from freekd.rundata import train_and_eval_sets as train_and_eval_sets
from freekd.rundata import warn_empty_classes as warn_empty_classes
from freekd.rundata import warn_few_steps as warn_few_steps
from freekd.runlock import has_run_content
from freekd.seeding import seed_everything
from freekd.teachers import Teacher
from freekd.train import (
    BatchSource,
    Callback,
    Checkpoint,
    DistInfo,
    Evaluate,
    LogMetrics,
    Progress,
    SaveModel,
    Trainer,
    TrainState,
    init_distributed,
    make_optimizer,
    resolve_device,
)
from freekd.train.averaging import TailAverage, WeightAverage
from freekd.train.callbacks import ModuleChoice, pick_module
from freekd.train.distributed import shutdown_distributed
from freekd.train.resume import (
    RESUME_FILE,
    Stateful,
    check_config_matches,
    load_resume_state,
    restore,
    resume_misfit,
)
from freekd.train.sources import seeded_generator

logger = logging.getLogger(__name__)

RUN_FILES = ("model.pt", "report.json", "config.yaml", "metrics.jsonl", "curves.png", RESUME_FILE)


@dataclass(frozen=True)
class RunOptions:
    """How a command treats its output folder and terminal.

    Attributes:
        out_dir: the run folder.
        overwrite: replace the freekd files of an existing run in ``out_dir``.
        resume: continue the interrupted run in ``out_dir`` from its ``checkpoint.pt``.
        quiet: no progress bar.
        trust_code: build architectures that are import paths (``package.module:Class``) when
            a file names them (a checkpoint's ``arch``, a ``teachers.pt`` member); the user's
            ``--trust-code``. A file never chooses code to run otherwise.
    """

    out_dir: Path
    overwrite: bool = False
    resume: bool = False
    quiet: bool = False
    trust_code: bool = False


def prepare_run_dir(options: RunOptions) -> None:
    """Refuse to mix two runs in one folder unless asked to overwrite or resume.

    Every ``run_*`` that writes a folder holds its lock for the whole run
    (``@locks_run_folder``, :mod:`freekd.runlock`), so two live runs never share one; the
    lock file ``.freekd.lock`` does not count as a run's content here.
    """
    out = options.out_dir
    if options.overwrite and options.resume:
        raise FreekdError("--overwrite and --resume exclude each other; pick one")
    if out.exists() and not out.is_dir():
        raise FreekdError(f"output path {out} is a file; pass a folder to --out")
    if options.resume:
        if not (out / RESUME_FILE).exists():
            raise FreekdError(f"nothing to resume in {out}: no {RESUME_FILE}; run without --resume")
        return
    if out.exists() and has_run_content(out) and not options.overwrite:
        raise FreekdError(
            f"output folder {out} already exists; pass --overwrite to replace it, "
            "--resume to continue the run in it, or choose another --out"
        )
    if options.overwrite and (out / LEDGER_FILE).exists():  # another command's --overwrite too
        raise FreekdError(
            f"{out} holds a privacy ledger ({LEDGER_FILE}), which is never replaced; choose "
            "another --out"
        )


@dataclass
class TrainResult:
    state: TrainState
    wall_seconds: float
    cpu_seconds: float
    device: torch.device


def run_training(
    method: Method,
    source: BatchSource,
    *,
    eval_set: ImageDataset | None,
    trainer_config: TrainerConfig,
    config: Any,
    options: RunOptions,
    device: torch.device,
    dist: DistInfo,
    description: str,
    extras: dict[str, Stateful] | None = None,
    extra_callbacks: tuple[Callback, ...] = (),
    extra_metrics: Callable[[], dict[str, float]] | None = None,
    wrap_optimizer: Callable[[torch.optim.Optimizer], torch.optim.Optimizer] | None = None,
    privacy: Callable[[TrainState], dict[str, Any]] | None = None,
    evaluate_module: ModuleChoice | None = None,
    save: Callable[[nn.Module, dict[str, Any]], None] | None = None,
    savers: Sequence[SaveModel] | None = None,
) -> TrainResult:
    """Build the Trainer with the standard callbacks, optionally resume, fit, save the student.

    ``config`` is the run's resolved config dataclass: checked against the checkpoint on
    ``--resume`` (before anything is written), saved as ``config.yaml`` and inside every checkpoint.
    ``extras`` are saved in, and restored from, the resume checkpoint (e.g. a synthesizer).
    ``extra_metrics`` adds named values to every step line of ``metrics.jsonl``.
    ``wrap_optimizer`` wraps the optimizer (Opacus' DPOptimizer for DP-SGD); ``privacy`` gives the
    run's privacy record from the final state, saved inside ``model.pt``. ``evaluate_module``
    picks what ``eval_set`` measures (default: the student).

    What is written when the fit ends are :class:`~freekd.train.callbacks.SaveModel` callbacks
    (main process only): ``savers`` for a run that trains several networks (one file each),
    else the student as ``model.pt``, or through ``save(student, resolved_config)`` for another
    format (a teacher ensemble writes ``teachers.pt``).
    """
    resolved = to_dict(config)
    resume_data = _resume_data(resolved, options)
    # A resumed run rewrites config.yaml only once the checkpoint has been restored: a refused
    # resume leaves the folder as it was.
    _start_run_dir(config, options, dist, write_config=resume_data is None)
    optimizer = make_optimizer(method.trainable_parameters(), trainer_config)
    if wrap_optimizer is not None:
        optimizer = wrap_optimizer(optimizer)
    if savers is None:
        savers = (_student_saver(options.out_dir / "model.pt", resolved, save, privacy),)
    callbacks, extras = _standard_callbacks(
        method,
        eval_set=eval_set,
        trainer_config=trainer_config,
        resolved=resolved,
        options=options,
        dist=dist,
        description=description,
        extras=extras,
        extra_callbacks=extra_callbacks,
        extra_metrics=extra_metrics,
        evaluate_module=evaluate_module,
        savers=savers,
    )
    trainer = Trainer(
        method, optimizer, config=trainer_config, device=device, callbacks=callbacks, dist=dist
    )
    if hasattr(source, "status"):  # a source with work between steps shows it on the bar
        source.status = next(c for c in callbacks if isinstance(c, Progress)).status
    state = None
    if resume_data is not None:
        planned = trainer.config.epochs * source.steps_per_epoch()
        state = _resume(
            trainer, resume_data, config=config, options=options, extras=extras, planned=planned
        )
    wall_start, cpu_start = time.perf_counter(), time.process_time()
    state = trainer.fit(source, state=state)
    wall, cpu = time.perf_counter() - wall_start, time.process_time() - cpu_start
    if dist.is_main:
        _plot_curves(options.out_dir)
    return TrainResult(state=state, wall_seconds=wall, cpu_seconds=cpu, device=device)


def _student_saver(
    path: Path,
    resolved: dict[str, Any],
    save: Callable[[nn.Module, dict[str, Any]], None] | None,
    privacy: Callable[[TrainState], dict[str, Any]] | None,
) -> SaveModel:
    """The default saver: the student as a freekd checkpoint, or through ``save``."""
    if save is None:
        return SaveModel(path, config=resolved, privacy=privacy)

    def write(path: Path, module: nn.Module, *, config: dict[str, Any]) -> None:
        save(module, config)

    return SaveModel(path, config=resolved, write=write)


def _standard_callbacks(
    method: Method,
    *,
    eval_set: ImageDataset | None,
    trainer_config: TrainerConfig,
    resolved: dict[str, Any],
    options: RunOptions,
    dist: DistInfo,
    description: str,
    extras: dict[str, Stateful] | None,
    extra_callbacks: tuple[Callback, ...],
    extra_metrics: Callable[[], dict[str, float]] | None,
    evaluate_module: ModuleChoice | None,
    savers: Sequence[SaveModel],
) -> tuple[list[Callback], dict[str, Stateful] | None]:
    """Every run's callbacks in their order, and the extras the resume checkpoint holds.

    The weight averages (``trainer.ema_decay``, then ``trainer.swa_start``) come first, so the
    evaluation measures them and the savers, last, write them; only the main process writes
    files. With a tail average the evaluation also measures what the run would measure without
    it, as ``eval_accuracy/ema`` (or ``/raw``), side by side.
    """
    out, main = options.out_dir, dist.is_main
    own_evaluation = evaluate_module is not None
    callbacks: list[Callback] = []
    if trainer_config.ema_decay is not None:
        average = WeightAverage(method.student, decay=trainer_config.ema_decay)
        callbacks.append(average)
        extras = {**(extras or {}), "weight_average": average}
        evaluate_module = evaluate_module or (lambda trainer: average.module)
    also: dict[str, ModuleChoice] = {}
    if trainer_config.swa_start is not None:
        if own_evaluation:
            # A pipeline that evaluates its own network (an ensemble, a vote) refuses the
            # setting before this (pate teachers, online).
            raise FreekdError(
                f"this run evaluates {description!r} its own way and keeps no tail average; "
                "remove trainer.swa_start"
            )
        tail = TailAverage(method.student, start=trainer_config.swa_start)
        callbacks.append(tail)
        extras = {**(extras or {}), "tail_average": tail}
        before: ModuleChoice = evaluate_module or "student"
        also = {"ema" if trainer_config.ema_decay is not None else "raw": before}

        def tail_or_before(trainer: Trainer) -> nn.Module:
            return tail.module if tail.started else pick_module(trainer, before)

        evaluate_module = tail_or_before

    if eval_set is not None:
        every = trainer_config.eval_every
        callbacks.append(
            Evaluate(eval_set, every=every, module=evaluate_module or "student", also=also)
        )
    callbacks += [
        *extra_callbacks,
        LogMetrics(
            out / "metrics.jsonl", every=trainer_config.log_every, enabled=main, extra=extra_metrics
        ),
        Checkpoint(
            out / RESUME_FILE,
            every=trainer_config.checkpoint_every,
            config=resolved,
            enabled=main,
            extras=extras,
        ),
        Progress(description=description, enabled=main and not options.quiet),
        *(savers if main else ()),
    ]
    return callbacks, extras


def _resume(
    trainer: Trainer,
    data: dict[str, Any],
    *,
    config: Any,
    options: RunOptions,
    extras: dict[str, Stateful] | None,
    planned: int,
) -> TrainState:
    """Restore ``trainer`` from the checked resume ``data`` (at most ``planned`` steps in), then
    rewrite ``config.yaml``."""
    out = options.out_dir
    trainer.method.to(trainer.device)
    state = restore(trainer, data, extras=extras, source=out / RESUME_FILE)
    if state.step > planned:  # a checkpoint of another run, or a hostile one
        raise resume_misfit(
            out / RESUME_FILE, f"it is at step {state.step}, past this run's plan of {planned}"
        )
    if trainer.dist.is_main:
        atomic_write_text(out / "config.yaml", dump_yaml(config))
    logger.info("resuming %s at epoch %d, step %d", out, state.epoch + 1, state.step)
    return state


def _plot_curves(out: Path) -> None:
    """``curves.png``: training loss per logged step and held-out accuracy per epoch."""

    try:
        plot_training_curves(out / "metrics.jsonl", out / "curves.png")
    except (OSError, ValueError) as error:  # a picture must never fail a finished run
        logger.warning("could not draw curves.png: %s", error)


def setup_run(
    seed: int, trainer_config: TrainerConfig, options: RunOptions
) -> tuple[DistInfo, torch.device]:
    dist = init_distributed(
        torch.device(
            "cuda"
            if trainer_config.device.startswith("cuda")
            or (trainer_config.device == "auto" and torch.cuda.is_available())
            else "cpu"
        )
    )
    device = resolve_device(trainer_config.device, dist)
    prepare_run_dir(options)
    if dist.enabled:
        torch.distributed.barrier()  # every rank has checked the folder before rank 0 writes
    seed_everything(seed, deterministic=trainer_config.deterministic)
    return dist, device


def _resume_data(config: dict[str, Any], options: RunOptions) -> dict[str, Any] | None:
    """The checkpoint ``--resume`` continues from, checked against ``config`` before the run
    folder is touched (a refused resume must not overwrite the run's ``config.yaml``)."""
    if not options.resume:
        return None
    data = load_resume_state(options.out_dir / RESUME_FILE)
    check_config_matches(data["config"], config, options.out_dir)
    return data


def _start_run_dir(
    config: Any, options: RunOptions, dist: DistInfo, *, write_config: bool = True
) -> None:
    if options.overwrite:  # on every process, so none goes on alone
        check_not_inputs(options.out_dir, RUN_FILES, inputs=to_dict(config))
    if not dist.is_main:
        return
    options.out_dir.mkdir(parents=True, exist_ok=True)
    if options.overwrite:
        for name in RUN_FILES:
            (options.out_dir / name).unlink(missing_ok=True)
    if write_config:
        atomic_write_text(options.out_dir / "config.yaml", dump_yaml(config))


def teacher_report(teacher: Teacher, accuracy: float | None, path: str) -> dict[str, Any]:
    """The ``teacher`` section of a distillation report."""
    return {
        "test_accuracy": accuracy,
        "path": path,
        "kind": teacher.description,
        "arch": teacher.metadata.get("arch"),
        "parameters": sum(p.numel() for p in teacher.parameters()),
        "has_batchnorm": teacher.has_batchnorm,
        # What ``datafree --method auto`` reads.
        "has_convolution": teacher.has_convolution,
        "convolution_layers": teacher.convolution_layers,
        # Which weights these are, whatever the file: data-free PATE checks its teacher by it.
        "weights_sha256": weights_checksum(teacher.state_dict()),
    }


def finish_run(report: dict[str, Any], options: RunOptions, dist: DistInfo) -> None:
    """Write ``report.json`` (main process only) and leave the process group."""
    if dist.is_main:
        atomic_write_json(options.out_dir / "report.json", report)
    shutdown_distributed(dist)


def common_report(config: Any, result: TrainResult) -> dict[str, Any]:
    return {
        "wall_seconds": round(result.wall_seconds, 3),
        "cpu_seconds": round(result.cpu_seconds, 3),
        "seed": config.seed,
        "freekd_version": __version__,
        "torch_version": torch.__version__,
        "device": str(result.device),
        "epochs": config.trainer.epochs,
        "steps": result.state.step,
    }


def build_student(
    arch: str,
    arch_kwargs: dict[str, Any],
    *,
    train_set: ImageDataset | None,
    num_classes: int,
    mean: list[float] | None,
    std: list[float] | None,
    input_shape: tuple[int, int, int] | None = None,
    setting: str = "--arch",
) -> ImageClassifier:
    """A new classifier; normalization defaults to the training set's statistics. ``setting`` is
    the flag or setting that named ``arch`` (``--student``, ``shadow.arch``), which a bad name's
    error tells the user to check (kwargs: ``student_kwargs``, ``shadow.arch_kwargs``)."""
    if mean is None or std is None:
        if train_set is None:
            raise FreekdError("internal: a student without data needs an explicit mean and std")
        computed_mean, computed_std = dataset_statistics(train_set)
        mean = mean if mean is not None else computed_mean
        std = std if std is not None else computed_std
    shape = input_shape or (train_set.input_shape if train_set is not None else None)
    assert shape is not None
    # ``arch`` comes from a config whose import paths were vetted when it was loaded
    # (config.load_config), or from a model the user already chose to load.
    net = build_model(
        arch,
        num_classes=num_classes,
        input_shape=shape,
        arch_kwargs=arch_kwargs,
        trust_code=True,
        setting=setting,
    )
    model = ImageClassifier(
        net,
        arch=arch,
        arch_kwargs=arch_kwargs,
        num_classes=num_classes,
        input_shape=shape,
        mean=mean,
        std=std,
    )
    check_model(model, input_shape=shape, num_classes=num_classes)
    return model


LEDGER_FILE = "ledger.jsonl"


LABELS_FILE = "labels.npz"


def resolved_params(cls: type, params: dict[str, Any]) -> dict[str, Any]:
    """Every hyperparameter a component ran with: its defaults, then ``params`` over them (a
    mapping over a mapping, a combined method's per-part parameters, merges one level down)."""
    resolved = hyperparameters(cls)
    for key, value in params.items():
        default = resolved.get(key)
        both = isinstance(default, dict) and isinstance(value, dict)
        resolved[key] = {**default, **value} if both else value  # type: ignore[dict-item]
    return resolved


def check_params(cls: type, params: dict[str, Any], *, what: str) -> None:
    """Bind ``params`` to ``cls``'s keyword-only hyperparameters before any work starts: an
    unknown name, or a value of the wrong kind for its default (``config.coerce_like``), is one
    line, as is a float that is not finite. Strings YAML and ``--set`` produce for numbers and
    booleans (``"1e-5"``, ``"true"``) are replaced, in ``params``, by what they say, so the
    plug-in and its own range checks see numbers."""
    check_plugin_params(hyperparameters(cls), params, what)


def default_student(
    teacher: Teacher, requested: str | None, kwargs: dict[str, Any]
) -> tuple[str, dict[str, Any]]:
    """``requested`` with ``kwargs``, else ``models.students.default_student`` for the teacher
    with its default keyword arguments, under the user's ``kwargs`` (logged)."""
    if requested:
        return requested, kwargs
    name, why = students.default_student(
        teacher.metadata.get("arch"),
        num_classes=teacher.num_classes,
        input_shape=teacher.input_shape,
        teacher_parameters=sum(p.numel() for p in teacher.parameters()),
        convolution_layers=teacher.convolution_layers,
        linear_layers=teacher.linear_layers,
    )
    # Only the one-convolution student asks (``pooling`` runs the teacher once).
    pooling = teacher.pooling if name == students.SHALLOW else None
    chosen = {**students.default_student_kwargs(name, pooling), **kwargs}
    shown = f"{name} {chosen}" if chosen else name
    logger.info("student: %s, %s; --student NAME to choose another", shown, why)
    return name, chosen


def inherited_privacy(teacher: Teacher, proxy_set: ImageDataset | None) -> dict[str, Any]:
    """What a data-free student may claim: its teacher's DP guarantee, as post-processing."""
    record = teacher.metadata.get("privacy")
    if record is None:
        return {
            "private": False,
            "note": "the teacher carries no differential-privacy record; a student distilled "
            "from it is not private with respect to the teacher's training data",
        }
    if proxy_set is not None:
        note = (
            f"post-processing of the teacher's guarantee with respect to its training data; "
            f"{proxy_set.name} was used as is and is not covered"
        )
    else:
        note = (
            "post-processing: the student was distilled from this DP teacher alone (synthetic "
            "inputs only), so it inherits the teacher's (ε, δ)"
        )
    # Every figure of the teacher's record, each with its kind, and its notes.
    # ``inherited_from_weights_sha256`` names the weights themselves (a path can be reused):
    # data-free PATE checks a starting model's record against its query model by it.
    return inherit(
        record,
        note,
        private=True,
        inherited_from=teacher.metadata.get("path"),
        inherited_from_weights_sha256=weights_checksum(teacher.state_dict()),
    )


QUERIES_FILE = "queries.npz"


def build_method(name: str, context: MethodContext, params: dict[str, Any]) -> Method:
    """``methods.build_method``: a parameter out of range is a one-line error."""
    try:
        return methods.build_method(name, context, params)
    except ValueError as error:
        raise FreekdError(f"method {name}: {error}; fix --set method.params") from None


def first_line(error: BaseException) -> str:
    lines = [line.strip() for line in str(error).splitlines() if line.strip()]
    return lines[0][:120] if lines else type(error).__name__


def seeded(seed: int, *keys: int) -> torch.Generator:

    return seeded_generator(seed, *keys)


def saved_config(path: Path) -> dict[str, Any]:
    """The resolved config inside a freekd checkpoint; empty for any other model file."""

    try:
        saved = read_checkpoint(path).get("config")
    except FreekdError:
        return {}
    return saved if isinstance(saved, dict) else {}


def in_section(section: str, check: Callable[[], object], *, keys: str | None = None) -> None:
    """``check()``, its one-line refusal prefixed with the config section it is about
    (``pate run``'s stages, ``audit pipeline``'s), and each ``--set KEY=`` its hint names, as
    the stage's own command spells it, put under ``keys`` (default ``SECTION.``) unless it
    already is: the hint then works on the command that checks it."""
    try:
        check()
    except FreekdError as error:
        prefix = keys if keys is not None else f"{section}."
        quoted_key = rf"--set\s+(['\"]?)(?!{re.escape(prefix)})(?=[A-Za-z_][\w.-]*=)"
        hint = re.sub(quoted_key, rf"--set \g<1>{prefix}", str(error))
        raise FreekdError(f"{section}: {hint}") from None
