"""PATE stage 1 (``freekd pate teachers``): an ensemble of teachers on disjoint shards."""

from __future__ import annotations

from typing import Any

import torch
from torch import nn

from freekd.config import TrainerConfig
from freekd.data import AUGMENTATIONS, ImageDataset
from freekd.errors import FreekdError
from freekd.methods import EnsembleSupervised
from freekd.models import ImageClassifier, count_parameters
from freekd.pate.config import PateTeachersConfig
from freekd.runlock import locks_run_folder
from freekd.runs import (
    RunOptions,
    build_student,
    common_report,
    finish_run,
    resolve_augmentation,
    run_training,
    setup_run,
    train_and_eval_sets,
    warn_empty_classes,
)
from freekd.teachers.ensemble import (
    PluralityVote,
    check_execution,
    make_ensemble,
    save_ensemble,
)
from freekd.train import (
    ShardSource,
)
from freekd.train.evaluate import check_input_shape, check_labels_fit

#: The ensemble file of ``freekd pate teachers`` (private: only the noisy labeler reads it).
TEACHERS_FILE = "teachers.pt"


def refuse_weight_average(trainer: TrainerConfig) -> None:
    """Refuse ``trainer.ema_decay`` and ``trainer.swa_start`` for PATE's teachers, in one line.

    The vote is evaluated, and every teacher's accuracy measured, on the trained weights
    themselves: an average of them would be saved in teachers.pt but never evaluated. ``freekd
    audit pipeline`` calls this before its first stage, so it cannot fail after hours of work.
    """
    for averaged in ("swa_start", "ema_decay"):
        if getattr(trainer, averaged) is not None:
            raise FreekdError(
                "freekd pate teachers evaluates and saves the teachers' own weights and keeps "
                f"no weight average; remove trainer.{averaged} (teachers.trainer.{averaged} in a "
                f"pate run config, pate.teachers.trainer.{averaged} in an audit pipeline config)"
            )


@locks_run_folder
def run_pate_teachers(config: PateTeachersConfig, options: RunOptions) -> dict[str, Any]:
    """``freekd pate teachers``: K teachers on disjoint shards, trained together in one loop.

    Writes ``teachers.pt`` (private: it holds everything the teachers learned) and
    ``report.json`` with every teacher's and the (noise-free) plurality vote's accuracy.
    """

    check_execution(config.execution)
    refuse_weight_average(config.trainer)
    train_set, eval_set = train_and_eval_sets(config)
    check_input_shape(eval_set, train_set.input_shape, who=f"models trained on {train_set.name}")
    check_labels_fit(eval_set, train_set.num_classes, who=f"models trained on {train_set.name}")
    source = _shard_source(config, train_set)
    dist, device = setup_run(config.seed, config.trainer, options)
    if dist.enabled:
        raise FreekdError("freekd pate teachers runs in one process; start it without torchrun")
    warn_empty_classes(train_set)
    members = _untrained_members(config, train_set)
    ensemble = make_ensemble(members, execution=config.execution)
    shards = {
        "dataset": train_set.name,
        "teachers": config.teachers,
        "shard_size": source.shard_size,
        "unused": len(train_set) - config.teachers * source.shard_size,
        "seed": config.seed,
    }

    def save(module: nn.Module, resolved: dict[str, Any]) -> None:
        save_ensemble(options.out_dir / TEACHERS_FILE, module, config=resolved, shards=shards)  # type: ignore[arg-type]

    result = run_training(
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
        "teacher_accuracy": _accuracy_spread(accuracies),
        "dataset": train_set.name,
        "eval_dataset": eval_set.name,
        **common_report(config, result),
    }
    finish_run(report, options, dist)
    return report


def _shard_source(config: PateTeachersConfig, train_set: ImageDataset) -> ShardSource:
    """The batches of every teacher, each drawn from its own disjoint shard of ``train_set``."""

    augment_name = resolve_augmentation(config.trainer.augment, train_set.input_shape)
    return ShardSource(
        train_set,
        teachers=config.teachers,
        batch_size=config.trainer.batch_size,
        seed=config.seed,
        augment=None if augment_name == "none" else AUGMENTATIONS.get(augment_name),
    )


def _untrained_members(
    config: PateTeachersConfig, train_set: ImageDataset
) -> list[ImageClassifier]:
    """K freshly initialised teachers of ``config.arch`` (each draws its own weights)."""

    return [
        build_student(
            config.arch,
            dict(config.arch_kwargs),
            train_set=train_set,
            num_classes=train_set.num_classes,
            mean=None,
            std=None,
        )
        for _ in range(config.teachers)
    ]


def _accuracy_spread(accuracies: list[float]) -> dict[str, Any]:
    """The report's ``teacher_accuracy``: median, min, max and every member's accuracy."""

    return {
        "median": float(torch.tensor(accuracies).median()),
        "min": min(accuracies),
        "max": max(accuracies),
        "each": accuracies,
    }


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
