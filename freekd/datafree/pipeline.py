"""Composition root of ``freekd datafree``: synthesizer + SyntheticSource + logit KD."""

from __future__ import annotations

import dataclasses
import logging
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from freekd.config import ComponentConfig
from freekd.data import ImageDataset
from freekd.datafree.config import AUTO_METHOD, CollapseConfig, DataFreeConfig
from freekd.errors import FreekdError
from freekd.generators import SYNTHESIZERS
from freekd.generators.collapse import CollapseMonitor
from freekd.io import atomic_write
from freekd.methods import CLASSIFIER_METHODS, MethodContext
from freekd.models import (
    count_parameters,
)
from freekd.plots import plot_samples_by_class
from freekd.runlock import locks_run_folder
from freekd.runs import (
    QUERIES_FILE,
    RunOptions,
    build_method,
    build_student,
    check_params,
    common_report,
    default_student,
    finish_run,
    inherited_privacy,
    load_split,
    loader_source,
    resolved_params,
    run_training,
    setup_run,
    teacher_report,
)
from freekd.teachers import Teacher, load_teacher
from freekd.train import (
    BatchSource,
    evaluate,
)
from freekd.train.callbacks import (
    StopOnBudget,
)
from freekd.train.evaluate import check_input_shape
from freekd.train.sources import SyntheticSource

logger = logging.getLogger(__name__)

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
        check_params(
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
    method_class = CLASSIFIER_METHODS.get(method_config.name)
    check_params(method_class, method_config.params, what=f"method {method_config.name}")
    teacher = teacher or load_teacher(config.teacher, trust_code=options.trust_code)
    proxy_set = None
    if proxy:
        if config.budget_images is not None:
            raise FreekdError(
                "an image budget counts synthesized images and --proxy-data synthesizes none; "
                "give a time budget (--budget 15m) or --epochs"
            )
        proxy_set = load_split(
            proxy, default_split="train", root=config.data_root, download=config.download
        )
        check_input_shape(proxy_set, teacher.input_shape, who="the teacher")
    else:
        _check_synthesizer_fits(config.synthesizer.name, synthesizer_class, teacher)
    eval_set = None
    if config.eval_dataset:
        eval_set = load_split(
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
    student_arch = default_student(teacher, config.student)
    dist, device = setup_run(config.seed, config.trainer, options)
    rng = torch.Generator().manual_seed(config.seed)
    teacher.to(device)
    teacher_accuracy = None
    if eval_set is not None:
        teacher_accuracy = evaluate(teacher, eval_set, device=device)["accuracy"]
    normalization = teacher.metadata.get("input", {})
    channels = teacher.input_shape[0]
    student = build_student(
        student_arch,
        dict(config.student_kwargs),
        train_set=None,
        num_classes=teacher.num_classes,
        mean=list(normalization.get("mean", [0.5] * channels)),
        std=list(normalization.get("std", [0.5] * channels)),
        input_shape=teacher.input_shape,
    )
    train_size = None if proxy_set is None else len(proxy_set)  # synthetic batches: no dataset
    context = MethodContext.for_teacher(student, teacher, train_size=train_size)
    method = build_method(method_config.name, context, method_config.params)
    synthetic: SyntheticSource | None = None
    source: BatchSource
    if proxy_set is not None:
        # Exactly as many student steps per epoch as a data-free run: a small proxy set is
        # gone through several times per epoch rather than giving the baseline fewer steps.
        source = loader_source(
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
    inherited = inherited_privacy(teacher, proxy_set)
    budget = StopOnBudget(
        minutes=config.budget_minutes,
        cpu_minutes=config.budget_cpu_minutes,
        images=config.budget_images,
        images_spent=None
        if synthetic is None
        else lambda: synthetic.synthesizer.images_synthesized,
    )
    result = run_training(
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
        "teacher": teacher_report(teacher, teacher_accuracy, config.teacher.path),
        "student": {
            "test_accuracy": result.state.metrics.get("eval_accuracy"),
            "arch": student_arch,
            "parameters": count_parameters(student.net),
        },
        "student_method": {
            "name": method_config.name,
            "params": resolved_params(method_class, dict(method_config.params)),
        },
        "stopped_by_budget": budget.reason,
        "eval_dataset": eval_set.name if eval_set is not None else None,
        "privacy": inherited,
        **common_report(config, result),
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
                "params": resolved_params(synthesizer.__class__, dict(config.synthesizer.params)),
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
    finish_run(report, options, dist)
    return report


def _save_queries(
    synthesizer: Any, teacher: Teacher, classes: list[str], count: int, out: Path
) -> dict[str, Any]:
    """Write ``count`` synthesized images (uint8) and the teacher's classes to ``queries.npz``.

    The images are post-processing of the teacher alone, so they carry the teacher's privacy
    (``report.json["privacy"]`` of the same run), which ``freekd pate label`` composes with
    the PATE answers when it uses them as queries.
    """

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
