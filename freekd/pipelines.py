"""Composition roots: the only place where objects are wired together, one function per command.

Each ``run_*`` function takes a resolved config and an output folder, builds the collaborators
(data, teacher, student, method, source, callbacks), runs the one ``Trainer`` and writes the files
every run writes (DESIGN.md): ``model.pt``, ``report.json``, ``config.yaml``, ``metrics.jsonl``,
``curves.png``, plus ``checkpoint.pt`` for ``--resume``.
"""

from __future__ import annotations

import dataclasses
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import nn

from freekd import __version__
from freekd.checkpoint import save_checkpoint
from freekd.config import (
    AUTO_METHOD,
    CollapseConfig,
    ComponentConfig,
    DataFreeConfig,
    DistillConfig,
    PateLabelConfig,
    PateStudentConfig,
    PateTeachersConfig,
    TeacherSourceConfig,
    TeacherTrainConfig,
    TrainerConfig,
    dump_yaml,
    to_dict,
)
from freekd.data import AUGMENTATIONS, ImageDataset, load_dataset
from freekd.errors import FreekdError
from freekd.generators import SYNTHESIZERS
from freekd.generators.collapse import CollapseMonitor
from freekd.io import atomic_write, atomic_write_json, atomic_write_text
from freekd.methods import METHODS, Method, Supervised
from freekd.methods.semi import VirtualAdversarial
from freekd.models import (
    SMALLER_STUDENT,
    ImageClassifier,
    build_model,
    check_model,
    count_parameters,
)
from freekd.runlock import has_run_content, locks_run_folder
from freekd.seeding import seed_everything
from freekd.teachers import Teacher, load_teacher
from freekd.train import (
    BatchSource,
    Callback,
    Checkpoint,
    DistInfo,
    Evaluate,
    LoaderSource,
    LogMetrics,
    PoissonSource,
    Progress,
    SemiSupervisedSource,
    ShardSource,
    Trainer,
    TrainState,
    evaluate,
    init_distributed,
    make_optimizer,
    resolve_device,
)
from freekd.train.callbacks import (
    RESUME_FILE,
    Stateful,
    StopOnBudget,
    WeightAverage,
    load_resume_state,
    restore,
)
from freekd.train.distributed import shutdown_distributed
from freekd.train.evaluate import check_input_shape, check_labels_fit
from freekd.train.sources import SyntheticSource

logger = logging.getLogger(__name__)

# How ``freekd pate student`` uses the public pool's unanswered images.
SEMI_SUPERVISED = ("vat", "none")
# Aggregators whose data-dependent ε ``freekd pate label`` releases through smooth sensitivity.
SANITIZABLE = ("gnmax", "confident-gnmax")

RUN_FILES = ("model.pt", "report.json", "config.yaml", "metrics.jsonl", "curves.png", RESUME_FILE)
# Settings that may change between an interrupted run and its resumption.
RESUMABLE_CHANGES = {
    "trainer.epochs",
    "trainer.device",
    "trainer.log_every",
    "trainer.checkpoint_every",
    "trainer.eval_every",
    # What collapse checks flag, not what the run computes; checkpoints written before these
    # two settings existed resume with them too.
    "collapse.discrepancy_factor",
    "collapse.discrepancy_floor",
}


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


def _clear_run_files(out: Path) -> None:
    for name in RUN_FILES:
        (out / name).unlink(missing_ok=True)


def dataset_statistics(dataset: ImageDataset) -> tuple[list[float], list[float]]:
    """Per-channel mean and std of a dataset's [0, 1] images (the model's normalization)."""
    total = torch.zeros(dataset.input_shape[0], dtype=torch.float64)
    squares = torch.zeros_like(total)
    count = 0
    for start in range(0, len(dataset), 4096):
        images = dataset.batch(torch.arange(start, min(start + 4096, len(dataset)))).images
        images = images.double().transpose(0, 1).flatten(1)
        total += images.sum(dim=1)
        squares += (images**2).sum(dim=1)
        count += images.shape[1]
    mean = total / count
    std = (squares / count - mean**2).clamp_min(1e-12).sqrt()
    return [round(float(v), 6) for v in mean], [round(float(max(v, 1e-3)), 6) for v in std]


def resolve_augmentation(name: str, input_shape: tuple[int, int, int]) -> str:
    """The augmentation ``name`` stands for; ``auto`` shifts images of 24 pixels and more only.

    Raises:
        UnknownNameError: ``name`` is neither ``auto`` nor registered.
    """
    if name == "auto":
        return "crop" if min(input_shape[1:]) >= 24 else "none"
    AUGMENTATIONS.get(name)
    return name


def _load_split(spec: str, *, default_split: str, root: str | None, download: bool) -> ImageDataset:
    return load_dataset(
        spec, default_split=default_split, root=Path(root) if root else None, download=download
    )


def _train_and_eval_sets(config: Any) -> tuple[ImageDataset, ImageDataset]:
    """``config.dataset``'s train split and its held-out data (``config.eval_dataset``)."""
    train_set = _load_split(
        config.dataset, default_split="train", root=config.data_root, download=config.download
    )
    eval_set = _load_split(
        _eval_spec(config.dataset, config.eval_dataset),
        default_split="test",
        root=config.data_root,
        download=config.download,
    )
    return train_set, eval_set


def _eval_spec(dataset: str, eval_dataset: str | None) -> str:
    """The held-out spec: given, else the ``test`` split of the training data's registry name."""
    if eval_dataset:
        return eval_dataset
    if ":" in dataset or dataset.endswith(".npz") or Path(dataset).exists():
        raise FreekdError(
            f"no held-out data for {dataset}; pass --eval-data (e.g. mnist:test or a .npz file)"
        )
    return f"{dataset}:test"


def _check_config_matches(saved: dict[str, Any], current: dict[str, Any], out: Path) -> None:
    def flatten(data: dict[str, Any], prefix: str = "") -> dict[str, Any]:
        flat: dict[str, Any] = {}
        for key, value in data.items():
            if isinstance(value, dict) and key not in ("params", "arch_kwargs", "student_kwargs"):
                flat.update(flatten(value, f"{prefix}{key}."))
            else:
                flat[f"{prefix}{key}"] = value
        return flat

    old, new = flatten(saved), flatten(current)
    allowed = set(RESUMABLE_CHANGES)
    if old.get("dp.enabled"):
        # The noise multiplier was chosen for the planned number of steps: more epochs would
        # spend more than the recorded ε, and the record would not know.
        allowed.discard("trainer.epochs")
    changed = sorted(
        k for k in old.keys() | new.keys() if old.get(k) != new.get(k) and k not in allowed
    )
    if "trainer.epochs" in changed and old.get("dp.enabled"):
        raise FreekdError(
            f"--resume in {out} with other --epochs: this DP-SGD run's noise was set for "
            f"{old['trainer.epochs']} epochs; resume with those, or train anew with another --out"
        )
    if changed:
        raise FreekdError(
            f"--resume in {out} with a different config ({', '.join(changed)}); "
            "resume with the same settings or start a new run with another --out"
        )


@dataclass
class _TrainResult:
    state: TrainState
    wall_seconds: float
    cpu_seconds: float
    device: torch.device


def _loader_source(
    train_set: ImageDataset,
    trainer_config: TrainerConfig,
    *,
    seed: int,
    dist: DistInfo,
    labelled: bool = True,
    max_steps_per_epoch: int | None = None,
    fixed_steps_per_epoch: int | None = None,
) -> LoaderSource:
    augment_name = resolve_augmentation(trainer_config.augment, train_set.input_shape)
    return LoaderSource(
        train_set,
        batch_size=trainer_config.batch_size,
        seed=seed,
        augment=None if augment_name == "none" else AUGMENTATIONS.get(augment_name),
        labelled=labelled,
        max_steps_per_epoch=max_steps_per_epoch,
        fixed_steps_per_epoch=fixed_steps_per_epoch,
        rank=dist.rank,
        world_size=dist.world_size,
    )


def _run_loop(
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
    evaluate_module: Callable[[Trainer], nn.Module] | None = None,
    save: Callable[[nn.Module, dict[str, Any]], None] | None = None,
) -> _TrainResult:
    """Build the Trainer with the standard callbacks, optionally resume, fit, save the student.

    ``config`` is the run's resolved config dataclass: checked against the checkpoint on
    ``--resume`` (before anything is written), saved as ``config.yaml`` and inside every checkpoint.
    ``extras`` are saved in, and restored from, the resume checkpoint (e.g. a synthesizer).
    ``extra_metrics`` adds named values to every step line of ``metrics.jsonl``.
    ``wrap_optimizer`` wraps the optimizer (Opacus' DPOptimizer for DP-SGD); ``privacy`` gives the
    run's privacy record from the final state, saved inside ``model.pt``. ``evaluate_module``
    picks what ``eval_set`` measures (default: the student); ``save(student, resolved_config)``
    replaces writing ``model.pt`` (a teacher ensemble writes ``teachers.pt``).
    """
    resolved = to_dict(config)
    resume_data = _resume_data(resolved, options)
    # A resumed run rewrites config.yaml only once the checkpoint has been restored: a refused
    # resume leaves the folder as it was.
    _start_run_dir(config, options, dist, write_config=resume_data is None)
    out = options.out_dir
    main = dist.is_main
    optimizer = make_optimizer(method.trainable_parameters(), trainer_config)
    if wrap_optimizer is not None:
        optimizer = wrap_optimizer(optimizer)
    callbacks: list[Callback] = []
    if trainer_config.ema_decay is not None:
        average = WeightAverage(method.student, decay=trainer_config.ema_decay)
        callbacks.append(average)
        extras = {**(extras or {}), "weight_average": average}
        evaluate_module = evaluate_module or (lambda trainer: average.module)
    if eval_set is not None:
        callbacks.append(
            Evaluate(eval_set, every=trainer_config.eval_every, module=evaluate_module)
        )
    callbacks += [
        *extra_callbacks,
        LogMetrics(
            out / "metrics.jsonl",
            every=trainer_config.log_every,
            enabled=main,
            extra=extra_metrics,
        ),
        Checkpoint(
            out / RESUME_FILE,
            every=trainer_config.checkpoint_every,
            config=resolved,
            enabled=main,
            extras=extras,
        ),
        Progress(description=description, enabled=main and not options.quiet),
    ]
    trainer = Trainer(
        method, optimizer, config=trainer_config, device=device, callbacks=callbacks, dist=dist
    )
    state = None
    if resume_data is not None:
        method.to(device)
        state = restore(trainer, resume_data, extras=extras, source=out / RESUME_FILE)
        if main:
            atomic_write_text(out / "config.yaml", dump_yaml(config))
        logger.info("resuming %s at epoch %d, step %d", out, state.epoch + 1, state.step)
    wall_start, cpu_start = time.perf_counter(), time.process_time()
    state = trainer.fit(source, state=state)
    wall, cpu = time.perf_counter() - wall_start, time.process_time() - cpu_start
    if main and save is not None:
        save(trainer.unwrapped("student"), resolved)
        _plot_curves(out)
    elif main:
        student_module = trainer.unwrapped("student")
        assert isinstance(student_module, ImageClassifier)
        record = None if privacy is None else privacy(state)
        save_checkpoint(out / "model.pt", student_module, config=resolved, privacy=record)
        _plot_curves(out)
    return _TrainResult(state=state, wall_seconds=wall, cpu_seconds=cpu, device=device)


def _plot_curves(out: Path) -> None:
    """``curves.png``: training loss per logged step and held-out accuracy per epoch."""
    from freekd.plots import plot_training_curves

    try:
        plot_training_curves(out / "metrics.jsonl", out / "curves.png")
    except (OSError, ValueError) as error:  # a picture must never fail a finished run
        logger.warning("could not draw curves.png: %s", error)


def _setup(
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
    _check_config_matches(data["config"], config, options.out_dir)
    return data


def _start_run_dir(
    config: Any, options: RunOptions, dist: DistInfo, *, write_config: bool = True
) -> None:
    if not dist.is_main:
        return
    options.out_dir.mkdir(parents=True, exist_ok=True)
    if options.overwrite:
        _clear_run_files(options.out_dir)
    if write_config:
        atomic_write_text(options.out_dir / "config.yaml", dump_yaml(config))


def _teacher_report(teacher: Teacher, accuracy: float | None, path: str) -> dict[str, Any]:
    """The ``teacher`` section of a distillation report."""
    return {
        "test_accuracy": accuracy,
        "path": path,
        "kind": teacher.description,
        "arch": teacher.metadata.get("arch"),
        "parameters": sum(p.numel() for p in teacher.parameters()),
        "has_batchnorm": teacher.has_batchnorm,
    }


def _finish(report: dict[str, Any], options: RunOptions, dist: DistInfo) -> None:
    """Write ``report.json`` (main process only) and leave the process group."""
    if dist.is_main:
        atomic_write_json(options.out_dir / "report.json", report)
    shutdown_distributed(dist)


def _common_report(config: Any, result: _TrainResult) -> dict[str, Any]:
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


def _build_student(
    arch: str,
    arch_kwargs: dict[str, Any],
    *,
    train_set: ImageDataset | None,
    num_classes: int,
    mean: list[float] | None,
    std: list[float] | None,
    input_shape: tuple[int, int, int] | None = None,
) -> ImageClassifier:
    """A new classifier; normalization defaults to the training set's statistics."""
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
        arch, num_classes=num_classes, input_shape=shape, arch_kwargs=arch_kwargs, trust_code=True
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


def _warn_empty_classes(train_set: ImageDataset) -> None:
    """One warning line when some classes have no training image (their outputs never learn)."""
    counts = torch.bincount(train_set.labels, minlength=train_set.num_classes)
    empty = [train_set.classes[k] for k in torch.nonzero(counts == 0).flatten().tolist()]
    if empty:
        shown = ", ".join(empty[:5]) + (" ..." if len(empty) > 5 else "")
        logger.warning(
            "%s has no training image of %d of its %d classes (%s); the model will never "
            "predict them",
            train_set.name,
            len(empty),
            train_set.num_classes,
            shown,
        )


#: Fewer optimizer steps than this in a whole ``teacher train`` run draw a warning. The default
#: recipe (10 epochs of 128) was tuned on 60,000 images, 4,690 steps; on 500 MNIST images it makes
#: 30 steps and ends at 16.6 % (experiments/2026-12-small-data-recipe).
FEW_STEPS = 300


def _warn_few_steps(train_set: ImageDataset, trainer: TrainerConfig, steps_per_epoch: int) -> None:
    """One warning line before training when the recipe gives a small set too few steps.

    Measured on 500 MNIST images (LeNet-5, seed 0): the defaults make 30 SGD steps and reach
    16.6 % on mnist:test; ``--batch-size 32 --epochs 60`` (900 steps, what this suggests for
    500 images) reaches 95.1 % (experiments/2026-12-small-data-recipe). The schedule itself is
    left as given: the README's full-dataset figures depend on it.
    """
    steps = steps_per_epoch * trainer.epochs
    if steps >= FEW_STEPS:
        return
    batch = min(trainer.batch_size, 32)
    per_epoch = max(1, len(train_set) // batch)
    epochs = -(-3 * FEW_STEPS // per_epoch)
    logger.warning(
        "%s has %d images: %d epochs at batch size %d make only %d optimizer steps, too few "
        "to train (the defaults suit 60,000 images); try --batch-size %d --epochs %d",
        train_set.name,
        len(train_set),
        trainer.epochs,
        trainer.batch_size,
        steps,
        batch,
        epochs,
    )


@locks_run_folder
def run_teacher_train(config: TeacherTrainConfig, options: RunOptions) -> dict[str, Any]:
    """``freekd teacher train``: supervised training; returns (and writes) ``report.json``.

    With ``config.dp.enabled`` the teacher is trained with DP-SGD through Opacus (Poisson
    batches, per-example clipping, Gaussian noise; BatchNorm replaced by GroupNorm), and its
    (ε, δ) goes into ``report.json["privacy"]`` and into ``model.pt``.
    """
    train_set, eval_set = _train_and_eval_sets(config)
    check_input_shape(eval_set, train_set.input_shape, who=f"a model trained on {train_set.name}")
    check_labels_fit(eval_set, train_set.num_classes, who=f"a model trained on {train_set.name}")
    resolve_augmentation(config.trainer.augment, train_set.input_shape)
    dp = _DPSetup.plan(config, len(train_set)) if config.dp.enabled else None
    dist, device = _setup(config.seed, config.trainer, options)
    if dp is not None and dist.enabled:
        raise FreekdError("--dp runs in one process; start it without torchrun")
    mean, std = config.mean, config.std
    if dp is not None and (mean is None or std is None):
        # The training set's own statistics would be a release outside the accounting: a DP
        # teacher normalizes with fixed values unless the user gives public ones.
        channels = train_set.input_shape[0]
        mean, std = mean or [0.5] * channels, std or [0.5] * channels
    model = _build_student(
        config.arch,
        dict(config.arch_kwargs),
        train_set=train_set,
        num_classes=train_set.num_classes,
        mean=mean,
        std=std,
    )
    source: BatchSource
    if dp is None:
        source = _loader_source(train_set, config.trainer, seed=config.seed, dist=dist)
    else:
        model = dp.prepare(model)
        augment_name = resolve_augmentation(config.trainer.augment, train_set.input_shape)
        source = PoissonSource(
            train_set,
            sample_rate=dp.sample_rate,
            seed=config.seed,
            augment=None if augment_name == "none" else AUGMENTATIONS.get(augment_name),
        )
    _warn_empty_classes(train_set)  # after every check: a failing run prints one line
    _warn_few_steps(train_set, config.trainer, source.steps_per_epoch())
    method = Supervised(model, label_smoothing=config.label_smoothing)
    result = _run_loop(
        method,
        source,
        eval_set=eval_set,
        trainer_config=config.trainer,
        config=config,
        options=options,
        device=device,
        dist=dist,
        description=f"teacher {config.arch}" + (" (DP-SGD)" if dp else ""),
        wrap_optimizer=None if dp is None else dp.wrap_optimizer,
        privacy=None if dp is None else dp.record,
        extras=None if dp is None else {"dp_noise": dp.noise},
    )
    report = {
        "command": "teacher train",
        "test_accuracy": result.state.metrics["eval_accuracy"],
        "test_n": len(eval_set),
        "arch": config.arch,
        "parameters": count_parameters(model.net),
        "dataset": train_set.name,
        "eval_dataset": eval_set.name,
        **_common_report(config, result),
    }
    if dp is not None:
        report["privacy"] = dp.record(result.state)
    _finish(report, options, dist)
    return report


class _GeneratorState:
    """A ``torch.Generator`` as a resumable extra: DP-SGD's noise stream.

    A resumed run must continue the noise stream, never replay it: noise drawn twice would
    cancel between two released updates and expose their gradient difference.
    """

    def __init__(self, seed: int) -> None:
        self.generator = torch.Generator().manual_seed(seed)

    def state_dict(self) -> dict[str, Any]:
        return {"state": self.generator.get_state()}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.generator.set_state(state["state"])


@dataclass
class _DPSetup:
    """DP-SGD wiring for a teacher run: noise level, model preparation, optimizer, record."""

    sample_rate: float
    noise_multiplier: float
    max_grad_norm: float
    delta: float
    target_epsilon: float | None
    expected_batch_size: int
    seed: int
    noise: _GeneratorState = dataclasses.field(default_factory=lambda: _GeneratorState(0))

    @classmethod
    def plan(cls, config: TeacherTrainConfig, train_size: int) -> _DPSetup:
        dp, trainer = config.dp, config.trainer
        if dp.epsilon is None and dp.noise_multiplier is None:
            raise FreekdError("--dp needs a target --epsilon (or dp.noise_multiplier)")
        if dp.epsilon is not None and not dp.epsilon > 0:
            raise FreekdError(f"--epsilon must be positive, got {dp.epsilon}")
        if not 0 < dp.delta < 1:
            raise FreekdError(f"--delta must lie in (0, 1), got {dp.delta}")
        if dp.delta >= 1 / train_size:
            logger.warning(
                "δ = %g is not below 1/N = %g: the guarantee allows leaking a whole record",
                dp.delta,
                1 / train_size,
            )
        if not dp.max_grad_norm > 0:
            raise FreekdError(f"--max-grad-norm must be positive, got {dp.max_grad_norm}")
        if trainer.max_grad_norm is not None:
            raise FreekdError(
                "trainer.max_grad_norm clips the batch gradient; with --dp use --max-grad-norm, "
                "which clips every example's gradient"
            )
        if trainer.batch_size > train_size:
            raise FreekdError(
                f"--batch-size {trainer.batch_size} exceeds the {train_size} training images"
            )
        sample_rate = trainer.batch_size / train_size
        steps = trainer.epochs * max(1, round(1 / sample_rate))
        noise = dp.noise_multiplier
        if noise is None:
            from freekd.privacy.rdp import dpsgd_noise_multiplier

            assert dp.epsilon is not None
            try:
                noise = dpsgd_noise_multiplier(
                    epsilon=dp.epsilon, delta=dp.delta, sample_rate=sample_rate, steps=steps
                )
            except ValueError as error:
                raise FreekdError(f"{error}; raise --epsilon or train fewer epochs") from None
        elif not noise > 0:
            raise FreekdError(f"dp.noise_multiplier must be positive, got {noise}")
        return cls(
            sample_rate=sample_rate,
            noise_multiplier=noise,
            max_grad_norm=dp.max_grad_norm,
            delta=dp.delta,
            target_epsilon=dp.epsilon,
            expected_batch_size=trainer.batch_size,
            seed=config.seed,
            noise=_GeneratorState(config.seed + 1),
        )

    def prepare(self, model: ImageClassifier) -> ImageClassifier:
        """Replace BatchNorm, then let Opacus record per-example gradients of the network."""
        from opacus import GradSampleModule

        from freekd.models import replace_batchnorm

        private = ImageClassifier(
            replace_batchnorm(model.net),
            arch=model.arch,
            arch_kwargs=model.arch_kwargs,
            num_classes=model.num_classes,
            input_shape=model.input_shape,
            mean=model.mean_values,
            std=model.std_values,
            batchnorm_replacement="groupnorm",
        )
        private.net = GradSampleModule(private.net)  # type: ignore[assignment]
        return private

    def wrap_optimizer(self, optimizer: torch.optim.Optimizer) -> torch.optim.Optimizer:
        from opacus.optimizers import DPOptimizer

        return DPOptimizer(  # type: ignore[no-any-return]
            optimizer,
            noise_multiplier=self.noise_multiplier,
            max_grad_norm=self.max_grad_norm,
            expected_batch_size=self.expected_batch_size,
            loss_reduction="mean",
            generator=self.noise.generator,
        )

    def record(self, state: TrainState) -> dict[str, Any]:
        """The privacy record of the steps taken so far (Opacus' RDP analysis)."""
        from freekd.privacy.report import dpsgd_privacy

        record = dpsgd_privacy(
            sample_rate=self.sample_rate,
            noise_multiplier=self.noise_multiplier,
            steps=state.step,
            delta=self.delta,
        )
        record["mechanisms"][0]["max_grad_norm"] = self.max_grad_norm
        record["target_epsilon"] = self.target_epsilon
        record["note"] = (
            "DP-SGD through Opacus; research-grade noise (torch.Generator, not secure_mode)"
        )
        return record


@locks_run_folder
def run_pate_teachers(config: PateTeachersConfig, options: RunOptions) -> dict[str, Any]:
    """``freekd pate teachers``: K teachers on disjoint shards, trained together in one loop.

    Writes ``teachers.pt`` (private: it holds everything the teachers learned) and
    ``report.json`` with every teacher's and the (noise-free) plurality vote's accuracy.
    """
    from freekd.methods import EnsembleSupervised
    from freekd.teachers.ensemble import (
        PluralityVote,
        StackedTeacherEnsemble,
        TeacherEnsemble,
        save_ensemble,
    )

    if config.execution not in ("loop", "vmap"):
        raise FreekdError(f"unknown execution {config.execution!r}; use loop or vmap")
    train_set, eval_set = _train_and_eval_sets(config)
    check_input_shape(eval_set, train_set.input_shape, who=f"models trained on {train_set.name}")
    check_labels_fit(eval_set, train_set.num_classes, who=f"models trained on {train_set.name}")
    augment_name = resolve_augmentation(config.trainer.augment, train_set.input_shape)
    source = ShardSource(
        train_set,
        teachers=config.teachers,
        batch_size=config.trainer.batch_size,
        seed=config.seed,
        augment=None if augment_name == "none" else AUGMENTATIONS.get(augment_name),
    )
    dist, device = _setup(config.seed, config.trainer, options)
    if dist.enabled:
        raise FreekdError("freekd pate teachers runs in one process; start it without torchrun")
    _warn_empty_classes(train_set)
    members = [
        _build_student(
            config.arch,
            dict(config.arch_kwargs),
            train_set=train_set,
            num_classes=train_set.num_classes,
            mean=None,
            std=None,
        )
        for _ in range(config.teachers)
    ]
    ensemble = (
        StackedTeacherEnsemble(members) if config.execution == "vmap" else TeacherEnsemble(members)
    )
    shards = {
        "dataset": train_set.name,
        "teachers": config.teachers,
        "shard_size": source.shard_size,
        "unused": len(train_set) - config.teachers * source.shard_size,
        "seed": config.seed,
    }

    def save(module: nn.Module, resolved: dict[str, Any]) -> None:
        save_ensemble(options.out_dir / "teachers.pt", module, config=resolved, shards=shards)  # type: ignore[arg-type]

    result = _run_loop(
        EnsembleSupervised(ensemble),
        source,
        eval_set=eval_set,
        trainer_config=config.trainer,
        config=config,
        options=options,
        device=device,
        dist=dist,
        description=f"{config.teachers} teachers {config.arch}",
        evaluate_module=lambda trainer: PluralityVote(trainer.unwrapped("student")),  # type: ignore[arg-type]
        save=save,
    )
    accuracies = _member_accuracies(ensemble, eval_set, device=device)
    report = {
        "command": "pate teachers",
        "teachers": config.teachers,
        "shards": shards,
        "execution": config.execution,
        "arch": config.arch,
        "parameters_per_teacher": count_parameters(members[0].net),
        "plurality_accuracy": result.state.metrics["eval_accuracy"],
        "teacher_accuracy": {
            "median": float(torch.tensor(accuracies).median()),
            "min": min(accuracies),
            "max": max(accuracies),
            "each": accuracies,
        },
        "dataset": train_set.name,
        "eval_dataset": eval_set.name,
        **_common_report(config, result),
    }
    _finish(report, options, dist)
    return report


def _member_accuracies(
    ensemble: nn.Module, data: ImageDataset, *, device: torch.device
) -> list[float]:
    """Every member's top-1 accuracy on ``data`` from one pass of the ensemble."""
    correct: torch.Tensor | None = None
    ensemble.eval()
    with torch.no_grad():
        for start in range(0, len(data), 512):
            batch = data.batch(torch.arange(start, min(start + 512, len(data)))).to(device)
            hits = (ensemble(batch.images).argmax(dim=-1) == batch.labels).sum(dim=1)
            correct = hits if correct is None else correct + hits
    assert correct is not None
    return [round(float(c) / len(data), 6) for c in correct.cpu()]


LEDGER_FILE = "ledger.jsonl"
LABELS_FILE = "labels.npz"


@locks_run_folder
def run_pate_label(config: PateLabelConfig, options: RunOptions) -> dict[str, Any]:
    """``freekd pate label``: noisy labels for public queries, budgeted, ledgered, accounted.

    Only the labeler touches the teachers; every answer is in ``ledger.jsonl`` (fsynced) before
    it is released. A ledger is never deleted or rewritten: an existing one is continued with
    ``--resume`` (nothing is spent twice) and refused otherwise, ``--overwrite`` included.
    Writes ``labels.npz`` (query indices and labels, −1 where no answer was given),
    ``report.json`` (with ``privacy``) and ``config.yaml``.
    """
    import numpy as np
    from rich.progress import Progress as RichProgress

    from freekd.privacy.budget import PrivacyBudget
    from freekd.privacy.labeler import BUDGET_FIGURES, NoisyLabeler, mechanism_from_name
    from freekd.privacy.ledger import PrivacyLedger
    from freekd.teachers.ensemble import load_ensemble

    if not config.teachers:
        raise FreekdError("give the teacher ensemble: --teachers OUT/teachers.pt")
    if config.budget_on not in BUDGET_FIGURES:
        raise FreekdError(f"budget_on must be one of {', '.join(BUDGET_FIGURES)}")
    try:
        budget = PrivacyBudget(epsilon=config.epsilon, delta=config.delta)
    except ValueError as error:
        raise FreekdError(f"{error}; check --epsilon and --delta") from None
    mechanism = mechanism_from_name(
        config.aggregator,
        sigma=config.sigma,
        sigma_threshold=config.sigma_threshold,
        threshold=config.threshold,
        gamma=config.gamma,
        confidence_scale=config.confidence_scale,
        student_threshold=config.student_threshold,
    )
    if mechanism.needs_student and not config.student_model:
        raise FreekdError(
            f"--aggregator {mechanism.name} needs --student-model (a student checkpoint, e.g. "
            "from freekd pate student)"
        )
    out = options.out_dir
    ledger_path = out / LEDGER_FILE
    if ledger_path.exists() and not options.resume:
        raise FreekdError(
            f"{ledger_path} records privacy already spent and is never replaced; continue it "
            "with --resume, or choose another --out"
        )
    if options.resume and not ledger_path.exists():
        raise FreekdError(f"nothing to resume in {out}: no {LEDGER_FILE}; run without --resume")
    if not options.resume and out.exists() and has_run_content(out) and not options.overwrite:
        raise FreekdError(
            f"output folder {out} already exists; pass --overwrite to replace it or choose "
            "another --out"
        )
    ensemble = load_ensemble(Path(config.teachers), trust_code=options.trust_code)
    pool = _load_split(
        config.query_dataset, default_split="test", root=config.data_root, download=False
    )
    check_input_shape(pool, ensemble.input_shape, who="the teachers")
    check_labels_fit(pool, ensemble.num_classes, who="the teachers")
    provenance = _query_provenance(config, pool)
    lowest_holdout = 0 if config.eval_dataset else 1
    if not lowest_holdout <= config.holdout < len(pool):
        raise FreekdError(
            f"holdout must leave queries (and, without eval_dataset, an evaluation set): "
            f"{config.holdout} of {len(pool)} images in {pool.name}"
        )
    if config.eval_dataset:
        eval_set = _load_split(
            config.eval_dataset, default_split="test", root=config.data_root, download=False
        )
        check_input_shape(eval_set, ensemble.input_shape, who="the teachers")
        check_labels_fit(eval_set, ensemble.num_classes, who="the teachers")
    if config.queries < 1:
        raise FreekdError(f"--queries must be positive, got {config.queries}")
    count = min(config.queries, len(pool) - config.holdout)
    out.mkdir(parents=True, exist_ok=True)
    header = NoisyLabeler.ledger_header(
        mechanism, budget, seed=config.seed, budget_on=config.budget_on
    )
    header["queries"] = {"dataset": pool.name, "holdout": config.holdout}
    prior = _prior_accountant(provenance)
    labeler = NoisyLabeler(
        ensemble.votes,
        mechanism,
        budget=budget,
        ledger=PrivacyLedger(ledger_path, header=header),
        seed=config.seed,
        num_classes=ensemble.num_classes,
        budget_on=config.budget_on,
        prior=None if prior is None else prior.rdp(),
        prior_record=None if prior is None else provenance["privacy"],
    )
    # After the ledger has been read: a refused (corrupt or foreign) ledger leaves the folder as
    # it was.
    atomic_write_text(out / "config.yaml", dump_yaml(config))
    student_model = None
    if mechanism.needs_student:
        from freekd.checkpoint import load_model

        assert config.student_model is not None
        student_model = load_model(config.student_model, trust_code=options.trust_code)
        check_input_shape(pool, student_model.input_shape, who="the student model")
    labels = np.full(count, -1, dtype=np.int64)
    by_teachers = np.zeros(count, dtype=bool)
    stopped = False
    wall_start, cpu_start = time.perf_counter(), time.process_time()
    with RichProgress(disable=options.quiet, transient=True) as progress:
        task = progress.add_task(f"labelling ({mechanism.name})", total=count)
        for start in range(0, count, 256):
            indices = list(range(start, min(start + 256, count)))
            images = pool.batch(torch.tensor(indices)).images
            probabilities = None
            if student_model is not None:
                with torch.no_grad():  # public: the student saw public data and released labels
                    probabilities = student_model(images).softmax(dim=1)
            result = labeler.label(indices, images, student_probabilities=probabilities)
            labels[start : start + len(indices)] = result.labels.numpy()
            by_teachers[start : start + len(indices)] = result.by_teachers.numpy()
            progress.update(task, advance=result.reached)
            if result.stopped_by_budget:
                stopped = True
                break
    answered = labels >= 0
    truth = pool.labels[:count].numpy()
    atomic_write(
        out / LABELS_FILE,
        lambda stream: np.savez(
            stream, indices=np.arange(count), labels=labels, by_teachers=by_teachers
        ),
    )
    privacy = labeler.privacy_report()
    if config.sanitize and mechanism.name in SANITIZABLE and labeler.queries:
        privacy["sanitized"] = _release_label_privacy(
            config, mechanism, ensemble, pool, labeler, by_teachers, prior, options
        )
        privacy["sanitized_epsilon"] = privacy["sanitized"]["epsilon"]
        privacy = _with_figures(privacy)
    synthetic = provenance["source"] != "public unlabelled set"
    report: dict[str, Any] = {
        "command": "pate label",
        "queries": {
            **provenance,
            "dataset": pool.name,
            "asked": labeler.queries,
            "available": count,
            "holdout": config.holdout,
            "eval_dataset": config.eval_dataset,
        },
        "aggregator": mechanism.name,
        "answered": int(answered.sum()),
        "answered_by_teachers": int(by_teachers.sum()),
        "answered_by_student": int((answered & ~by_teachers).sum()),
        "student_model": config.student_model,
        # Synthetic queries have no ground truth: their stored labels are the query model's.
        "label_accuracy": float((labels[answered] == truth[answered]).mean())
        if answered.any() and not synthetic
        else None,
        "agreement_with_query_model": float((labels[answered] == truth[answered]).mean())
        if answered.any() and synthetic
        else None,
        "stopped_by_budget": stopped,
        "privacy": privacy,
        "wall_seconds": round(time.perf_counter() - wall_start, 3),
        "cpu_seconds": round(time.process_time() - cpu_start, 3),
        "seed": config.seed,
        "freekd_version": __version__,
    }
    atomic_write_json(out / "report.json", report)
    return report


def _query_provenance(config: PateLabelConfig, pool: ImageDataset) -> dict[str, Any]:
    """Where the queries come from and what they cost (DESIGN.md, privacy model).

    A ``queries.npz`` written by ``freekd datafree --save-queries`` is a synthetic pool: its
    images are post-processing of that run's teacher, so they carry its privacy record. A DP
    teacher's guarantee is composed with the PATE answers (worst case: it was trained on the
    same private data); a teacher without one is refused unless ``queries_public`` says it is a
    public model.
    """
    import json

    path = Path(config.query_dataset)
    run_report = path.parent / "report.json"
    if not (path.is_file() and path.name == QUERIES_FILE and run_report.exists()):
        return {"source": "public unlabelled set"}
    try:
        run = json.loads(run_report.read_text())
    except (OSError, ValueError) as error:
        raise FreekdError(f"cannot read {run_report} ({error}); re-run freekd datafree") from None
    if run.get("command") != "datafree":
        return {"source": "public unlabelled set"}
    privacy = run.get("privacy") or {}
    source = {
        "source": f"synthesized by freekd datafree ({run['method']['name']}) from "
        f"{run['teacher'].get('path', 'its teacher')} (data-free PATE)",
        "query_model": run["teacher"].get("path"),
        "query_model_private": bool(privacy.get("private")),
        "privacy": privacy,
    }
    if not privacy.get("private") and not config.queries_public:
        raise FreekdError(
            f"{path} was synthesized from a teacher without a DP record, which may have seen the "
            "private data; train that teacher with --dp, or pass --set queries_public=true if it "
            "is a public model"
        )
    return source


def _prior_accountant(provenance: dict[str, Any]) -> Any:
    """The DP-SGD accountant of a synthetic pool's teacher, or None when the queries are free."""
    from freekd.privacy.accounting import DPSGDAccountant

    privacy = provenance.get("privacy") or {}
    if not privacy.get("private"):
        return None
    mechanisms = privacy.get("mechanisms") or []
    if len(mechanisms) != 1 or mechanisms[0].get("name") != "dpsgd":
        raise FreekdError(
            "the queries' teacher has a privacy record freekd cannot compose "
            f"({[m.get('name') for m in mechanisms]}); only one DP-SGD run is supported"
        )
    record = mechanisms[0]
    return DPSGDAccountant(
        sample_rate=float(record["sample_rate"]),
        noise_multiplier=float(record["noise_multiplier"]),
        steps=int(record["steps"]),
    )


def _release_label_privacy(
    config: PateLabelConfig,
    mechanism: Any,
    ensemble: Any,
    pool: ImageDataset,
    labeler: Any,
    by_teachers: Any,
    prior: Any,
    options: RunOptions,
) -> dict[str, Any]:
    """The smooth-sensitivity release of a labelling run's data-dependent ε.

    The votes of the asked queries are computed again (in memory only: they are private); with
    a resumed run that covers the queries of earlier sessions too. The order is the best one of
    the composed data-dependent curve unless ``sanitize_order`` fixes it.
    """
    import numpy as np
    from rich.progress import Progress as RichProgress

    from freekd.privacy.rdp import epsilon_from_rdp

    asked = labeler.queries
    report = labeler.privacy_report()
    order = config.sanitize_order
    if order is None:
        _, order = epsilon_from_rdp(
            np.asarray(report["data_dependent_rdp"]), report["orders"], delta=config.delta
        )
    parameters = mechanism.parameters()
    chunks = []
    with RichProgress(disable=options.quiet, transient=True) as progress:
        task = progress.add_task("smooth sensitivity: votes", total=asked)
        for start in range(0, asked, 256):
            images = pool.batch(torch.arange(start, min(start + 256, asked))).images
            with torch.no_grad():
                chunks.append(ensemble.votes(images).cpu().numpy())
            progress.update(task, advance=len(images))
    votes = np.concatenate(chunks) if chunks else np.zeros((0, ensemble.num_classes))
    return _sanitized_release(
        votes,
        sigma=parameters["sigma"],
        delta=config.delta,
        teachers=int(votes[0].sum()) if len(votes) else 0,
        sigma_threshold=parameters.get("sigma_threshold"),
        threshold=parameters.get("threshold", 0.0),
        answered=np.asarray(by_teachers[:asked], dtype=bool),
        noise=config.sanitize_sigma,
        beta=config.sanitize_beta,
        order=order,
        seed=config.seed,
        prior=None
        if prior is None
        else lambda lam: float(dataclasses.replace(prior, orders=(lam,)).rdp()[0]),
    ) | {"order_from_data": config.sanitize_order is None}


def _read_label_folder(labels_path: Path, report_path: Path) -> tuple[dict[str, Any], Any, Any]:
    """``report.json`` and the (indices, labels) arrays of a ``pate label`` folder, checked:
    a damaged file fails in one line instead of a traceback."""
    import json

    import numpy as np

    fix = "give the --out folder of `freekd pate label` as it was written"
    try:
        report = json.loads(report_path.read_text(encoding="utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as error:
        raise FreekdError(f"{report_path} is not a JSON report ({_short(error)}); {fix}") from None
    queries = report.get("queries") if isinstance(report, dict) else None
    if (
        not isinstance(queries, dict)
        or not isinstance(queries.get("dataset"), str)
        or not isinstance(queries.get("holdout"), int)
        or not isinstance(report.get("privacy"), dict)
    ):
        raise FreekdError(f"{report_path} has no queries (dataset, holdout) and privacy; {fix}")
    try:
        with np.load(labels_path, allow_pickle=False) as data:
            indices, labels = data["indices"], data["labels"]
    except (KeyError, ValueError, OSError, EOFError, TypeError) as error:
        raise FreekdError(
            f"{labels_path} holds no integer arrays indices and labels ({_short(error)}); {fix}"
        ) from None
    if (
        indices.ndim != 1
        or labels.shape != indices.shape
        or indices.dtype.kind not in "iu"
        or labels.dtype.kind not in "iu"
    ):
        raise FreekdError(
            f"{labels_path}: indices {indices.shape} {indices.dtype} and labels {labels.shape} "
            f"{labels.dtype} must be 1-D integer arrays of one length; {fix}"
        )
    return report, indices, labels


@locks_run_folder
def run_pate_student(config: PateStudentConfig, options: RunOptions) -> dict[str, Any]:
    """``freekd pate student``: train a student on the answered queries; report its privacy.

    The student sees only public images and the released labels, so it inherits the labels'
    (ε, δ) as post-processing. It is evaluated on the pool's held-out part.
    """
    folder = Path(config.labels)
    labels_path, report_path = folder / LABELS_FILE, folder / "report.json"
    for path in (labels_path, report_path):
        if not path.exists():
            raise FreekdError(
                f"{path} does not exist; give the --out folder of `freekd pate label`"
            )
    label_report, indices, labels = _read_label_folder(labels_path, report_path)
    answered = labels >= 0
    if not answered.any():
        raise FreekdError(f"{labels_path} holds no answered query; label with a larger budget")
    queries = label_report["queries"]
    pool = _load_split(
        queries["dataset"], default_split="test", root=config.data_root, download=False
    )
    if len(indices) and not 0 <= int(indices.min()) <= int(indices.max()) < len(pool):
        raise FreekdError(
            f"{labels_path} names query {int(indices.max())} but {pool.name} holds {len(pool)} "
            "images; the labels belong to another query set"
        )
    train_set = ImageDataset(
        pool.images[torch.as_tensor(indices[answered])],
        torch.as_tensor(labels[answered]),
        list(pool.classes),
        f"{pool.name} (PATE-labelled)",
    )
    public = len(pool) - int(queries["holdout"])
    if queries.get("eval_dataset"):
        eval_set = _load_split(
            queries["eval_dataset"], default_split="test", root=config.data_root, download=False
        )
    else:
        eval_set = pool.subset(torch.arange(public, len(pool)))
    if config.semi_supervised not in SEMI_SUPERVISED:
        raise FreekdError(
            f"unknown semi_supervised {config.semi_supervised!r}; known: "
            f"{', '.join(SEMI_SUPERVISED)}"
        )
    vat = config.semi_supervised == "vat"
    params = dict(config.semi_supervised_kwargs)
    if vat:
        _check_params(VirtualAdversarial, params, what="semi_supervised vat")
    elif params:
        raise FreekdError("semi_supervised_kwargs needs semi_supervised: vat")
    dist, device = _setup(config.seed, config.trainer, options)
    student = _build_student(
        config.student,
        dict(config.student_kwargs),
        train_set=train_set,
        num_classes=pool.num_classes,
        mean=None,
        std=None,
    )
    privacy = _inherit_privacy(
        label_report["privacy"],
        "the student is post-processing of the released labels: it saw public images and "
        "noisy labels only",
    )
    if vat:
        if dist.enabled:
            raise FreekdError("semi_supervised vat runs in one process; use semi_supervised none")
        unlabelled = pool.subset(torch.arange(public))
        augment_name = resolve_augmentation(config.trainer.augment, pool.input_shape)
        method: Method = VirtualAdversarial(student, **params)
        source: BatchSource = SemiSupervisedSource(
            train_set,
            unlabelled,
            batch_size=config.trainer.batch_size,
            labelled_batch_size=config.labelled_batch_size,
            seed=config.seed,
            augment=None if augment_name == "none" else AUGMENTATIONS.get(augment_name),
        )
    else:
        method = Supervised(student)
        source = _loader_source(train_set, config.trainer, seed=config.seed, dist=dist)
    result = _run_loop(
        method,
        source,
        eval_set=eval_set,
        trainer_config=config.trainer,
        config=config,
        options=options,
        device=device,
        dist=dist,
        description=f"PATE student {config.student}",
        privacy=lambda state: privacy,
    )
    report = {
        "command": "pate student",
        "student": {
            "test_accuracy": result.state.metrics["eval_accuracy"],
            "arch": config.student,
            "parameters": count_parameters(student.net),
        },
        "trained_on": int(answered.sum()),
        "semi_supervised": {
            "method": config.semi_supervised,
            **(
                {
                    "unlabelled_images": public,
                    "source": f"{pool.name}, first {public:,} images (the query pool)",
                    "params": _resolved_params(VirtualAdversarial, params),
                }
                if vat
                else {}
            ),
        },
        "eval_dataset": queries.get("eval_dataset")
        or f"{pool.name} (last {queries['holdout']} images)",
        "queries_source": queries.get("source"),
        "privacy": privacy,
        **_common_report(config, result),
    }
    _finish(report, options, dist)
    return report


@locks_run_folder
def run_distill(config: DistillConfig, options: RunOptions) -> dict[str, Any]:
    """``freekd distill``: classic KD on real data; returns (and writes) ``report.json``."""
    method_class = METHODS.get(config.method.name)
    _check_params(method_class, config.method.params, what=f"method {config.method.name}")
    train_set, eval_set = _train_and_eval_sets(config)
    resolve_augmentation(config.trainer.augment, train_set.input_shape)
    teacher = load_teacher(config.teacher, trust_code=options.trust_code)
    check_input_shape(train_set, teacher.input_shape, who="the teacher")
    check_input_shape(eval_set, teacher.input_shape, who="the teacher")
    if train_set.num_classes != teacher.num_classes:
        raise FreekdError(
            f"{train_set.name} has {train_set.num_classes} classes but the teacher has "
            f"{teacher.num_classes}; distill on data with the teacher's classes"
        )
    dist, device = _setup(config.seed, config.trainer, options)
    teacher.to(device)
    teacher_accuracy = evaluate(teacher, eval_set, device=device)["accuracy"]
    student = _build_student(
        config.student,
        dict(config.student_kwargs),
        train_set=train_set,
        num_classes=teacher.num_classes,
        mean=None,
        std=None,
    )
    method = _build_method(method_class, student, teacher, config.method.name, config.method.params)
    result = _run_loop(
        method,
        _loader_source(train_set, config.trainer, seed=config.seed, dist=dist),
        eval_set=eval_set,
        trainer_config=config.trainer,
        config=config,
        options=options,
        device=device,
        dist=dist,
        description=f"distill {config.method.name} → {config.student}",
    )
    report = {
        "command": "distill",
        "teacher": _teacher_report(teacher, teacher_accuracy, config.teacher.path),
        "student": {
            "test_accuracy": result.state.metrics["eval_accuracy"],
            "arch": config.student,
            "parameters": count_parameters(student.net),
        },
        "method": {"name": config.method.name, "params": dict(config.method.params)},
        "dataset": train_set.name,
        "eval_dataset": eval_set.name,
        "test_n": len(eval_set),
        **_common_report(config, result),
    }
    _finish(report, options, dist)
    return report


# The shared constructor arguments are wired by the pipeline, never set from a config.
_WIRED = {"image_shape", "num_classes", "rng", "device"}


def _hyperparameters(cls: type) -> dict[str, Any]:
    """``cls``'s keyword-only hyperparameters with their defaults.

    A subclass whose ``__init__`` only changes some defaults and passes ``**kwargs`` on (e.g.
    ``ZSKT``) adds its base class's parameters, with its own defaults taking precedence.
    """
    import inspect

    found: dict[str, Any] = {}
    for klass in cls.__mro__:
        init = vars(klass).get("__init__")
        if init is None:
            continue
        parameters = inspect.signature(init).parameters.values()
        for p in parameters:
            if p.kind is inspect.Parameter.KEYWORD_ONLY and p.name not in _WIRED:
                found.setdefault(p.name, p.default)
        if not any(p.kind is inspect.Parameter.VAR_KEYWORD for p in parameters):
            break
    return found


def _resolved_params(cls: type, params: dict[str, Any]) -> dict[str, Any]:
    """Every hyperparameter a component ran with: its defaults, then ``params`` over them."""
    return {**_hyperparameters(cls), **params}


def _check_params(cls: type, params: dict[str, Any], *, what: str) -> None:
    """Bind ``params`` to ``cls``'s keyword-only hyperparameters before any work starts."""
    allowed = list(_hyperparameters(cls))
    unknown = sorted(set(params) - set(allowed))
    if unknown:
        raise FreekdError(
            f"{what} has no parameter {', '.join(map(repr, unknown))}; known: {', '.join(allowed)}"
        )


def run_eval(
    model: TeacherSourceConfig,
    dataset: str,
    *,
    data_root: str | None = None,
    device: str = "auto",
    batch_size: int = 512,
    trust_code: bool = False,
) -> dict[str, Any]:
    """``freekd eval``: accuracy of any loadable model (the four kinds of teacher file)."""
    data = load_dataset(dataset, default_split="test", root=Path(data_root) if data_root else None)
    loaded = load_teacher(model, trust_code=trust_code)
    check_input_shape(data, loaded.input_shape, who=f"model {model.path}")
    if data.num_classes > loaded.num_classes:
        raise FreekdError(
            f"{data.name} has {data.num_classes} classes but model {model.path} "
            f"has {loaded.num_classes}; evaluate on matching data"
        )
    torch_device = resolve_device(device)
    result = evaluate(loaded.to(torch_device), data, device=torch_device, batch_size=batch_size)
    return {
        "accuracy": result["accuracy"],
        "n": int(result["n"]),
        "loss": result["loss"],
        "dataset": data.name,
        "model": model.path,
    }


def describe_checkpoint(path: Path) -> dict[str, Any]:
    """``freekd info``: what a checkpoint holds (metadata, parameter count, embedded config).

    Every field is checked first, and the weights against their stored SHA-256:
    ``weights_checksum`` is ``"verified"``, or ``"none"`` for a file written before checksums.
    """
    from freekd.checkpoint import check_checkpoint, read_checkpoint, safe_torch_load
    from freekd.crossmodal.clip import FORMAT as CLIP_FORMAT
    from freekd.crossmodal.clip import check_clip_file
    from freekd.crossmodal.towers import FORMAT as TOWER_FORMAT
    from freekd.crossmodal.towers import check_tower_file

    raw = safe_torch_load(Path(path), what="checkpoint")
    if isinstance(raw, dict) and raw.get("format") in (CLIP_FORMAT, TOWER_FORMAT):
        check = check_clip_file if raw["format"] == CLIP_FORMAT else check_tower_file
        verified = check(raw, source=str(path))
        return {  # cross-modal files: a CLIP, or one encoder tower
            "format": raw["format"],
            "model": raw.get("model_config") or raw.get("tower"),
            "parameters": sum(int(v.numel()) for v in raw["state_dict"].values()),
            "weights_checksum": "verified" if verified else "none",
            "freekd_version": raw.get("freekd_version"),
            "config": raw.get("config") or {},
        }
    data = read_checkpoint(path)
    verified = check_checkpoint(data, source=str(path))
    parameters = sum(
        int(v.numel())
        for k, v in data["state_dict"].items()
        if not k.endswith(("running_mean", "running_var", "num_batches_tracked"))
    )
    return {
        "format": data["format"],
        "arch": data["arch"],
        "arch_kwargs": data["arch_kwargs"],
        "num_classes": data["num_classes"],
        "input": data["input"],
        "parameters": parameters,
        "weights_checksum": "verified" if verified else "none",
        "freekd_version": data.get("freekd_version"),
        "config": data.get("config") or {},
        "batchnorm_replacement": data.get("batchnorm_replacement"),
        "privacy": data.get("privacy"),
    }


@locks_run_folder
def run_demo(
    options: RunOptions,
    *,
    teacher_epochs: int = 4,
    student_epochs: int = 10,
    datafree_epochs: int = 10,
) -> dict[str, Any]:
    """``freekd demo``: an MNIST LeNet-5 teacher, then LeNet-5-half by KD and without data.

    The embedded default job of ``make demo``: no arguments, no data to fetch. Writes
    ``teacher/``, ``student/`` (KD on the real training set) and ``datafree/`` (the default
    synthesizer, the teacher file only; MNIST's test split is used only to report accuracy)
    run folders under ``options.out_dir`` and returns the three reports.
    """
    out = options.out_dir
    if out.exists() and has_run_content(out) and not options.overwrite:
        raise FreekdError(f"output folder {out} already exists; pass --overwrite or another --out")
    quiet = options.quiet
    teacher_config = TeacherTrainConfig(
        dataset="mnist", arch="lenet5", trainer=TrainerConfig(epochs=teacher_epochs)
    )
    teacher_report = run_teacher_train(
        teacher_config, RunOptions(out / "teacher", overwrite=options.overwrite, quiet=quiet)
    )
    distill_config = DistillConfig(
        teacher=TeacherSourceConfig(path=str(out / "teacher" / "model.pt")),
        student="lenet5-half",
        dataset="mnist",
        trainer=TrainerConfig(epochs=student_epochs),
    )
    student_report = run_distill(
        distill_config, RunOptions(out / "student", overwrite=options.overwrite, quiet=quiet)
    )
    datafree_config = DataFreeConfig(
        teacher=TeacherSourceConfig(path=str(out / "teacher" / "model.pt")),
        eval_dataset="mnist:test",
        trainer=dataclasses.replace(DataFreeConfig().trainer, epochs=datafree_epochs),
    )
    datafree_report = run_datafree(
        datafree_config, RunOptions(out / "datafree", overwrite=options.overwrite, quiet=quiet)
    )
    return {"teacher": teacher_report, "student": student_report, "datafree": datafree_report}


def _default_student(teacher: Teacher, requested: str | None) -> str:
    if requested:
        return requested
    arch = teacher.metadata.get("arch")
    if isinstance(arch, str) and arch in SMALLER_STUDENT:
        return SMALLER_STUDENT[arch]
    known = ", ".join(f"{t}→{s}" for t, s in sorted(SMALLER_STUDENT.items())[:4])
    raise FreekdError(
        f"no default student for a teacher of architecture {arch or 'unknown'}; pass --student "
        f"NAME (defaults exist for freekd families, e.g. {known})"
    )


def _inherited_privacy(teacher: Teacher, proxy_set: ImageDataset | None) -> dict[str, Any]:
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
    return _inherit_privacy(record, note, private=True, inherited_from=teacher.metadata.get("path"))


def _inherit_privacy(record: dict[str, Any], note: str, **fields: Any) -> dict[str, Any]:
    """``privacy.report.inherit``: a post-processed model's record, every figure and note kept."""
    from freekd.privacy.report import inherit

    return inherit(record, note, **fields)


def _with_figures(record: dict[str, Any]) -> dict[str, Any]:
    """``privacy.report.with_figures``: ``epsilons`` recomputed after a record gained a figure."""
    from freekd.privacy.report import with_figures

    return with_figures(record)


#: ``--method auto`` (the default): the synthesizer the data-free benchmark found best for the
#: teacher at hand (``experiments/datafree/README.md``).
AUTO_SYNTHESIZER = "auto"


def default_synthesizer(teacher: Teacher) -> str:
    """``cmi`` for a teacher with BatchNorm, ``zskt`` for one without.

    On the 15-CPU-minute benchmark, cmi (which inverts BatchNorm statistics) led on the
    Fashion-MNIST ResNet-8 teacher (58.06 % against fast 45.48 % and zskt 37.82 %, seed 0), and
    zskt led on the BatchNorm-free MNIST LeNet-5 (median 97.82 % with its smoothness prior),
    where cmi, fast and deepinversion cannot run.
    """
    return "cmi" if teacher.has_batchnorm else "zskt"


def _check_synthesizer_fits(name: str, synthesizer_class: Any, teacher: Teacher) -> None:
    if synthesizer_class.needs_batchnorm and not teacher.has_batchnorm:
        usable = [n for n in SYNTHESIZERS.names() if not SYNTHESIZERS.get(n).needs_batchnorm]
        raise FreekdError(
            f"--method {name} inverts BatchNorm statistics and this teacher has no BatchNorm "
            f"layers (DP-SGD teachers never do); use one of: {', '.join(usable)}"
        )


@locks_run_folder
def run_datafree(config: DataFreeConfig, options: RunOptions) -> dict[str, Any]:
    """``freekd datafree``: distill a student with synthetic inputs only; returns ``report.json``.

    Wiring: teacher → synthesizer (``--method``) → ``SyntheticSource`` (with collapse checks) →
    the one Trainer with the student-side method (``kd`` on unlabelled batches). With
    ``proxy_dataset`` (``--proxy-data``) the batches come instead from a ``LoaderSource`` over real
    images with their labels hidden: the baselines (unrelated proxy images, or the teacher's own
    training images as the upper bound) run in the same loop with the same student side. Real
    data, when ``--eval-data`` is given, is used only to report accuracy.
    """
    proxy = config.proxy_dataset
    if config.save_queries < 0 or (config.save_queries and proxy):
        raise FreekdError(
            "--save-queries needs a synthesizer and a count ≥ 0; --proxy-data synthesizes nothing"
            if proxy
            else f"--save-queries must be ≥ 0, got {config.save_queries}"
        )
    teacher = None
    if not proxy and config.synthesizer.name == AUTO_SYNTHESIZER:
        teacher = load_teacher(config.teacher, trust_code=options.trust_code)
        chosen = default_synthesizer(teacher)
        config = dataclasses.replace(
            config, synthesizer=dataclasses.replace(config.synthesizer, name=chosen)
        )
    synthesizer_class = None if proxy else SYNTHESIZERS.get(config.synthesizer.name)
    if synthesizer_class is not None:
        _check_params(
            synthesizer_class, config.synthesizer.params, what=f"--method {config.synthesizer.name}"
        )
    recommended = ComponentConfig(
        name=getattr(synthesizer_class, "recommended_method", "kd"),
        params=dict(getattr(synthesizer_class, "recommended_method_params", {"temperature": 4.0})),
    )
    method_config = config.method or recommended
    if method_config.name == AUTO_METHOD:  # the recommendation, with the given params over it
        method_config = ComponentConfig(
            name=recommended.name, params={**recommended.params, **method_config.params}
        )
    recommended_every: int = getattr(synthesizer_class, "recommended_synthesize_every", 1)
    synthesize_every = config.synthesize_every or recommended_every
    method_class = METHODS.get(method_config.name)
    _check_params(method_class, method_config.params, what=f"method {method_config.name}")
    teacher = teacher or load_teacher(config.teacher, trust_code=options.trust_code)
    proxy_set = None
    if proxy:
        if config.budget_images is not None:
            raise FreekdError(
                "an image budget counts synthesized images and --proxy-data synthesizes none; "
                "give a time budget (--budget 15m) or --epochs"
            )
        proxy_set = _load_split(
            proxy, default_split="train", root=config.data_root, download=config.download
        )
        check_input_shape(proxy_set, teacher.input_shape, who="the teacher")
    else:
        _check_synthesizer_fits(config.synthesizer.name, synthesizer_class, teacher)
    eval_set = None
    if config.eval_dataset:
        eval_set = _load_split(
            config.eval_dataset,
            default_split="test",
            root=config.data_root,
            download=config.download,
        )
        check_input_shape(eval_set, teacher.input_shape, who="the teacher")
        if eval_set.num_classes > teacher.num_classes:
            raise FreekdError(
                f"{eval_set.name} has {eval_set.num_classes} classes but the teacher has "
                f"{teacher.num_classes}; evaluate on data with the teacher's classes"
            )
    student_arch = _default_student(teacher, config.student)
    dist, device = _setup(config.seed, config.trainer, options)
    rng = torch.Generator().manual_seed(config.seed)
    teacher.to(device)
    teacher_accuracy = None
    if eval_set is not None:
        teacher_accuracy = evaluate(teacher, eval_set, device=device)["accuracy"]
    normalization = teacher.metadata.get("input", {})
    channels = teacher.input_shape[0]
    student = _build_student(
        student_arch,
        dict(config.student_kwargs),
        train_set=None,
        num_classes=teacher.num_classes,
        mean=list(normalization.get("mean", [0.5] * channels)),
        std=list(normalization.get("std", [0.5] * channels)),
        input_shape=teacher.input_shape,
    )
    method = _build_method(method_class, student, teacher, method_config.name, method_config.params)
    synthetic: SyntheticSource | None = None
    source: BatchSource
    if proxy_set is not None:
        # Exactly as many student steps per epoch as a data-free run: a small proxy set is
        # gone through several times per epoch rather than giving the baseline fewer steps.
        source = _loader_source(
            proxy_set,
            config.trainer,
            seed=config.seed,
            dist=dist,
            labelled=False,
            fixed_steps_per_epoch=config.steps_per_epoch,
        )
        description = f"proxy {proxy_set.name} → {student_arch}"
    else:
        assert synthesizer_class is not None
        try:
            synthesizer = synthesizer_class(
                image_shape=teacher.input_shape,
                num_classes=teacher.num_classes,
                rng=rng,
                device=device,
                **config.synthesizer.params,
            )
        except ValueError as error:  # a parameter out of range
            raise FreekdError(
                f"--method {config.synthesizer.name}: {error}; fix --set synthesizer.params"
            ) from None
        source = synthetic = _synthetic_source(
            config, synthesizer, teacher, student, synthesize_every=synthesize_every
        )
        description = f"datafree {config.synthesizer.name} → {student_arch}"
    inherited = _inherited_privacy(teacher, proxy_set)
    budget = StopOnBudget(
        minutes=config.budget_minutes,
        cpu_minutes=config.budget_cpu_minutes,
        images=config.budget_images,
        images_spent=None
        if synthetic is None
        else lambda: synthetic.synthesizer.images_synthesized,
    )
    result = _run_loop(
        method,
        source,
        eval_set=eval_set,
        trainer_config=config.trainer,
        config=config,
        options=options,
        device=device,
        dist=dist,
        description=description,
        extras=None if synthetic is None else {"source": synthetic},
        extra_callbacks=(budget,),
        extra_metrics=None if synthetic is None else synthetic.extra_metrics,
        # The inherited guarantee travels inside model.pt, so the student's own audits and
        # students see it; nothing is claimed for a proxy-data student.
        privacy=(lambda state: inherited) if inherited["private"] and proxy_set is None else None,
    )
    # The student's own KD steps query the teacher once per image as well.
    teacher_queries = result.state.step * config.trainer.batch_size
    report: dict[str, Any] = {
        "command": "datafree",
        "teacher": _teacher_report(teacher, teacher_accuracy, config.teacher.path),
        "student": {
            "test_accuracy": result.state.metrics.get("eval_accuracy"),
            "arch": student_arch,
            "parameters": count_parameters(student.net),
        },
        "student_method": {
            "name": method_config.name,
            "params": _resolved_params(method_class, dict(method_config.params)),
        },
        "stopped_by_budget": budget.reason,
        "eval_dataset": eval_set.name if eval_set is not None else None,
        "privacy": inherited,
        **_common_report(config, result),
    }
    if synthetic is None:
        assert proxy_set is not None
        report.update(
            method={"name": "proxy", "proxy_data": proxy},
            proxy_dataset=proxy_set.name,
            synthesize_every=None,
            synthesized_images=0,
            teacher_queries=teacher_queries,
            collapse=None,
        )
        order = torch.randperm(len(proxy_set), generator=torch.Generator().manual_seed(config.seed))
        shown = proxy_set.batch(order[: max(64, 16 * teacher.num_classes)]).images.to(device)
    else:
        collapse = synthetic.collapse_report()
        report.update(
            method={
                "name": config.synthesizer.name,
                "params": _resolved_params(synthesizer.__class__, dict(config.synthesizer.params)),
            },
            synthesize_every=synthesize_every,
            synthesized_images=synthetic.synthesizer.images_synthesized,
            teacher_queries=teacher_queries
            + synthetic.synthesizer.teacher_queries
            + synthetic.probe_queries,
            collapse=collapse,
        )
        if collapse["events"] and not collapse["recovered"]:
            logger.warning(
                "COLLAPSE NOT RECOVERED: the %s synthesizer collapsed and %d re-initializations "
                "did not fix it (last diversity %s, label balance %s); the student is suspect",
                config.synthesizer.name,
                collapse["recoveries"],
                collapse["last_diversity"],
                collapse["last_balance"],
            )
        shown = synthetic.synthesizer.sample(max(64, 16 * teacher.num_classes))
        if config.save_queries and dist.is_main:
            classes = (
                list(eval_set.classes)
                if eval_set is not None and eval_set.num_classes == teacher.num_classes
                else [str(k) for k in range(teacher.num_classes)]
            )
            report["queries_file"] = _save_queries(
                synthetic.synthesizer, teacher, classes, config.save_queries, options.out_dir
            )
    if dist.is_main:
        _draw_samples(shown, teacher, eval_set, options.out_dir / "samples.png")
    _finish(report, options, dist)
    return report


QUERIES_FILE = "queries.npz"


def _save_queries(
    synthesizer: Any, teacher: Teacher, classes: list[str], count: int, out: Path
) -> dict[str, Any]:
    """Write ``count`` synthesized images (uint8) and the teacher's classes to ``queries.npz``.

    The images are post-processing of the teacher alone, so they carry the teacher's privacy
    (``report.json["privacy"]`` of the same run), which ``freekd pate label`` composes with
    the PATE answers when it uses them as queries.
    """
    import numpy as np

    images, labels = [], []
    with torch.no_grad():
        for start in range(0, count, 256):
            batch = synthesizer.sample(min(256, count - start))
            images.append((batch.clamp(0, 1) * 255).round().to(torch.uint8).cpu())
            labels.append(teacher(batch).argmax(dim=1).cpu())
    x, y = torch.cat(images).numpy(), torch.cat(labels).numpy()
    atomic_write(
        out / QUERIES_FILE,
        lambda stream: np.savez(stream, x=x, y=y, classes=np.asarray(classes)),
    )
    shares = np.bincount(y, minlength=teacher.num_classes) / len(y)
    return {
        "path": QUERIES_FILE,
        "images": int(len(x)),
        "labels": "the teacher's classes (not ground truth)",
        "class_shares": [round(float(share), 4) for share in shares],
    }


def _build_method(
    method_class: Any, student: nn.Module, teacher: Teacher, name: str, params: dict[str, Any]
) -> Method:
    """``method_class(student, teacher, **params)``, a parameter out of range a one-line error."""
    try:
        return method_class(student, teacher, **params)  # type: ignore[no-any-return]
    except ValueError as error:
        raise FreekdError(f"method {name}: {error}; fix --set method.params") from None


def _synthetic_source(
    config: DataFreeConfig,
    synthesizer: Any,
    teacher: Teacher,
    student: nn.Module,
    *,
    synthesize_every: int,
) -> SyntheticSource:
    collapse = config.collapse
    monitor = None
    if collapse.enabled:
        try:
            monitor = CollapseMonitor(
                diversity_threshold=collapse.diversity_threshold,
                balance_threshold=collapse.balance_threshold,
                patience=collapse.patience,
                discrepancy_factor=_discrepancy_factor(collapse, synthesizer),
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
    )


def _discrepancy_factor(collapse: CollapseConfig, synthesizer: Any) -> float:
    """``collapse.discrepancy_factor``, or the synthesizer's recommendation when it is unset."""
    if collapse.discrepancy_factor is not None:
        return collapse.discrepancy_factor
    return float(getattr(type(synthesizer), "recommended_discrepancy_factor", 0.0))


def _draw_samples(
    images: torch.Tensor, teacher: Teacher, eval_set: ImageDataset | None, path: Path
) -> None:
    """``samples.png``: a labelled grid of the student's inputs per teacher class."""
    from freekd.plots import plot_samples_by_class

    with torch.no_grad():
        labels = teacher(images).argmax(dim=1).cpu()
    names = (
        list(eval_set.classes)
        if eval_set is not None and eval_set.num_classes == teacher.num_classes
        else [f"class {k}" for k in range(teacher.num_classes)]
    )
    try:
        plot_samples_by_class(images.cpu(), labels, names, path)
    except (OSError, ValueError) as error:  # a picture must never fail a finished run
        logger.warning("could not draw samples.png: %s", error)


def _load_array(path: Path, what: str) -> Any:
    """One array from a ``.npy`` file, or from a ``.npz`` holding one array (or one named
    ``what``); a one-line error for anything else (text, an empty file, pickled objects)."""
    import numpy as np

    path = Path(path)
    fix = "save it with numpy.save"
    if not path.is_file():
        raise FreekdError(f"{what} file {path} does not exist; check the path")
    try:
        # allow_pickle=False: a .npy of objects would unpickle code.
        loaded = np.load(path, allow_pickle=False)
    except (ValueError, OSError, EOFError) as error:  # an empty file raises EOFError
        with path.open("rb") as stream:
            magic = stream.read(6)
        reason = (
            f"{error}".splitlines()[0][:120]
            if magic == b"\x93NUMPY"
            else "not a .npy file: no NUMPY header"
        )
        raise FreekdError(
            f"{what} file {path} is not a numeric .npy array ({reason}); {fix}"
        ) from None
    if not isinstance(loaded, np.lib.npyio.NpzFile):
        return loaded
    with loaded:
        names = list(loaded.files)
        if len(names) != 1 and what not in names:
            raise FreekdError(
                f"{what} file {path} holds arrays {names[:5]}; give a .npy file, or a .npz with "
                f"one array or one named {what!r}"
            )
        try:
            return loaded[what if what in names else names[0]]
        except (ValueError, OSError, EOFError) as error:
            raise FreekdError(
                f"{what} file {path} is not a numeric .npy array ({_short(error)}); {fix}"
            ) from None


def _short(error: BaseException) -> str:
    lines = [line.strip() for line in str(error).splitlines() if line.strip()]
    return lines[0][:120] if lines else type(error).__name__


def run_privacy_pate(
    votes_path: Path,
    *,
    sigma: float,
    delta: float,
    sigma_threshold: float | None = None,
    threshold: float | None = None,
    answered_path: Path | None = None,
    orders: list[float] | None = None,
    sanitize: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """``freekd privacy pate``: the (ε, δ) of answering queries with these teacher votes.

    ``sanitize`` (keys ``noise`` (σ_s), ``beta``, ``order``, ``seed``; ``None`` values take the
    defaults) adds the smooth-sensitivity release of the data-dependent ε as ``sanitized``.
    """
    import numpy as np

    from freekd.privacy.rdp import DEFAULT_ORDERS
    from freekd.privacy.report import pate_privacy

    votes = _load_array(votes_path, "votes")
    if votes.ndim != 2 or votes.shape[0] < 1 or votes.shape[1] < 2:
        raise FreekdError(
            f"votes in {votes_path} have shape {tuple(votes.shape)}; expected (N queries, K ≥ 2 "
            "classes) of vote counts"
        )
    real = np.issubdtype(votes.dtype, np.integer) or np.issubdtype(votes.dtype, np.floating)
    if not real or not np.all(np.isfinite(votes)):
        raise FreekdError(f"votes in {votes_path} must be finite numbers, got {votes.dtype}")
    if np.any(votes < 0) or np.any(votes != np.round(votes)):
        raise FreekdError(f"votes in {votes_path} must be non-negative whole counts")
    if (sigma_threshold is None) != (threshold is None):
        raise FreekdError("Confident-GNMax needs both --sigma1 and --threshold (or neither)")
    answered = None
    if answered_path is not None:
        answered = _load_array(answered_path, "answered")
        if answered.shape != (votes.shape[0],):
            raise FreekdError(
                f"--answered has shape {tuple(answered.shape)}; expected ({votes.shape[0]},), "
                "one flag per query in --votes"
            )
        if answered.dtype != np.bool_ and not (
            np.issubdtype(answered.dtype, np.number) and np.isin(answered, (0, 1)).all()
        ):
            raise FreekdError(
                f"--answered in {answered_path} must hold booleans (or 0/1), got {answered.dtype}"
            )
        answered = answered.astype(bool)
        if sigma_threshold is None and not np.all(answered):
            raise FreekdError("plain GNMax answers every query; give --sigma1 and --threshold")
    for name, value in (("--sigma2", sigma), ("--sigma1", sigma_threshold)):
        if value is not None and not value > 0:
            raise FreekdError(f"{name} must be positive, got {value}")
    if not 0 < delta < 1:
        raise FreekdError(f"--delta must lie in (0, 1), got {delta}")
    if orders is not None and any(order <= 1 for order in orders):
        raise FreekdError("Rényi --orders must all be greater than 1")
    result = pate_privacy(
        votes,
        sigma=sigma,
        delta=delta,
        sigma_threshold=sigma_threshold,
        threshold=threshold or 0.0,
        answered=answered,
        orders=tuple(orders) if orders else DEFAULT_ORDERS,
    )
    if sanitize is not None:
        teachers = votes.sum(axis=1)
        if not np.all(teachers == teachers[0]):
            raise FreekdError(
                f"--sanitize needs every query voted on by the same number of teachers; the rows "
                f"of {votes_path} sum to {int(teachers.min())}…{int(teachers.max())}"
            )
        result["sanitized"] = _sanitized_release(
            votes,
            sigma=sigma,
            delta=delta,
            teachers=int(teachers[0]),
            sigma_threshold=sigma_threshold,
            threshold=threshold or 0.0,
            answered=answered,
            **sanitize,
        )
        result = _with_figures(result)
    return result


def _sanitized_release(
    votes: Any,
    *,
    noise: float | None,
    beta: float | None,
    order: float | None,
    seed: int,
    **arguments: Any,
) -> dict[str, Any]:
    """``privacy.smooth.sanitized_release`` with None meaning its default, errors as one line."""
    from freekd.privacy.smooth import DEFAULT_SIGMA, sanitized_release

    noise = DEFAULT_SIGMA if noise is None else noise
    if not noise > 0 or (beta is not None and not beta > 0):
        raise FreekdError(f"the smooth-sensitivity σ_s and β must be positive, got {noise}, {beta}")
    if order is not None and not order > 1:
        raise FreekdError(f"the smooth-sensitivity order must exceed 1, got {order}")
    try:
        return sanitized_release(votes, noise=noise, beta=beta, order=order, seed=seed, **arguments)
    except ValueError as error:
        raise FreekdError(f"smooth-sensitivity release: {error}") from None


def run_privacy_dpsgd(
    *, sample_rate: float, noise_multiplier: float, steps: int, delta: float
) -> dict[str, Any]:
    """``freekd privacy dpsgd``: the (ε, δ) of a DP-SGD run (Opacus' RDP analysis)."""
    from freekd.privacy.report import dpsgd_privacy

    if not 0 < sample_rate <= 1:
        raise FreekdError(f"--sample-rate must lie in (0, 1], got {sample_rate}")
    if not noise_multiplier > 0:
        raise FreekdError(f"--noise-multiplier must be positive, got {noise_multiplier}")
    if steps < 0:
        raise FreekdError(f"--steps must be ≥ 0, got {steps}")
    if not 0 < delta < 1:
        raise FreekdError(f"--delta must lie in (0, 1), got {delta}")
    return dpsgd_privacy(
        sample_rate=sample_rate, noise_multiplier=noise_multiplier, steps=steps, delta=delta
    )


# ---------------------------------------------------------------------------------------------
# Privacy audits: membership inference and the one-run ε lower bound (freekd.audit).

#: The scores the ε lower bound uses by default with shadow models. Offline LiRA with a fixed
#: variance needs no IN models and no per-example variance, so it stays calibrated with few
#: shadow models and with targets trained differently from them (students), where the online
#: per-example fit was the weakest attack on the tiny test pool (AUC 0.53 against 0.73).
AUTO_BOUND_ATTACK = "lira-offline-fixed-variance"

AUDIT_FILES = ("report.json", "summary.txt", "roc.png", "shadows.npz", "scores.npz", "config.yaml")


@dataclass(frozen=True)
class _AuditPool:
    """Members then non-members, as one dataset, with the membership of each example."""

    data: ImageDataset
    is_member: torch.Tensor
    members_name: str
    non_members_name: str


def _audit_pool(config: Any, teacher: Teacher) -> _AuditPool:
    """Members and non-members as one pool in a seeded random order, blind to membership.

    The order matters for the ε lower bound: with members first, batch-size-dependent rounding
    of the outputs would differ between the two sides and could be mistaken for leakage.
    ``max_examples`` keeps a random part of the pool chosen without looking at membership, so
    the members stay an independent coin-flip choice when they were one.
    """
    root = Path(config.data_root) if config.data_root else None
    sides: list[ImageDataset] = []
    for spec, what in ((config.members, "--members"), (config.non_members, "--non-members")):
        if not spec:
            raise FreekdError(f"{what} is required: a dataset spec (mnist:test, a .npz file ...)")
        data = load_dataset(spec, default_split="train", root=root)
        check_input_shape(data, teacher.input_shape, who=f"the audited model ({what})")
        if int(data.labels.max()) >= teacher.num_classes:
            raise FreekdError(
                f"{what} {data.name} has labels up to {int(data.labels.max())}, but the model has "
                f"{teacher.num_classes} classes; audit it on data of its own classes"
            )
        sides.append(data)
    members, non_members = sides
    if len(members.classes) == len(non_members.classes) and members.classes != non_members.classes:
        raise FreekdError(
            f"--members and --non-members name their classes differently ({members.classes[:3]} "
            f"… against {non_members.classes[:3]} …); give both in the model's class order"
        )
    both_uint8 = members.images.dtype == non_members.images.dtype == torch.uint8
    images = [side.images if both_uint8 else _as_float(side.images) for side in sides]
    is_member = torch.cat(
        [
            torch.ones(len(members), dtype=torch.bool),
            torch.zeros(len(non_members), dtype=torch.bool),
        ]
    )
    order = torch.randperm(len(is_member), generator=_seeded(config.seed, 21))
    if config.max_examples is not None:
        if config.max_examples < 2:
            raise FreekdError(f"max_examples must be at least 2, got {config.max_examples}")
        order = order[: config.max_examples]
    is_member = is_member[order]
    if bool(is_member.all()) or not bool(is_member.any()):
        raise FreekdError("the audit needs members and non-members; raise max_examples")
    classes = (
        members.classes if len(members.classes) >= len(non_members.classes) else non_members.classes
    )
    pool = ImageDataset(
        torch.cat(images)[order],
        torch.cat([members.labels, non_members.labels])[order],
        list(classes),
        f"{members.name} + {non_members.name}",
    )
    return _AuditPool(pool, is_member, members.name, non_members.name)


def _as_float(images: torch.Tensor) -> torch.Tensor:
    """Floating images in [0, 1] (uint8 pixels divided by 255)."""
    return images.float() / 255.0 if images.dtype == torch.uint8 else images


def _seeded(seed: int, *keys: int) -> torch.Generator:
    from freekd.train.sources import seeded_generator

    return seeded_generator(seed, *keys)


def _pool_logits(model: nn.Module, data: ImageDataset, device: torch.device) -> torch.Tensor:
    """Logits of ``model`` on every example of ``data``, in order (no gradients, eval mode)."""
    chunks = []
    model.eval()
    with torch.no_grad():
        for start in range(0, len(data), 512):
            images = data.batch(torch.arange(start, min(start + 512, len(data)))).images
            chunks.append(model(images.to(device)).float().cpu())
    return torch.cat(chunks, dim=-2)


def _claimed_privacy(config: Any, teacher: Teacher) -> dict[str, Any]:
    """The (ε, δ) the audited model claims, and which figure of its record that is.

    A PATE record's budgeted ε may be the data-dependent one, which is not a DP guarantee on
    its own; the audit compares with the record's guarantee (``privacy.report.guarantee``:
    the data-independent ε, or a sanitized ε that is one), and only a record without any
    guarantee (an old file) with its ``epsilon``, whose kind the report then names.
    """
    from freekd.privacy.report import guarantee

    record = teacher.metadata.get("privacy") or {}
    epsilon, kind = config.accountant_epsilon, "given"
    if epsilon is None and record:
        figure = guarantee(record)
        if figure is not None:
            epsilon, kind = figure["epsilon"], figure["kind"]
        else:
            epsilon, kind = record.get("epsilon"), record.get("kind", "accountant")
    delta = config.delta if config.delta is not None else record.get("delta")
    delta = 1e-5 if delta is None else delta
    return {
        "epsilon": None if epsilon is None else float(epsilon),
        "delta": float(delta),
        "kind": kind if epsilon is not None else None,
        "record": {k: v for k, v in record.items() if not k.endswith("_rdp") and k != "orders"},
    }


def _shadow_recipe(config: Any, teacher: Teacher) -> tuple[str, dict[str, Any], TrainerConfig, str]:
    """(arch, arch_kwargs, trainer settings, where they came from) of the shadow models."""
    shadow = config.shadow
    if shadow.recipe not in ("target", "config"):
        raise FreekdError(f"unknown shadow.recipe {shadow.recipe!r}; use target or config")
    if shadow.recipe == "config":
        if not shadow.arch:
            raise FreekdError(
                "shadow.recipe=config needs shadow.arch; e.g. --set shadow.arch=lenet5"
            )
        return shadow.arch, dict(shadow.arch_kwargs), shadow.trainer, "shadow config"
    arch = teacher.metadata.get("arch")
    if not arch:
        raise FreekdError(
            f"the audited model ({teacher.description}) names no architecture for its shadow "
            "models; pass --set shadow.recipe=config --set shadow.arch=NAME"
        )
    saved = _saved_config(Path(config.model.path))
    # A supervised training run (freekd teacher train) is the only recipe that fits training
    # on the pool; a distillation run's trainer settings belong to its own data.
    if {"arch", "trainer", "dp", "label_smoothing"} <= set(saved):
        from freekd.config import from_dict

        trainer = from_dict(TrainerConfig, dict(saved["trainer"]))
        trainer = dataclasses.replace(trainer, eval_every=0, device=shadow.trainer.device)
        return (
            arch,
            dict(teacher.metadata.get("arch_kwargs") or {}),
            trainer,
            "target's training run",
        )
    return arch, dict(teacher.metadata.get("arch_kwargs") or {}), shadow.trainer, "shadow config"


def _saved_config(path: Path) -> dict[str, Any]:
    """The resolved config inside a freekd checkpoint; empty for any other model file."""
    from freekd.checkpoint import read_checkpoint

    try:
        saved = read_checkpoint(path).get("config")
    except FreekdError:
        return {}
    return saved if isinstance(saved, dict) else {}


def _train_shadow_models(
    config: Any, teacher: Teacher, pool: _AuditPool, options: RunOptions, device: torch.device
) -> tuple[torch.Tensor, torch.Tensor, dict[str, Any]]:
    """Train ``shadow.models`` models on complementary random halves of the pool in one loop.

    Returns their (M, N, K) logits on the pool, the (M, N) inclusion design and a report.
    """
    from freekd.audit.shadows import inclusion_design, subsets_of
    from freekd.methods import EnsembleSupervised
    from freekd.teachers.ensemble import StackedTeacherEnsemble, TeacherEnsemble, save_ensemble
    from freekd.train import SubsetSource

    shadow = config.shadow
    if shadow.execution not in ("loop", "vmap"):
        raise FreekdError(f"unknown shadow.execution {shadow.execution!r}; use loop or vmap")
    arch, arch_kwargs, trainer_config, recipe_from = _shadow_recipe(config, teacher)
    design = inclusion_design(shadow.models, len(pool.data), generator=_seeded(config.seed, 7))
    augment_name = resolve_augmentation(trainer_config.augment, pool.data.input_shape)
    source = SubsetSource(
        pool.data,
        subsets_of(design),
        batch_size=trainer_config.batch_size,
        seed=config.seed,
        augment=None if augment_name == "none" else AUGMENTATIONS.get(augment_name),
        what="shadow models",
    )
    mean = teacher.metadata.get("input", {}).get("mean")
    std = teacher.metadata.get("input", {}).get("std")
    torch.manual_seed(config.seed)
    members = [
        _build_student(
            arch,
            arch_kwargs,
            train_set=pool.data,
            num_classes=teacher.num_classes,
            mean=mean,
            std=std,
        )
        for _ in range(shadow.models)
    ]
    ensemble = (
        StackedTeacherEnsemble(members) if shadow.execution == "vmap" else TeacherEnsemble(members)
    )
    shadow_dir = options.out_dir / "shadows"
    shadow_options = RunOptions(
        shadow_dir,
        overwrite=True,
        resume=options.resume and (shadow_dir / RESUME_FILE).exists(),
        quiet=options.quiet,
    )
    if shadow_options.resume:
        shadow_options = dataclasses.replace(shadow_options, overwrite=False)
    resolved_config = dataclasses.replace(
        config, shadow=dataclasses.replace(shadow, trainer=trainer_config)
    )

    def save(module: nn.Module, resolved: dict[str, Any]) -> None:
        save_ensemble(
            shadow_dir / "shadows.pt",
            module,  # type: ignore[arg-type]
            config=resolved,
            shards={
                "design": "complementary random halves of the audit pool",
                "pool": len(pool.data),
            },
        )

    result = _run_loop(
        EnsembleSupervised(ensemble),
        source,
        eval_set=None,
        trainer_config=trainer_config,
        config=resolved_config,
        options=shadow_options,
        device=device,
        dist=DistInfo(),
        description=f"{shadow.models} shadow models {arch}",
        save=save,
    )
    logits = _pool_logits(ensemble, pool.data, device)
    shadow_accuracy = (logits.argmax(-1) == pool.data.labels).float()
    report = {
        "models": shadow.models,
        "arch": arch,
        "recipe": recipe_from,
        "execution": shadow.execution,
        "train_size": int(design.sum(dim=1)[0]),
        "epochs": trainer_config.epochs,
        "wall_seconds": round(result.wall_seconds, 3),
        "cpu_seconds": round(result.cpu_seconds, 3),
        "train_accuracy": round(float(shadow_accuracy[design].mean()), 6),
        "held_out_accuracy": round(float(shadow_accuracy[~design].mean()), 6),
    }
    return logits, design, report


def _build_attack(name: str, attack_params: dict[str, Any]) -> Any:
    from freekd.audit import ATTACKS

    cls = ATTACKS.get(name)
    params = dict(attack_params.get(name) or {})
    _check_params(cls, params, what=f"attack {name}")
    return cls(**params)


@locks_run_folder
def run_audit(config: Any, options: RunOptions) -> dict[str, Any]:
    """``freekd audit``: every attack against one model, ROC curves and the ε lower bound.

    Writes ``report.json`` (``attacks``: per attack ``auc``, ``tpr_at_fpr``,
    ``balanced_accuracy``, ``advantage``; ``epsilon_lower_bound``), ``roc.png``,
    ``summary.txt`` and, when shadow models are trained, ``shadows.npz`` and ``shadows/``.
    """
    from freekd.audit import ATTACKS, DEFAULT_ATTACKS, AuditData, attack_metrics, one_run_audit
    from freekd.audit.metrics import roc_curve
    from freekd.audit.shadows import (
        SHADOWS_FILE,
        load_shadow_outputs,
        pool_fingerprint,
        save_shadow_outputs,
    )
    from freekd.plots import plot_roc

    wall_start, cpu_start = time.perf_counter(), time.process_time()
    if options.resume:
        # An audit resumes from its saved shadow outputs or its shadow models' checkpoint.
        if not (options.out_dir / "config.yaml").exists():
            raise FreekdError(f"nothing to resume in {options.out_dir}; run without --resume")
    else:
        prepare_run_dir(options)
    if options.overwrite:
        for name in AUDIT_FILES:
            (options.out_dir / name).unlink(missing_ok=True)
    seed_everything(config.seed)
    device = resolve_device(config.shadow.trainer.device, DistInfo())
    if not config.model.path:
        raise FreekdError("--model is required: the checkpoint to audit")
    if not 0.0 < config.confidence < 1.0:
        raise FreekdError(f"confidence must lie in (0, 1), got {config.confidence}")
    reuse = config.shadow.reuse
    with_shadows = config.shadow.models > 0 or reuse is not None
    names = list(config.attacks) or [
        name for name in DEFAULT_ATTACKS if with_shadows or not ATTACKS.get(name).needs_shadows
    ]
    unused = sorted(set(config.attack_params) - set(ATTACKS.names()))
    if unused:
        raise FreekdError(
            f"attack_params names unknown attack {unused[0]!r}; known: {', '.join(ATTACKS.names())}"
        )
    attacks = {name: _build_attack(name, config.attack_params) for name in names}
    bound_attack = config.bound_attack
    if bound_attack == "auto":
        bound_attack = AUTO_BOUND_ATTACK if with_shadows else "loss"
    if bound_attack not in attacks:
        attacks[bound_attack] = _build_attack(bound_attack, config.attack_params)
    needing = [name for name, attack in attacks.items() if attack.needs_shadows]
    if needing and not with_shadows:
        raise FreekdError(
            f"{', '.join(needing)} need shadow models; pass --shadow-models N (N ≥ 4) or drop them"
        )
    teacher = load_teacher(config.model, device=device, trust_code=options.trust_code)
    pool = _audit_pool(config, teacher)
    options.out_dir.mkdir(parents=True, exist_ok=True)
    atomic_write_text(options.out_dir / "config.yaml", dump_yaml(config))
    target_logits = _pool_logits(teacher, pool.data, device)
    if not bool(torch.isfinite(target_logits).all()):
        bad = int((~torch.isfinite(target_logits)).any(dim=-1).sum())
        raise FreekdError(
            f"the audited model gives non-finite outputs on {bad} example(s); check the checkpoint"
        )
    shadow_logits = shadow_in = None
    shadow_report: dict[str, Any] | None = None
    if with_shadows:
        fingerprint = pool_fingerprint(
            pool.data.batch(torch.arange(len(pool.data))).images, pool.data.labels
        )
        saved = options.out_dir / SHADOWS_FILE
        if reuse is not None or (options.resume and saved.exists()):
            source_path = Path(reuse) / SHADOWS_FILE if reuse is not None else saved
            shadow_logits, shadow_in, arch = load_shadow_outputs(
                source_path, fingerprint=fingerprint
            )
            shadow_report = {
                "models": int(shadow_logits.shape[0]),
                "arch": arch,
                "reused_from": str(source_path),
            }
        else:
            shadow_logits, shadow_in, shadow_report = _train_shadow_models(
                config, teacher, pool, options, device
            )
        if not bool(torch.isfinite(shadow_logits).all()):
            raise FreekdError(
                "a shadow model gives non-finite outputs (it diverged); lower shadow.trainer.lr"
            )
        if tuple(shadow_logits.shape[1:]) != tuple(target_logits.shape):
            raise FreekdError(
                "the shadow outputs do not fit this model's classes; train new shadow models"
            )
        save_shadow_outputs(
            saved,
            logits=shadow_logits,
            included=shadow_in,
            fingerprint=fingerprint,
            arch=str(shadow_report["arch"]),
        )
    data = AuditData(target_logits, pool.data.labels, shadow_logits, shadow_in)
    is_member = pool.is_member.numpy()
    results: dict[str, Any] = {}
    curves: dict[str, Any] = {}
    all_scores: dict[str, Any] = {}
    for name, attack in attacks.items():
        scores = attack.scores(data)
        all_scores[name] = scores
        if name in names:
            results[name] = attack_metrics(scores, is_member) | {"paper": attack.paper}
            curves[name] = roc_curve(scores, is_member)
    bound_scores = all_scores[bound_attack]
    _save_scores(options.out_dir / "scores.npz", all_scores, is_member)
    claimed = _claimed_privacy(config, teacher)
    bound = one_run_audit(
        bound_scores,
        is_member,
        confidence=config.confidence,
        delta=claimed["delta"],
        sides=("both", "in", "out"),
    )
    bound |= {
        "attack": bound_attack,
        "accountant_epsilon": claimed["epsilon"],
        "accountant_kind": claimed["kind"],
        "assumption": "each pool example was a member independently with probability 1/2 "
        "(the canaries of Steinke, Nasr & Jagielski 2023)",
        "assumption_holds": bool(config.random_split),
    }
    if claimed["epsilon"] is not None:
        bound["consistent"] = bool(bound["epsilon"] <= claimed["epsilon"])
        if not bound["consistent"]:
            logger.warning(
                "PRIVACY BUG: the empirical ε lower bound %.3f exceeds the accountant's ε %.3f "
                "(%s)",
                bound["epsilon"],
                claimed["epsilon"],
                claimed["kind"],
            )
    plot_roc(
        curves,
        options.out_dir / "roc.png",
        title="membership inference: " + "/".join(Path(config.model.path).parts[-2:]),
    )
    accuracy = float((target_logits.argmax(-1) == pool.data.labels).float()[pool.is_member].mean())
    held_out = float((target_logits.argmax(-1) == pool.data.labels).float()[~pool.is_member].mean())
    report: dict[str, Any] = {
        "command": "audit",
        "model": {
            "path": config.model.path,
            "kind": teacher.description,
            "arch": teacher.metadata.get("arch"),
            "member_accuracy": round(accuracy, 6),
            "non_member_accuracy": round(held_out, 6),
            "privacy": claimed["record"] or None,
        },
        "members": {"dataset": pool.members_name, "n": int(pool.is_member.sum())},
        "non_members": {"dataset": pool.non_members_name, "n": int((~pool.is_member).sum())},
        # DESIGN.md's headline keys: the strongest attack's figures (every attack is in "attacks").
        **_strongest(results),
        "attacks": results,
        "epsilon_lower_bound": bound,
        "shadow_models": shadow_report,
        "wall_seconds": round(time.perf_counter() - wall_start, 3),
        "cpu_seconds": round(time.process_time() - cpu_start, 3),
        "seed": config.seed,
        "freekd_version": __version__,
    }
    summary = audit_summary(report)
    report["summary"] = summary
    atomic_write_text(options.out_dir / "summary.txt", summary + "\n")
    atomic_write_json(options.out_dir / "report.json", report)
    return report


def _strongest(results: dict[str, Any]) -> dict[str, Any]:
    """``strongest_attack`` (by AUC) with its ``auc`` and ``tpr_at_fpr``."""
    if not results:
        return {"strongest_attack": None, "auc": None, "tpr_at_fpr": None}
    name = max(results, key=lambda attack: results[attack]["auc"])
    return {
        "strongest_attack": name,
        "auc": results[name]["auc"],
        "tpr_at_fpr": results[name]["tpr_at_fpr"],
    }


def _save_scores(path: Path, scores: dict[str, Any], is_member: Any) -> None:
    """Every attack's per-example scores and the membership, for plots and later analysis."""
    import numpy as np

    atomic_write(path, lambda stream: np.savez(stream, is_member=is_member, **scores))


def audit_summary(report: dict[str, Any]) -> str:
    """The few lines of an audit a reviewer reads: leakage of the strongest attack, the bound."""
    attacks = report["attacks"]
    lines = [
        f"Audit of {report['model']['path']} ({report['model']['kind']}): "
        f"{report['members']['n']} members ({report['members']['dataset']}), "
        f"{report['non_members']['n']} non-members ({report['non_members']['dataset']}).",
        f"Accuracy on members {100 * report['model']['member_accuracy']:.2f} %, on non-members "
        f"{100 * report['model']['non_member_accuracy']:.2f} %.",
    ]
    if attacks:
        best_auc = max(attacks, key=lambda name: attacks[name]["auc"])
        best_low = max(attacks, key=lambda name: attacks[name]["tpr_at_fpr"]["0.001"])
        lines.append(
            f"Strongest attack by AUC: {best_auc}, AUC {attacks[best_auc]['auc']:.3f} "
            f"(0.5 = no leakage), advantage {attacks[best_auc]['advantage']:.3f}."
        )
        lines.append(
            f"At 0.1 % false positives: {best_low} finds "
            f"{100 * attacks[best_low]['tpr_at_fpr']['0.001']:.2f} % of members "
            "(0.1 % = chance)."
        )
    bound = report["epsilon_lower_bound"]
    text = (
        f"Empirical ε lower bound {bound['epsilon']:.3f} at {100 * bound['confidence']:g} % "
        f"confidence (δ = {bound['delta']:g}, {bound['attack']} scores, "
        f"{bound['canaries']} canaries)"
    )
    if bound.get("accountant_epsilon") is not None:
        verdict = "consistent" if bound.get("consistent") else "EXCEEDS IT: a privacy bug"
        kind = bound.get("accountant_kind") or "kind unknown"
        text += f"; the accountant's ε is {bound['accountant_epsilon']:.3f}, {kind} ({verdict})"
    else:
        text += "; the model claims no differential privacy"
    if not bound.get("assumption_holds"):
        text += " [valid only if the members were chosen at random from the pool]"
    lines.append(text + ".")
    return "\n".join(lines)


AUDIT_PATHS = ("kd", "datafree", "pate", "dpsgd-datafree")


def _save_npz(path: Path, data: ImageDataset) -> None:
    """``data`` as a ``.npz`` dataset file (uint8 pixels, labels, class names), atomically."""
    import numpy as np

    images = data.images
    pixels = (
        images
        if images.dtype == torch.uint8
        else (images.clamp(0, 1) * 255).round().to(torch.uint8)
    )

    def write(stream: Any) -> None:
        np.savez(
            stream,
            x=pixels.numpy(),
            y=data.labels.numpy(),
            classes=np.array(list(data.classes)),
        )

    atomic_write(path, write)


def _fingerprint(data: ImageDataset) -> str:
    from freekd.audit.shadows import pool_fingerprint

    return pool_fingerprint(_as_float(data.images), data.labels)


def _stage_done(folder: Path, options: RunOptions) -> bool:
    return options.resume and (folder / "report.json").exists()


def _read_report(folder: Path) -> dict[str, Any]:
    import json

    return json.loads((folder / "report.json").read_text())  # type: ignore[no-any-return]


@locks_run_folder
def run_audit_pipeline(config: Any, options: RunOptions) -> dict[str, Any]:
    """``freekd audit pipeline``: the distillation threat model of Jagielski et al. (2023).

    "Students Parrot Their Teachers: Membership Inference on Model Distillation" (NeurIPS 2023)
    shows that a student trained only on public data still leaks its teacher's private set.
    The members are the teacher's private training examples, drawn from a pool by fair coin
    flips (the canaries of the one-run ε lower bound); each path distills a student without
    the members; the teacher and every student are audited against the same members and
    non-members with the same shadow models. Stages write into ``OUT/<stage>/``; ``--resume``
    skips the finished ones.
    """
    from freekd.config import AuditConfig, AuditPipelineConfig

    assert isinstance(config, AuditPipelineConfig)
    unknown = [path for path in config.paths if path not in AUDIT_PATHS]
    if unknown:
        raise FreekdError(f"unknown path {unknown[0]!r}; known: {', '.join(AUDIT_PATHS)}")
    if config.pool < 4:
        raise FreekdError(f"--pool must hold at least 4 images, got {config.pool}")
    out = options.out_dir
    if not options.resume:
        prepare_run_dir(options)
    wall_start, cpu_start = time.perf_counter(), time.process_time()
    out.mkdir(parents=True, exist_ok=True)
    atomic_write_text(out / "config.yaml", dump_yaml(config))
    root = Path(config.data_root) if config.data_root else None
    train = load_dataset(f"{config.dataset}:train", root=root)
    test_spec = f"{config.dataset}:test"
    if config.pool + config.public > len(train):
        raise FreekdError(
            f"{config.dataset}:train has {len(train)} images, fewer than --pool {config.pool} + "
            f"public {config.public}; lower them"
        )
    order = torch.randperm(len(train), generator=_seeded(config.seed, 11))
    pool_index = order[: config.pool]
    coins = torch.rand(config.pool, generator=_seeded(config.seed, 12)) < 0.5
    if bool(coins.all()) or not bool(coins.any()):
        raise FreekdError("the membership coin flips gave one side no example; use a larger --pool")
    data_dir = out / "data"
    data_dir.mkdir(exist_ok=True)
    files = {
        "members": data_dir / "members.npz",
        "non_members": data_dir / "non_members.npz",
        "public": data_dir / "public.npz",
    }
    subsets = {
        "members": train.subset(pool_index[coins]),
        "non_members": train.subset(pool_index[~coins]),
        "public": train.subset(order[config.pool : config.pool + config.public]),
    }
    for key, subset in subsets.items():
        if options.resume and files[key].exists():
            # Finished stages are kept: they must have been trained on exactly these sets.
            saved = load_dataset(str(files[key]))
            if _fingerprint(saved) != _fingerprint(subset):
                raise FreekdError(
                    f"{files[key]} differs from what this config draws (another --seed, --pool "
                    "or dataset?); resume with the run's own settings or start a new --out"
                )
        else:
            _save_npz(files[key], subset)
    stage = lambda name: RunOptions(  # noqa: E731
        out / name, overwrite=True, quiet=options.quiet, trust_code=options.trust_code
    )
    seed = config.seed
    # Every trained model: name → (folder, test accuracy, path of model.pt).
    models: dict[str, tuple[str, float | None]] = {}

    def teacher_stage(name: str, teacher_config: TeacherTrainConfig) -> Path:
        folder = out / name
        if not _stage_done(folder, options):
            run_teacher_train(
                dataclasses.replace(
                    teacher_config, dataset=str(files["members"]), eval_dataset=test_spec,
                    data_root=config.data_root, seed=seed,
                ),
                stage(name),
            )  # fmt: skip
        models[name] = (str(folder / "model.pt"), _read_report(folder)["test_accuracy"])
        return folder / "model.pt"

    teacher_path = teacher_stage("teacher", config.teacher)
    source = TeacherSourceConfig(path=str(teacher_path))
    if "kd" in config.paths:
        folder = out / "student-kd"
        if not _stage_done(folder, options):
            run_distill(
                dataclasses.replace(
                    config.distill, teacher=source, dataset=str(files["public"]),
                    eval_dataset=test_spec, data_root=config.data_root, seed=seed,
                ),
                stage("student-kd"),
            )  # fmt: skip
        models["student-kd"] = (
            str(folder / "model.pt"),
            _read_report(folder)["student"]["test_accuracy"],
        )
    if "datafree" in config.paths:
        folder = out / "student-datafree"
        if not _stage_done(folder, options):
            run_datafree(
                dataclasses.replace(
                    config.datafree, teacher=source, eval_dataset=test_spec,
                    data_root=config.data_root, seed=seed,
                ),
                stage("student-datafree"),
            )  # fmt: skip
        models["student-datafree"] = (
            str(folder / "model.pt"),
            _read_report(folder)["student"]["test_accuracy"],
        )
    if "pate" in config.paths:
        folder = out / "student-pate"
        pate = config.pate
        teachers_dir, labels_dir = out / "pate-teachers", out / "pate-labels"
        if not _stage_done(teachers_dir, options):
            run_pate_teachers(
                dataclasses.replace(
                    pate.teachers, dataset=str(files["members"]), eval_dataset=test_spec,
                    data_root=config.data_root, seed=seed,
                ),
                stage("pate-teachers"),
            )  # fmt: skip
        if not _stage_done(labels_dir, options):
            run_pate_label(
                dataclasses.replace(
                    pate.label, teachers=str(teachers_dir / "teachers.pt"),
                    query_dataset=str(files["public"]), eval_dataset=test_spec,
                    data_root=config.data_root, seed=seed,
                ),
                # A ledger records privacy already spent: it is continued, never replaced.
                RunOptions(
                    labels_dir, resume=(labels_dir / LEDGER_FILE).exists(), quiet=options.quiet,
                    trust_code=options.trust_code,
                ),
            )  # fmt: skip
        if not _stage_done(folder, options):
            run_pate_student(
                dataclasses.replace(
                    pate.student, labels=str(labels_dir), data_root=config.data_root, seed=seed
                ),
                stage("student-pate"),
            )
        models["student-pate"] = (
            str(folder / "model.pt"),
            _read_report(folder)["student"]["test_accuracy"],
        )
    if "dpsgd-datafree" in config.paths:
        dp_path = teacher_stage("dp-teacher", config.dp_teacher)
        folder = out / "student-dpsgd-datafree"
        if not _stage_done(folder, options):
            run_datafree(
                dataclasses.replace(
                    config.datafree, teacher=TeacherSourceConfig(path=str(dp_path)),
                    eval_dataset=test_spec, data_root=config.data_root, seed=seed,
                ),
                stage("student-dpsgd-datafree"),
            )  # fmt: skip
        models["student-dpsgd-datafree"] = (
            str(folder / "model.pt"),
            _read_report(folder)["student"]["test_accuracy"],
        )
    audits: dict[str, dict[str, Any]] = {}
    shadow_source: str | None = config.audit.shadow.reuse
    for name, (path, _) in models.items():
        folder = out / "audit" / name
        if _stage_done(folder, options):
            audits[name] = _read_report(folder)
        else:
            audit_config = dataclasses.replace(
                config.audit,
                model=TeacherSourceConfig(path=path),
                members=str(files["members"]),
                non_members=str(files["non_members"]),
                data_root=config.data_root,
                random_split=True,
                seed=seed,
                shadow=dataclasses.replace(config.audit.shadow, reuse=shadow_source),
            )
            assert isinstance(audit_config, AuditConfig)
            audits[name] = run_audit(audit_config, stage(f"audit/{name}"))
        if shadow_source is None and config.audit.shadow.models > 0:
            shadow_source = str(folder)  # the teacher's shadow models serve every later audit
    table = [_audit_row(name, models[name][1], audits[name]) for name in models]
    curves = {}
    from freekd.plots import plot_roc

    for name, report in audits.items():
        attack = report["epsilon_lower_bound"]["attack"]
        curves[f"{name} ({attack})"] = _roc_of(out / "audit" / name, report, attack)
    plot_roc(curves, out / "roc.png", title="membership inference through distillation")
    report = {
        "command": "audit pipeline",
        "dataset": config.dataset,
        "pool": config.pool,
        "members": int(coins.sum()),
        "non_members": int((~coins).sum()),
        "public": config.public,
        "paths": list(config.paths),
        "table": table,
        "audits": {
            name: {k: v for k, v in audit.items() if k != "summary"}
            for name, audit in audits.items()
        },
        "wall_seconds": round(time.perf_counter() - wall_start, 3),
        "cpu_seconds": round(time.process_time() - cpu_start, 3),
        "seed": seed,
        "freekd_version": __version__,
    }
    atomic_write_json(out / "report.json", report)
    return report


def _roc_of(folder: Path, report: dict[str, Any], attack: str) -> tuple[Any, Any]:
    """The ROC of ``attack`` in an audit folder, recomputed from the saved scores."""
    import numpy as np

    with np.load(folder / "scores.npz", allow_pickle=False) as saved:
        from freekd.audit.metrics import roc_curve

        return roc_curve(np.array(saved[attack]), np.array(saved["is_member"]))


#: The LiRA variant of the pipeline table: Carlini et al. (2022, §4.2) recommend one shared
#: variance below about 64 shadow models, where per-example variances are too noisy.
TABLE_LIRA = "lira-online-fixed-variance"


def _audit_row(name: str, accuracy: float | None, report: dict[str, Any]) -> dict[str, Any]:
    attacks = report["attacks"]
    bound = report["epsilon_lower_bound"]
    lira = attacks.get(TABLE_LIRA)
    return {
        "model": name,
        "test_accuracy": accuracy,
        "member_accuracy": report["model"]["member_accuracy"],
        "non_member_accuracy": report["model"]["non_member_accuracy"],
        "auc": {attack: round(result["auc"], 4) for attack, result in attacks.items()},
        "best_auc": max(result["auc"] for result in attacks.values()),
        "tpr_at_fpr": {attack: result["tpr_at_fpr"] for attack, result in attacks.items()},
        "lira_attack": TABLE_LIRA,
        "lira_tpr_at_0.001": None if lira is None else lira["tpr_at_fpr"]["0.001"],
        "loss_tpr_at_0.001": attacks["loss"]["tpr_at_fpr"]["0.001"] if "loss" in attacks else None,
        "epsilon_lower_bound": bound["epsilon"],
        "bound_attack": bound["attack"],
        "accountant_epsilon": bound.get("accountant_epsilon"),
        "accountant_kind": bound.get("accountant_kind"),
        "consistent": bound.get("consistent"),
    }


# ---------------------------------------------------------------------------------------------
# Cross-modal distillation (freekd.crossmodal).


def _crossmodal_metrics(
    model: Any, pairs: Any, *, eval_size: int, seed: int, device: torch.device
) -> dict[str, Any]:
    """Zero-shot accuracy on all of ``pairs`` and retrieval recall on ``eval_size`` of them."""
    from freekd.crossmodal.data import class_prompts
    from freekd.crossmodal.evaluate import embed, retrieval, zero_shot_accuracy

    model.eval()
    images = pairs.images.batch(torch.arange(len(pairs.images))).images
    labels = pairs.images.labels
    image_features = embed(lambda x: model.encode_image(x.to(device)), images)
    prompts = class_prompts(pairs)
    zero_shot: float | None = None
    if pairs.labelled:
        tokens = model.tokenize([prompt for per_class in prompts for prompt in per_class])
        prompt_features = embed(lambda t: model.encode_text(t.to(device)), tokens)
        prompt_features = prompt_features.view(len(prompts), len(prompts[0]), -1)
        zero_shot = zero_shot_accuracy(image_features, prompt_features.cpu(), labels)
    count = min(eval_size, len(pairs.images))
    chosen = torch.randperm(len(pairs.images), generator=_seeded(seed, 31))[:count]
    captions = pairs.draw_captions(chosen, _seeded(seed, 32))
    text_features = embed(lambda t: model.encode_text(t.to(device)), model.tokenize(captions))
    recall = retrieval(image_features[chosen].cpu(), text_features.cpu(), labels[chosen])
    # A templated caption names a class and nothing else about its image, so there a retrieved
    # item is right when it shows (or names) the query's class; users' own captions describe
    # their image, so there only the exact pair counts. The mean of the two directions; each
    # direction and both kinds are under "retrieval".
    suffix = "_class" if pairs.templated else ""
    return {
        "zero_shot_accuracy": None if zero_shot is None else round(zero_shot, 6),
        **{
            f"recall_at_{k}": round(
                0.5
                * (
                    recall[f"image_to_text{suffix}"][str(k)]
                    + recall[f"text_to_image{suffix}"][str(k)]
                ),
                6,
            )
            for k in (1, 5, 10)
        },
        "recall_counts": "the query's class" if pairs.templated else "the exact pair",
        "chance": {
            "zero_shot_accuracy": round(1 / len(prompts), 6) if pairs.labelled else None,
            "recall_at_1": round(1 / len(prompts) if pairs.templated else 1 / count, 6),
        },
        "retrieval": recall,
        "retrieval_pairs": count,
        "zero_shot_images": len(pairs.images),
    }


def _draw_retrieval(
    model: Any, pairs: Any, out_path: Path, *, seed: int, device: torch.device, title: str
) -> None:
    """``retrieval.png``: six held-out captions and the five images the model ranks first
    among 500 held-out images (green: the right class, or the exact pair for users' captions)."""
    from freekd.crossmodal.evaluate import embed
    from freekd.plots import plot_retrieval

    model.eval()
    gallery = torch.randperm(len(pairs.images), generator=_seeded(seed, 51))[:500]
    images = pairs.images.batch(gallery).images
    labels = pairs.images.labels[gallery]
    image_features = embed(lambda x: model.encode_image(x.to(device)), images).cpu()
    picks = torch.arange(min(6, len(gallery)))
    queries = pairs.draw_captions(gallery[picks], _seeded(seed, 52))
    text_features = embed(lambda t: model.encode_text(t.to(device)), model.tokenize(queries)).cpu()
    ranked = (text_features @ image_features.T).topk(min(5, len(gallery)), dim=1).indices
    if pairs.templated:
        correct = labels[ranked] == labels[picks].unsqueeze(1)
    else:
        correct = ranked == picks.unsqueeze(1)
    plot_retrieval(queries, images, ranked, correct, out_path, title=title)


def _captions_report(pairs: Any) -> dict[str, Any]:
    if not pairs.templated:
        return {
            "templated": False,
            "labelled": pairs.labelled,
            "class_names": list(pairs.class_names) if pairs.labelled else None,
            "note": "the user's own captions (captions file)",
        }
    return {
        "templated": True,
        "templates": list(pairs.templates),
        "class_names": list(pairs.class_names),
        "note": "captions are templated from the class labels, not written by people",
    }


def _fit_clip(
    method: Method,
    pairs: Any,
    config: Any,
    options: RunOptions,
    *,
    device: torch.device,
    dist: DistInfo,
    description: str,
) -> _TrainResult:
    """Train ``method.student`` (a CLIP) on ``pairs`` in the one loop; ``model.pt`` is a
    ``freekd-clip/1`` checkpoint in ``options.out_dir``."""
    from freekd.crossmodal import save_clip

    def save(module: nn.Module, resolved: dict[str, Any]) -> None:
        save_clip(options.out_dir / "model.pt", module, config=resolved)  # type: ignore[arg-type]

    return _fit_pairs(
        method, pairs, config, options, tokenize=method.student.tokenize,  # type: ignore[arg-type]
        save=save, device=device, dist=dist, description=description,
    )  # fmt: skip


def _fit_pairs(
    method: Method,
    pairs: Any,
    config: Any,
    options: RunOptions,
    *,
    tokenize: Callable[[list[str]], torch.Tensor],
    save: Callable[[nn.Module, dict[str, Any]], None],
    device: torch.device,
    dist: DistInfo,
    description: str,
) -> _TrainResult:
    """Train ``method`` on ``pairs`` (captions turned into tensors by ``tokenize``) in the one
    loop; ``save(student, resolved_config)`` writes ``model.pt``."""
    from freekd.train import PairedSource

    def texts(indices: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
        return tokenize(pairs.draw_captions(indices, generator))

    source = PairedSource(
        pairs.images, texts, batch_size=config.trainer.batch_size, seed=config.seed
    )
    return _run_loop(
        method, source, eval_set=None, trainer_config=config.trainer, config=config,
        options=options, device=device, dist=dist, description=description, save=save,
    )  # fmt: skip


@locks_run_folder
def run_crossmodal_teacher(config: Any, options: RunOptions) -> dict[str, Any]:
    """``freekd crossmodal teacher``: a small open_clip CLIP trained with CLIP's loss on
    templated pairs, through the one Trainer; writes ``model.pt`` (``freekd-clip/1``)."""
    from freekd.crossmodal import ClipModel
    from freekd.crossmodal.methods import ClipContrastive

    pairs, eval_pairs, train_set = _paired_sets(config)
    dist, device = _setup(config.seed, config.trainer, options)
    if dist.enabled:
        raise FreekdError("freekd crossmodal runs in one process; start it without torchrun")
    mean, std = config.mean, config.std
    if mean is None or std is None:
        computed_mean, computed_std = dataset_statistics(train_set)
        channels = 3
        mean = mean or (computed_mean * channels if len(computed_mean) == 1 else computed_mean)
        std = std or (computed_std * channels if len(computed_std) == 1 else computed_std)
    model = ClipModel(dict(config.model), mean=list(mean), std=list(std))

    result = _fit_clip(
        ClipContrastive(model), pairs, config, options, device=device, dist=dist,
        description=f"CLIP on {train_set.name} pairs",
    )  # fmt: skip
    metrics = _crossmodal_metrics(
        model, eval_pairs, eval_size=config.eval_size, seed=config.seed, device=device
    )
    _draw_retrieval(
        model, eval_pairs, options.out_dir / "retrieval.png", seed=config.seed, device=device,
        title="text → image retrieval (teacher), held-out pairs",
    )  # fmt: skip
    report = {
        "command": "crossmodal teacher",
        "teacher": metrics | {"parameters": model.tower_parameters()},
        "pairs": train_set.name,
        "eval_pairs": eval_pairs.images.name,
        "captions": _captions_report(pairs),
        "model_config": dict(config.model),
        **_common_report(config, result),
    }
    _finish(report, options, dist)
    return report


def quarter_clip(teacher_config: dict[str, Any]) -> dict[str, Any]:
    """A student config about a quarter of the teacher's size (``crossmodal distill``'s default).

    The text tower's token table dominates a small CLIP (49,408 × width), so the text width is
    divided by 4, the image width and the embedding by 2; depth, patch size, image size and
    context length stay (the student must tokenize like the teacher).
    """
    vision = dict(teacher_config["vision_cfg"])
    text = dict(teacher_config["text_cfg"])
    vision["width"] = max(8, int(vision.get("width", 768)) // 2)
    if "head_width" in vision:
        vision["head_width"] = max(8, int(vision["head_width"]) // 2)
    text["width"] = max(8, int(text.get("width", 512)) // 4)
    heads = max(1, int(text.get("heads", 8)))
    while text["width"] % heads:
        heads -= 1
    text["heads"] = heads
    return {
        "embed_dim": max(8, int(teacher_config["embed_dim"]) // 2),
        "vision_cfg": vision,
        "text_cfg": text,
    }


def _paired_sets(config: Any) -> tuple[Any, Any, ImageDataset]:
    """Training and held-out pairs of a cross-modal config: users' own pairs (a folder with a
    captions file; without ``eval_pairs`` a seeded tenth is held out) or templated pairs."""
    from freekd.crossmodal import templated_pairs
    from freekd.crossmodal.data import is_pair_folder, load_caption_pairs, subset_pairs

    if is_pair_folder(config.pairs):
        pairs = load_caption_pairs(Path(config.pairs))
        if config.eval_pairs:
            eval_pairs = load_caption_pairs(Path(config.eval_pairs))
        else:
            if len(pairs) < 10:
                raise FreekdError(
                    f"{config.pairs} holds {len(pairs)} pairs; give at least 10 (a tenth is held "
                    "out) or pass --eval-pairs"
                )
            order = torch.randperm(len(pairs), generator=_seeded(config.seed, 41))
            held = max(1, len(pairs) // 10)
            pairs, eval_pairs = subset_pairs(pairs, order[held:]), subset_pairs(pairs, order[:held])
        eval_pairs.class_names = pairs.class_names
        return pairs, eval_pairs, pairs.images
    root = Path(config.data_root) if config.data_root else None
    train_set = load_dataset(config.pairs, default_split="train", root=root)
    eval_set = load_dataset(
        config.eval_pairs or _eval_spec(config.pairs, None), default_split="test", root=root
    )
    check_input_shape(eval_set, train_set.input_shape, who=f"pairs of {train_set.name}")
    family = None if config.captions == "auto" else config.captions
    pairs = templated_pairs(train_set, family=family)
    eval_pairs = templated_pairs(eval_set, family=family)
    eval_pairs.class_names = pairs.class_names
    return pairs, eval_pairs, train_set


@locks_run_folder
def run_crossmodal_distill(config: Any, options: RunOptions) -> dict[str, Any]:
    """``freekd crossmodal distill``: a CLIP student from a CLIP teacher on templated pairs, and
    (by default) the same student trained with CLIP's loss alone at the same budget, in
    ``OUT/baseline``; ``report.json`` holds ``teacher``, ``student`` and ``baseline``."""
    from freekd.crossmodal import ClipModel, load_clip
    from freekd.crossmodal.methods import CROSSMODAL_METHODS, ClipContrastive

    if not config.teacher:
        raise FreekdError(
            "--teacher is required: a CLIP checkpoint from freekd crossmodal teacher, an image "
            "classifier's model.pt, clip-image:PATH, clip-text:PATH or minilm"
        )
    if _one_tower_teacher(config.teacher):
        return _run_tower_distill(config, options)
    method_class = CROSSMODAL_METHODS.get(config.method.name)
    _check_params(method_class, dict(config.method.params), what=f"method {config.method.name}")
    pairs, eval_pairs, train_set = _paired_sets(config)
    dist, device = _setup(config.seed, config.trainer, options)
    if dist.enabled:
        raise FreekdError("freekd crossmodal runs in one process; start it without torchrun")
    teacher = load_clip(Path(config.teacher), device=device)
    student_config = dict(config.student) if config.student else quarter_clip(teacher.model_config)
    normalization = teacher.normalization

    def build() -> Any:
        torch.manual_seed(config.seed)
        return ClipModel(dict(student_config), **normalization)

    student = build()
    method = method_class(student, teacher, **dict(config.method.params))
    result = _fit_clip(
        method, pairs, config, options, device=device, dist=dist,
        description=f"{config.method.name} → student CLIP",
    )  # fmt: skip
    teacher_parameters = teacher.tower_parameters()

    def entry(model: Any, extra: dict[str, Any]) -> dict[str, Any]:
        parameters = model.tower_parameters()
        return (
            _crossmodal_metrics(
                model, eval_pairs, eval_size=config.eval_size, seed=config.seed, device=device
            )
            | {
                "parameters": parameters,
                "parameter_ratio": round(parameters["total"] / teacher_parameters["total"], 4),
            }
            | extra
        )

    _draw_retrieval(
        student, eval_pairs, options.out_dir / "retrieval.png", seed=config.seed, device=device,
        title=f"text → image retrieval (student, {config.method.name}), held-out pairs",
    )  # fmt: skip
    report: dict[str, Any] = {
        "command": "crossmodal distill",
        "teacher": entry(teacher, {"path": config.teacher}),
        "student": entry(student, {"method": config.method.name, "model_config": student_config}),
        "baseline": None,
        "pairs": train_set.name,
        "captions": _captions_report(pairs),
        **_common_report(config, result),
    }
    if config.baseline:
        baseline = build()
        baseline_options = RunOptions(
            options.out_dir / "baseline", overwrite=True, quiet=options.quiet
        )
        baseline_result = _fit_clip(
            ClipContrastive(baseline), pairs, config, baseline_options, device=device,
            dist=dist, description="baseline CLIP",
        )  # fmt: skip
        report["baseline"] = entry(
            baseline,
            {
                "method": "clip loss only (no teacher)",
                "wall_seconds": round(baseline_result.wall_seconds, 3),
                "cpu_seconds": round(baseline_result.cpu_seconds, 3),
            },
        )
    _finish(report, options, dist)
    return report


def _one_tower_teacher(spec: str) -> bool:
    """Whether ``--teacher`` names one tower (an image classifier, one tower of a CLIP, MiniLM)
    rather than a whole CLIP."""
    from freekd.checkpoint import safe_torch_load
    from freekd.crossmodal.clip import FORMAT as CLIP_FORMAT
    from freekd.crossmodal.towers import MINILM

    if spec == MINILM or spec.startswith(("clip-image:", "clip-text:")):
        return True
    data = safe_torch_load(Path(spec), what="teacher")
    return not (isinstance(data, dict) and data.get("format") == CLIP_FORMAT)


def _teacher_tower(
    spec: str, device: torch.device, *, trust_code: bool = False
) -> tuple[Any, dict[str, Any]]:
    """The frozen teacher tower ``--teacher`` names, and what the report says about it."""
    from freekd.crossmodal import load_clip
    from freekd.crossmodal.towers import MINILM, ClassifierFeatures, ClipTower, MiniLMText

    if spec == MINILM:
        return MiniLMText(device=device), {"kind": "all-MiniLM-L6-v2 (pretrained, frozen)"}
    for modality in ("image", "text"):
        prefix = f"clip-{modality}:"
        if spec.startswith(prefix):
            clip = load_clip(Path(spec[len(prefix) :]), device=device)
            return ClipTower(clip, modality), {"kind": f"the {modality} tower of a freekd CLIP"}
    teacher = load_teacher(TeacherSourceConfig(path=spec), device=device, trust_code=trust_code)
    tower = ClassifierFeatures(teacher, input_shape=teacher.input_shape)
    return tower, {
        "kind": f"image classifier {teacher.metadata.get('arch')} (penultimate features)",
        "input_shape": list(teacher.input_shape),
    }


#: The text student of an image teacher: CLIP's text tower at a small width.
DEFAULT_TEXT_STUDENT = {
    "context_length": 16, "vocab_size": 49408, "width": 32, "heads": 4, "layers": 2,
}  # fmt: skip


def _run_tower_distill(config: Any, options: RunOptions) -> dict[str, Any]:
    """``freekd crossmodal distill`` with a one-tower teacher: a student tower of the other
    modality learns the teacher's embedding space through ``TowerContrastive``; evaluated as a
    dual encoder (teacher tower + student tower); the baseline is the same student tower
    trained from scratch together with a fresh partner tower (CLIP's loss, same budget)."""
    from freekd.crossmodal.methods import DualContrastive, TowerContrastive
    from freekd.crossmodal.towers import DualEncoder, ImageStudent, TextStudent, save_tower

    if config.method.name != "contrastive":
        raise FreekdError(
            f"method {config.method.name} needs a whole CLIP teacher; a one-tower teacher "
            "(image classifier, clip-image:, clip-text:, minilm) is distilled by contrastive"
        )
    _check_params(TowerContrastive, dict(config.method.params), what="method contrastive")
    pairs, eval_pairs, train_set = _paired_sets(config)
    dist, device = _setup(config.seed, config.trainer, options)
    if dist.enabled:
        raise FreekdError("freekd crossmodal runs in one process; start it without torchrun")
    teacher, teacher_report = _teacher_tower(config.teacher, device, trust_code=options.trust_code)
    if teacher.modality == "image" and "input_shape" in teacher_report:
        check_input_shape(train_set, tuple(teacher_report["input_shape"]), who="the teacher")
    mean, std = dataset_statistics(train_set)

    def build(modality: str) -> Any:
        if modality == "text":
            text_cfg = dict(config.student or DEFAULT_TEXT_STUDENT)
            return TextStudent(dim=teacher.dim, text_cfg=text_cfg)
        return ImageStudent(
            arch=config.student_arch, dim=teacher.dim, input_shape=train_set.input_shape,
            mean=list(mean), std=list(std), arch_kwargs=dict(config.student_kwargs),
            trust_code=True,  # config.student_arch: vetted when the config was loaded
        )  # fmt: skip

    student_modality = "text" if teacher.modality == "image" else "image"
    torch.manual_seed(config.seed)
    student = build(student_modality)
    method = TowerContrastive(student, teacher, **dict(config.method.params))

    def towers(student_tower: Any, partner: Any) -> DualEncoder:
        first, second = (student_tower, partner)
        return DualEncoder(
            image=first if first.modality == "image" else second,
            text=first if first.modality == "text" else second,
        )

    def saver(out: Path) -> Callable[[nn.Module, dict[str, Any]], None]:
        def save(module: nn.Module, resolved: dict[str, Any]) -> None:
            save_tower(out / "model.pt", module, config=resolved)  # type: ignore[arg-type]

        return save

    text_tower = student if student_modality == "text" else teacher
    direction = f"{teacher.modality} → {student_modality}"
    result = _fit_pairs(
        method, pairs, config, options, tokenize=text_tower.tokenize,
        save=saver(options.out_dir), device=device, dist=dist,
        description=f"contrastive {direction} student",
    )  # fmt: skip
    dual = towers(student, teacher)

    def entry(model: DualEncoder, tower: Any, extra: dict[str, Any]) -> dict[str, Any]:
        return (
            _crossmodal_metrics(
                model, eval_pairs, eval_size=config.eval_size, seed=config.seed, device=device
            )
            | {"parameters": {"total": tower.parameter_count()}}
            | extra
        )

    _draw_retrieval(
        dual, eval_pairs, options.out_dir / "retrieval.png", seed=config.seed, device=device,
        title=f"text → image retrieval ({direction} student with its teacher), held-out pairs",
    )  # fmt: skip
    teacher_entry: dict[str, Any] = {
        **teacher_report,
        "path": config.teacher,
        "parameters": {"total": teacher.parameter_count()},
        "zero_shot_accuracy": None,
        **{f"recall_at_{k}": None for k in (1, 5, 10)},
        "note": "a one-tower teacher cannot retrieve or classify zero-shot by itself",
    }
    report: dict[str, Any] = {
        "command": "crossmodal distill",
        "direction": direction,
        "teacher": teacher_entry,
        "student": entry(
            dual,
            student,
            {
                "method": "contrastive",
                "tower": student.spec(),
                "evaluated_with": f"the teacher's {teacher.modality} tower",
            },
        ),
        "baseline": None,
        "pairs": train_set.name,
        "captions": _captions_report(pairs),
        **_common_report(config, result),
    }
    if config.baseline:
        torch.manual_seed(config.seed)
        baseline = build(student_modality)
        partner = build(teacher.modality)
        baseline_options = RunOptions(
            options.out_dir / "baseline", overwrite=True, quiet=options.quiet
        )
        baseline_text = baseline if student_modality == "text" else partner
        baseline_result = _fit_pairs(
            DualContrastive(baseline, partner), pairs, config, baseline_options,
            tokenize=baseline_text.tokenize, save=saver(baseline_options.out_dir),
            device=device, dist=dist, description="baseline towers",
        )  # fmt: skip
        report["baseline"] = entry(
            towers(baseline, partner),
            baseline,
            {
                "method": "clip loss only (no teacher): the student tower and a fresh "
                f"{teacher.modality} tower ({type(partner).__name__}) trained together",
                "wall_seconds": round(baseline_result.wall_seconds, 3),
                "cpu_seconds": round(baseline_result.cpu_seconds, 3),
            },
        )
    _finish(report, options, dist)
    return report
