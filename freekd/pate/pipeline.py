"""``freekd pate run``: the three PATE stages chained, for the command and the audit pipeline.

Teachers on disjoint shards → noisy, accounted labels → a student (Papernot et al. 2017, 2018).
:func:`run_pate` is the one place the stages are chained: the label stage reads the teachers
stage's ``teachers.pt``, the student stage the label stage's folder. ``freekd pate run`` and
``freekd audit pipeline`` both call it; they differ only in their :class:`PateLayout`.
"""

from __future__ import annotations

import dataclasses
import json
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from freekd import __version__
from freekd.config import read_yaml, to_dict
from freekd.errors import FreekdError
from freekd.io import atomic_write_json
from freekd.models import check_arch_name
from freekd.pate.config import PateRunConfig
from freekd.pate.label import checked_mechanism, run_pate_label
from freekd.pate.student import run_pate_student, semi_supervised_params
from freekd.pate.teachers import TEACHERS_FILE, refuse_weight_average, run_pate_teachers
from freekd.runlock import has_run_content, locks_run_folder
from freekd.runs import LEDGER_FILE, RESUME_FILE, RunOptions, in_section
from freekd.teachers.ensemble import check_execution
from freekd.train.resume import check_config_matches

STAGES = ("teachers", "labels", "student")

#: Called after each stage with its name, its report and its folder (the CLI prints from it).
StageHook = Callable[[str, dict[str, Any], Path], None]


@dataclass(frozen=True)
class PateLayout:
    """Where a chained PATE run writes its stages inside its folder, and how a rerun treats them.

    Attributes:
        teachers: the teachers stage's folder name.
        labels: the label stage's folder name (it holds the ledger).
        student: the student stage's folder name.
        summary: the file the run's summary report is written to (``None``: none).
        owned: the caller owns the whole folder (the audit pipeline): stages replace their
            folders, an existing ledger is always continued, and a resumed run keeps every stage
            whose ``report.json`` exists. Otherwise (``freekd pate run``) a stage never replaces
            a folder, and ``--resume`` keeps finished teachers (their ``teachers.pt``), continues
            the ledger and trains the student again on the labels.
    """

    teachers: str = "teachers"
    labels: str = "labels"
    student: str = "student"
    summary: str | None = "report.json"
    owned: bool = False


#: ``freekd pate run``: OUT/teachers, OUT/labels, OUT/student and OUT/report.json.
PATE_RUN = PateLayout()


@dataclass(frozen=True)
class StagePlan:
    """One stage of a chained run: its folder, whether an earlier run's result is kept, and
    the options it runs with otherwise."""

    folder: Path
    keep: bool
    options: RunOptions


def plan_stages(layout: PateLayout, options: RunOptions) -> dict[str, StagePlan]:
    """Each stage's folder and run options under ``options.out_dir``, as ``layout`` says.

    A ledger records privacy already spent: the label stage continues an existing one (on
    ``--resume``, or always when the caller owns the folder) and never replaces it.
    """

    folders = {name: options.out_dir / getattr(layout, name) for name in STAGES}
    ledger = (folders["labels"] / LEDGER_FILE).exists()

    def stage(name: str, *, overwrite: bool = False, resume: bool = False) -> RunOptions:
        return RunOptions(
            folders[name],
            overwrite=overwrite,
            resume=resume,
            quiet=options.quiet,
            trust_code=options.trust_code,
        )

    if layout.owned:
        keep = {
            name: options.resume and (folders[name] / "report.json").exists() for name in STAGES
        }
        runs = {
            "teachers": stage("teachers", overwrite=True),
            "labels": stage("labels", resume=ledger),
            "student": stage("student", overwrite=True),
        }
    else:
        teachers_done = options.resume and (folders["teachers"] / TEACHERS_FILE).exists()
        keep = {"teachers": teachers_done, "labels": False, "student": False}
        # A run killed while its teachers trained continues them from their checkpoint.
        teachers_started = (folders["teachers"] / RESUME_FILE).exists()
        runs = {
            "teachers": stage("teachers", resume=options.resume and teachers_started),
            "labels": stage("labels", resume=options.resume and ledger),
            "student": stage("student", overwrite=options.resume),
        }
    return {name: StagePlan(folders[name], keep[name], runs[name]) for name in STAGES}


def check_settings(config: PateRunConfig, *, stages: Sequence[str] = STAGES) -> None:
    """The settings of ``stages`` that need no data, checked before the first stage trains
    (``pate run``, ``audit pipeline``): the teachers' trainer, execution and architecture, the
    label stage's aggregator and budget, the student's architecture and its semi-supervised
    method with its parameters. A stage's refusal names its section and its hint the key as a
    ``pate run`` config spells it (``runs.in_section``)."""
    if "teachers" in stages:
        refuse_weight_average(config.teachers.trainer)
        in_section("teachers", lambda: check_execution(config.teachers.execution))
        in_section("teachers", lambda: check_arch_name(config.teachers.arch, setting="arch"))
    if "labels" in stages:  # the ensemble's file is the teachers stage's, filled in by run_pate
        label = dataclasses.replace(config.label, teachers=TEACHERS_FILE)
        in_section("label", lambda: checked_mechanism(label))
    if "student" in stages:
        in_section("student", lambda: semi_supervised_params(config.student))
        in_section("student", lambda: check_arch_name(config.student.student, setting="student"))


@locks_run_folder
def run_pate(
    config: PateRunConfig,
    options: RunOptions,
    *,
    layout: PateLayout = PATE_RUN,
    on_stage: StageHook | None = None,
) -> dict[str, Any]:
    """Teachers → labels → student in the stage folders of ``layout``; the summary report.

    The label stage's ``teachers`` and the student stage's ``labels`` are filled in here (they
    are the folders of the earlier stages). A stage kept from an earlier run is not run again:
    its ``report.json`` is read instead. Returns the summary (written to ``layout.summary``):
    every stage's folder and headline figures, and the student's privacy record.
    """

    wall_start, cpu_start = time.perf_counter(), time.process_time()
    plan = plan_stages(layout, options)
    if not layout.owned:
        _check_fresh_or_resumed(plan, options)
    teachers_dir, labels_dir = plan["teachers"].folder, plan["labels"].folder
    label_config = dataclasses.replace(config.label, teachers=str(teachers_dir / TEACHERS_FILE))
    # The pool is the one this run's own config names for labelling (never a path read back
    # from the label report).
    student_config = dataclasses.replace(
        config.student,
        labels=str(labels_dir),
        queries_from=config.student.queries_from or config.label.query_dataset,
        eval_dataset=config.student.eval_dataset or config.label.eval_dataset,
    )
    check_settings(config, stages=[name for name in STAGES if not plan[name].keep])
    if not layout.owned and plan["teachers"].keep:  # kept teachers must be the ones asked for
        saved = read_yaml(teachers_dir / "config.yaml")
        in_section(
            "teachers",
            lambda: check_config_matches(saved, to_dict(config.teachers), teachers_dir),
        )
    stages = {
        "teachers": lambda stage: run_pate_teachers(config.teachers, stage),
        "labels": lambda stage: run_pate_label(label_config, stage),
        "student": lambda stage: run_pate_student(student_config, stage),
    }
    reports: dict[str, dict[str, Any] | None] = {}
    for name, run in stages.items():
        step = plan[name]
        report = _finished_report(step.folder) if step.keep else run(step.options)
        if on_stage is not None and report is not None:
            on_stage(name, report, step.folder)
        reports[name] = report
    summary = {
        "command": "pate run",
        "stages": {name: str(step.folder) for name, step in plan.items()},
        **pate_headlines(reports),
        "wall_seconds": round(time.perf_counter() - wall_start, 3),
        "cpu_seconds": round(time.process_time() - cpu_start, 3),
        "freekd_version": __version__,
    }
    if layout.summary is not None:
        atomic_write_json(options.out_dir / layout.summary, summary)
    return summary


def _check_fresh_or_resumed(plan: dict[str, StagePlan], options: RunOptions) -> None:
    """``pate run`` never replaces a stage: its label stage's ledger records privacy already
    spent, and its teachers and labels are what that ledger accounts for. An earlier run is
    continued (``--resume``) or left alone (another ``--out``)."""
    if options.overwrite:
        raise FreekdError(
            "pate run never overwrites: the privacy already spent on labels stays on the ledger; "
            "continue the run with --resume or choose another --out"
        )
    if options.resume:
        return
    used = [
        name for name, step in plan.items() if step.folder.is_dir() and has_run_content(step.folder)
    ]
    if used:
        raise FreekdError(
            f"{options.out_dir} already holds a pate run (its {', '.join(used)} stage); "
            "continue it with --resume or choose another --out"
        )


def _finished_report(folder: Path) -> dict[str, Any] | None:
    """The ``report.json`` of a stage kept from an earlier run (``None`` if it has none, or
    one that is not JSON: the summary then has no figures for that stage)."""

    try:
        return json.loads((folder / "report.json").read_text(encoding="utf-8"))  # type: ignore[no-any-return]
    except (OSError, ValueError):  # missing, unreadable, not UTF-8 or not JSON
        return None


def pate_headlines(reports: dict[str, dict[str, Any] | None]) -> dict[str, Any]:
    """The summary's figures: each stage's headline and the student's privacy record.

    A stage without a report (teachers kept from a run that wrote ``teachers.pt`` but no
    report) has ``None``.
    """

    teachers, labels, student = (reports[name] for name in STAGES)
    return {
        "teachers": None
        if teachers is None
        else {
            "teachers": teachers["teachers"],
            "arch": teachers["arch"],
            "teacher_accuracy": {
                key: teachers["teacher_accuracy"][key] for key in ("median", "min", "max")
            },
            "plurality_accuracy": teachers["plurality_accuracy"],
            "eval_dataset": teachers["eval_dataset"],
        },
        "labels": None if labels is None else _label_headline(labels),
        "student": None
        if student is None
        else {
            "test_accuracy": student["student"]["test_accuracy"],
            "arch": student["student"]["arch"],
            "trained_on": student["trained_on"],
            "eval_dataset": student["eval_dataset"],
        },
        "privacy": None if student is None else student["privacy"],
    }


def _label_headline(report: dict[str, Any]) -> dict[str, Any]:
    """Queries asked and answered, label accuracy, and the labels' ε with its δ and kind."""

    privacy = report["privacy"]
    return {
        "aggregator": report["aggregator"],
        "asked": report["queries"]["asked"],
        "answered": report["answered"],
        "label_accuracy": report["label_accuracy"],
        "stopped_by_budget": report["stopped_by_budget"],
        "epsilon": privacy["epsilon"],
        "delta": privacy["delta"],
        "kind": privacy["kind"],
        "data_independent_epsilon": privacy["data_independent_epsilon"],
    }
