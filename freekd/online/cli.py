"""``freekd online``."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any

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
    _json_arg,
    run_command,
)
from freekd.cli_tables import minutes, percent, print_table
from freekd.online.config import OnlineConfig

app = typer.Typer()


@run_command(app)
def online(
    *,
    dataset: DatasetOption = None,
    method: Annotated[
        str | None, typer.Option("--method", help="Online method: dml (default) or one.")
    ] = None,
    arch: Annotated[
        list[str] | None,
        typer.Option(
            "--arch",
            help="Architecture (freekd name, torchvision:NAME or package.module:Class); "
            "repeat it for DML peers of different architectures. Default: resnet8.",
        ),
    ] = None,
    arch_kwargs: ArchKwargsOption = None,
    peers: Annotated[
        int | None, typer.Option("--peers", help="DML: peers of a single --arch (default 2).")
    ] = None,
    no_baseline: Annotated[
        bool,
        typer.Option("--no-baseline", help="Skip training each architecture alone for comparison."),
    ] = False,
    eval_data: EvalDataOption = None,
    trainer: TrainerFlags,
    data_root: DataRootOption = None,
    download: DownloadOption = False,
    run: Annotated[RunFlags, Defaults(out=Path("runs/online"))],
) -> None:
    """Online KD: networks that teach each other while they train, no pre-trained teacher.

    dml trains K peers with cross-entropy plus the mean KL to the others' predictions; one
    branches the last stage of one network into M branches with a gated ensemble teacher. The
    deployable network (model.pt) is the best single one on a held-out part of --dataset.
    """
    values = {
        "dataset": dataset,
        "method.name": method,
        "archs": list(arch) if arch else None,
        "arch_kwargs": _json_arg(arch_kwargs, "--arch-kwargs"),
        "peers": peers,
        "baseline": False if no_baseline else None,
        "eval_dataset": eval_data,
        **trainer.values(),
        "data_root": data_root,
        "download": True if download else None,
    }
    cfg = run.load(OnlineConfig, values)
    from freekd.online.pipeline import run_online

    report = run_online(cfg, run.options())
    print_table(f"online {cfg.method.name} on {report['dataset']}", _rows(report, run.out))


def _rows(report: dict[str, Any], out: Path) -> list[tuple[str, str]]:
    rows = [("", f"validation / test accuracy ({report['eval_dataset']})")]
    for name, entry in report["networks"].items():
        rows.append((f"{name} ({entry['arch']})", _both(entry)))
    rows.append(("ensemble", _both(report["ensemble"])))
    for arch, entry in (report["baseline"] or {}).items():
        rows.append((f"{arch} alone", _both(entry)))
    student = report["student"]
    rows += [
        ("deployable", f"{student['name']}, best on validation → {out / 'model.pt'}"),
        ("time", minutes(report)),
    ]
    return rows


def _both(entry: dict[str, Any]) -> str:
    return f"{percent(entry['validation_accuracy'])} / {percent(entry['test_accuracy'])}"
