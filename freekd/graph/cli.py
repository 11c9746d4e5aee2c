"""``freekd graph teacher|distill``: node classification on Planetoid graphs."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any

import typer

from freekd.cli_options import (
    ArchKwargsOption,
    Defaults,
    RunFlags,
    TrainerFlags,
    _json_arg,
    run_command,
)
from freekd.cli_tables import minutes, percent, print_table
from freekd.graph.config import GraphDistillConfig, GraphTeacherConfig

graph_app = typer.Typer(
    no_args_is_help=True,
    help="Graph data: GNN teachers on Cora / CiteSeer, distilled into MLPs and smaller GNNs.",
)

GraphDataOption = Annotated[
    str | None,
    typer.Option("--dataset", help="cora (default) or citeseer, with the public Planetoid split."),
]
GraphRootOption = Annotated[
    str | None,
    typer.Option(
        "--data-root",
        help="Folder holding Cora/ and CiteSeer/ (default: ../shared/data/planetoid).",
    ),
]


@run_command(graph_app, "teacher")
def graph_teacher(
    *,
    dataset: GraphDataOption = None,
    arch: Annotated[
        str | None, typer.Option("--arch", help="gcn (default), sage, gcn-small or mlp.")
    ] = None,
    arch_kwargs: ArchKwargsOption = None,
    setting: Annotated[
        str | None,
        typer.Option(
            "--setting",
            help="transductive (default) or inductive (20 % of the test nodes held out of the "
            "graph while training).",
        ),
    ] = None,
    data_root: GraphRootOption = None,
    trainer: TrainerFlags,
    run: Annotated[RunFlags, Defaults(out=Path("runs/graph-teacher"))],
) -> None:
    """Train a node classifier; the best epoch on the validation nodes is kept."""
    values = {
        "dataset": dataset,
        "arch": arch,
        "arch_kwargs": _json_arg(arch_kwargs, "--arch-kwargs"),
        "setting": setting,
        "data_root": data_root,
        **trainer.values(),
    }
    cfg = run.load(GraphTeacherConfig, values)
    from freekd.graph.pipeline import run_graph_teacher

    report = run_graph_teacher(cfg, run.options())
    print_table(
        f"graph teacher {cfg.arch} on {report['dataset']} ({report['setting']})",
        [*_accuracy_rows(report, "teacher"), ("time", minutes(report)),
         ("model", str(run.out / "model.pt"))],
    )  # fmt: skip


@run_command(graph_app, "distill")
def graph_distill(
    *,
    teacher: Annotated[Path, typer.Option("--teacher", help="model.pt of `freekd graph teacher`.")],
    student: Annotated[
        str | None,
        typer.Option("--student", help="mlp (default, graph-free), gcn-small, gcn or sage."),
    ] = None,
    student_kwargs: Annotated[
        str | None, typer.Option("--student-kwargs", help="JSON keyword arguments for --student.")
    ] = None,
    method: Annotated[
        str | None,
        typer.Option(
            "--method",
            help="glnn (default), kd, lsp (GNN students) or supervised (no teacher term).",
        ),
    ] = None,
    dataset: GraphDataOption = None,
    no_baseline: Annotated[
        bool, typer.Option("--no-baseline", help="Skip training the student alone.")
    ] = False,
    data_root: GraphRootOption = None,
    trainer: TrainerFlags,
    run: Annotated[RunFlags, Defaults(out=Path("runs/graph-distill"))],
) -> None:
    """Distill a graph teacher into a student; report both, the student alone, and speed."""
    values = {
        "teacher": str(teacher),
        "student": student,
        "student_kwargs": _json_arg(student_kwargs, "--student-kwargs"),
        "method.name": method,
        "dataset": dataset,
        "baseline": False if no_baseline else None,
        "data_root": data_root,
        **trainer.values(),
    }
    cfg = run.load(GraphDistillConfig, values)
    from freekd.graph.pipeline import run_graph_distill

    report = run_graph_distill(cfg, run.options())
    speed = report["inference"]
    rows = [
        *_accuracy_rows(report["teacher"], f"teacher {report['teacher']['arch']}"),
        *_accuracy_rows(report["student"], f"student {report['student']['arch']}"),
    ]
    if report["baseline"]:
        rows += _accuracy_rows(report["baseline"], f"{report['baseline']['arch']} alone")
    rows += [
        ("inference", f"{_times(speed['speedup'])} the teacher, one node per "
                      f"request ({1000 * speed['online']['student_seconds_per_1000']:.1f} ms "
                      f"against {1000 * speed['online']['teacher_seconds_per_1000']:.1f} ms per "
                      f"1,000 nodes); {_times(speed['batch_speedup'])} it with all test nodes "
                      "at once"),
        ("time", minutes(report)),
        ("model", str(run.out / "model.pt")),
    ]  # fmt: skip
    print_table(f"graph {cfg.method.name} on {report['dataset']} ({report['setting']})", rows)


def _times(speedup: float) -> str:
    """``20.1× faster than``, or ``1.1× slower than`` (a ratio below 1 read as a speed-up)."""
    if speedup >= 1:
        return f"{speedup:.1f}× faster than"
    return f"{1 / speedup:.1f}× slower than"


def _accuracy_rows(entry: dict[str, Any], name: str) -> list[tuple[str, str]]:
    text = (
        f"{percent(entry['test_accuracy'])} test, "
        f"{percent(entry['validation_accuracy'])} validation"
    )
    if "observed_test_accuracy" in entry:
        text += f", {percent(entry['observed_test_accuracy'])} on observed test nodes"
    return [(name, text)]
