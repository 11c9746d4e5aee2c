"""Composition roots of ``freekd crossmodal teacher`` and ``freekd crossmodal distill``."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch

from freekd.crossmodal import ClipModel, load_clip
from freekd.crossmodal.common import (
    CLIP_MIN_STEPS,
    baseline_options,
    captions_report,
    crossmodal_metrics,
    draw_retrieval,
    fit_clip,
    paired_sets,
    quarter_clip,
    report_entry,
    setup_crossmodal_run,
    steps_per_epoch,
    training_cost,
    with_method,
    with_min_steps,
)
from freekd.crossmodal.methods import (
    AUTO,
    CLIP,
    CROSSMODAL_METHODS,
    ClipContrastive,
    check_method_name,
    method_label,
)
from freekd.crossmodal.tower_pipeline import one_tower_teacher, run_tower_distill
from freekd.errors import FreekdError
from freekd.methods import MethodContext
from freekd.runlock import locks_run_folder
from freekd.runs import (
    RunOptions,
    build_method,
    check_params,
    common_report,
    dataset_statistics,
    finish_run,
)
from freekd.seeding import reseed
from freekd.train import DistInfo

DEFAULT_CLIP_METHOD = "relational"
AUTO_CLIP_PARAMS = {"weight": 2.0}
"""What ``--method auto`` runs for a CLIP teacher: ``relational`` at weight 2 (chosen on
validation pairs, experiments/2026-12-crossmodal-pays); written into ``config.yaml``, so
``--method relational`` keeps the class's weight 1 and runs resume as they started."""


@locks_run_folder
def run_crossmodal_teacher(config: Any, options: RunOptions) -> dict[str, Any]:
    """``freekd crossmodal teacher``: a small open_clip CLIP trained with CLIP's loss on
    templated pairs, through the one Trainer; writes ``model.pt`` (``freekd-clip/1``)."""

    pairs, eval_pairs, train_set = paired_sets(config)
    dist, device = setup_crossmodal_run(config, options)
    mean, std = config.mean, config.std
    if mean is None or std is None:
        computed_mean, computed_std = dataset_statistics(train_set)
        channels = 3
        mean = mean or (computed_mean * channels if len(computed_mean) == 1 else computed_mean)
        std = std or (computed_std * channels if len(computed_std) == 1 else computed_std)
    model = ClipModel(dict(config.model), mean=list(mean), std=list(std))

    result = fit_clip(
        ClipContrastive(model), pairs, config, options, device=device, dist=dist,
        description=f"CLIP on {train_set.name} pairs",
    )  # fmt: skip
    metrics = crossmodal_metrics(
        model, eval_pairs, eval_size=config.eval_size, seed=config.seed, device=device
    )
    draw_retrieval(
        model, eval_pairs, options.out_dir / "retrieval.png", seed=config.seed, device=device,
        title="text → image retrieval (teacher), held-out pairs",
    )  # fmt: skip
    report = {
        "command": "crossmodal teacher",
        "teacher": metrics | {"parameters": model.tower_parameters()},
        "pairs": train_set.name,
        "train_pairs": len(pairs),
        "eval_pairs": eval_pairs.images.name,
        "captions": captions_report(pairs),
        "model_config": dict(config.model),
        **common_report(config, result),
    }
    finish_run(report, options, dist)
    return report


def _clip_entry(
    model: Any,
    teacher: ClipModel,
    eval_pairs: Any,
    config: Any,
    *,
    device: torch.device,
    extra: dict[str, Any],
) -> dict[str, Any]:
    """A CLIP's entry in the ``crossmodal distill`` report, with its size relative to the
    teacher's (``parameter_ratio``)."""
    parameters = model.tower_parameters()
    ratio = round(parameters["total"] / teacher.tower_parameters()["total"], 4)
    return report_entry(
        model, eval_pairs, config, device=device, parameters=parameters,
        extra={"parameter_ratio": ratio, **extra},
    )  # fmt: skip


def _train_clip_baseline(
    build: Callable[[], ClipModel],
    pairs: Any,
    config: Any,
    options: RunOptions,
    *,
    device: torch.device,
    dist: DistInfo,
) -> tuple[ClipModel, dict[str, Any]]:
    """The student CLIP trained with CLIP's loss alone at the same budget, in ``OUT/baseline``;
    returns it and what its report entry says about the training."""
    baseline = build()
    result = fit_clip(
        ClipContrastive(baseline), pairs, config, baseline_options(options), device=device,
        dist=dist, description="baseline CLIP",
    )  # fmt: skip
    return baseline, {"method": "clip loss only (no teacher)", **training_cost(result)}


def _resolved_method(config: Any) -> Any:
    """``method: auto`` resolved for a CLIP teacher, so ``config.yaml`` records the method run."""
    check_method_name(config.method.name)
    if config.method.name != AUTO:
        return config
    return with_method(config, DEFAULT_CLIP_METHOD, AUTO_CLIP_PARAMS)


def _clip_method(
    config: Any, student: ClipModel, teacher: ClipModel, *, pair_count: int, train_size: int
) -> Any:
    """The configured CLIP-to-CLIP method, told the run's planned steps (for its schedule)."""
    context = MethodContext(
        student=student, teacher=teacher, train_size=train_size, distills=CLIP,
        total_steps=config.trainer.epochs * steps_per_epoch(config, pair_count),
    )  # fmt: skip
    return build_method(config.method.name, context, dict(config.method.params))


@locks_run_folder
def run_crossmodal_distill(config: Any, options: RunOptions) -> dict[str, Any]:
    """``freekd crossmodal distill``: a CLIP student from a CLIP teacher on templated pairs, and
    (by default) the same student trained with CLIP's loss alone at the same budget, in
    ``OUT/baseline``; ``report.json`` holds ``teacher``, ``student`` and ``baseline``."""

    if not config.teacher:
        raise FreekdError(
            "--teacher is required: a CLIP checkpoint from freekd crossmodal teacher, an image "
            "classifier's model.pt, clip-image:PATH, clip-text:PATH or minilm"
        )
    if one_tower_teacher(config.teacher):
        return run_tower_distill(config, options)
    requested = config.method.name
    config = _resolved_method(config)
    method_class = CROSSMODAL_METHODS.get(config.method.name)
    what = method_label(requested, config.method.name)
    check_params(method_class, config.method.params, what=what)
    pairs, eval_pairs, train_set = paired_sets(config)
    config = with_min_steps(config, len(pairs), default=CLIP_MIN_STEPS)
    dist, device = setup_crossmodal_run(config, options)
    teacher = load_clip(Path(config.teacher), device=device)
    student_config = dict(config.student) if config.student else quarter_clip(teacher.model_config)
    normalization = teacher.normalization

    def build() -> Any:
        reseed(config.seed)
        return ClipModel(dict(student_config), **normalization)

    student = build()
    method = _clip_method(
        config, student, teacher, pair_count=len(pairs), train_size=len(train_set)
    )
    result = fit_clip(
        method, pairs, config, options, device=device, dist=dist,
        description=f"{config.method.name} → student CLIP",
    )  # fmt: skip
    draw_retrieval(
        student, eval_pairs, options.out_dir / "retrieval.png", seed=config.seed, device=device,
        title=f"text → image retrieval (student, {config.method.name}), held-out pairs",
    )  # fmt: skip
    student_extra = {"method": config.method.name, "model_config": student_config}
    report: dict[str, Any] = {
        "command": "crossmodal distill",
        "teacher": _clip_entry(
            teacher, teacher, eval_pairs, config, device=device, extra={"path": config.teacher}
        ),
        "student": _clip_entry(
            student, teacher, eval_pairs, config, device=device, extra=student_extra
        ),
        "baseline": None,
        "pairs": train_set.name,
        "train_pairs": len(pairs),
        "captions": captions_report(pairs),
        **common_report(config, result),
    }
    if config.baseline:
        baseline, extra = _train_clip_baseline(
            build, pairs, config, options, device=device, dist=dist
        )
        report["baseline"] = _clip_entry(
            baseline, teacher, eval_pairs, config, device=device, extra=extra
        )
    finish_run(report, options, dist)
    return report
