"""The resolved config of a run: the file-wide loader and the shared dataclasses.

Dataclasses are the schema and YAML is data (STYLE.md §4.3). Each feature keeps its own config
dataclasses next to its pipeline (``freekd/datafree/config.py`` ...); this module holds the loader
(``load_config``: YAML + ``--set`` → typed dataclass, unknown keys and bad values rejected) and the
parts every feature shares: ``TrainerConfig``, ``ComponentConfig``, ``TeacherSourceConfig``.
It imports no torch, so the CLI and the config tests stay fast.
"""

from __future__ import annotations

import dataclasses
import difflib
import math
import re
import types
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar, Union

import yaml

from freekd.errors import FreekdError, shown
from freekd.yamldata import read_mapping, safe_yaml

C = TypeVar("C")


#: Prefix of torchvision model names in ``arch`` fields (data: a name, not code).
TORCHVISION_PREFIX = "torchvision:"


#: Config fields that name an architecture. An import path there runs code when the model is
#: built, so a file (YAML, a run's saved ``config.yaml``) may hold one only with ``--trust-code``.
ARCHITECTURE_FIELDS = frozenset({"arch", "archs", "base", "student", "student_arch"})


#: Flags that let freekd run code from a file; only the command line may switch them on.
TRUST_FIELDS = frozenset({"trust_pickle"})


def is_import_path(arch: object) -> bool:
    """Whether ``arch`` names code to import (``package.module:Attribute``), not a data name."""
    return isinstance(arch, str) and ":" in arch and not arch.startswith(TORCHVISION_PREFIX)


#: The CLI flag that sets a dotted config key, named in the message when that key is invalid.
FLAGS: dict[str, str] = {
    "trainer.epochs": "--epochs",
    "trainer.batch_size": "--batch-size",
    "trainer.lr": "--lr",
    "trainer.device": "--device",
    "shadow.trainer.device": "--device",
    "budget_minutes": "--budget",
    "budget_cpu_minutes": "--budget",
    "budget_images": "--budget",
    "shadow.models": "--shadow-models",
    "max_examples": "--max-examples",
    "confidence": "--confidence",
    "dp.epsilon": "--epsilon",
    "dp.delta": "--delta",
    "dp.max_grad_norm": "--max-grad-norm",
    "queries": "--queries",
    "save_queries": "--save-queries",
    "teachers": "--teachers",
    "pool": "--pool",
    "peers": "--peers",
    "paths": "--path",
    "attacks": "--attack",
}


#: What ``trainer.device`` accepts (``freekd.train.distributed.resolve_device``).
DEVICE_PATTERN = re.compile(r"auto|cpu|mps|cuda(:[0-9]+)?")


class ConfigValueError(FreekdError):
    """A config field holds a value outside its valid range (raised by ``__post_init__``;
    :func:`from_dict` restates it with the dotted key the user wrote and the flag that sets it)."""

    def __init__(self, owner: str, name: str, rule: str, value: Any) -> None:
        self.name, self.rule, self.value = name, rule, value
        super().__init__(self.message(f"{owner}.{name}"))

    def message(self, key: str) -> str:
        """The one-line message for the field at dotted ``key``."""
        flag = FLAGS.get(key)
        fix = (
            f"pass a valid {flag} (or --set {key}=...)" if flag else f"fix it with --set {key}=..."
        )
        return f"{key} {self.rule}, got {_shown(self.value)}; {fix}"


def _shown(value: Any) -> str:
    shown = f"{value:g}" if isinstance(value, float) else repr(value)
    return shown if len(shown) <= 80 else f"{shown[:77]}..."  # a long list from a file


class Checks:
    """Range checks of one config object; each failure raises :class:`ConfigValueError`."""

    def __init__(self, config: Any) -> None:
        self.config = config
        self.owner = type(config).__name__

    def fail(self, name: str, rule: str) -> None:
        raise ConfigValueError(self.owner, name, rule, getattr(self.config, name))

    def _number(self, name: str, *, optional: bool) -> float | None:
        value = getattr(self.config, name)
        if value is None:
            if not optional:
                self.fail(name, "must be a number")
            return None
        if not math.isfinite(value):
            self.fail(name, "must be a finite number")
        return float(value)

    def at_least(self, name: str, low: float, *, optional: bool = False) -> None:
        value = self._number(name, optional=optional)
        if value is not None and value < low:
            self.fail(name, f"must be at least {low:g}")

    def positive(self, name: str, *, optional: bool = False) -> None:
        value = self._number(name, optional=optional)
        if value is not None and value <= 0:
            self.fail(name, "must be a finite number above 0")

    def distinct_names(self, name: str) -> None:
        """A list of names with none empty and none repeated (a repeat would run once)."""
        names = list(getattr(self.config, name))
        if not all(isinstance(item, str) and item.strip() for item in names):
            self.fail(name, "must not hold an empty name")
        for item in (item for index, item in enumerate(names) if item in names[:index]):
            self.fail(name, f"names {item!r} twice; name each once")

    def within(
        self, name: str, low: float, high: float, *, closed: str = "[)", optional: bool = False
    ) -> None:
        value = self._number(name, optional=optional)
        if value is None:
            return
        above = value >= low if closed[0] == "[" else value > low
        below = value <= high if closed[1] == "]" else value < high
        if not (above and below):
            self.fail(name, f"must lie in {closed[0]}{low:g}, {high:g}{closed[1]}")


@dataclass(frozen=True)
class TrainerConfig:
    """The one training loop's knobs (see ``freekd.train.Trainer``).

    Attributes:
        epochs: passes over the batch source.
        batch_size: global batch size; under DistributedDataParallel each of W processes takes
            ``batch_size // W`` so that results match one process.
        lr: peak learning rate.
        optimizer: ``sgd`` (momentum, Nesterov off) or ``adam``/``adamw``.
        momentum: SGD momentum.
        weight_decay: L2 penalty (decoupled for adamw).
        scheduler: ``cosine`` (per step, to zero), ``step`` (×0.1 at 50 % and 75 %) or ``constant``.
        warmup_steps: linear warm-up steps before the schedule.
        max_grad_norm: clip the gradient norm to this value; ``None`` disables clipping.
        augment: batch augmentation: ``auto`` (the default) is ``crop`` for images of 24 pixels
            and more and ``none`` below, where a 2-pixel shift is too large; ``crop`` (random
            shifts of up to 2 pixels; it lifts LeNet-5 on MNIST from 98.8 % to 99.3 %),
            ``crop-flip`` (CIFAR's padding 4 and horizontal flips) or ``none``.
        device: ``auto`` (CUDA when present), ``cpu`` or ``cuda[:N]``.
        amp: mixed precision (bfloat16 autocast) on CUDA; on CPU only with ``amp_cpu``.
        amp_cpu: with ``amp``, autocast to bfloat16 on CPU too (off by default: on most CPUs
            it is slower and changes the results; it runs the mixed-precision path where there
            is no GPU, as the tests do).
        deterministic: ``torch.use_deterministic_algorithms(True)``; bitwise repeatable on CPU.
        log_every: steps between ``metrics.jsonl`` lines (and an extra line every epoch).
        checkpoint_every: steps between resumable checkpoints (and one at every epoch end).
        eval_every: epochs between evaluations on the held-out split (0 = only at the end).
        ema_decay: keep an exponential moving average of the student's weights with this decay
            (e.g. 0.999) and evaluate and save the average (``train.averaging.WeightAverage``);
            ``None`` trains and saves the raw weights.
        swa_start: from this fraction of the planned steps on, keep the equal-weight average
            of the student's weights after every step (stochastic weight averaging,
            ``train.averaging.TailAverage``) and evaluate and save it instead; before that the
            run evaluates what it would without it (the ``ema_decay`` average, if set), and
            ``metrics.jsonl`` also logs that at every epoch's evaluation as
            ``eval_accuracy/ema`` (``eval_accuracy/raw`` without ``ema_decay``). ``None``: no
            tail average.
    """

    epochs: int = 10
    batch_size: int = 128
    lr: float = 0.05
    optimizer: str = "sgd"
    momentum: float = 0.9
    weight_decay: float = 5e-4
    scheduler: str = "cosine"
    warmup_steps: int = 0
    max_grad_norm: float | None = None
    augment: str = "auto"
    device: str = "auto"
    amp: bool = True
    amp_cpu: bool = False
    deterministic: bool = False
    log_every: int = 50
    checkpoint_every: int = 500
    eval_every: int = 1
    ema_decay: float | None = None
    swa_start: float | None = None

    def __post_init__(self) -> None:
        check = Checks(self)
        check.at_least("epochs", 1)
        check.at_least("batch_size", 1)
        check.positive("lr")
        check.within("momentum", 0, 1)
        check.at_least("weight_decay", 0)
        check.at_least("warmup_steps", 0)
        check.positive("max_grad_norm", optional=True)
        if not DEVICE_PATTERN.fullmatch(self.device):
            check.fail("device", "must be auto, cpu, cuda, cuda:N or mps")
        check.at_least("log_every", 1)
        check.at_least("checkpoint_every", 1)
        check.at_least("eval_every", 0)
        check.within("ema_decay", 0, 1, closed="()", optional=True)
        check.within("swa_start", 0, 1, closed="[)", optional=True)


@dataclass(frozen=True)
class ComponentConfig:
    """A plug-in chosen by registry name, with keyword arguments checked against its constructor."""

    name: str
    params: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class TeacherSourceConfig:
    """How to load a teacher file a user brings (DESIGN.md, "Teachers users bring").

    Attributes:
        path: a freekd checkpoint, a TorchScript file, a plain state_dict (needs ``arch``) or, with
            ``trust_pickle``, a pickled ``nn.Module``.
        arch: registry name, ``torchvision:<name>`` or ``package.module:Class`` for a state_dict.
        arch_kwargs: keyword arguments for ``arch``.
        input_shape: ``[C, H, W]``; required for anything but a freekd checkpoint.
        num_classes: class count; inferred from a forward pass when omitted.
        mean: per-channel normalization mean the teacher expects (default: none, i.e. [0, 1] input).
        std: per-channel normalization std.
        trust_pickle: allow unpickling a full module; pickle executes code from the file.
    """

    path: str = ""
    arch: str | None = None
    arch_kwargs: dict[str, Any] = field(default_factory=dict)
    input_shape: list[int] | None = None
    num_classes: int | None = None
    mean: list[float] | None = None
    std: list[float] | None = None
    trust_pickle: bool = False

    def __post_init__(self) -> None:
        Checks(self).at_least("num_classes", 1, optional=True)


def _type_name(annotation: Any) -> str:
    return getattr(annotation, "__name__", None) or str(annotation).replace("typing.", "")


def _coerce(annotation: Any, value: Any, where: str) -> Any:
    """Check ``value`` against ``annotation``, coercing YAML strings such as ``"1e-5"``."""
    origin = typing.get_origin(annotation)
    args = typing.get_args(annotation)
    if annotation is Any:
        return value
    if origin in (Union, types.UnionType):
        if value is None and type(None) in args:
            return None
        errors = []
        for option in (a for a in args if a is not type(None)):
            try:
                return _coerce(option, value, where)
            except FreekdError as error:
                errors.append(str(error))
        raise FreekdError(errors[0] if errors else f"{where}: cannot be {shown(value)}")
    if dataclasses.is_dataclass(annotation):
        if dataclasses.is_dataclass(value) and isinstance(value, annotation):  # type: ignore[arg-type]
            return value
        if not isinstance(value, dict):
            raise FreekdError(f"{where}: expected a mapping of fields, got {shown(value)}")
        return from_dict(annotation, value, where=where)  # type: ignore[arg-type]
    if origin is list:
        if isinstance(value, str):  # "1,28,28" from a --set or a CLI flag
            value = [v for v in value.replace(" ", "").split(",") if v]
        if not isinstance(value, list | tuple):
            raise FreekdError(f"{where}: expected a list, got {shown(value)}")
        (item,) = args or (Any,)
        return [_coerce(item, v, f"{where}[{i}]") for i, v in enumerate(value)]
    if origin is dict:
        if not isinstance(value, dict):
            raise FreekdError(f"{where}: expected a mapping, got {shown(value)}")
        return dict(value)
    if annotation in (bool, int, float, str):
        return _coerce_scalar(annotation, value, where)
    raise FreekdError(f"{where}: unsupported type {_type_name(annotation)}")


def coerce_like(default: Any, value: Any, where: str) -> Any:
    """``value`` checked against the type of a plug-in parameter's ``default``, with the
    strings YAML and ``--set`` produce (``"1e-5"``, ``"true"``, ``"16"``) read as what they say
    (``_coerce_scalar``). A float parameter must be finite: no plug-in takes NaN or an infinity,
    and range checks written as comparisons let NaN through. Any other default (``None``, a
    string, a mapping) leaves ``value`` as given."""
    if not isinstance(default, bool | int | float):
        return value
    coerced = _coerce_scalar(type(default), value, where)
    if isinstance(coerced, float) and not math.isfinite(coerced):
        raise FreekdError(f"{where}: expected a finite number, got {shown(value)}")
    return coerced


#: Plug-in parameters that count images (a synthesis batch, a memory bank): at least 1.
SIZE_PARAMS = ("batch_size", "memory_size")
#: Plug-in parameters that count iterations of a loop inside one training step (a synthesis
#: round's Adam steps, VAT's power iterations); :data:`MAX_LOOP` at most, or one step outlasts
#: any ``--budget``.
LOOP_PARAMS = ("iterations", "generator_steps", "warmup_steps", "warmup_batches")
MAX_LOOP = 100_000


def check_plugin_params(defaults: dict[str, Any], params: dict[str, Any], what: str) -> None:
    """``params`` bound to a plug-in's hyperparameters (name → default): an unknown name is one
    line naming the known ones, and each value is replaced, in ``params``, by ``coerce_like``'s
    reading of it (``runs.check_params`` for a plug-in class, ``methods.combine`` for each part
    of a combined method)."""
    unknown = sorted(set(params) - set(defaults))
    if unknown:
        known = f"known: {', '.join(defaults)}" if defaults else "it takes none"
        raise FreekdError(f"{what} has no parameter {', '.join(map(repr, unknown))}; {known}")
    for name, value in params.items():
        params[name] = number = coerce_like(defaults[name], value, f"{what}: {name}")
        if isinstance(number, bool) or not isinstance(number, int | float):
            continue
        if (name == "weight" or name.endswith("_weight")) and number < 0:  # every plug-in's
            raise FreekdError(f"{what}: {name} must be at least 0, got {number:g}")
        if name in SIZE_PARAMS and number < 1:  # a batch of 0 images reached the memory plan
            raise FreekdError(f"{what}: {name} must be at least 1, got {number:g}")
        if name == "temperature" and not 0 < number <= 1000:  # T² of 1e300 overflowed
            raise FreekdError(f"{what}: temperature must lie in (0, 1000], got {number:g}")
        if name.endswith(LOOP_PARAMS) and number > MAX_LOOP:  # one step would never end
            raise FreekdError(
                f"{what}: {name} must be at most {MAX_LOOP:,} (every training step runs that "
                f"many), got {number:,}"
            )


def _coerce_scalar(annotation: type, value: Any, where: str) -> Any:
    """Check a bool, int, float or str field, accepting the strings YAML and --set produce."""
    if annotation is bool:
        if isinstance(value, bool):
            return value
        if isinstance(value, str) and value.lower() in ("true", "false", "yes", "no", "1", "0"):
            return value.lower() in ("true", "yes", "1")
        raise FreekdError(f"{where}: expected true or false, got {shown(value)}")
    if annotation is int:
        if isinstance(value, bool):
            raise FreekdError(f"{where}: expected an integer, got {shown(value)}")
        if isinstance(value, int):
            return value
        if isinstance(value, str):
            try:
                return int(value)
            except ValueError:
                pass
        if isinstance(value, float) and value.is_integer():
            return int(value)
        raise FreekdError(f"{where}: expected an integer, got {shown(value)}")
    if annotation is float:
        if isinstance(value, bool):
            raise FreekdError(f"{where}: expected a number, got {shown(value)}")
        if isinstance(value, int | float):
            return float(value)
        if isinstance(value, str):
            try:
                return float(value)  # PyYAML reads 1e-5 (no dot) as a string
            except ValueError:
                pass
        raise FreekdError(f"{where}: expected a number, got {shown(value)}")
    if annotation is str:
        if isinstance(value, str):
            return value
        if isinstance(value, int | float) and not isinstance(value, bool):
            return str(value)
        raise FreekdError(f"{where}: expected a string, got {shown(value)}")
    raise FreekdError(f"{where}: unsupported type {_type_name(annotation)}")


#: The largest seed: numpy's, and small enough that seeds derived from it (a PATE query's is
#: ``seed × 1,000,003 + index``) stay within torch's 64 bits.
MAX_SEED = 2**32 - 1


def from_dict(cls: type[C], data: dict[str, Any], *, where: str | None = None) -> C:
    """Build dataclass ``cls`` from a mapping; unknown keys raise with a "did you mean" hint."""
    where = where or cls.__name__
    hints = typing.get_type_hints(cls)
    names = [f.name for f in dataclasses.fields(cls)]  # type: ignore[arg-type]
    kwargs: dict[str, Any] = {}
    for key, value in data.items():
        if key not in names:
            close = difflib.get_close_matches(str(key), names, n=1)
            hint = (
                f"; did you mean {close[0]!r}?" if close else f"; known fields: {', '.join(names)}"
            )
            raise FreekdError(f"{where} has no field {key!r}{hint}")
        annotation = hints[key]
        optional = [a for a in typing.get_args(annotation) if a is not type(None)]
        target = optional[0] if len(optional) == 1 else annotation  # X | None → X
        if dataclasses.is_dataclass(target) and isinstance(value, dict):
            value = _with_field_defaults(cls, key, value)
        kwargs[key] = _coerce(annotation, value, f"{where}.{key}")
        if key == "seed" and not 0 <= kwargs[key] <= MAX_SEED:  # every config's seed
            raise FreekdError(f"seed must be an integer in [0, 2**32 - 1], got {kwargs[key]}")
    try:
        return cls(**kwargs)
    except ConfigValueError as error:  # restate it with the dotted key the user wrote
        key = ".".join([*where.split(".")[1:], error.name])
        raise FreekdError(error.message(key)) from None
    except TypeError as error:  # a required field (e.g. a component's name) is missing
        missing = str(error).split(":")[-1].strip()
        raise FreekdError(
            f"{where} needs {missing}; e.g. --set {where.split('.', 1)[-1]}.name=..."
        ) from None


def _with_field_defaults(cls: type, key: str, value: dict[str, Any]) -> dict[str, Any]:
    """Fill a partial group (``method.params.temperature=2``) with the field's default values.

    A component renamed to another plug-in does not inherit the default's ``params``.
    """
    (spec,) = [f for f in dataclasses.fields(cls) if f.name == key]  # type: ignore[arg-type]
    if spec.default is not dataclasses.MISSING:
        default = spec.default
    elif spec.default_factory is not dataclasses.MISSING:
        default = spec.default_factory()
    else:
        return value
    if default is None:
        partial = spec.metadata.get("partial_name")
        if partial is not None and "name" not in value:
            return {"name": partial, **value}
        return value
    defaults = to_dict(default)
    if "name" in value and "name" in defaults and value["name"] != defaults["name"]:
        defaults.pop("params", None)
    return _merge(defaults, value)


def to_dict(config: Any) -> dict[str, Any]:
    """A plain-python (YAML- and ``weights_only``-safe) dict of a config dataclass."""
    return dataclasses.asdict(config)


def _parse_scalar(text: str) -> Any:
    """Parse the value of a ``--set key=value`` as YAML (so ``[1,2]`` and ``null`` work)."""
    try:
        return safe_yaml(text)
    except (yaml.YAMLError, RecursionError):
        return text


def _nested(dotted: str, value: Any) -> dict[str, Any]:
    """``{"a": {"b": value}}`` for ``a.b``."""
    data: Any = value
    for key in reversed(dotted.split(".")):
        data = {key: data}
    return dict(data)


def _merge(base: dict[str, Any], update: dict[str, Any]) -> dict[str, Any]:
    merged = dict(base)
    for key, value in update.items():
        if isinstance(value, dict) and isinstance(merged.get(key), dict):
            merged[key] = _merge(merged[key], value)
        else:
            merged[key] = value
    return merged


def read_yaml(path: Path) -> dict[str, Any]:
    """A config file's mapping (:func:`freekd.yamldata.read_mapping`: data only)."""
    return read_mapping(path, "config", "check --config")


def check_settings(overrides: object) -> None:
    """Refuse ``overrides`` that are not a list of ``key=value`` strings (Python callers)."""
    if overrides is not None and (
        not isinstance(overrides, list | tuple) or not all(isinstance(o, str) for o in overrides)
    ):
        raise FreekdError(f"overrides takes a list of 'key=value' strings, got {shown(overrides)}")


def load_config(
    cls: type[C],
    path: Path | None = None,
    *,
    overrides: list[str] | None = None,
    values: dict[str, Any] | None = None,
    base: dict[str, Any] | None = None,
    trust_code: bool = False,
) -> C:
    """Resolve a run configuration.

    Args:
        cls: the config dataclass of the command.
        path: optional YAML file of overrides.
        overrides: ``key=value`` strings with dotted keys, e.g. ``trainer.lr=5e-3``.
        values: dotted keys → values from real CLI flags; ``None`` values are skipped. Applied last.
        base: a resolved config to start from instead of the defaults (``--resume`` passes the
            run's saved ``config.yaml``).
        trust_code: the user passed ``--trust-code``: ``path`` and ``base`` may name
            architectures by import path (``package.module:Class``).

    Returns:
        The frozen, type-checked dataclass.

    Raises:
        FreekdError: unknown key (with a suggestion), a value of the wrong type, malformed
            override, or a file that names code to import (without ``trust_code``) or switches a
            trust flag on.
    """
    data: dict[str, Any] = dict(base or {})
    if path is not None:
        data = _merge(data, read_yaml(path))
    check_settings(overrides)
    command_line: dict[str, Any] = {}
    for item in overrides or []:
        if "=" not in item:
            raise FreekdError(f"--set {item!r}: expected key=value, e.g. trainer.lr=0.01")
        key, text = item.split("=", 1)
        command_line = _merge(command_line, _nested(key.strip(), _parse_scalar(text)))
    for key, value in (values or {}).items():
        if value is not None:
            command_line = _merge(command_line, _nested(key, value))
    what = f"config {path}" if path is not None else "the saved config.yaml"
    _check_file_trust(data, command_line, what=what, trust_code=trust_code)
    config = from_dict(cls, given := _merge(data, command_line))
    if hasattr(config, "check_given"):  # a rule on what was written, not on the defaults
        config.check_given(given)
    return config


def _check_file_trust(
    file_data: dict[str, Any], command_line: dict[str, Any], *, what: str, trust_code: bool
) -> None:
    """Refuse a file that would make freekd run code the user did not name.

    A value the command line overrides does not count: only what reaches the run from the
    file. Architecture import paths need ``--trust-code``; trust flags need their own flag.
    """

    def walk(node: dict[str, Any], override: Any, prefix: str) -> None:
        for key, value in node.items():
            given = override.get(key) if isinstance(override, dict) else None
            dotted = f"{prefix}{key}"
            if isinstance(value, dict):
                walk(value, given, f"{dotted}.")
            elif given is not None:
                continue  # the command line decides this value
            elif key in ARCHITECTURE_FIELDS and _names_code(value) and not trust_code:
                raise FreekdError(
                    f"{what} names code to import in {dotted} ({value!r}) and freekd never runs "
                    f"code a file names; pass --trust-code if you trust the file, or give "
                    f"the architecture on the command line (--set {dotted}=...)"
                )
            elif isinstance(value, list) and any(isinstance(item, dict) for item in value):
                for index, item in enumerate(value):  # a composite model's members
                    if isinstance(item, dict):
                        walk(item, None, f"{dotted}.{index}.")
            elif key in TRUST_FIELDS and value not in (False, None, "false", "False"):
                flag = "--" + key.replace("_", "-")
                raise FreekdError(
                    f"{what} sets {dotted} and a file may not grant itself trust; "
                    f"remove it and pass {flag} on the command line"
                )

    walk(file_data, command_line, "")


def _names_code(value: Any) -> bool:
    """An architecture value (a name, or a list of names) that names code to import."""
    items = value if isinstance(value, list) else [value]
    return any(is_import_path(item) for item in items if not isinstance(item, dict))


def dump_yaml(config: Any) -> str:
    """The resolved config as YAML text (what ``config.yaml`` holds)."""
    return yaml.safe_dump(to_dict(config), sort_keys=False)
