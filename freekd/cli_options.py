"""Options declared once, for every command: ``Annotated`` aliases and option groups.

An alias (``DatasetOption``) keeps one flag's name and help text identical across commands; a
group (:class:`RunFlags`, :class:`TrainerFlags`, :class:`ModelSourceFlags`) is a block of flags
that many commands share, attached by :func:`option_groups` as one parameter and handed to the
command as one frozen dataclass, which also turns the flags into config values
(``RunFlags.load``) and the pipeline's ``RunOptions``. ``user_errors`` turns a ``FreekdError``
into one line on stderr and exit status 2. How commands print results: ``freekd.cli_tables``.
"""

from __future__ import annotations

import copy
import dataclasses
import errno
import functools
import inspect
import json
import typing
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any, TypeVar

import typer

from freekd.config import load_config, read_yaml
from freekd.errors import FreekdError
from freekd.yamldata import read_mapping

if TYPE_CHECKING:
    from freekd.runs import RunOptions

F = TypeVar("F", bound=Callable[..., Any])
C = TypeVar("C")


#: Longest error line printed: a message quoting a huge value (a long list from a config file)
#: is cut in its middle, so the start (the problem) and the end (the fix) stay readable.
MAX_ERROR_CHARS = 600


def _fail(message: str, code: int = 2) -> typer.Exit:
    message = " ".join(message.splitlines()) if "\n" in message else message
    if len(message) > MAX_ERROR_CHARS:
        half = MAX_ERROR_CHARS // 2
        message = f"{message[:half]} … {message[-half:]}"
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


ConfigOption = Annotated[
    Path | None,
    typer.Option("--config", help="YAML file of config overrides (see configs/).", dir_okay=False),
]


SetOption = Annotated[
    list[str] | None,
    typer.Option("--set", help="Dotted override of a config field, e.g. seed=1 (repeatable)."),
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
        help="Run folder: config.yaml, report.json and the command's other files "
        "(docs/reference.md lists them).",
    ),
]


QuietOption = Annotated[
    bool,
    typer.Option(
        "--quiet", "-q", help="No progress bar (warnings, errors and the summary still print)."
    ),
]


OverwriteOption = Annotated[
    bool, typer.Option("--overwrite", help="Replace the run files in an existing --out folder.")
]


ResumeOption = Annotated[
    bool,
    typer.Option("--resume", help="Continue the interrupted run in --out."),
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


TeacherFileOption = Annotated[
    str | None,
    typer.Option(
        "--teacher",
        help="Teacher file: freekd checkpoint, TorchScript, state_dict (+ --arch) or "
        "pickled module (+ --trust-pickle).",
    ),
]


# Option groups: each is declared once here and attached to a command as one parameter, e.g.
# ``run: Annotated[RunFlags, Defaults(out=Path("runs/distill"))]``; ``@option_groups`` shows
# typer the group's options in that parameter's place and hands the command one frozen dataclass.


@dataclass(frozen=True, kw_only=True)
class ModelSourceFlags:
    """How to load a model file that is not a freekd checkpoint (DESIGN.md, "Teachers users
    bring"): the options of ``TeacherSourceConfig``."""

    arch: SourceArchOption = None
    arch_kwargs: ArchKwargsOption = None
    input_shape: InputShapeOption = None
    num_classes: NumClassesOption = None
    mean: MeanOption = None
    std: StdOption = None
    trust_pickle: TrustPickleOption = False

    def values(self, prefix: str, path: str | None) -> dict[str, Any]:
        """Dotted config values of a TeacherSourceConfig at ``prefix`` (``"teacher."``)."""
        return {
            f"{prefix}path": path,
            f"{prefix}arch": self.arch,
            f"{prefix}arch_kwargs": _json_arg(self.arch_kwargs, "--arch-kwargs"),
            f"{prefix}input_shape": _ints(self.input_shape, "--input-shape"),
            f"{prefix}num_classes": self.num_classes,
            f"{prefix}mean": _floats(self.mean, "--mean"),
            f"{prefix}std": _floats(self.std, "--std"),
            f"{prefix}trust_pickle": self.trust_pickle or None,
        }


@dataclass(frozen=True, kw_only=True)
class TrainerFlags:
    """The training loop's options (``TrainerConfig``) and the run's seed."""

    epochs: EpochsOption = None
    batch_size: BatchOption = None
    lr: LrOption = None
    seed: SeedOption = None
    device: DeviceOption = None
    deterministic: DeterministicOption = False

    def values(self) -> dict[str, Any]:
        """Dotted config values: ``seed`` and the ``trainer.*`` fields the flags set."""
        return {
            "seed": self.seed,
            "trainer.epochs": self.epochs,
            "trainer.batch_size": self.batch_size,
            "trainer.lr": self.lr,
            "trainer.device": self.device,
            "trainer.deterministic": True if self.deterministic else None,
        }


@dataclass(frozen=True, kw_only=True)
class RunFlags:
    """The config file, ``--set`` overrides and run folder of every command that writes a run."""

    config: ConfigOption = None
    trust_code: TrustCodeOption = False
    overrides: SetOption = None
    out: OutOption = Path("runs")
    overwrite: OverwriteOption = False
    resume: ResumeOption = False
    quiet: QuietOption = False

    def load(self, cls: type[C], values: dict[str, Any]) -> C:
        """The command's config: defaults (or, with --resume, the run's saved config.yaml) <
        --config < --set < the command's own flags (``values``)."""
        saved = self.out / "config.yaml"
        base = None
        if self.resume and saved.exists():
            from freekd.train.resume import saved_settings

            # A setting added since the run was saved takes the value that reproduces it.
            base = saved_settings(cls, read_yaml(saved))
        return load_config(
            cls,
            self.config,
            overrides=self.overrides,
            values=values,
            base=base,
            trust_code=self.trust_code,
        )

    def options(self) -> RunOptions:
        """How the pipeline treats the run folder and the terminal."""
        from freekd.runs import RunOptions

        return RunOptions(
            self.out,
            overwrite=self.overwrite,
            resume=self.resume,
            quiet=self.quiet,
            trust_code=self.trust_code,
        )


OPTION_GROUPS = (ModelSourceFlags, TrainerFlags, RunFlags)


class Defaults:
    """A command's own defaults for some options of a group, e.g.
    ``run: Annotated[RunFlags, Defaults(out=Path("runs/distill"))]``."""

    def __init__(self, **values: Any) -> None:
        self.values = values


class OptionHelp:
    """A command's own help texts for some options of a group, e.g.
    ``run: Annotated[RunFlags, OptionHelp(resume="Continue the ledger in --out.")]``."""

    def __init__(self, **texts: str) -> None:
        self.texts = texts


def option_groups(command: F) -> F:
    """Attach option groups to a typer command.

    Each parameter of ``command`` annotated with a group class (:data:`OPTION_GROUPS`) stands for
    the group's options, in its place: typer reads them from the ``__signature__`` this sets, and
    the command receives them as one instance of the group. :class:`Defaults` and
    :class:`OptionHelp` in the annotation give the command's own defaults and help texts.
    """
    signature = inspect.signature(command, eval_str=True)
    parameters: list[inspect.Parameter] = []
    groups: dict[str, tuple[type, list[str]]] = {}
    for parameter in signature.parameters.values():
        group, defaults, helps = _group_of(parameter.annotation)
        if group is None:
            parameters.append(parameter.replace(kind=inspect.Parameter.KEYWORD_ONLY))
            continue
        expanded = _group_parameters(group, defaults, helps)
        groups[parameter.name] = (group, [each.name for each in expanded])
        parameters += expanded
    names = [parameter.name for parameter in parameters]
    if len(set(names)) != len(names):
        raise TypeError(f"{command.__name__}: an option of a group repeats a parameter's name")

    @functools.wraps(command)
    def with_groups(**values: Any) -> Any:
        for name, (group, fields) in groups.items():
            values[name] = group(**{field: values.pop(field) for field in fields})
        return command(**values)

    with_groups.__signature__ = signature.replace(parameters=parameters)  # type: ignore[attr-defined]
    with_groups.__annotations__ = {p.name: p.annotation for p in parameters}
    return with_groups  # type: ignore[return-value]


def run_command(app: typer.Typer, name: str | None = None) -> Callable[[F], F]:
    """Register a command on ``app`` with its option groups and one-line user errors.

    The three decorators every option-group command wears, in their one right order:
    ``app.command(name)`` over ``user_errors`` over ``option_groups``.
    """

    def register(command: F) -> F:
        return app.command(name)(user_errors(option_groups(command)))

    return register


def _group_of(annotation: Any) -> tuple[type | None, dict[str, Any], dict[str, str]]:
    """The option group an annotation names (``RunFlags`` or ``Annotated[RunFlags, ...]``), with
    the command's own defaults and help texts for its options."""
    defaults: dict[str, Any] = {}
    helps: dict[str, str] = {}
    if typing.get_origin(annotation) is Annotated:
        annotation, *extras = typing.get_args(annotation)
        for extra in extras:
            if isinstance(extra, Defaults):
                defaults.update(extra.values)
            elif isinstance(extra, OptionHelp):
                helps.update(extra.texts)
    if annotation in OPTION_GROUPS:
        return annotation, defaults, helps
    return None, defaults, helps


def _group_parameters(
    group: type, defaults: dict[str, Any], helps: dict[str, str]
) -> list[inspect.Parameter]:
    """The group's options as keyword parameters, with the command's defaults and help texts."""
    unknown = (set(defaults) | set(helps)) - {spec.name for spec in dataclasses.fields(group)}
    if unknown:
        raise TypeError(f"{group.__name__} has no options {sorted(unknown)}")
    instance = group(**defaults)
    hints = typing.get_type_hints(group, include_extras=True)
    parameters = []
    for spec in dataclasses.fields(group):
        annotation = hints[spec.name]
        if spec.name in helps:
            kind, option = typing.get_args(annotation)
            option = copy.copy(option)
            option.help = helps[spec.name]
            annotation = Annotated[kind, option]
        parameters.append(
            inspect.Parameter(
                spec.name,
                inspect.Parameter.KEYWORD_ONLY,
                default=getattr(instance, spec.name),
                annotation=annotation,
            )
        )
    return parameters


def _json_arg(text: str | None, flag: str) -> dict[str, Any] | None:
    if text is None:
        return None
    try:
        value = json.loads(text)
    except RecursionError:
        raise FreekdError(f"{flag} nests too deeply; give a flat JSON object") from None
    except json.JSONDecodeError as error:
        raise FreekdError(
            f"{flag} is not valid JSON ({error.msg}); e.g. {flag} '{{\"depth\": 16}}'"
        ) from None
    if not isinstance(value, dict):
        raise FreekdError(f"{flag} must be a JSON object, e.g. '{{\"depth\": 16}}'")
    return value


def flag_names(items: list[str] | None, flag: str, example: str) -> list[str] | None:
    """The names given to a repeatable, comma-separated flag, stripped; None when it is absent.

    An empty name (``--path ''``, ``kd,,pate``) is refused rather than read as "the default".
    """
    if not items:
        return None
    names = [name.strip() for item in items for name in item.split(",")]
    if not all(names):
        given = ",".join(items)
        raise FreekdError(
            f"{flag} {given!r} has an empty name; give names separated by commas, e.g. {flag} "
            f"{example}, or leave {flag} out for the default"
        )
    return names


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


def _yaml_mapping(path: Path, *, what: str) -> dict[str, Any]:
    """A YAML (or JSON) file holding one mapping, read as data only."""
    return read_mapping(path, f"{what} file", f"check {what}")


def _budget_values(budget: str | None) -> dict[str, Any]:
    """``--budget 15m`` or ``90s`` or ``1h`` (wall-clock), ``cpu:15m`` (CPU time) or ``200000``
    (synthesized images)."""
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
        if text.endswith("s"):
            return {key: float(text[:-1]) / 60}
        if key == "budget_minutes":
            return {"budget_images": int(text.replace("_", ""))}
    except ValueError:
        pass
    raise FreekdError(
        f"--budget {budget!r}: give minutes (15m; or 90s, 1h), CPU minutes (cpu:15m) or a "
        "number of synthesized images"
    )
