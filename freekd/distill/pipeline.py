"""Composition root of ``freekd distill``: a registered method on real data."""

from __future__ import annotations

from typing import Any

from freekd.distill.config import DistillConfig
from freekd.errors import FreekdError
from freekd.methods import CLASSIFIER_METHODS, MethodContext
from freekd.models import (
    count_parameters,
)
from freekd.runlock import locks_run_folder
from freekd.runs import (
    RunOptions,
    build_method,
    build_student,
    check_params,
    common_report,
    finish_run,
    loader_source,
    resolve_augmentation,
    run_training,
    setup_run,
    teacher_report,
    train_and_eval_sets,
)
from freekd.teachers import load_teacher
from freekd.train import (
    evaluate,
)
from freekd.train.evaluate import check_input_shape


@locks_run_folder
def run_distill(config: DistillConfig, options: RunOptions) -> dict[str, Any]:
    """``freekd distill``: classic KD on real data; returns (and writes) ``report.json``."""
    method_class = CLASSIFIER_METHODS.get(config.method.name)
    check_params(method_class, config.method.params, what=f"method {config.method.name}")
    train_set, eval_set = train_and_eval_sets(config)
    resolve_augmentation(config.trainer.augment, train_set.input_shape)
    teacher = load_teacher(config.teacher, trust_code=options.trust_code)
    check_input_shape(train_set, teacher.input_shape, who="the teacher")
    check_input_shape(eval_set, teacher.input_shape, who="the teacher")
    if train_set.num_classes != teacher.num_classes:
        raise FreekdError(
            f"{train_set.name} has {train_set.num_classes} classes but the teacher has "
            f"{teacher.num_classes}; distill on data with the teacher's classes"
        )
    dist, device = setup_run(config.seed, config.trainer, options)
    teacher.to(device)
    teacher_accuracy = evaluate(teacher, eval_set, device=device)["accuracy"]
    student = build_student(
        config.student,
        dict(config.student_kwargs),
        train_set=train_set,
        num_classes=teacher.num_classes,
        mean=None,
        std=None,
        setting="--student",
    )
    source = loader_source(train_set, config.trainer, seed=config.seed, dist=dist)
    context = MethodContext.for_teacher(
        student,
        teacher,
        train_size=len(train_set),
        total_steps=source.steps_per_epoch() * config.trainer.epochs,
    )
    method = build_method(config.method.name, context, config.method.params)
    result = run_training(
        method,
        source,
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
        "teacher": teacher_report(teacher, teacher_accuracy, config.teacher.path),
        "student": {
            "test_accuracy": result.state.metrics["eval_accuracy"],
            "arch": config.student,
            "parameters": count_parameters(student.net),
        },
        "method": {"name": config.method.name, "params": dict(config.method.params)},
        "dataset": train_set.name,
        "eval_dataset": eval_set.name,
        "test_n": len(eval_set),
        **common_report(config, result),
    }
    finish_run(report, options, dist)
    return report
