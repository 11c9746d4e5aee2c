"""Composition root of ``freekd datafree``: synthesizer + SyntheticSource + logit KD."""

from __future__ import annotations

import dataclasses
import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
import yaml
from torch import nn

from freekd.config import ComponentConfig
from freekd.data import ImageDataset
from freekd.datafree.auto import (
    AUTO_CANDIDATES,
    AUTO_SYNTHESIZER,
    auto_synthesizer_params,
    default_synthesizer,
)
from freekd.datafree.config import AUTO_METHOD, DataFreeConfig
from freekd.datafree.memory import fit_to_memory, warmup_within_budget
from freekd.datafree.nets import teacher_pixel_statistics
from freekd.datafree.outputs import draw_samples, save_queries
from freekd.datafree.probe import confident_probe
from freekd.datafree.source import SyntheticSource, synthetic_source
from freekd.datafree.synthesizers import SYNTHESIZERS, SynthesizerBase
from freekd.errors import FreekdError
from freekd.methods import CLASSIFIER_METHODS, Method, MethodContext
from freekd.models import ImageClassifier, count_parameters
from freekd.registry import hyperparameters
from freekd.runlock import locks_run_folder
from freekd.runs import (
    QUERIES_FILE,
    RunOptions,
    TrainResult,
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
    seeded,
    setup_run,
    teacher_report,
)
from freekd.teachers import Teacher, load_teacher
from freekd.train import BatchSource, DistInfo, evaluate
from freekd.train.callbacks import (
    StopOnBudget,
)
from freekd.train.evaluate import check_input_shape
from freekd.yamldata import safe_yaml

logger = logging.getLogger(__name__)


def _check_synthesizer_fits(name: str, synthesizer_class: Any, teacher: Teacher) -> None:
    if synthesizer_class.taps_teacher and teacher.is_torchscript:
        usable = [n for n in SYNTHESIZERS.names() if not SYNTHESIZERS.get(n).taps_teacher]
        raise FreekdError(
            f"--method {name} hooks the teacher's layers and a TorchScript teacher takes no "
            f"hooks; use one of: {', '.join(usable)}, or give the teacher as a state_dict"
        )
    if synthesizer_class.needs_batchnorm and not teacher.has_batchnorm:
        usable = [n for n in SYNTHESIZERS.names() if not SYNTHESIZERS.get(n).needs_batchnorm]
        raise FreekdError(
            f"--method {name} inverts BatchNorm statistics and this teacher has no BatchNorm "
            f"layers (DP-SGD teachers never do); use one of: {', '.join(usable)}"
        )


@dataclass(frozen=True)
class _Plan:
    """What ``--method`` and the student-side ``method`` resolve to, checked before any work."""

    config: DataFreeConfig  # ``--method auto`` replaced by the synthesizer chosen for the teacher
    synthesizer_class: Any | None  # ``None`` with ``--proxy-data``: nothing is synthesized
    method_config: ComponentConfig
    method_class: Any
    synthesize_every: int


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
    _check_save_queries(config)
    plan, teacher = _plan_and_teacher(config, options)
    config = plan.config
    proxy_set, eval_set = _datasets(plan, teacher)
    student_arch = str(config.student)
    dist, device = setup_run(config.seed, config.trainer, options)
    rng = seeded(config.seed)
    teacher.to(device)
    teacher_accuracy = None
    if eval_set is not None:
        teacher_accuracy = evaluate(teacher, eval_set, device=device)["accuracy"]
    student = _student(config, teacher, student_arch)
    plan, config = _fit_memory(plan, teacher, student, options, device)
    source, synthetic, description = _source(
        plan, teacher, student, proxy_set, arch=student_arch, dist=dist, rng=rng, device=device
    )
    method = _method(plan, teacher, student, proxy_set, source)
    inherited = inherited_privacy(teacher, proxy_set)
    budget = _budget(config, synthetic)
    probe = confident_probe(config, teacher, synthesizing=synthetic is not None, device=device)
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
        # The probe draws its images before the budget's clocks start: they cost no step.
        extra_callbacks=(probe, budget),
        extra_metrics=None if synthetic is None else synthetic.extra_metrics,
        # The inherited guarantee travels inside model.pt, so the student's own audits and
        # students see it; nothing is claimed for a proxy-data student.
        privacy=(lambda state: inherited) if inherited["private"] and proxy_set is None else None,
    )
    report = _report(
        plan,
        result,
        teacher=teacher,
        teacher_accuracy=teacher_accuracy,
        student=student,
        budget=budget,
        eval_set=eval_set,
        inherited=inherited,
        synthetic=synthetic,
        proxy_set=proxy_set,
    )
    report.update({"confident_probe": probe.report()} if probe.per_class else {})
    shown = _shown_images(teacher, synthetic, proxy_set, seed=config.seed, device=device)
    if synthetic is not None and config.save_queries and dist.is_main:
        report["queries_file"] = save_queries(
            synthetic.synthesizer, teacher, eval_set, config, options.out_dir / QUERIES_FILE
        )
    if dist.is_main:
        draw_samples(shown, teacher, eval_set, options.out_dir / "samples.png")
    finish_run(report, options, dist)
    return report


def _plan_and_teacher(config: DataFreeConfig, options: RunOptions) -> tuple[_Plan, Teacher]:
    """The checked plan and the loaded teacher; ``--method auto`` and the default student are
    chosen for the teacher first, and the saved config names both (a resumed run keeps them)."""
    teacher = load_teacher(config.teacher, trust_code=options.trust_code)
    if not config.proxy_dataset and config.synthesizer.name == AUTO_SYNTHESIZER:
        chosen = default_synthesizer(teacher)
        params = dict(config.synthesizer.params)
        if not options.resume:  # a resumed run keeps the parameters its config.yaml saved
            params = auto_synthesizer_params(chosen, teacher, params)
        config = dataclasses.replace(
            config,
            synthesizer=dataclasses.replace(config.synthesizer, name=chosen, params=params),
        )
    student, kwargs = default_student(teacher, config.student, dict(config.student_kwargs))
    config = dataclasses.replace(config, student=student, student_kwargs=kwargs)
    return _plan(config), teacher


def _source(
    plan: _Plan,
    teacher: Teacher,
    student: nn.Module,
    proxy_set: ImageDataset | None,
    *,
    arch: str,
    dist: DistInfo,
    rng: torch.Generator,
    device: torch.device,
) -> tuple[BatchSource, SyntheticSource | None, str]:
    """Where the student's batches come from, the synthetic source if any, the progress label."""
    config = plan.config
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
        return source, None, f"proxy {proxy_set.name} → {arch}"
    synthesizer = _build_synthesizer(plan, teacher, rng=rng, device=device)
    synthetic = synthetic_source(
        config, synthesizer, teacher, student, synthesize_every=plan.synthesize_every
    )
    return synthetic, synthetic, f"datafree {config.synthesizer.name} → {arch}"


def _report(
    plan: _Plan,
    result: TrainResult,
    *,
    teacher: Teacher,
    teacher_accuracy: float | None,
    student: ImageClassifier,
    budget: StopOnBudget,
    eval_set: ImageDataset | None,
    inherited: dict[str, Any],
    synthetic: SyntheticSource | None,
    proxy_set: ImageDataset | None,
) -> dict[str, Any]:
    """``report.json`` of the run (``queries_file`` is added once the queries are written)."""
    config, method_config = plan.config, plan.method_config
    report: dict[str, Any] = {
        "command": "datafree",
        "teacher": teacher_report(teacher, teacher_accuracy, config.teacher.path),
        "student": {
            "test_accuracy": result.state.metrics.get("eval_accuracy"),
            "arch": student.arch,
            "parameters": count_parameters(student.net),
        },
        "student_method": {
            "name": method_config.name,
            "params": resolved_params(plan.method_class, dict(method_config.params)),
        },
        "stopped_by_budget": budget.reason,
        # The steps the learning-rate schedule spanned when the budget fitted it, else null.
        "schedule_horizon": result.state.horizon,
        "eval_dataset": eval_set.name if eval_set is not None else None,
        "privacy": inherited,
        **common_report(config, result),
    }
    # The student's own KD steps query the teacher once per image as well.
    teacher_queries = result.state.step * config.trainer.batch_size
    if synthetic is None:
        assert proxy_set is not None
        report.update(_proxy_results(config, proxy_set, teacher_queries))
    else:
        report.update(_synthetic_results(plan, synthetic, teacher_queries))
    return report


def _method(plan: _Plan, teacher: Teacher, student: nn.Module, proxy: Any, source: Any) -> Method:
    """The student-side method, told the run's planned steps (DKD's warm-up reads them)."""
    steps = source.steps_per_epoch() * plan.config.trainer.epochs
    size = None if proxy is None else len(proxy)  # synthetic batches: no dataset
    context = MethodContext.for_teacher(student, teacher, train_size=size, total_steps=steps)
    return build_method(plan.method_config.name, context, plan.method_config.params)


def _check_save_queries(config: DataFreeConfig) -> None:
    """``--save-queries`` is a count ≥ 0 of synthesized images, so never with ``--proxy-data``."""
    proxy = config.proxy_dataset
    if config.save_queries < 0 or (config.save_queries and proxy):
        raise FreekdError(
            "--save-queries needs a synthesizer and a count ≥ 0; --proxy-data synthesizes nothing"
            if proxy
            else f"--save-queries must be ≥ 0, got {config.save_queries}"
        )


def check_settings(config: DataFreeConfig) -> None:
    """What ``run_datafree`` checks before it has a teacher, for a caller that runs it after
    other work (``freekd audit pipeline`` trains the teacher first): ``--save-queries``, the
    synthesizer and the student-side method by name, with their parameters.

    Under ``--method auto`` the teacher chooses the synthesizer (``AUTO_CANDIDATES``): a
    parameter name that no candidate has is refused, and each value is checked by every
    candidate that has the name (all of them read a shared name the same way).
    """
    _check_save_queries(config)
    if config.proxy_dataset or config.synthesizer.name != AUTO_SYNTHESIZER:
        _plan(config)
        return
    params = config.synthesizer.params
    known = {name: hyperparameters(SYNTHESIZERS.get(name)) for name in AUTO_CANDIDATES}
    unknown = sorted(set(params).difference(*known.values()))
    if unknown:
        names = sorted(set().union(*known.values()))
        raise FreekdError(
            f"synthesizer.params: --method auto ({' or '.join(AUTO_CANDIDATES)}) has no "
            f"parameter {', '.join(map(repr, unknown))}; known: {', '.join(names)}"
        )
    for name, own in known.items():  # the student side each candidate would pair with
        mine = {key: value for key, value in params.items() if key in own}
        synthesizer = dataclasses.replace(config.synthesizer, name=name, params=mine)
        _plan(dataclasses.replace(config, synthesizer=synthesizer))


def _plan(config: DataFreeConfig) -> _Plan:
    """The synthesizer and student-side method classes with their parameters checked.

    Without ``method`` in the config the student side is the synthesizer's recommendation;
    ``method: auto`` (a partial ``--set method.params...``) is the recommendation with the given
    parameters over its own.
    """
    synthesizer_class = None if config.proxy_dataset else SYNTHESIZERS.get(config.synthesizer.name)
    if synthesizer_class is not None:
        config = _synthesis_batch_follows(config, synthesizer_class)
        check_params(
            synthesizer_class, config.synthesizer.params, what=f"--method {config.synthesizer.name}"
        )
    plugin = synthesizer_class or SynthesizerBase  # a proxy run: the contract's defaults
    recommended = ComponentConfig(
        name=plugin.recommended_method, params=dict(plugin.recommended_method_params)
    )
    method_config = config.method or recommended
    if method_config.name == AUTO_METHOD:  # the recommendation, with the given params over it
        method_config = ComponentConfig(
            name=recommended.name, params={**recommended.params, **method_config.params}
        )
    recommended_every = plugin.recommended_synthesize_every
    method_class = CLASSIFIER_METHODS.get(method_config.name)
    check_params(method_class, method_config.params, what=f"method {method_config.name}")
    if config.method is not None and config.method is not method_config:  # method: auto
        # What the user gave, as read (config.yaml saves it; the recommendation is not saved).
        config.method.params.update({k: method_config.params[k] for k in config.method.params})
    return _Plan(
        config=config,
        synthesizer_class=synthesizer_class,
        method_config=method_config,
        method_class=method_class,
        synthesize_every=config.synthesize_every or recommended_every,
    )


def _synthesis_batch_follows(config: DataFreeConfig, synthesizer_class: Any) -> DataFreeConfig:
    """The synthesizer's ``batch_size`` is ``--batch-size`` unless its params set it, and no
    more than an image budget (``--budget 64``); the saved config says which."""
    fields = {field.name for field in dataclasses.fields(synthesizer_class)}
    if "batch_size" not in fields or "batch_size" in config.synthesizer.params:
        return config
    # At least 2: batch statistics (BatchNorm terms, the generator's own) need two images.
    budget = max(2, config.budget_images or config.trainer.batch_size)
    batch = min(config.trainer.batch_size, budget)
    params = {**config.synthesizer.params, "batch_size": batch}
    return dataclasses.replace(
        config, synthesizer=dataclasses.replace(config.synthesizer, params=params)
    )


def _fit_memory(
    plan: _Plan, teacher: Teacher, student: nn.Module, options: RunOptions, device: torch.device
) -> tuple[_Plan, DataFreeConfig]:
    """The plan with batches and bank that fit in memory (``datafree.memory``); a resumed run
    keeps the sizes its checkpoint was made with."""
    config = plan.config
    if plan.synthesizer_class is not None and not options.resume:
        params = resolved_params(plan.synthesizer_class, dict(config.synthesizer.params))
        config = fit_to_memory(config, plan.synthesizer_class, params, teacher, student, device)
        config = warmup_within_budget(config, params)
    elif plan.synthesizer_class is not None:
        config = _sizes_of_the_resumed_run(config, options.out_dir / "config.yaml")
    return dataclasses.replace(plan, config=config), config


def _sizes_of_the_resumed_run(config: DataFreeConfig, saved_path: Path) -> DataFreeConfig:
    """``config`` with the batch sizes, bank and probe the interrupted run chose for its memory
    (anything else that differs is refused by the resume check)."""
    try:
        saved = safe_yaml(saved_path.read_text())
        batch = int(saved["trainer"]["batch_size"])
        params = dict(saved["synthesizer"]["params"])
        probe = int(saved["collapse"]["probe_size"])
    except (OSError, yaml.YAMLError, KeyError, TypeError, ValueError):
        return config  # the resume check names what is wrong
    sizes = {key: params[key] for key in ("batch_size", "memory_size") if key in params}
    return dataclasses.replace(
        config,
        synthesizer=dataclasses.replace(
            config.synthesizer, params={**config.synthesizer.params, **sizes}
        ),
        trainer=dataclasses.replace(config.trainer, batch_size=batch),
        collapse=dataclasses.replace(config.collapse, probe_size=probe),
    )


def _datasets(plan: _Plan, teacher: Teacher) -> tuple[ImageDataset | None, ImageDataset | None]:
    """The proxy images (``--proxy-data``) and the held-out data, checked against the teacher.

    Without proxy images the synthesizer must be able to invert this teacher.
    """
    config = plan.config
    proxy_set = None
    if config.proxy_dataset:
        if config.budget_images is not None:
            raise FreekdError(
                "an image budget counts synthesized images and --proxy-data synthesizes none; "
                "give a time budget (--budget 15m) or --epochs"
            )
        proxy_set = load_split(
            config.proxy_dataset,
            default_split="train",
            root=config.data_root,
            download=config.download,
        )
        check_input_shape(proxy_set, teacher.input_shape, who="the teacher")
    else:
        _check_synthesizer_fits(config.synthesizer.name, plan.synthesizer_class, teacher)
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
    return proxy_set, eval_set


def _student(config: DataFreeConfig, teacher: Teacher, arch: str) -> ImageClassifier:
    """A new student that normalizes its inputs as the teacher does (no data to measure),
    unless the teacher's normalization cannot be pixel statistics
    (``nets.teacher_pixel_statistics``: a raw 0–255 teacher would give the student inputs up
    to 255)."""
    mean, std = teacher_pixel_statistics(teacher)
    channels = teacher.input_shape[0]
    return build_student(
        arch,
        dict(config.student_kwargs),
        train_set=None,
        num_classes=teacher.num_classes,
        mean=mean * channels if len(mean) == 1 else mean,
        std=std * channels if len(std) == 1 else std,
        input_shape=teacher.input_shape,
        setting="--student",
    )


def _build_synthesizer(
    plan: _Plan, teacher: Teacher, *, rng: torch.Generator, device: torch.device
) -> Any:
    """The ``--method`` synthesizer for this teacher; a parameter out of range is one line."""
    config = plan.config
    assert plan.synthesizer_class is not None
    try:
        return plan.synthesizer_class(
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


def _budget(config: DataFreeConfig, synthetic: SyntheticSource | None) -> StopOnBudget:
    """The run's time, CPU and synthesized-image budgets (``--budget`` and friends); the
    synthesizer asks it whether a time budget is spent within a long warm-up round."""
    budget = StopOnBudget(
        minutes=config.budget_minutes,
        cpu_minutes=config.budget_cpu_minutes,
        images=config.budget_images,
        fit_schedule=config.fit_schedule_to_budget,
        images_spent=None
        if synthetic is None
        else lambda: synthetic.synthesizer.images_synthesized,
    )
    if synthetic is not None:
        synthetic.synthesizer.budget_spent = budget.time_spent
    return budget


def _proxy_results(
    config: DataFreeConfig, proxy_set: ImageDataset, teacher_queries: int
) -> dict[str, Any]:
    """The report entries of a proxy-data baseline: no synthesizer, no collapse."""
    return {
        "method": {"name": "proxy", "proxy_data": config.proxy_dataset},
        "proxy_dataset": proxy_set.name,
        "synthesize_every": None,
        "synthesized_images": 0,
        "teacher_queries": teacher_queries,
        "collapse": None,
    }


def _synthetic_results(
    plan: _Plan, synthetic: SyntheticSource, teacher_queries: int
) -> dict[str, Any]:
    """The report entries of a synthesizer run; a collapse it did not recover from is warned."""
    config = plan.config
    synthesizer = synthetic.synthesizer
    collapse = synthetic.collapse_report()
    results = {
        "method": {
            "name": config.synthesizer.name,
            "params": resolved_params(synthesizer.__class__, dict(config.synthesizer.params)),
            **synthesizer.report_entries(),
        },
        "synthesize_every": plan.synthesize_every,
        "synthesized_images": synthesizer.images_synthesized,
        "teacher_queries": teacher_queries + synthesizer.teacher_queries + synthetic.probe_queries,
        "collapse": collapse,
    }
    if collapse["events"] and not collapse["recovered"]:
        logger.warning(
            "COLLAPSE NOT RECOVERED: the %s synthesizer collapsed and %d re-initializations "
            "did not fix it (last diversity %s, label balance %s); the student is suspect",
            config.synthesizer.name,
            collapse["recoveries"],
            collapse["last_diversity"],
            collapse["last_balance"],
        )
    return results


def _shown_images(
    teacher: Teacher,
    synthetic: SyntheticSource | None,
    proxy_set: ImageDataset | None,
    *,
    seed: int,
    device: torch.device,
) -> torch.Tensor:
    """The student's inputs ``samples.png`` shows, 16 per teacher class (at least 64, at most
    160, the figure's 20 rows of 8): fresh synthetic images drawn a student batch at a time, or
    a seeded random draw of the proxy images."""
    count = min(max(64, 16 * teacher.num_classes), 160)
    if synthetic is not None:
        step = synthetic.batch_size
        parts = [synthetic.synthesizer.sample(min(step, count - i)) for i in range(0, count, step)]
        return torch.cat(parts)
    assert proxy_set is not None
    order = torch.randperm(len(proxy_set), generator=seeded(seed))
    return proxy_set.batch(order[:count]).images.to(device)
