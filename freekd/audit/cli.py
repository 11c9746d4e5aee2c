"""``freekd audit`` and ``freekd audit pipeline``."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any

import typer

from freekd.audit.config import AuditConfig, AuditPipelineConfig
from freekd.cli_options import (
    DataRootOption,
    Defaults,
    DeviceOption,
    ModelSourceFlags,
    OptionHelp,
    RunFlags,
    SeedOption,
    flag_names,
    option_groups,
    run_command,
    user_errors,
)
from freekd.cli_tables import percent

audit_app = typer.Typer(
    invoke_without_command=True,
    help="Privacy audits: membership inference and an empirical ε lower bound of any model.",
)


def _print_audit(report: dict[str, Any], out: Path) -> None:
    from rich.console import Console
    from rich.table import Table

    table = Table(title=f"membership inference: {report['model']['path']}")
    for column in ("attack", "AUC", "TPR @ 0.1 % FPR", "TPR @ 1 % FPR", "advantage"):
        table.add_column(column, justify="left" if column == "attack" else "right")
    for name, result in report["attacks"].items():
        rates = result["tpr_at_fpr"]
        table.add_row(
            name,
            f"{result['auc']:.3f}",
            percent(rates["0.001"]),
            percent(rates["0.01"]),
            f"{result['advantage']:.3f}",
        )
    console = Console()
    console.print(table)
    console.print(report["summary"].splitlines()[-1], markup=False, highlight=False)
    console.print(f"files: {out}/report.json, {out}/roc.png, {out}/summary.txt")


@audit_app.callback()
@user_errors
@option_groups
def audit(
    *,
    ctx: typer.Context,
    model: Annotated[
        str | None,
        typer.Option("--model", help="The model to audit (any teacher file freekd loads)."),
    ] = None,
    members: Annotated[
        str | None,
        typer.Option("--members", help="Examples the model trained on (dataset spec)."),
    ] = None,
    non_members: Annotated[
        str | None,
        typer.Option(
            "--non-members", help="Examples it did not train on, from the same distribution."
        ),
    ] = None,
    attack: Annotated[
        list[str] | None,
        typer.Option(
            "--attack",
            help="Attack name (repeatable or comma-separated): loss, confidence, entropy, "
            "modified-entropy, lira-online, lira-offline, lira-*-fixed-variance, rmia, "
            "rmia-offline. Default: all that the shadow models allow.",
        ),
    ] = None,
    shadow_models: Annotated[
        int | None,
        typer.Option(
            "--shadow-models",
            help="Shadow models for LiRA and RMIA, trained on random halves of members ∪ "
            "non-members (default 16; 0: threshold attacks only).",
        ),
    ] = None,
    shadows_from: Annotated[
        Path | None,
        typer.Option(
            "--shadows-from",
            help="Reuse the shadow models of an earlier audit of the same pool (its folder).",
            file_okay=False,
        ),
    ] = None,
    confidence: Annotated[
        float | None,
        typer.Option("--confidence", help="Confidence of the ε lower bound (default 0.95)."),
    ] = None,
    random_split: Annotated[
        bool,
        typer.Option(
            "--random-split",
            help="The members were drawn from members ∪ non-members by fair coin flips, as the "
            "ε lower bound assumes.",
        ),
    ] = False,
    max_examples: Annotated[
        int | None,
        typer.Option("--max-examples", help="Use at most this many members and non-members."),
    ] = None,
    source: ModelSourceFlags,
    seed: SeedOption = None,
    device: DeviceOption = None,
    data_root: DataRootOption = None,
    run: Annotated[
        RunFlags,
        Defaults(out=Path("runs/audit")),
        OptionHelp(resume="Continue an interrupted audit from its shadow models' progress."),
    ],
) -> None:
    """Audit a model: membership-inference attacks, ROC curves and an empirical ε lower bound.

    Writes OUT/report.json, roc.png (log-log ROC of every attack) and summary.txt. Exit status
    1 when the ε lower bound exceeds the model's claimed ε (a privacy bug), 2 on bad input.
    `freekd audit pipeline` runs the whole distillation threat model instead.
    """
    if ctx.invoked_subcommand is not None:
        return
    names = flag_names(attack, "--attack", "loss,lira-online")
    values = {
        **source.values("model.", model),
        "members": members,
        "non_members": non_members,
        "attacks": names,
        "shadow.models": shadow_models,
        "shadow.reuse": None if shadows_from is None else str(shadows_from),
        "shadow.trainer.device": device,
        "confidence": confidence,
        "random_split": True if random_split else None,
        "max_examples": max_examples,
        "seed": seed,
        "data_root": data_root,
    }
    cfg = run.load(AuditConfig, values)
    from freekd.audit.pipeline import run_audit

    report = run_audit(cfg, run.options())
    _print_audit(report, run.out)
    if report["epsilon_lower_bound"].get("consistent") is False:
        # Not a usage error (2): the audit ran and found the model's privacy claim violated.
        typer.echo(
            "error: the empirical ε lower bound exceeds the model's claimed ε; its privacy "
            "accounting or training is wrong",
            err=True,
        )
        raise typer.Exit(1)


@run_command(audit_app, "pipeline")
def audit_pipeline(
    *,
    paths: Annotated[
        list[str] | None,
        typer.Option(
            "--path",
            help="Distillation path(s) to audit (repeatable or comma-separated): kd, datafree, "
            "pate, dpsgd-datafree. Default: all four.",
        ),
    ] = None,
    dataset: Annotated[
        str | None, typer.Option("--dataset", help="Registry dataset (default mnist).")
    ] = None,
    pool: Annotated[
        int | None,
        typer.Option(
            "--pool", help="Audit pool size; each image is a member with probability 1/2."
        ),
    ] = None,
    shadow_models: Annotated[
        int | None, typer.Option("--shadow-models", help="Shadow models (default 16).")
    ] = None,
    seed: SeedOption = None,
    data_root: DataRootOption = None,
    run: Annotated[
        RunFlags,
        Defaults(out=Path("runs/audit-pipeline")),
        OptionHelp(resume="Skip the stages that finished; redo the rest."),
    ],
) -> None:
    """The distillation threat model end to end: a teacher trained on a random half of a pool,
    students distilled from it by each path, every model audited against the teacher's members.
    """
    values = {
        "paths": flag_names(paths, "--path", "kd,datafree"),
        "dataset": dataset,
        "pool": pool,
        "audit.shadow.models": shadow_models,
        "seed": seed,
        "data_root": data_root,
    }
    cfg = run.load(AuditPipelineConfig, values)
    from freekd.audit.threat_model import run_audit_pipeline

    report = run_audit_pipeline(cfg, run.options())
    _print_threat_model(report, run.out)


def _print_threat_model(report: dict[str, Any], out: Path) -> None:
    """The table of `freekd audit pipeline`: one row per model, its accuracy and leakage."""
    from rich.console import Console
    from rich.table import Table

    table = Table(title="privacy audit of the distillation paths")
    for column in (
        "model", "test acc.", "best AUC", "LiRA TPR @ 0.1 % FPR", "loss TPR @ 0.1 % FPR",
        "ε lower bound", "accountant ε",
    ):  # fmt: skip
        table.add_column(
            column, justify="left" if column == "model" else "right", no_wrap=column == "model"
        )
    for row in report["table"]:
        claimed = row["accountant_epsilon"]
        kind = row.get("accountant_kind") or "kind unknown"
        table.add_row(
            row["model"],
            percent(row["test_accuracy"]) if row["test_accuracy"] is not None else "-",
            f"{row['best_auc']:.3f}",
            percent(row["lira_tpr_at_0.001"]) if row["lira_tpr_at_0.001"] is not None else "-",
            "-" if row["loss_tpr_at_0.001"] is None else percent(row["loss_tpr_at_0.001"]),
            f"{row['epsilon_lower_bound']:.3f}",
            "-" if claimed is None else f"{claimed:.3g} ({kind})",
        )
    console = Console()
    console.print(table)
    console.print("LiRA: lira-online-fixed-variance; TPR at 0.1 % FPR of chance is 0.1 %.")
    typer.echo(f"files: {out}/report.json, {out}/roc.png, {out}/audit/*/")
