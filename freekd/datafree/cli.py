"""``freekd datafree``."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any

import typer

from freekd.cli_options import (
    DataRootOption,
    Defaults,
    ModelSourceFlags,
    RunFlags,
    TeacherFileOption,
    TrainerFlags,
    _budget_values,
    run_command,
)
from freekd.cli_tables import minutes, percent, print_table, privacy_rows
from freekd.datafree.config import DataFreeConfig
from freekd.errors import FreekdError

app = typer.Typer()


@run_command(app)
def datafree(
    *,
    teacher: TeacherFileOption = None,
    student: Annotated[
        str | None,
        typer.Option(
            "--student",
            help="Student architecture (default: a smaller model of the "
            "teacher's family, e.g. lenet5 → lenet5-half; shallow-cnn for a grey teacher of "
            "one convolution and one linear layer; else a general student smaller than the "
            "teacher, e.g. lenet5-half for grey images).",
        ),
    ] = None,
    method: Annotated[
        str | None,
        typer.Option(
            "--method",
            help="Data-free synthesizer: auto (default: nayer for a teacher with BatchNorm, zskt "
            "without, replaying earlier batches if it has no convolutions either), zskt, "
            "dafl, dfad, deepinversion, fast, cmi, nayer, impressions, noise.",
        ),
    ] = None,
    budget: Annotated[
        str | None,
        typer.Option(
            "--budget",
            help="Stop after this much time (15m, 90s, 1.5h), CPU time (cpu:15m: fair on a shared "
            "machine) or this many synthesized images (200000).",
        ),
    ] = None,
    eval_data: Annotated[
        str | None,
        typer.Option("--eval-data", help="Labelled real data used only to report accuracy."),
    ] = None,
    proxy_data: Annotated[
        str | None,
        typer.Option(
            "--proxy-data",
            help="Baseline: distill on these real images (labels hidden) instead of "
            "synthesizing, e.g. animal-mnist (unrelated proxy) or mnist:train (real-data upper "
            "bound). Excludes --method.",
        ),
    ] = None,
    save_queries: Annotated[
        int | None,
        typer.Option(
            "--save-queries",
            help="Also write this many images of the final synthesizer to OUT/queries.npz, "
            "queries for `freekd pate label --queries-from` (data-free PATE).",
        ),
    ] = None,
    source: ModelSourceFlags,
    trainer: TrainerFlags,
    data_root: DataRootOption = None,
    run: Annotated[RunFlags, Defaults(out=Path("runs/datafree"))],
) -> None:
    """Distill a student from a teacher with synthetic inputs only (no training data).

    With --proxy-data the same loop distills on real images instead (the baselines).
    """
    if method is not None and proxy_data is not None:
        raise FreekdError(
            "--method picks a synthesizer and --proxy-data replaces synthesis with real images; "
            "give one of them"
        )
    values = {
        **source.values("teacher.", teacher),
        "student": student,
        "synthesizer.name": method,
        "eval_dataset": eval_data,
        "proxy_dataset": proxy_data,
        "save_queries": save_queries,
        **trainer.values(),
        "data_root": data_root,
        **_budget_values(budget),
    }
    cfg = run.load(DataFreeConfig, values)
    from freekd.datafree.pipeline import run_datafree

    report = run_datafree(cfg, run.options())
    ran = (report.get("method") or {}).get("name") or cfg.synthesizer.name
    source_name = f"proxy {cfg.proxy_dataset}" if cfg.proxy_dataset else ran
    if not cfg.proxy_dataset and cfg.synthesizer.name != ran:
        source_name += f" ({cfg.synthesizer.name}'s choice)"
    rows = _report_rows(report, source_name, run.out)
    student_method = (report.get("student_method") or {}).get("name")
    if student_method:
        rows.insert(1, ("student loss", student_method))
    print_table("data-free distillation", rows)


def _report_rows(report: dict[str, Any], source: str, out: Path) -> list[tuple[str, str]]:
    """The summary table of a data-free run: method, accuracies, queries, collapse, privacy."""
    rows = [
        ("method", f"{source} → {report['student']['arch']}"),
        ("synthesized images", f"{report['synthesized_images']:,}"),
        ("teacher queries", f"{report['teacher_queries']:,}"),
    ]
    if report["student"]["test_accuracy"] is not None:
        rows.insert(1, ("teacher accuracy", percent(report["teacher"]["test_accuracy"])))
        rows.insert(
            2,
            (
                "student accuracy",
                f"{percent(report['student']['test_accuracy'])} on {report['eval_dataset']}",
            ),
        )
    if report["stopped_by_budget"]:
        rows.append(("stopped", report["stopped_by_budget"]))
    collapse = report["collapse"]
    if collapse and collapse["events"]:
        rows.append(("collapse", _collapse_summary(collapse)))
    privacy = report["privacy"]
    if privacy["private"]:
        rows += privacy_rows(privacy, "privacy (inherited)")
    files = [f"{out}/model.pt", f"{out}/samples.png"]
    files += [f"{out}/{report['queries_file']['path']}"] if report.get("queries_file") else []
    rows += [("time", minutes(report)), ("files", ", ".join(files))]
    return rows


def _collapse_summary(collapse: dict[str, Any]) -> str:
    """The collapse monitor's verdict, the status first: a narrow terminal cuts the end of it."""
    status = "recovered" if collapse["recovered"] else "NOT RECOVERED, the student is suspect"
    if collapse.get("student_damaged"):
        status += " (it lost the teacher before the check: compare its accuracy)"
    reasons = sorted(
        {reason for event in collapse["events"] for reason in event.get("reasons", ())}
    )
    return (
        f"{status}; {len(collapse['events'])} event(s)"
        + (f" ({', '.join(reasons)})" if reasons else "")
        + f", {collapse['recoveries']} re-initialization(s)"
    )
