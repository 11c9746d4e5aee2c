"""Composition root of ``freekd teacher train``: a supervised (optionally DP-SGD) teacher."""

from __future__ import annotations

from typing import Any

from freekd.data import AUGMENTATIONS, ImageDataset
from freekd.errors import FreekdError
from freekd.methods import Supervised
from freekd.models import ImageClassifier, count_parameters
from freekd.privacy.dpsgd import DPSetup
from freekd.runlock import locks_run_folder
from freekd.runs import (
    RunOptions,
    build_student,
    common_report,
    finish_run,
    loader_source,
    resolve_augmentation,
    run_training,
    setup_run,
    train_and_eval_sets,
    warn_empty_classes,
    warn_few_steps,
)
from freekd.supervised.config import TeacherTrainConfig
from freekd.train import BatchSource, DistInfo, PoissonSource
from freekd.train.evaluate import check_input_shape, check_labels_fit


@locks_run_folder
def run_teacher_train(config: TeacherTrainConfig, options: RunOptions) -> dict[str, Any]:
    """``freekd teacher train``: supervised training; returns (and writes) ``report.json``.

    With ``config.dp.enabled`` the teacher is trained with DP-SGD through Opacus (Poisson
    batches, per-example clipping, Gaussian noise; BatchNorm replaced by GroupNorm), and its
    (ε, δ) goes into ``report.json["privacy"]`` and into ``model.pt``.
    """
    train_set, eval_set = train_and_eval_sets(config)
    check_input_shape(eval_set, train_set.input_shape, who=f"a model trained on {train_set.name}")
    check_labels_fit(eval_set, train_set.num_classes, who=f"a model trained on {train_set.name}")
    resolve_augmentation(config.trainer.augment, train_set.input_shape)
    dp = DPSetup.plan(config, len(train_set)) if config.dp.enabled else None
    dist, device = setup_run(config.seed, config.trainer, options)
    if dp is not None and dist.enabled:
        raise FreekdError("--dp runs in one process; start it without torchrun")
    mean, std = _normalization(config, train_set, private=dp is not None)
    model = build_student(
        config.arch,
        dict(config.arch_kwargs),
        train_set=train_set,
        num_classes=train_set.num_classes,
        mean=mean,
        std=std,
    )
    model, source = _source(config, train_set, model, dp=dp, dist=dist)
    warn_empty_classes(train_set)  # after every check: a failing run prints one line
    warn_few_steps(train_set, config.trainer, source.steps_per_epoch())
    method = Supervised(model, label_smoothing=config.label_smoothing)
    result = run_training(
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
        **common_report(config, result),
    }
    if dp is not None:
        report["privacy"] = dp.record(result.state)
    finish_run(report, options, dist)
    return report


def _normalization(
    config: TeacherTrainConfig, train_set: ImageDataset, *, private: bool
) -> tuple[list[float] | None, list[float] | None]:
    """The model's input mean and std as given; ``None`` lets ``build_student`` measure the
    training set, which a DP-SGD teacher never does (it uses 0.5)."""
    mean, std = config.mean, config.std
    if private and (mean is None or std is None):
        # The training set's own statistics would be a release outside the accounting: a DP
        # teacher normalizes with fixed values unless the user gives public ones.
        channels = train_set.input_shape[0]
        mean, std = mean or [0.5] * channels, std or [0.5] * channels
    return mean, std


def _source(
    config: TeacherTrainConfig,
    train_set: ImageDataset,
    model: ImageClassifier,
    *,
    dp: DPSetup | None,
    dist: DistInfo,
) -> tuple[ImageClassifier, BatchSource]:
    """The model to train and its batches: shuffled epochs, or DP-SGD's Poisson sampling
    (with the model made Opacus-ready)."""
    if dp is None:
        return model, loader_source(train_set, config.trainer, seed=config.seed, dist=dist)
    model = dp.prepare(model)
    augment_name = resolve_augmentation(config.trainer.augment, train_set.input_shape)
    source = PoissonSource(
        train_set,
        sample_rate=dp.sample_rate,
        seed=config.seed,
        augment=None if augment_name == "none" else AUGMENTATIONS.get(augment_name),
    )
    return model, source
