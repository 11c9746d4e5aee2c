"""``freekd teacher train``."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from freekd.cli_options import (
    ArchKwargsOption,
    DataRootOption,
    DatasetOption,
    Defaults,
    DownloadOption,
    EvalDataOption,
    RunFlags,
    TrainerFlags,
    _fail,
    _json_arg,
    run_command,
)
from freekd.cli_tables import minutes, percent, print_table, privacy_rows
from freekd.supervised.config import TeacherTrainConfig

teacher_app = typer.Typer(no_args_is_help=True, help="Train teachers.")


@run_command(teacher_app, "train")
def teacher_train(
    *,
    dataset: DatasetOption = None,
    arch: Annotated[
        str | None,
        typer.Option(
            "--arch",
            help="Model architecture (freekd name, torchvision:NAME or package.module:Class).",
        ),
    ] = None,
    arch_kwargs: ArchKwargsOption = None,
    eval_data: EvalDataOption = None,
    trainer: TrainerFlags,
    data_root: DataRootOption = None,
    download: DownloadOption = False,
    run: Annotated[RunFlags, Defaults(out=Path("runs/teacher"))],
    dp: Annotated[
        bool, typer.Option("--dp", help="Train with DP-SGD (Opacus): (ε, δ) goes into model.pt.")
    ] = False,
    epsilon: Annotated[
        float | None, typer.Option("--epsilon", help="With --dp: target ε of the whole run.")
    ] = None,
    delta: Annotated[
        float | None, typer.Option("--delta", help="With --dp: δ (default 1e-5).")
    ] = None,
    max_grad_norm: Annotated[
        float | None,
        typer.Option("--max-grad-norm", help="With --dp: per-example gradient clipping norm C."),
    ] = None,
) -> None:
    """Train a teacher classifier with supervised learning (writes OUT/model.pt).

    With --dp, DP-SGD through Opacus: Poisson batches, per-example clipping to --max-grad-norm,
    Gaussian noise chosen to meet --epsilon at --delta, BatchNorm replaced by GroupNorm.
    """
    if not dp and any(v is not None for v in (epsilon, delta, max_grad_norm)):
        raise _fail("--epsilon, --delta and --max-grad-norm go with --dp")
    dp_values = {
        "enabled": True if dp else None,
        "epsilon": epsilon,
        "delta": delta,
        "max_grad_norm": max_grad_norm,
    }
    values = {
        "dataset": dataset,
        "arch": arch,
        "arch_kwargs": _json_arg(arch_kwargs, "--arch-kwargs"),
        "eval_dataset": eval_data,
        **trainer.values(),
        "data_root": data_root,
        "download": True if download else None,
        **{f"dp.{key}": value for key, value in dp_values.items()},
    }
    cfg = run.load(TeacherTrainConfig, values)
    from freekd.supervised.pipeline import run_teacher_train

    report = run_teacher_train(cfg, run.options())
    out = run.out
    rows = [
        ("test accuracy", f"{percent(report['test_accuracy'])} on {report['eval_dataset']}"),
        ("parameters", f"{report['parameters']:,}"),
        ("time", minutes(report)),
        ("model", str(out / "model.pt")),
    ]
    if "privacy" in report:
        privacy = report["privacy"]
        mechanism = privacy["mechanisms"][0]
        rows[1:1] = [
            *privacy_rows(privacy, "privacy (DP-SGD)"),
            (
                "",
                f"noise multiplier {mechanism['noise_multiplier']:.3g}, clipping "
                f"{mechanism['max_grad_norm']:g}",
            ),
        ]
    print_table(f"teacher {cfg.arch} on {report['dataset']}", rows)
