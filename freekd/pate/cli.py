"""``freekd pate teachers|label|student|run``."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any

import typer

from freekd.cli_options import (
    DataRootOption,
    DatasetOption,
    Defaults,
    EvalDataOption,
    OptionHelp,
    OutOption,
    QuietOption,
    RunFlags,
    SeedOption,
    TrainerFlags,
    TrustCodeOption,
    _fail,
    run_command,
    user_errors,
)
from freekd.cli_tables import minutes, percent, print_table, privacy_rows
from freekd.config import load_config
from freekd.pate.config import PateLabelConfig, PateStudentConfig, PateTeachersConfig
from freekd.runlock import locks_folder_argument

pate_app = typer.Typer(
    no_args_is_help=True,
    help="PATE: teachers on disjoint shards → noisy, accounted labels → a private student.",
)


@run_command(pate_app, "teachers")
def pate_teachers(
    *,
    dataset: DatasetOption = None,
    teachers: Annotated[
        int | None, typer.Option("--teachers", help="K: teachers, each on its own shard.")
    ] = None,
    arch: Annotated[
        str | None, typer.Option("--arch", help="Architecture of every teacher.")
    ] = None,
    execution: Annotated[
        str | None,
        typer.Option("--execution", help="loop (one by one; CPU) or vmap (vectorised; GPU)."),
    ] = None,
    eval_data: EvalDataOption = None,
    trainer: Annotated[TrainerFlags, OptionHelp(batch_size="Images per teacher and step.")],
    data_root: DataRootOption = None,
    run: Annotated[RunFlags, Defaults(out=Path("runs/pate-teachers"))],
) -> None:
    """Train K teachers on disjoint shards of the private data (writes OUT/teachers.pt).

    teachers.pt is private: it holds everything the teachers learned. Only the noisy labeler of
    `freekd pate label` may release anything from it.
    """
    values = {
        "dataset": dataset,
        "teachers": teachers,
        "arch": arch,
        "execution": execution,
        "eval_dataset": eval_data,
        **trainer.values(),
        "data_root": data_root,
    }
    cfg = run.load(PateTeachersConfig, values)
    from freekd.pate.teachers import run_pate_teachers

    report = run_pate_teachers(cfg, run.options())
    out = run.out
    accuracy = report["teacher_accuracy"]
    print_table(
        f"{cfg.teachers} teachers {cfg.arch} on {report['dataset']}",
        [
            (
                "shards",
                f"{report['shards']['shard_size']:,} images each "
                f"({report['shards']['unused']:,} unused)",
            ),
            (
                "teacher accuracy",
                f"median {percent(accuracy['median'])} (min {percent(accuracy['min'])}, "
                f"max {percent(accuracy['max'])}) on {report['eval_dataset']}",
            ),
            ("plurality vote", f"{percent(report['plurality_accuracy'])} (no noise)"),
            ("time", minutes(report)),
            ("teachers", f"{out}/teachers.pt (private)"),
        ],
    )


AggregatorOption = Annotated[
    str | None,
    typer.Option(
        "--aggregator", help="lnmax, gnmax, confident-gnmax (default) or interactive-gnmax."
    ),
]


def _label_values(
    teachers: Path | None,
    queries_from: str | None,
    queries: int | None,
    aggregator: str | None,
    sigma: float | None,
    sigma1: float | None,
    sigma2: float | None,
    threshold: float | None,
    gamma: float | None,
    epsilon: float | None,
    delta: float | None,
    seed: int | None,
    interactive: tuple[Path | None, float | None, float | None] = (None, None, None),
) -> dict[str, Any]:
    if sigma is not None and sigma2 is not None and sigma != sigma2:
        raise _fail("--sigma and --sigma2 name the same noise; give one")
    return {
        "teachers": None if teachers is None else str(teachers),
        "query_dataset": queries_from,
        "queries": queries,
        "aggregator": aggregator,
        "sigma": sigma2 if sigma2 is not None else sigma,
        "sigma_threshold": sigma1,
        "threshold": threshold,
        "gamma": gamma,
        "epsilon": epsilon,
        "delta": delta,
        "seed": seed,
        "student_model": None if interactive[0] is None else str(interactive[0]),
        "confidence_scale": interactive[1],
        "student_threshold": interactive[2],
    }


def _print_label_report(report: dict[str, Any], out: Path) -> None:
    privacy = report["privacy"]
    print_table(
        f"PATE labels ({report['aggregator']})",
        [
            (
                "answered",
                f"{report['answered']:,} of {report['queries']['asked']:,} queries asked "
                f"({report['queries']['dataset']})",
            ),
            (
                "label accuracy",
                "–" if report["label_accuracy"] is None else percent(report["label_accuracy"]),
            ),
            *privacy_rows(privacy),
            (
                "budget",
                f"{privacy['budget']['epsilon']:g} at δ = {privacy['budget']['delta']:g}, "
                f"enforced on the {privacy['budget']['on']} ε",
            ),
            ("stopped by budget", "yes" if report["stopped_by_budget"] else "no"),
            ("files", f"{out}/labels.npz, {out}/ledger.jsonl (keep it)"),
        ],
    )


@run_command(pate_app, "label")
def pate_label(
    *,
    teachers: Annotated[
        Path | None,
        typer.Option("--teachers", help="teachers.pt of `freekd pate teachers`.", dir_okay=False),
    ] = None,
    queries_from: Annotated[
        str | None,
        typer.Option("--queries-from", help="Public unlabelled pool (default mnist:test)."),
    ] = None,
    queries: Annotated[
        int | None, typer.Option("--queries", help="Pool images to ask about at most.")
    ] = None,
    aggregator: AggregatorOption = None,
    sigma: Annotated[float | None, typer.Option("--sigma", help="GNMax noise σ.")] = None,
    sigma1: Annotated[
        float | None, typer.Option("--sigma1", help="Confident-GNMax: σ₁ of the check.")
    ] = None,
    sigma2: Annotated[
        float | None, typer.Option("--sigma2", help="Confident-GNMax: σ₂ of the answers.")
    ] = None,
    threshold: Annotated[
        float | None, typer.Option("--threshold", help="Confident-GNMax: threshold T.")
    ] = None,
    gamma: Annotated[
        float | None, typer.Option("--gamma", help="LNMax: inverse Laplace scale γ.")
    ] = None,
    student_model: Annotated[
        Path | None,
        typer.Option(
            "--student-model",
            help="Interactive-GNMax: a student checkpoint whose beliefs pick the queries.",
            dir_okay=False,
        ),
    ] = None,
    confidence_scale: Annotated[
        float | None, typer.Option("--confidence-scale", help="Interactive-GNMax: O.")
    ] = None,
    student_threshold: Annotated[
        float | None,
        typer.Option("--student-threshold", help="Interactive-GNMax: T' (student confidence)."),
    ] = None,
    epsilon: Annotated[float | None, typer.Option("--epsilon", help="Budget ε.")] = None,
    delta: Annotated[float | None, typer.Option("--delta", help="Budget δ.")] = None,
    seed: SeedOption = None,
    run: Annotated[
        RunFlags,
        Defaults(out=Path("runs/pate-labels")),
        OptionHelp(resume="Continue the ledger in --out (nothing re-spent)."),
    ],
) -> None:
    """Label public queries with the ensemble's noisy votes, within an (ε, δ) budget.

    Every answer is written to OUT/ledger.jsonl before it is released; the budget is checked
    before each query. The ledger is never replaced: continue it with --resume.
    """
    values = _label_values(
        teachers, queries_from, queries, aggregator, sigma, sigma1, sigma2, threshold, gamma,
        epsilon, delta, seed, (student_model, confidence_scale, student_threshold),
    )  # fmt: skip
    cfg = run.load(PateLabelConfig, values)
    from freekd.pate.label import run_pate_label

    report = run_pate_label(cfg, run.options())
    _print_label_report(report, run.out)


@run_command(pate_app, "student")
def pate_student(
    *,
    labels: Annotated[
        Path, typer.Option("--labels", help="The --out folder of `freekd pate label`.")
    ],
    student: Annotated[
        str | None, typer.Option("--student", help="Student architecture (default lenet5).")
    ] = None,
    queries_from: Annotated[
        str | None,
        typer.Option(
            "--queries-from",
            help="The labelled pool when it is a file or folder (a path in the labels' "
            "report is never opened).",
        ),
    ] = None,
    eval_data: Annotated[
        str | None,
        typer.Option("--eval-data", help="Held-out data (default: the labelling run's)."),
    ] = None,
    trainer: TrainerFlags,
    run: Annotated[RunFlags, Defaults(out=Path("runs/pate-student"))],
) -> None:
    """Train a student on the answered queries; it inherits the labels' (ε, δ)."""
    values = {
        "labels": str(labels),
        "student": student,
        "queries_from": queries_from,
        "eval_dataset": eval_data,
        **trainer.values(),
    }
    cfg = run.load(PateStudentConfig, values)
    from freekd.pate.student import run_pate_student

    report = run_pate_student(cfg, run.options())
    out = run.out
    privacy = report["privacy"]
    print_table(
        f"PATE student {cfg.student}",
        [
            (
                "student accuracy",
                f"{percent(report['student']['test_accuracy'])} on {report['eval_dataset']}",
            ),
            (
                "trained on",
                f"{report['trained_on']:,} labelled queries"
                + (
                    f" + {report['semi_supervised']['unlabelled_images']:,} unlabelled pool "
                    "images (VAT)"
                    if report["semi_supervised"]["method"] == "vat"
                    else ""
                ),
            ),
            *privacy_rows(privacy),
            ("time", minutes(report)),
            ("model", str(out / "model.pt")),
        ],
    )


@pate_app.command("run")
@user_errors
@locks_folder_argument("out")  # the stage folders below get their own locks
def pate_run(
    config: Annotated[
        Path,
        typer.Option(
            "--config",
            help="YAML with sections teachers:, label:, student: (PateTeachersConfig, "
            "PateLabelConfig, PateStudentConfig); see configs/pate/.",
            exists=True,
            dir_okay=False,
        ),
    ],
    out: OutOption = Path("runs/pate"),
    overrides: Annotated[
        list[str] | None,
        typer.Option("--set", help="Dotted override by section, e.g. label.sigma=40 (repeatable)."),
    ] = None,
    resume: Annotated[
        bool, typer.Option("--resume", help="Skip finished stages; continue the ledger.")
    ] = False,
    quiet: QuietOption = False,
    trust_code: TrustCodeOption = False,
) -> None:
    """All three PATE stages: teachers → labels → student, in OUT/teachers, labels, student.
    ``--set`` overrides the config's keys by section (``--set label.sigma=40``)."""
    from freekd.pate.config import PateRunConfig
    from freekd.pate.pipeline import run_pate
    from freekd.runs import RunOptions

    run = load_config(PateRunConfig, config, overrides=overrides, trust_code=trust_code)

    def print_stage(name: str, report: dict[str, Any], folder: Path) -> None:
        if name == "labels":
            _print_label_report(report, folder)
        elif name == "student":
            print_table(
                "PATE student",
                [
                    (
                        "student accuracy",
                        f"{percent(report['student']['test_accuracy'])} on "
                        f"{report['eval_dataset']}",
                    ),
                    *privacy_rows(report["privacy"]),
                    ("model", str(folder / "model.pt")),
                ],
            )

    run_pate(
        run,
        RunOptions(out, resume=resume, quiet=quiet, trust_code=trust_code),
        on_stage=print_stage,
    )
