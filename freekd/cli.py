"""The ``freekd`` command line: parse → load_config → pipelines.run_* → print a summary.

No training logic lives here. torch is imported inside the commands so ``freekd --help`` is fast.
Every user error becomes one line on stderr and exit status 2, without a traceback.
"""

from __future__ import annotations

import errno
import functools
import json
import logging
import sys
import warnings
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Annotated, Any, TypeVar

import typer
from typer.core import TyperGroup

from freekd import __version__
from freekd.config import (
    AuditConfig,
    AuditPipelineConfig,
    DataFreeConfig,
    DistillConfig,
    PateLabelConfig,
    PateStudentConfig,
    PateTeachersConfig,
    TeacherTrainConfig,
    load_config,
    read_yaml,
)
from freekd.errors import FreekdError
from freekd.runlock import locks_folder_argument


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
teacher_app = typer.Typer(no_args_is_help=True, help="Train teachers.")
app.add_typer(teacher_app, name="teacher")
privacy_app = typer.Typer(no_args_is_help=True, help="Privacy accounting calculators.")
app.add_typer(privacy_app, name="privacy")
pate_app = typer.Typer(
    no_args_is_help=True,
    help="PATE: teachers on disjoint shards → noisy, accounted labels → a private student.",
)
app.add_typer(pate_app, name="pate")
audit_app = typer.Typer(
    invoke_without_command=True,
    help="Privacy audits: membership inference and an empirical ε lower bound of any model.",
)
app.add_typer(audit_app, name="audit")
crossmodal_app = typer.Typer(
    no_args_is_help=True,
    help="Cross-modal distillation: image ↔ text models on open_clip, templated pairs.",
)
app.add_typer(crossmodal_app, name="crossmodal")

F = TypeVar("F", bound=Callable[..., Any])


def _fail(message: str, code: int = 2) -> typer.Exit:
    typer.echo(f"error: {message}", err=True)
    return typer.Exit(code)


#: errno values of a write that found no room: no space, a file size limit, a disk quota.
_DISK_FULL = {errno.ENOSPC, errno.EFBIG, errno.EDQUOT}


def user_errors(function: F) -> F:
    """Turn FreekdError (and Ctrl-C) into one line on stderr and a non-zero exit status."""

    @functools.wraps(function)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        try:
            return function(*args, **kwargs)
        except FreekdError as error:
            raise _fail(str(error)) from None
        except OSError as error:  # disk full, permission denied, read-only folder ...
            where = f" {error.filename}" if error.filename else ""
            if error.errno in _DISK_FULL:
                raise _fail(
                    f"the disk is full or a file size limit was hit writing{where or ' a file'} "
                    f"({error.strerror}); free space or raise the limit (ulimit -f) and "
                    "run again"
                ) from None
            raise _fail(
                f"cannot access{where}: {error.strerror or error}; check the path and free space"
            ) from None
        except KeyboardInterrupt:
            raise _fail(
                "interrupted; continue later with --resume and the same --out", 130
            ) from None

    return wrapper  # type: ignore[return-value]


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


# Options shared by the training commands --------------------------------------------------------

ConfigOption = Annotated[
    Path | None,
    typer.Option("--config", help="YAML file of config overrides (see configs/).", dir_okay=False),
]
SetOption = Annotated[
    list[str] | None,
    typer.Option("--set", help="Dotted override, e.g. trainer.lr=0.01 (repeatable)."),
]
DatasetOption = Annotated[
    str | None,
    typer.Option(
        "--dataset",
        help="Training data: mnist, fashion-mnist, digits, animal-mnist[:split], a .npz "
        "file or an image folder.",
    ),
]
EvalDataOption = Annotated[
    str | None,
    typer.Option(
        "--eval-data", help="Held-out labelled data (default: the test split of --dataset)."
    ),
]
EpochsOption = Annotated[int | None, typer.Option("--epochs", help="Training epochs.")]
BatchOption = Annotated[int | None, typer.Option("--batch-size", help="Global batch size.")]
LrOption = Annotated[float | None, typer.Option("--lr", help="Peak learning rate.")]
SeedOption = Annotated[int | None, typer.Option("--seed", help="Random seed.")]
DeviceOption = Annotated[str | None, typer.Option("--device", help="auto, cpu or cuda[:N].")]
DeterministicOption = Annotated[
    bool, typer.Option("--deterministic", help="Deterministic kernels (bitwise repeatable on CPU).")
]
OutOption = Annotated[
    Path,
    typer.Option(
        "--out",
        help="Run folder for model.pt, report.json, config.yaml, metrics.jsonl, curves.png.",
    ),
]
QuietOption = Annotated[bool, typer.Option("--quiet", "-q", help="No progress bar.")]
OverwriteOption = Annotated[
    bool, typer.Option("--overwrite", help="Replace the run files in an existing --out folder.")
]
ResumeOption = Annotated[
    bool,
    typer.Option("--resume", help="Continue the interrupted run in --out from its checkpoint.pt."),
]
DataRootOption = Annotated[
    str | None,
    typer.Option(
        "--data-root", help="torchvision-format data root (CIFAR-10/100, SVHN, MNIST files)."
    ),
]
DownloadOption = Annotated[
    bool,
    typer.Option("--download", help="Let torchvision download into --data-root (needs a network)."),
]
JsonOption = Annotated[bool, typer.Option("--json", help="Print JSON on stdout.")]
# How to load a model file that is not a freekd checkpoint (DESIGN.md, "Teachers users bring").
SourceArchOption = Annotated[
    str | None,
    typer.Option(
        "--arch",
        help="Architecture of a plain state_dict file (freekd name, torchvision:NAME or "
        "package.module:Class).",
    ),
]
ArchKwargsOption = Annotated[
    str | None, typer.Option("--arch-kwargs", help="JSON keyword arguments for --arch.")
]
InputShapeOption = Annotated[
    str | None,
    typer.Option("--input-shape", help="Input C,H,W of a state_dict or TorchScript file."),
]
NumClassesOption = Annotated[
    int | None, typer.Option("--num-classes", help="Class count (inferred when omitted).")
]
MeanOption = Annotated[
    str | None,
    typer.Option("--mean", help="Input normalization mean the model expects, comma-separated."),
]
StdOption = Annotated[
    str | None,
    typer.Option("--std", help="Input normalization std the model expects, comma-separated."),
]
TrustPickleOption = Annotated[
    bool,
    typer.Option(
        "--trust-pickle", help="Allow a pickled nn.Module file (unpickling runs code from it)."
    ),
]
TrustCodeOption = Annotated[
    bool,
    typer.Option(
        "--trust-code",
        help="Allow an architecture that a file names by import path (package.module:Class) "
        "in a checkpoint, teachers.pt or --config YAML; building it runs that code.",
    ),
]


def _json_arg(text: str | None, flag: str) -> dict[str, Any] | None:
    if text is None:
        return None
    try:
        value = json.loads(text)
    except json.JSONDecodeError as error:
        raise FreekdError(
            f"{flag} is not valid JSON ({error.msg}); e.g. {flag} '{{\"depth\": 16}}'"
        ) from None
    if not isinstance(value, dict):
        raise FreekdError(f"{flag} must be a JSON object, e.g. '{{\"depth\": 16}}'")
    return value


def _floats(text: str | None, flag: str) -> list[float] | None:
    if text is None:
        return None
    try:
        return [float(v) for v in text.split(",") if v.strip()]
    except ValueError:
        raise FreekdError(
            f"{flag} takes comma-separated numbers, e.g. 0.1307 or 0.5,0.5,0.5"
        ) from None


def _ints(text: str | None, flag: str) -> list[int] | None:
    if text is None:
        return None
    try:
        return [int(v) for v in text.split(",") if v.strip()]
    except ValueError:
        raise FreekdError(f"{flag} takes comma-separated integers, e.g. 1,28,28") from None


def _source_values(
    prefix: str,
    path: str | None,
    arch: str | None,
    arch_kwargs: str | None,
    input_shape: str | None,
    num_classes: int | None,
    mean: str | None,
    std: str | None,
    trust_pickle: bool,
) -> dict[str, Any]:
    """Dotted config values of a TeacherSourceConfig from the model-loading flags."""
    return {
        f"{prefix}path": path,
        f"{prefix}arch": arch,
        f"{prefix}arch_kwargs": _json_arg(arch_kwargs, "--arch-kwargs"),
        f"{prefix}input_shape": _ints(input_shape, "--input-shape"),
        f"{prefix}num_classes": num_classes,
        f"{prefix}mean": _floats(mean, "--mean"),
        f"{prefix}std": _floats(std, "--std"),
        f"{prefix}trust_pickle": trust_pickle or None,
    }


def _resume_base(out: Path, resume: bool) -> dict[str, Any] | None:
    saved = out / "config.yaml"
    return read_yaml(saved) if resume and saved.exists() else None


def _trainer_values(
    epochs: int | None,
    batch_size: int | None,
    lr: float | None,
    device: str | None,
    deterministic: bool,
) -> dict[str, Any]:
    return {
        "trainer.epochs": epochs,
        "trainer.batch_size": batch_size,
        "trainer.lr": lr,
        "trainer.device": device,
        "trainer.deterministic": True if deterministic else None,
    }


def _print_table(title: str, rows: list[tuple[str, str]]) -> None:
    from rich.console import Console
    from rich.table import Table

    table = Table(title=title, show_header=False)
    table.add_column(style="bold")
    table.add_column()
    for key, value in rows:
        table.add_row(key, value)
    Console().print(table)


def _percent(value: float) -> str:
    return f"{100 * value:.2f} %"


def _privacy_rows(privacy: dict[str, Any] | None, label: str = "privacy") -> list[tuple[str, str]]:
    """One row per ε of a privacy record, each naming its kind, the guarantee first."""
    from freekd.privacy.report import describe, epsilon_figures

    figures = epsilon_figures(privacy)
    return [(label if i == 0 else "", describe(figure)) for i, figure in enumerate(figures)]


def _yaml_mapping(path: Path, *, what: str) -> dict[str, Any]:
    """A YAML (or JSON) file holding one mapping, read as data only."""
    import yaml

    try:
        data = yaml.safe_load(path.read_text())
    except (OSError, UnicodeDecodeError, yaml.YAMLError) as error:
        first = next((line for line in str(error).splitlines() if line.strip()), "")
        raise FreekdError(f"{what} {path}: cannot read it as YAML or JSON ({first})") from None
    if not isinstance(data, dict):
        raise FreekdError(f"{what} {path}: expected a mapping of settings")
    return data


def _maybe_percent(value: float | None) -> str:
    return "–" if value is None else _percent(value)


def _minutes(report: dict[str, Any]) -> str:
    return f"{report['wall_seconds'] / 60:.1f} min wall, {report['cpu_seconds'] / 60:.1f} CPU min"


@teacher_app.command("train")
@user_errors
def teacher_train(
    dataset: DatasetOption = None,
    arch: Annotated[
        str | None,
        typer.Option(
            "--arch",
            help="Model architecture (freekd name, torchvision:NAME or package.module:Class).",
        ),
    ] = None,
    arch_kwargs: Annotated[
        str | None, typer.Option("--arch-kwargs", help="JSON keyword arguments for --arch.")
    ] = None,
    eval_data: EvalDataOption = None,
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
    out: OutOption = Path("runs/teacher"),
    overwrite: OverwriteOption = False,
    resume: ResumeOption = False,
    quiet: QuietOption = False,
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
        "seed": seed,
        "data_root": data_root,
        "download": True if download else None,
        **_trainer_values(epochs, batch_size, lr, device, deterministic),
        **{f"dp.{key}": value for key, value in dp_values.items()},
    }
    cfg = load_config(
        TeacherTrainConfig,
        config,
        overrides=overrides,
        values=values,
        base=_resume_base(out, resume),
        trust_code=trust_code,
    )
    from freekd.pipelines import RunOptions, run_teacher_train

    report = run_teacher_train(
        cfg, RunOptions(out, overwrite=overwrite, resume=resume, quiet=quiet, trust_code=trust_code)
    )
    rows = [
        ("test accuracy", f"{_percent(report['test_accuracy'])} on {report['eval_dataset']}"),
        ("parameters", f"{report['parameters']:,}"),
        ("time", _minutes(report)),
        ("model", str(out / "model.pt")),
    ]
    if "privacy" in report:
        privacy = report["privacy"]
        mechanism = privacy["mechanisms"][0]
        rows[1:1] = [
            *_privacy_rows(privacy, "privacy (DP-SGD)"),
            (
                "",
                f"noise multiplier {mechanism['noise_multiplier']:.3g}, clipping "
                f"{mechanism['max_grad_norm']:g}",
            ),
        ]
    _print_table(f"teacher {cfg.arch} on {report['dataset']}", rows)


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
    from freekd.pipelines import RunOptions, run_distill

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


@app.command("eval")
@user_errors
def eval_command(
    model: Annotated[
        str,
        typer.Option(
            "--model",
            help="Model file: freekd checkpoint, TorchScript, "
            "state_dict (+ --arch) or pickled module (+ --trust-pickle).",
        ),
    ],
    dataset: Annotated[str, typer.Option("--dataset", help="Labelled data, e.g. mnist:test.")],
    arch: SourceArchOption = None,
    arch_kwargs: ArchKwargsOption = None,
    input_shape: InputShapeOption = None,
    num_classes: NumClassesOption = None,
    mean: MeanOption = None,
    std: StdOption = None,
    trust_pickle: TrustPickleOption = False,
    trust_code: TrustCodeOption = False,
    data_root: DataRootOption = None,
    device: Annotated[str, typer.Option("--device", help="auto, cpu or cuda[:N].")] = "auto",
    batch_size: Annotated[int, typer.Option("--batch-size", help="Evaluation batch size.")] = 512,
    as_json: JsonOption = False,
) -> None:
    """Accuracy of any loadable model on a labelled dataset."""
    from freekd.config import TeacherSourceConfig, from_dict
    from freekd.pipelines import run_eval

    values = _source_values(
        "", model, arch, arch_kwargs, input_shape, num_classes, mean, std, trust_pickle
    )
    source = from_dict(TeacherSourceConfig, {k: v for k, v in values.items() if v is not None})
    result = run_eval(
        source,
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
            f"accuracy {_percent(result['accuracy'])} on {result['n']} images of "
            f"{result['dataset']}"
        )


@app.command()
@user_errors
def info(
    path: Annotated[Path, typer.Argument(help="A freekd checkpoint.")],
    as_json: JsonOption = False,
) -> None:
    """What a checkpoint holds: architecture, classes, input, parameters, training config."""
    from freekd.pipelines import describe_checkpoint

    details = describe_checkpoint(path)
    if as_json:
        typer.echo(json.dumps(details, indent=2))
        return
    if "model" in details:  # a cross-modal file (CLIP or one tower)
        _print_table(
            str(path),
            [
                ("format", details["format"]),
                ("model", json.dumps(details["model"])),
                ("parameters", f"{details['parameters']:,}"),
                ("weights", _checksum_row(details)),
                ("freekd version", str(details["freekd_version"])),
                ("trained on", str(details["config"].get("pairs", "?"))),
            ],
        )
        return
    shape = "x".join(map(str, details["input"]["shape"]))
    privacy = details["privacy"]
    rows = _privacy_rows(privacy) or [("privacy", "none (no differential-privacy record)")]
    if details["batchnorm_replacement"]:
        rows.append(("BatchNorm", f"replaced by {details['batchnorm_replacement']} (DP-SGD)"))
    _print_table(
        str(path),
        [
            ("format", details["format"]),
            ("arch", f"{details['arch']} {details['arch_kwargs'] or ''}".strip()),
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
    from freekd.pipelines import RunOptions, run_demo

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
        _percent(teacher["test_accuracy"]),
        f"{teacher['wall_seconds']:.0f} s",
    )
    table.add_row(
        "student (kd)",
        student["student"]["arch"],
        f"{student['student']['parameters']:,}",
        _percent(student["student"]["test_accuracy"]),
        f"{student['wall_seconds']:.0f} s",
    )
    table.add_row(
        f"student (data-free, {datafree['method']['name']})",
        datafree["student"]["arch"],
        f"{datafree['student']['parameters']:,}",
        _percent(datafree["student"]["test_accuracy"]),
        f"{datafree['wall_seconds']:.0f} s",
    )
    console = Console()
    console.print(table)
    console.print(
        f"runs, curves and models: {out}/teacher, {out}/student, {out}/datafree "
        f"(synthetic inputs: {out}/datafree/samples.png)"
    )


def _budget_values(budget: str | None) -> dict[str, Any]:
    """``--budget 15m`` (wall-clock), ``cpu:15m`` (CPU time) or ``200000`` (synthesized images)."""
    if budget is None:
        return {}
    text = budget.strip().lower()
    key = "budget_minutes"
    if text.startswith("cpu:"):
        key, text = "budget_cpu_minutes", text[4:]
    try:
        if text.endswith(("min", "m")):
            return {key: float(text.rstrip("min"))}
        if text.endswith("h"):
            return {key: 60 * float(text[:-1])}
        if key == "budget_minutes":
            return {"budget_images": int(text.replace("_", ""))}
    except ValueError:
        pass
    raise FreekdError(
        f"--budget {budget!r}: give minutes (15m), CPU minutes (cpu:15m) or a number of "
        "synthesized images"
    )


@app.command()
@user_errors
def datafree(
    teacher: Annotated[
        str | None,
        typer.Option(
            "--teacher",
            help="Teacher file: freekd checkpoint, TorchScript, state_dict (+ --arch) or "
            "pickled module (+ --trust-pickle).",
        ),
    ] = None,
    student: Annotated[
        str | None,
        typer.Option(
            "--student",
            help="Student architecture (default: a smaller model of the "
            "teacher's family, e.g. lenet5 → lenet5-half).",
        ),
    ] = None,
    method: Annotated[
        str | None,
        typer.Option(
            "--method",
            help="Data-free synthesizer: auto (default: cmi for a teacher with BatchNorm, zskt "
            "without), zskt, dafl, dfad, deepinversion, fast, cmi, noise.",
        ),
    ] = None,
    budget: Annotated[
        str | None,
        typer.Option(
            "--budget",
            help="Stop after this much time (15m, 1.5h), CPU time (cpu:15m: fair on a shared "
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
    config: ConfigOption = None,
    trust_code: TrustCodeOption = False,
    overrides: SetOption = None,
    out: OutOption = Path("runs/datafree"),
    overwrite: OverwriteOption = False,
    resume: ResumeOption = False,
    quiet: QuietOption = False,
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
        "synthesizer.name": method,
        "eval_dataset": eval_data,
        "proxy_dataset": proxy_data,
        "save_queries": save_queries,
        "seed": seed,
        "data_root": data_root,
        **_budget_values(budget),
        **_trainer_values(epochs, batch_size, lr, device, deterministic),
    }
    cfg = load_config(
        DataFreeConfig,
        config,
        overrides=overrides,
        values=values,
        base=_resume_base(out, resume),
        trust_code=trust_code,
    )
    from freekd.pipelines import RunOptions, run_datafree

    report = run_datafree(
        cfg, RunOptions(out, overwrite=overwrite, resume=resume, quiet=quiet, trust_code=trust_code)
    )
    source = f"proxy {cfg.proxy_dataset}" if cfg.proxy_dataset else cfg.synthesizer.name
    rows = [
        ("method", f"{source} → {report['student']['arch']}"),
        ("synthesized images", f"{report['synthesized_images']:,}"),
        ("teacher queries", f"{report['teacher_queries']:,}"),
    ]
    if report["student"]["test_accuracy"] is not None:
        rows.insert(1, ("teacher accuracy", _percent(report["teacher"]["test_accuracy"])))
        rows.insert(
            2,
            (
                "student accuracy",
                f"{_percent(report['student']['test_accuracy'])} on {report['eval_dataset']}",
            ),
        )
    if report["stopped_by_budget"]:
        rows.append(("stopped", report["stopped_by_budget"]))
    collapse = report["collapse"]
    if collapse and collapse["events"]:
        status = "recovered" if collapse["recovered"] else "NOT RECOVERED, the student is suspect"
        if collapse.get("student_damaged"):
            status += " (it lost the teacher before the check: compare its accuracy)"
        reasons = sorted(
            {reason for event in collapse["events"] for reason in event.get("reasons", ())}
        )
        rows.append(
            (
                "collapse",
                # The status first: a narrow terminal cuts the end of the row.
                f"{status}; {len(collapse['events'])} event(s)"
                + (f" ({', '.join(reasons)})" if reasons else "")
                + f", {collapse['recoveries']} re-initialization(s)",
            )
        )
    privacy = report["privacy"]
    if privacy["private"]:
        rows += _privacy_rows(privacy, "privacy (inherited)")
    rows += [("time", _minutes(report)), ("files", f"{out}/model.pt, {out}/samples.png")]
    _print_table("data-free distillation", rows)


def _print_privacy(title: str, result: dict[str, Any], as_json: bool) -> None:
    if as_json:
        typer.echo(json.dumps(result))
        return
    rows = _privacy_rows(result)
    if "data_independent_epsilon" in result:
        rows.append(("queries answered", f"{result['answered']:,} of {result['queries']:,}"))
    rows.append(("best Rényi order", f"{result['order']:g}"))
    if "sanitized" in result:
        sanitized = result["sanitized"]
        rows.append(
            (
                "sanitized release",
                f"smooth sensitivity, order {sanitized['order']:g}, β = {sanitized['beta']:.3g}, "
                f"σ_s = {sanitized['sigma']:g}",
            )
        )
    _print_table(title, rows)
    if "note" in result:
        typer.echo(f"note: {result['note']}")


@privacy_app.command("pate")
@user_errors
def privacy_pate(
    votes: Annotated[
        Path,
        typer.Option("--votes", help="votes.npy: (N queries × K classes) integer vote counts."),
    ],
    sigma2: Annotated[float, typer.Option("--sigma2", help="GNMax noise σ₂ of the answers.")],
    delta: Annotated[float, typer.Option("--delta", help="δ of the (ε, δ) figures.")],
    sigma1: Annotated[
        float | None,
        typer.Option("--sigma1", help="Confident-GNMax: noise σ₁ of the threshold check."),
    ] = None,
    threshold: Annotated[
        float | None, typer.Option("--threshold", help="Confident-GNMax: threshold T.")
    ] = None,
    answered: Annotated[
        Path | None,
        typer.Option(
            "--answered", help="mask.npy: N booleans, the queries answered (default: all)."
        ),
    ] = None,
    orders: Annotated[
        str | None, typer.Option("--orders", help="Rényi orders, comma-separated, e.g. 2,4,8.")
    ] = None,
    sanitize: Annotated[
        bool,
        typer.Option(
            "--sanitize",
            help="Also release the data-dependent ε through smooth sensitivity (PATE 2018 §B), "
            "as `sanitized`.",
        ),
    ] = False,
    ss_sigma: Annotated[
        float | None,
        typer.Option("--ss-sigma", help="With --sanitize: noise multiplier σ_s (default 10)."),
    ] = None,
    ss_beta: Annotated[
        float | None,
        typer.Option("--ss-beta", help="With --sanitize: smoothness β (default 1/(4·order))."),
    ] = None,
    ss_order: Annotated[
        float | None,
        typer.Option(
            "--ss-order", help="With --sanitize: Rényi order (default: best data-dependent)."
        ),
    ] = None,
    seed: Annotated[int, typer.Option("--seed", help="With --sanitize: noise seed.")] = 0,
    as_json: JsonOption = False,
) -> None:
    """Privacy cost of answering queries by GNMax or Confident-GNMax, from the teachers' votes.

    Prints the data-dependent ε (PATE 2018, Thm 6 and Prop 7; not private to publish without
    smooth sensitivity) beside the data-independent ε (publishable); with --sanitize, also the
    smooth-sensitivity release of the data-dependent ε (publishable).
    """
    from freekd.pipelines import run_privacy_pate

    result = run_privacy_pate(
        votes,
        sigma=sigma2,
        delta=delta,
        sigma_threshold=sigma1,
        threshold=threshold,
        answered_path=answered,
        orders=_floats(orders, "--orders"),
        sanitize={"noise": ss_sigma, "beta": ss_beta, "order": ss_order, "seed": seed}
        if sanitize
        else None,
    )
    _print_privacy("PATE privacy", result, as_json)


@privacy_app.command("dpsgd")
@user_errors
def privacy_dpsgd(
    sample_rate: Annotated[
        float, typer.Option("--sample-rate", help="Poisson sampling rate q per step.")
    ],
    noise_multiplier: Annotated[
        float, typer.Option("--noise-multiplier", help="Opacus' noise multiplier σ/C.")
    ],
    steps: Annotated[int, typer.Option("--steps", help="Optimizer steps.")],
    delta: Annotated[float, typer.Option("--delta", help="δ of the (ε, δ) figure.")],
    as_json: JsonOption = False,
) -> None:
    """(ε, δ) of a DP-SGD run, by Opacus' RDP analysis of the sampled Gaussian mechanism."""
    from freekd.pipelines import run_privacy_dpsgd

    result = run_privacy_dpsgd(
        sample_rate=sample_rate, noise_multiplier=noise_multiplier, steps=steps, delta=delta
    )
    _print_privacy("DP-SGD privacy", result, as_json)


@pate_app.command("teachers")
@user_errors
def pate_teachers(
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
    epochs: EpochsOption = None,
    batch_size: Annotated[
        int | None, typer.Option("--batch-size", help="Images per teacher and step.")
    ] = None,
    lr: LrOption = None,
    seed: SeedOption = None,
    device: DeviceOption = None,
    deterministic: DeterministicOption = False,
    data_root: DataRootOption = None,
    config: ConfigOption = None,
    trust_code: TrustCodeOption = False,
    overrides: SetOption = None,
    out: OutOption = Path("runs/pate"),
    overwrite: OverwriteOption = False,
    resume: ResumeOption = False,
    quiet: QuietOption = False,
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
        "seed": seed,
        "data_root": data_root,
        **_trainer_values(epochs, batch_size, lr, device, deterministic),
    }
    cfg = load_config(
        PateTeachersConfig,
        config,
        overrides=overrides,
        values=values,
        base=_resume_base(out, resume),
        trust_code=trust_code,
    )
    from freekd.pipelines import RunOptions, run_pate_teachers

    report = run_pate_teachers(
        cfg, RunOptions(out, overwrite=overwrite, resume=resume, quiet=quiet, trust_code=trust_code)
    )
    accuracy = report["teacher_accuracy"]
    _print_table(
        f"{cfg.teachers} teachers {cfg.arch} on {report['dataset']}",
        [
            (
                "shards",
                f"{report['shards']['shard_size']:,} images each "
                f"({report['shards']['unused']:,} unused)",
            ),
            (
                "teacher accuracy",
                f"median {_percent(accuracy['median'])} (min {_percent(accuracy['min'])}, "
                f"max {_percent(accuracy['max'])}) on {report['eval_dataset']}",
            ),
            ("plurality vote", f"{_percent(report['plurality_accuracy'])} (no noise)"),
            ("time", _minutes(report)),
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
    _print_table(
        f"PATE labels ({report['aggregator']})",
        [
            (
                "answered",
                f"{report['answered']:,} of {report['queries']['asked']:,} queries asked "
                f"({report['queries']['dataset']})",
            ),
            (
                "label accuracy",
                "–" if report["label_accuracy"] is None else _percent(report["label_accuracy"]),
            ),
            *_privacy_rows(privacy),
            (
                "budget",
                f"{privacy['budget']['epsilon']:g} at δ = {privacy['budget']['delta']:g}, "
                f"enforced on the {privacy['budget']['on']} ε",
            ),
            ("stopped by budget", "yes" if report["stopped_by_budget"] else "no"),
            ("files", f"{out}/labels.npz, {out}/ledger.jsonl (keep it)"),
        ],
    )


@pate_app.command("label")
@user_errors
def pate_label(
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
    config: ConfigOption = None,
    trust_code: TrustCodeOption = False,
    overrides: SetOption = None,
    out: OutOption = Path("runs/pate-labels"),
    overwrite: OverwriteOption = False,
    resume: Annotated[
        bool, typer.Option("--resume", help="Continue the ledger in --out (nothing re-spent).")
    ] = False,
    quiet: QuietOption = False,
) -> None:
    """Label public queries with the ensemble's noisy votes, within an (ε, δ) budget.

    Every answer is written to OUT/ledger.jsonl before it is released; the budget is checked
    before each query. The ledger is never replaced: continue it with --resume.
    """
    values = _label_values(
        teachers, queries_from, queries, aggregator, sigma, sigma1, sigma2, threshold, gamma,
        epsilon, delta, seed, (student_model, confidence_scale, student_threshold),
    )  # fmt: skip
    base = read_yaml(out / "config.yaml") if resume and (out / "config.yaml").exists() else None
    cfg = load_config(
        PateLabelConfig,
        config,
        overrides=overrides,
        values=values,
        base=base,
        trust_code=trust_code,
    )
    from freekd.pipelines import RunOptions, run_pate_label

    report = run_pate_label(
        cfg, RunOptions(out, overwrite=overwrite, resume=resume, quiet=quiet, trust_code=trust_code)
    )
    _print_label_report(report, out)


@pate_app.command("student")
@user_errors
def pate_student(
    labels: Annotated[
        Path, typer.Option("--labels", help="The --out folder of `freekd pate label`.")
    ],
    student: Annotated[
        str | None, typer.Option("--student", help="Student architecture (default lenet5).")
    ] = None,
    epochs: EpochsOption = None,
    batch_size: BatchOption = None,
    lr: LrOption = None,
    seed: SeedOption = None,
    device: DeviceOption = None,
    deterministic: DeterministicOption = False,
    config: ConfigOption = None,
    trust_code: TrustCodeOption = False,
    overrides: SetOption = None,
    out: OutOption = Path("runs/pate-student"),
    overwrite: OverwriteOption = False,
    resume: ResumeOption = False,
    quiet: QuietOption = False,
) -> None:
    """Train a student on the answered queries; it inherits the labels' (ε, δ)."""
    values = {
        "labels": str(labels),
        "student": student,
        "seed": seed,
        **_trainer_values(epochs, batch_size, lr, device, deterministic),
    }
    cfg = load_config(
        PateStudentConfig,
        config,
        overrides=overrides,
        values=values,
        base=_resume_base(out, resume),
        trust_code=trust_code,
    )
    from freekd.pipelines import RunOptions, run_pate_student

    report = run_pate_student(
        cfg, RunOptions(out, overwrite=overwrite, resume=resume, quiet=quiet, trust_code=trust_code)
    )
    privacy = report["privacy"]
    _print_table(
        f"PATE student {cfg.student}",
        [
            (
                "student accuracy",
                f"{_percent(report['student']['test_accuracy'])} on {report['eval_dataset']}",
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
            *_privacy_rows(privacy),
            ("time", _minutes(report)),
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
    resume: Annotated[
        bool, typer.Option("--resume", help="Skip finished stages; continue the ledger.")
    ] = False,
    quiet: QuietOption = False,
    trust_code: TrustCodeOption = False,
) -> None:
    """All three PATE stages: teachers → labels → student, in OUT/teachers, labels, student."""
    import dataclasses

    from freekd.config import PateRunConfig
    from freekd.pipelines import RunOptions, run_pate_label, run_pate_student, run_pate_teachers

    run = load_config(PateRunConfig, config, trust_code=trust_code)
    teachers_cfg = run.teachers
    teachers_dir, labels_dir, student_dir = out / "teachers", out / "labels", out / "student"
    if not (resume and (teachers_dir / "teachers.pt").exists()):
        run_pate_teachers(
            teachers_cfg, RunOptions(teachers_dir, quiet=quiet, trust_code=trust_code)
        )
    label_cfg = dataclasses.replace(run.label, teachers=str(teachers_dir / "teachers.pt"))
    labels = run_pate_label(
        label_cfg,
        RunOptions(labels_dir, resume=resume and (labels_dir / "ledger.jsonl").exists(),
                   quiet=quiet, trust_code=trust_code),
    )  # fmt: skip
    _print_label_report(labels, labels_dir)
    student_cfg = dataclasses.replace(run.student, labels=str(labels_dir))
    report = run_pate_student(
        student_cfg,
        RunOptions(student_dir, overwrite=resume, quiet=quiet, trust_code=trust_code),
    )
    _print_table(
        "PATE student",
        [
            (
                "student accuracy",
                f"{_percent(report['student']['test_accuracy'])} on {report['eval_dataset']}",
            ),
            *_privacy_rows(report["privacy"]),
            ("model", str(student_dir / "model.pt")),
        ],
    )


# Privacy audits --------------------------------------------------------------------------------


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
            _percent(rates["0.001"]),
            _percent(rates["0.01"]),
            f"{result['advantage']:.3f}",
        )
    console = Console()
    console.print(table)
    console.print(report["summary"].splitlines()[-1], markup=False, highlight=False)
    console.print(f"files: {out}/report.json, {out}/roc.png, {out}/summary.txt")


@audit_app.callback()
@user_errors
def audit(
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
    arch: SourceArchOption = None,
    arch_kwargs: ArchKwargsOption = None,
    input_shape: InputShapeOption = None,
    num_classes: NumClassesOption = None,
    mean: MeanOption = None,
    std: StdOption = None,
    trust_pickle: TrustPickleOption = False,
    seed: SeedOption = None,
    device: DeviceOption = None,
    data_root: DataRootOption = None,
    config: ConfigOption = None,
    trust_code: TrustCodeOption = False,
    overrides: SetOption = None,
    out: OutOption = Path("runs/audit"),
    overwrite: OverwriteOption = False,
    resume: ResumeOption = False,
    quiet: QuietOption = False,
) -> None:
    """Audit a model: membership-inference attacks, ROC curves and an empirical ε lower bound.

    Writes OUT/report.json, roc.png (log-log ROC of every attack) and summary.txt. Exit status
    1 when the ε lower bound exceeds the model's claimed ε (a privacy bug), 2 on bad input.
    `freekd audit pipeline` runs the whole distillation threat model instead.
    """
    if ctx.invoked_subcommand is not None:
        return
    names = [name for item in attack or [] for name in item.split(",") if name.strip()]
    values = {
        **_source_values(
            "model.", model, arch, arch_kwargs, input_shape, num_classes, mean, std, trust_pickle
        ),
        "members": members,
        "non_members": non_members,
        "attacks": names or None,
        "shadow.models": shadow_models,
        "shadow.reuse": None if shadows_from is None else str(shadows_from),
        "shadow.trainer.device": device,
        "confidence": confidence,
        "random_split": True if random_split else None,
        "max_examples": max_examples,
        "seed": seed,
        "data_root": data_root,
    }
    cfg = load_config(
        AuditConfig,
        config,
        overrides=overrides,
        values=values,
        base=_resume_base(out, resume),
        trust_code=trust_code,
    )
    from freekd.pipelines import RunOptions, run_audit

    report = run_audit(
        cfg, RunOptions(out, overwrite=overwrite, resume=resume, quiet=quiet, trust_code=trust_code)
    )
    _print_audit(report, out)
    if report["epsilon_lower_bound"].get("consistent") is False:
        # Not a usage error (2): the audit ran and found the model's privacy claim violated.
        typer.echo(
            "error: the empirical ε lower bound exceeds the model's claimed ε; its privacy "
            "accounting or training is wrong",
            err=True,
        )
        raise typer.Exit(1)


@audit_app.command("pipeline")
@user_errors
def audit_pipeline(
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
    config: ConfigOption = None,
    trust_code: TrustCodeOption = False,
    overrides: SetOption = None,
    out: OutOption = Path("runs/audit-pipeline"),
    overwrite: OverwriteOption = False,
    resume: Annotated[
        bool, typer.Option("--resume", help="Skip the stages that finished; redo the rest.")
    ] = False,
    quiet: QuietOption = False,
) -> None:
    """The distillation threat model end to end: a teacher trained on a random half of a pool,
    students distilled from it by each path, every model audited against the teacher's members.
    """
    names = [name for item in paths or [] for name in item.split(",") if name.strip()]
    values = {
        "paths": names or None,
        "dataset": dataset,
        "pool": pool,
        "audit.shadow.models": shadow_models,
        "seed": seed,
        "data_root": data_root,
    }
    cfg = load_config(
        AuditPipelineConfig,
        config,
        overrides=overrides,
        values=values,
        base=_resume_base(out, resume),
        trust_code=trust_code,
    )
    from freekd.pipelines import RunOptions, run_audit_pipeline

    report = run_audit_pipeline(
        cfg, RunOptions(out, overwrite=overwrite, resume=resume, quiet=quiet, trust_code=trust_code)
    )
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
            _percent(row["test_accuracy"]) if row["test_accuracy"] is not None else "-",
            f"{row['best_auc']:.3f}",
            _percent(row["lira_tpr_at_0.001"]) if row["lira_tpr_at_0.001"] is not None else "-",
            "-" if row["loss_tpr_at_0.001"] is None else _percent(row["loss_tpr_at_0.001"]),
            f"{row['epsilon_lower_bound']:.3f}",
            "-" if claimed is None else f"{claimed:.3g} ({kind})",
        )
    console = Console()
    console.print(table)
    console.print("LiRA: lira-online-fixed-variance; TPR at 0.1 % FPR of chance is 0.1 %.")
    typer.echo(f"files: {out}/report.json, {out}/roc.png, {out}/audit/*/")


# Cross-modal --------------------------------------------------------------------------------------


@crossmodal_app.command("teacher")
@user_errors
def crossmodal_teacher(
    pairs: Annotated[
        str | None,
        typer.Option(
            "--pairs",
            help="Labelled images whose classes become templated captions: fashion-mnist "
            "(default), mnist, animal-mnist, digits[:split], a .npz file.",
        ),
    ] = None,
    eval_pairs: Annotated[
        str | None,
        typer.Option("--eval-pairs", help="Held-out labelled images (default: the test split)."),
    ] = None,
    epochs: EpochsOption = None,
    batch_size: BatchOption = None,
    lr: LrOption = None,
    seed: SeedOption = None,
    device: DeviceOption = None,
    deterministic: DeterministicOption = False,
    data_root: DataRootOption = None,
    config: ConfigOption = None,
    trust_code: TrustCodeOption = False,
    overrides: SetOption = None,
    out: OutOption = Path("runs/clip-teacher"),
    overwrite: OverwriteOption = False,
    resume: ResumeOption = False,
    quiet: QuietOption = False,
) -> None:
    """Train a small open_clip CLIP (config in configs/crossmodal/) on templated image–caption
    pairs; report zero-shot accuracy and retrieval recall@1/5/10 on held-out pairs."""
    from freekd.config import CrossModalTeacherConfig

    values = {
        "pairs": pairs,
        "eval_pairs": eval_pairs,
        "seed": seed,
        "data_root": data_root,
        **_trainer_values(epochs, batch_size, lr, device, deterministic),
    }
    cfg = load_config(
        CrossModalTeacherConfig,
        config,
        overrides=overrides,
        values=values,
        base=_resume_base(out, resume),
        trust_code=trust_code,
    )
    from freekd.pipelines import RunOptions, run_crossmodal_teacher

    report = run_crossmodal_teacher(
        cfg, RunOptions(out, overwrite=overwrite, resume=resume, quiet=quiet, trust_code=trust_code)
    )
    teacher = report["teacher"]
    _print_table(
        "CLIP teacher",
        [
            (
                "zero-shot accuracy",
                f"{_maybe_percent(teacher['zero_shot_accuracy'])} on {report['eval_pairs']}",
            ),
            (
                "recall@1 / 5 / 10",
                " / ".join(_percent(teacher[f"recall_at_{k}"]) for k in (1, 5, 10))
                + f" ({teacher['retrieval_pairs']} pairs, {teacher['recall_counts']}, both ways)",
            ),
            (
                "parameters",
                f"{teacher['parameters']['total']:,} "
                f"(image tower {teacher['parameters']['image']:,})",
            ),
            ("captions", "templated from the class labels"),
            ("time", _minutes(report)),
            ("model", str(out / "model.pt")),
        ],
    )


@crossmodal_app.command("distill")
@user_errors
def crossmodal_distill(
    teacher: Annotated[
        str | None,
        typer.Option(
            "--teacher",
            help="A CLIP (model.pt of freekd crossmodal teacher), or one tower: an image "
            "classifier's model.pt (teaches a text student), clip-image:PATH, clip-text:PATH, "
            "or minilm (pretrained all-MiniLM-L6-v2; teaches an image student).",
        ),
    ] = None,
    student: Annotated[
        str | None,
        typer.Option(
            "--student",
            help="The student: a registry architecture for the image student of a text "
            "teacher (default lenet5), or a YAML/JSON file with the open_clip model config of a "
            "CLIP student (default: a quarter of the teacher) or the text_cfg of a text student.",
        ),
    ] = None,
    method: Annotated[
        str | None,
        typer.Option(
            "--method",
            help="contrastive (default: InfoNCE with a MoCo queue, learnable temperature), "
            "feature (CLIP-KD FD) or icl (CLIP-KD ICL).",
        ),
    ] = None,
    pairs: Annotated[
        str | None,
        typer.Option(
            "--pairs", help="Labelled images for templated pairs (default fashion-mnist)."
        ),
    ] = None,
    no_baseline: Annotated[
        bool,
        typer.Option("--no-baseline", help="Skip the same student trained without the teacher."),
    ] = False,
    epochs: EpochsOption = None,
    batch_size: BatchOption = None,
    lr: LrOption = None,
    seed: SeedOption = None,
    device: DeviceOption = None,
    deterministic: DeterministicOption = False,
    data_root: DataRootOption = None,
    config: ConfigOption = None,
    trust_code: TrustCodeOption = False,
    overrides: SetOption = None,
    out: OutOption = Path("runs/clip-student"),
    overwrite: OverwriteOption = False,
    resume: ResumeOption = False,
    quiet: QuietOption = False,
) -> None:
    """Distill a small CLIP student (default: about a quarter of the teacher) from a CLIP
    teacher, or a one-modality student from a teacher of the other modality (image → text,
    text → image), on templated or your own pairs; by default also train the same student
    without the teacher."""
    from freekd.config import CrossModalDistillConfig

    student_config = None
    if student is not None and Path(student).is_file():
        student_config, student = _yaml_mapping(Path(student), what="--student"), None
    values = {
        "teacher": teacher,
        "student": student_config,
        "student_arch": student,
        "method.name": method,
        "pairs": pairs,
        "baseline": False if no_baseline else None,
        "seed": seed,
        "data_root": data_root,
        **_trainer_values(epochs, batch_size, lr, device, deterministic),
    }
    cfg = load_config(
        CrossModalDistillConfig,
        config,
        overrides=overrides,
        values=values,
        base=_resume_base(out, resume),
        trust_code=trust_code,
    )
    from freekd.pipelines import RunOptions, run_crossmodal_distill

    report = run_crossmodal_distill(
        cfg, RunOptions(out, overwrite=overwrite, resume=resume, quiet=quiet, trust_code=trust_code)
    )
    from rich.console import Console
    from rich.table import Table

    direction = report.get("direction", "CLIP → CLIP")
    table = Table(title=f"cross-modal distillation, {direction} ({report['student']['method']})")
    for column in ("model", "parameters", "zero-shot", "recall@1", "recall@5", "recall@10"):
        table.add_column(column, justify="left" if column == "model" else "right")
    for name in ("teacher", "student", "baseline"):
        entry = report[name]
        if entry is None:
            continue
        table.add_row(
            name,
            f"{entry['parameters']['total']:,}",
            _maybe_percent(entry["zero_shot_accuracy"]),
            *(_maybe_percent(entry[f"recall_at_{k}"]) for k in (1, 5, 10)),
        )
    console = Console()
    console.print(table)
    console.print(
        f"captions: {report['captions']['note']}; "
        f"recall counts {report['student']['recall_counts']}"
    )
    typer.echo(f"files: {out}/model.pt, {out}/report.json")
