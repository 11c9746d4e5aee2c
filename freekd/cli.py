"""The ``freekd`` command line: the root app adds each feature's sub-app; eval, info, demo.

No training logic lives here. torch is imported inside the commands so ``freekd --help`` is fast.
Every user error becomes one line on stderr and exit status 2, without a traceback.
"""

from __future__ import annotations

import json
import logging
import sys
import warnings
from collections.abc import Sequence
from pathlib import Path
from typing import Annotated, Any

import typer
from typer.core import TyperGroup

from freekd import __version__
from freekd.audit import cli as audit_cli
from freekd.cli_options import (
    DataRootOption,
    JsonOption,
    ModelSourceFlags,
    OverwriteOption,
    QuietOption,
    TrustCodeOption,
    run_command,
    user_errors,
)
from freekd.cli_tables import percent, print_table, privacy_rows
from freekd.crossmodal import cli as crossmodal_cli
from freekd.datafree import cli as datafree_cli
from freekd.distill import cli as distill_cli
from freekd.graph import cli as graph_cli
from freekd.online import cli as online_cli
from freekd.pate import cli as pate_cli
from freekd.privacy import cli as privacy_cli
from freekd.supervised import cli as supervised_cli


class _OneLineUsageErrors(TyperGroup):
    """The top-level command group: a usage error (unknown option, a value of the wrong type, a
    missing option) is one ``error:`` line on stderr and exit status 2, not typer's boxed panel
    under a usage banner (a failing command prints exactly one line)."""

    def main(  # type: ignore[override]
        self,
        args: Sequence[str] | None = None,
        prog_name: str | None = None,
        complete_var: str | None = None,
        standalone_mode: bool = True,
        **extra: Any,
    ) -> Any:
        if not standalone_mode:
            return super().main(args, prog_name, complete_var, standalone_mode, **extra)
        try:
            code = super().main(args, prog_name, complete_var, standalone_mode=False, **extra)
        except typer.TyperException as error:  # typer's own copy of click's ClickException
            if type(error).__name__ != "NoArgsIsHelpError":  # that one has printed the help
                typer.echo(f"error: {_usage_line(error)}", err=True)
            sys.exit(getattr(error, "exit_code", 2))
        except typer.Abort:
            typer.echo("error: aborted", err=True)
            sys.exit(1)
        sys.exit(code if isinstance(code, int) else 0)


def _usage_line(error: Exception) -> str:
    """A click error's message on one line, with where to find the command's options."""
    text = error.format_message() if hasattr(error, "format_message") else str(error)
    message = " ".join(line.strip() for line in text.splitlines() if line.strip())
    context = getattr(error, "ctx", None)
    if context is not None:
        message = f"{message.rstrip('.')}; see {context.command_path} --help"
    return message


app = typer.Typer(
    cls=_OneLineUsageErrors,
    no_args_is_help=True,
    pretty_exceptions_show_locals=False,
    add_completion=False,
    help="freekd: knowledge distillation without data, with private data, or across modalities.",
)
# Each feature's commands live in its package; the root only adds them.
app.add_typer(distill_cli.app)
app.add_typer(online_cli.app)
app.add_typer(datafree_cli.app)
app.add_typer(supervised_cli.teacher_app, name="teacher")
app.add_typer(privacy_cli.privacy_app, name="privacy")
app.add_typer(pate_cli.pate_app, name="pate")
app.add_typer(audit_cli.audit_app, name="audit")
app.add_typer(crossmodal_cli.crossmodal_app, name="crossmodal")
app.add_typer(graph_cli.graph_app, name="graph")


def _version(value: bool) -> None:
    if value:
        typer.echo(f"freekd {__version__}")
        raise typer.Exit()


def _log_warning(
    message: Warning | str,
    category: type[Warning],
    filename: str,
    lineno: int,
    file: Any = None,
    line: str | None = None,
) -> None:
    """``warnings.showwarning`` of the CLI: one log line per warning, not two on stderr.

    Third-party warnings (torch's and Opacus' UserWarnings about hooks and kernels) are details
    for developers: logged at INFO, so they show with ``--verbose`` only and a failing command
    still prints exactly one line. A warning category of freekd's own is a WARNING line.
    """
    text = " ".join(str(message).split())
    if category.__module__.split(".")[0] == "freekd":
        logging.getLogger("freekd").warning(text)
    else:
        logging.getLogger("freekd.warnings").info(
            "%s: %s (%s:%d)", category.__name__, text, filename, lineno
        )


@app.callback()
def main(
    version: Annotated[
        bool,
        typer.Option(
            "--version", callback=_version, is_eager=True, help="Print the version and exit."
        ),
    ] = False,
    verbose: Annotated[bool, typer.Option("--verbose", "-v", help="Log progress details.")] = False,
) -> None:
    """freekd: knowledge distillation without data, with private data, or across modalities."""
    logging.basicConfig(
        level=logging.INFO if verbose else logging.WARNING,
        format="%(levelname)s %(name)s: %(message)s",
        stream=sys.stderr,
    )
    warnings.showwarning = _log_warning


@run_command(app, "eval")
def eval_command(
    *,
    model: Annotated[
        str,
        typer.Option(
            "--model",
            help="Model file: freekd checkpoint, TorchScript, "
            "state_dict (+ --arch) or pickled module (+ --trust-pickle).",
        ),
    ],
    dataset: Annotated[str, typer.Option("--dataset", help="Labelled data, e.g. mnist:test.")],
    source: ModelSourceFlags,
    trust_code: TrustCodeOption = False,
    data_root: DataRootOption = None,
    device: Annotated[str, typer.Option("--device", help="auto, cpu or cuda[:N].")] = "auto",
    batch_size: Annotated[int, typer.Option("--batch-size", help="Evaluation batch size.")] = 512,
    as_json: JsonOption = False,
) -> None:
    """Accuracy of any loadable model on a labelled dataset."""
    from freekd.config import TeacherSourceConfig, from_dict
    from freekd.evaluation import run_eval

    values = source.values("", model)
    teacher = from_dict(TeacherSourceConfig, {k: v for k, v in values.items() if v is not None})
    result = run_eval(
        teacher,
        dataset,
        data_root=data_root,
        device=device,
        batch_size=batch_size,
        trust_code=trust_code,
    )
    if as_json:
        typer.echo(json.dumps({"accuracy": result["accuracy"], "n": result["n"]}))
    else:
        typer.echo(
            f"accuracy {percent(result['accuracy'])} on {result['n']} images of {result['dataset']}"
        )


@app.command()
@user_errors
def info(
    path: Annotated[
        Path, typer.Argument(help="A freekd file: model.pt (image, CLIP, graph) or teachers.pt.")
    ],
    as_json: JsonOption = False,
) -> None:
    """What a freekd file holds: architecture, classes, input, parameters, training config."""
    from freekd.evaluation import describe_checkpoint

    details = describe_checkpoint(path)
    if as_json:
        typer.echo(json.dumps(details, indent=2))
        return
    if "model" in details:  # a cross-modal file (CLIP or one tower) or a graph network
        print_table(
            str(path),
            [
                ("format", details["format"]),
                ("model", json.dumps(details["model"])),
                *[("code", "the architecture is an import path: loading it needs --trust-code")]
                * bool(details.get("arch_names_code")),
                ("parameters", f"{details['parameters']:,}"),
                ("weights", _checksum_row(details)),
                ("freekd version", str(details["freekd_version"])),
                (
                    "trained on",
                    str(details.get("trained_on") or details["config"].get("pairs", "?")),
                ),
            ],
        )
        return
    shape = "x".join(map(str, details["input"]["shape"]))
    privacy = details["privacy"]
    rows = privacy_rows(privacy) or [("privacy", "none (no differential-privacy record)")]
    if details["batchnorm_replacement"]:
        rows.append(("BatchNorm", f"replaced by {details['batchnorm_replacement']} (DP-SGD)"))
    print_table(
        str(path),
        [
            ("format", details["format"]),
            ("arch", f"{details['arch']} {details['arch_kwargs'] or ''}".strip()),
            *[("code", "the architecture is an import path: loading it needs --trust-code")]
            * bool(details.get("arch_names_code")),
            ("classes", str(details["num_classes"])),
            ("input", f"{shape}, mean {details['input']['mean']}, std {details['input']['std']}"),
            ("parameters", f"{details['parameters']:,}"),
            ("weights", _checksum_row(details)),
            ("freekd version", str(details["freekd_version"])),
            ("trained on", str(details["config"].get("dataset", "?"))),
            *rows,
        ],
    )


def _checksum_row(details: dict[str, Any]) -> str:
    """``freekd info``'s line on the weights' checksum (a mismatch never gets this far)."""
    if details["weights_checksum"] == "verified":
        return "SHA-256 checksum verified"
    return "no checksum (written by a freekd before checksums); not verified"


@app.command()
@user_errors
def demo(
    out: Annotated[Path, typer.Option("--out", help="Folder for the demo's runs.")] = Path(
        "runs/demo"
    ),
    teacher_epochs: Annotated[int, typer.Option(help="Teacher training epochs.")] = 4,
    student_epochs: Annotated[int, typer.Option(help="Student distillation epochs.")] = 10,
    datafree_epochs: Annotated[
        int, typer.Option(help="Data-free distillation epochs (200 steps each).")
    ] = 10,
    overwrite: OverwriteOption = False,
    quiet: QuietOption = False,
) -> None:
    """The embedded default job: MNIST LeNet-5 teacher → LeNet-5-half by KD and without data."""
    from freekd.demo import run_demo
    from freekd.runs import RunOptions

    reports = run_demo(
        RunOptions(out, overwrite=overwrite, quiet=quiet),
        teacher_epochs=teacher_epochs,
        student_epochs=student_epochs,
        datafree_epochs=datafree_epochs,
    )
    teacher, student, datafree = reports["teacher"], reports["student"], reports["datafree"]
    from rich.console import Console
    from rich.table import Table

    table = Table(title="freekd demo: MNIST LeNet-5 teacher → LeNet-5-half students")
    for column in ("model", "arch", "parameters", "test accuracy", "wall time"):
        table.add_column(column)
    table.add_row(
        "teacher",
        teacher["arch"],
        f"{teacher['parameters']:,}",
        percent(teacher["test_accuracy"]),
        f"{teacher['wall_seconds']:.0f} s",
    )
    table.add_row(
        "student (kd)",
        student["student"]["arch"],
        f"{student['student']['parameters']:,}",
        percent(student["student"]["test_accuracy"]),
        f"{student['wall_seconds']:.0f} s",
    )
    table.add_row(
        f"student (data-free, {datafree['method']['name']})",
        datafree["student"]["arch"],
        f"{datafree['student']['parameters']:,}",
        percent(datafree["student"]["test_accuracy"]),
        f"{datafree['wall_seconds']:.0f} s",
    )
    console = Console()
    console.print(table)
    console.print(
        f"runs, curves and models: {out}/teacher, {out}/student, {out}/datafree "
        f"(synthetic inputs: {out}/datafree/samples.png)"
    )
