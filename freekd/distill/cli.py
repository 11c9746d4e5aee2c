"""``freekd distill``."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from freekd.cli_options import (
    DataRootOption,
    DatasetOption,
    Defaults,
    DownloadOption,
    EvalDataOption,
    ModelSourceFlags,
    RunFlags,
    TeacherFileOption,
    TrainerFlags,
    run_command,
)
from freekd.cli_tables import minutes, percent, print_table
from freekd.distill.config import DistillConfig

app = typer.Typer()


@run_command(app)
def distill(
    *,
    teacher: TeacherFileOption = None,
    student: Annotated[str | None, typer.Option("--student", help="Student architecture.")] = None,
    method: Annotated[
        str | None, typer.Option("--method", help="Distillation method (kd).")
    ] = None,
    dataset: DatasetOption = None,
    eval_data: EvalDataOption = None,
    source: ModelSourceFlags,
    trainer: TrainerFlags,
    data_root: DataRootOption = None,
    download: DownloadOption = False,
    run: Annotated[RunFlags, Defaults(out=Path("runs/distill"))],
) -> None:
    """Distill a student from a teacher on real data (classic KD)."""
    values = {
        **source.values("teacher.", teacher),
        "student": student,
        "method.name": method,
        "dataset": dataset,
        "eval_dataset": eval_data,
        **trainer.values(),
        "data_root": data_root,
        "download": True if download else None,
    }
    cfg = run.load(DistillConfig, values)
    from freekd.distill.pipeline import run_distill

    report = run_distill(cfg, run.options())
    out = run.out
    print_table(
        f"{cfg.method.name}: {report['teacher']['arch'] or 'teacher'} → {cfg.student}",
        [
            ("teacher accuracy", percent(report["teacher"]["test_accuracy"])),
            (
                "student accuracy",
                f"{percent(report['student']['test_accuracy'])} on {report['eval_dataset']}",
            ),
            (
                "parameters",
                f"{report['teacher']['parameters']:,} → {report['student']['parameters']:,}",
            ),
            ("time", minutes(report)),
            ("model", str(out / "model.pt")),
        ],
    )
