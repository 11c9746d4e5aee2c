"""``freekd distill``."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from freekd.cli_options import (
    ArchKwargsOption,
    BatchOption,
    ConfigOption,
    DataRootOption,
    DatasetOption,
    DeterministicOption,
    DeviceOption,
    DownloadOption,
    EpochsOption,
    EvalDataOption,
    InputShapeOption,
    LrOption,
    MeanOption,
    NumClassesOption,
    OutOption,
    OverwriteOption,
    QuietOption,
    ResumeOption,
    SeedOption,
    SetOption,
    SourceArchOption,
    StdOption,
    TrustCodeOption,
    TrustPickleOption,
    _minutes,
    _percent,
    _print_table,
    _resume_base,
    _source_values,
    _trainer_values,
    user_errors,
)
from freekd.config import load_config
from freekd.distill.config import DistillConfig

app = typer.Typer()


@app.command()
@user_errors
def distill(
    teacher: Annotated[
        str | None,
        typer.Option(
            "--teacher",
            help="Teacher file: freekd checkpoint, TorchScript, state_dict (+ --arch) or "
            "pickled module (+ --trust-pickle).",
        ),
    ] = None,
    student: Annotated[str | None, typer.Option("--student", help="Student architecture.")] = None,
    method: Annotated[
        str | None, typer.Option("--method", help="Distillation method (kd).")
    ] = None,
    dataset: DatasetOption = None,
    eval_data: EvalDataOption = None,
    arch: SourceArchOption = None,
    arch_kwargs: ArchKwargsOption = None,
    input_shape: InputShapeOption = None,
    num_classes: NumClassesOption = None,
    mean: MeanOption = None,
    std: StdOption = None,
    trust_pickle: TrustPickleOption = False,
    epochs: EpochsOption = None,
    batch_size: BatchOption = None,
    lr: LrOption = None,
    seed: SeedOption = None,
    device: DeviceOption = None,
    deterministic: DeterministicOption = False,
    data_root: DataRootOption = None,
    download: DownloadOption = False,
    config: ConfigOption = None,
    trust_code: TrustCodeOption = False,
    overrides: SetOption = None,
    out: OutOption = Path("runs/distill"),
    overwrite: OverwriteOption = False,
    resume: ResumeOption = False,
    quiet: QuietOption = False,
) -> None:
    """Distill a student from a teacher on real data (classic KD)."""
    values = {
        **_source_values(
            "teacher.",
            teacher,
            arch,
            arch_kwargs,
            input_shape,
            num_classes,
            mean,
            std,
            trust_pickle,
        ),
        "student": student,
        "method.name": method,
        "dataset": dataset,
        "eval_dataset": eval_data,
        "seed": seed,
        "data_root": data_root,
        "download": True if download else None,
        **_trainer_values(epochs, batch_size, lr, device, deterministic),
    }
    cfg = load_config(
        DistillConfig,
        config,
        overrides=overrides,
        values=values,
        base=_resume_base(out, resume),
        trust_code=trust_code,
    )
    from freekd.distill.pipeline import run_distill
    from freekd.runs import RunOptions

    report = run_distill(
        cfg, RunOptions(out, overwrite=overwrite, resume=resume, quiet=quiet, trust_code=trust_code)
    )
    _print_table(
        f"{cfg.method.name}: {report['teacher']['arch'] or 'teacher'} → {cfg.student}",
        [
            ("teacher accuracy", _percent(report["teacher"]["test_accuracy"])),
            (
                "student accuracy",
                f"{_percent(report['student']['test_accuracy'])} on {report['eval_dataset']}",
            ),
            (
                "parameters",
                f"{report['teacher']['parameters']:,} → {report['student']['parameters']:,}",
            ),
            ("time", _minutes(report)),
            ("model", str(out / "model.pt")),
        ],
    )
