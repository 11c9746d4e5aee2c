"""Resume checkpoints: what ``checkpoint.pt`` holds, how it is read, checked and restored.

The :class:`~freekd.train.callbacks.Checkpoint` callback writes the mapping of
:func:`resume_state_dict`; ``--resume`` reads it back with :func:`load_resume_state` and
:func:`restore`, which compare everything with the run at hand before loading any of it.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Protocol

import torch
import yaml
from torch import nn

from freekd.config import coerce_like
from freekd.errors import FreekdError
from freekd.seeding import global_rng_state, set_global_rng_state
from freekd.train.trainer import Trainer, TrainState
from freekd.yamldata import safe_yaml

RESUME_FORMAT = "freekd-resume/1"
RESUME_FILE = "checkpoint.pt"


class Stateful(Protocol):
    """Anything besides the method and optimizer that a resumed run must restore."""

    def state_dict(self) -> dict[str, Any]: ...

    def load_state_dict(self, state: dict[str, Any]) -> None: ...


def resume_state_dict(
    trainer: Trainer,
    state: TrainState,
    *,
    config: dict[str, Any],
    extras: dict[str, Stateful] | None = None,
) -> dict[str, Any]:
    """Everything needed to continue a run bit-for-bit (tensors and plain values only).

    ``extras`` (e.g. a synthesizer with its generator, optimizer and memory bank) are saved by name.
    """
    modules = {
        name: trainer.unwrapped(name).state_dict() for name in trainer.method.distributed_modules()
    }
    cpu_rng, cuda_rng = global_rng_state()
    data: dict[str, Any] = {
        "format": RESUME_FORMAT,
        "modules": modules,
        "method": _method_state(trainer),
        "optimizer": trainer.optimizer.state_dict(),
        "state": state.state_dict(),
        "torch_rng": cpu_rng,
        "config": config,
        "extras": {name: item.state_dict() for name, item in (extras or {}).items()},
    }
    if cuda_rng is not None:
        data["cuda_rng"] = cuda_rng
    return data


#: Method state a resume checkpoint leaves out: the frozen teacher (it is loaded from its file).
_NOT_SAVED = ("teacher.",)


def _method_state(trainer: Trainer) -> dict[str, Any]:
    """Everything the method holds besides the frozen teacher: extra heads, learnable
    temperatures, queues, a second trained model. Keys are those of the unwrapped method
    (a DistributedDataParallel wrapper's ``module.`` is dropped)."""
    wrapped = [f"{name}.module." for name in trainer.method.distributed_modules()]
    state = {}
    for key, value in trainer.method.state_dict().items():
        if key.startswith(_NOT_SAVED):
            continue
        for prefix in wrapped:
            if key.startswith(prefix):
                key = prefix.removesuffix("module.") + key[len(prefix) :]
        state[key] = value
    return state


def load_resume_state(path: Path) -> dict[str, Any]:
    """Read a resume checkpoint written by :class:`Checkpoint` (``weights_only``), its fields
    checked for type (a damaged file fails in one line, see :func:`resume_misfit`)."""
    from freekd.checkpoint import safe_torch_load

    path = Path(path)
    data = safe_torch_load(path, what="resume checkpoint")
    if not isinstance(data, dict) or data.get("format") != RESUME_FORMAT:
        raise FreekdError(f"{path} is not a freekd resume checkpoint; start without --resume")
    problem = _resume_structure_problem(data)
    if problem is not None:
        raise resume_misfit(path, problem)
    return data  # type: ignore[no-any-return]


def resume_misfit(source: Path | str, detail: str) -> FreekdError:
    """The one-line error for a resume checkpoint that is damaged or does not fit this run."""
    path = Path(source)
    return FreekdError(
        f"{path.name} in {path.parent} does not fit this run ({detail}); run without --resume "
        "or with --overwrite"
    )


def _is_tensor_map(value: Any) -> bool:
    return isinstance(value, dict) and all(
        isinstance(k, str) and isinstance(v, torch.Tensor) for k, v in value.items()
    )


def _resume_structure_problem(data: dict[str, Any]) -> str | None:
    """What is missing or of the wrong type in a resume mapping, or ``None``."""
    for key, kind in (("modules", dict), ("optimizer", dict), ("state", dict), ("config", dict)):
        if not isinstance(data.get(key), kind):
            return f"{key} is missing or not a mapping"
    for name, state_dict in data["modules"].items():
        if not _is_tensor_map(state_dict):
            return f"modules[{name!r}] is not a state_dict of tensors"
    if "method" in data and not _is_tensor_map(data["method"]):
        return "method is not a state_dict of tensors"
    if not isinstance(data.get("extras", {}), dict):
        return "extras is not a mapping"
    optimizer = data["optimizer"]
    if not isinstance(optimizer.get("state"), dict) or not isinstance(
        optimizer.get("param_groups"), list
    ):
        return "optimizer has no state and param_groups"
    rng = data.get("torch_rng")
    if not isinstance(rng, torch.Tensor) or rng.dtype != torch.uint8:
        return "torch_rng is missing or not a byte tensor"
    state = data["state"]
    for key in ("epoch", "step", "step_in_epoch"):
        value = state.get(key)
        if not isinstance(value, int) or isinstance(value, bool) or value < 0:
            return f"state.{key} is {value!r}, not a count"
    if not isinstance(state.get("epoch_finished"), bool):
        return "state.epoch_finished is not true or false"
    horizon = state.get("horizon")
    if horizon is not None and (
        not isinstance(horizon, int) or isinstance(horizon, bool) or horizon < 1
    ):
        return f"state.horizon is {horizon!r}, not a number of steps"
    metrics = state.get("metrics")
    if not isinstance(metrics, dict) or not all(
        isinstance(v, int | float) and not isinstance(v, bool) for v in metrics.values()
    ):
        return "state.metrics is not a mapping of numbers"
    return None


def _state_dict_misfit(module: nn.Module, saved: dict[str, Any], name: str) -> str | None:
    """How ``saved`` does not fit ``module``'s state_dict (missing, unexpected, shapes)."""
    own = module.state_dict()
    missing = [key for key in own if key not in saved]
    unexpected = [key for key in saved if key not in own]
    mismatched = [
        f"{key} {list(saved[key].shape)} vs {list(own[key].shape)}"
        for key in own
        if key in saved and tuple(saved[key].shape) != tuple(own[key].shape)
    ]
    parts = []
    for label, items in (("missing", missing), ("unexpected", unexpected)):
        if items:
            parts.append(f"{name} {label} {', '.join(items[:2])}")
    if mismatched:
        parts.append(f"{name} shape {', '.join(mismatched[:2])}")
    return "; ".join(parts) or None


def _optimizer_misfit(optimizer: torch.optim.Optimizer, saved: dict[str, Any]) -> str | None:
    """How a saved optimizer state does not fit ``optimizer`` (groups, sizes, state shapes);
    torch's own ``load_state_dict`` does not compare the shapes of momentum buffers."""
    groups = optimizer.param_groups
    saved_groups = saved["param_groups"]
    if len(saved_groups) != len(groups):
        return f"optimizer has {len(saved_groups)} parameter groups, this run {len(groups)}"
    parameters = []
    for group, saved_group in zip(groups, saved_groups, strict=True):
        indices = saved_group.get("params") if isinstance(saved_group, dict) else None
        if not isinstance(indices, list) or len(indices) != len(group["params"]):
            return "optimizer parameter groups differ in size"
        parameters += list(zip(indices, group["params"], strict=True))
    by_index = dict(parameters)
    for index, state in saved["state"].items():
        if index not in by_index or not isinstance(state, dict):
            return f"optimizer state for an unknown parameter {index!r}"
        shape = tuple(by_index[index].shape)
        for key, value in state.items():
            if isinstance(value, torch.Tensor) and value.dim() > 0 and tuple(value.shape) != shape:
                return f"optimizer {key} {list(value.shape)} vs parameter {list(shape)}"
    return None


def restore(
    trainer: Trainer,
    data: dict[str, Any],
    *,
    extras: dict[str, Stateful] | None = None,
    source: Path | str = RESUME_FILE,
) -> TrainState:
    """Load modules, optimizer, extras and RNG from a resume checkpoint; return where to go on.

    Everything is compared with this run before anything is loaded: a checkpoint of another
    architecture, method or optimizer fails in one line naming what does not fit.

    Raises:
        FreekdError: the checkpoint does not fit this run.
    """
    if data["state"]["epoch"] >= trainer.config.epochs:  # a finished run's is epochs - 1
        raise resume_misfit(
            source,
            f"it is at epoch {data['state']['epoch'] + 1}, past this run's plan of "
            f"{trainer.config.epochs}",
        )
    expected = trainer.method.distributed_modules()
    if sorted(data["modules"]) != sorted(expected):
        raise resume_misfit(
            source, f"it saved modules {sorted(data['modules'])}, this run has {sorted(expected)}"
        )
    for name, state_dict in data["modules"].items():
        problem = _state_dict_misfit(trainer.unwrapped(name), state_dict, name)
        if problem is not None:
            raise resume_misfit(source, problem)
    problem = _optimizer_misfit(trainer.optimizer, data["optimizer"])
    if problem is not None:
        raise resume_misfit(source, problem)
    for name in extras or {}:
        if name not in data.get("extras", {}):
            raise resume_misfit(source, f"it has no saved {name}")
    try:
        for name, state_dict in data["modules"].items():
            trainer.unwrapped(name).load_state_dict(state_dict)
        if "method" in data:
            missing, unexpected = trainer.method.load_state_dict(data["method"], strict=False)
            lost = [key for key in missing if not key.startswith(_NOT_SAVED)]
            if lost or unexpected:
                raise resume_misfit(source, f"method state {(lost or unexpected)[0]}")
        for name, item in (extras or {}).items():
            item.load_state_dict(data["extras"][name])
        trainer.optimizer.load_state_dict(data["optimizer"])
        set_global_rng_state(data["torch_rng"], data.get("cuda_rng"))
    except (KeyError, TypeError, ValueError, RuntimeError, IndexError, AttributeError) as error:
        # What the checks above cannot see (an extra's own state, an RNG state of the wrong size).
        first = next((line.strip() for line in str(error).splitlines() if line.strip()), "")
        raise resume_misfit(source, first[:160] or type(error).__name__) from None
    return TrainState.from_state_dict(data["state"])


# Settings that may change between an interrupted run and its resumption.
RESUMABLE_CHANGES = {
    "trainer.epochs",
    "trainer.device",
    "trainer.log_every",
    "trainer.checkpoint_every",
    "trainer.eval_every",
    # What collapse checks flag or measure, not what the run computes; checkpoints written
    # before these settings existed resume with them too.
    "collapse.discrepancy_factor",
    "collapse.discrepancy_floor",
    "collapse.keep_per_check",
    "collapse.keep_size",
    # When a run stops, not what it computes: a run stopped by its budget resumes with more.
    "budget_minutes",
    "budget_cpu_minutes",
    "budget_images",
    # Names the pool file, whose contents the label report's fingerprint pins.
    "queries_from",
    # A measurement of the student (datafree.probe), not what the run computes.
    "confident_probe",
}

# Settings added after runs were saved, with the value that reproduces what those runs did: a
# saved config without one is read with it, so its resume is checked against the old behaviour
# instead of failing on a key it could not have had (or silently changing what it computes).
ADDED_SETTINGS: dict[str, Any] = {
    "fit_schedule_to_budget": False,
    "queries_from": None,
    "eval_dataset": None,
    "init_student": None,
    "queries_confidence": 0.0,
    "min_steps": 0,
    "confident_probe": 0,
}


def saved_settings(config_class: Any, saved: dict[str, Any]) -> dict[str, Any]:
    """A run's saved ``config.yaml`` mapping, plus every setting added since it was saved (at
    the value that reproduces it), for ``config_class``'s fields: the base of a resume."""
    import dataclasses

    names = {field.name for field in dataclasses.fields(config_class)}
    return {**{k: v for k, v in ADDED_SETTINGS.items() if k in names}, **saved}


def check_config_matches(saved: dict[str, Any], current: dict[str, Any], out: Path) -> None:
    """Refuse a resume whose config differs from the saved one, except in
    ``RESUMABLE_CHANGES``; the message names the ``--set`` flags that restore the saved values."""

    def flatten(data: dict[str, Any], prefix: str = "") -> dict[str, Any]:
        flat: dict[str, Any] = {}
        for key, value in data.items():
            if isinstance(value, dict) and key not in ("params", "arch_kwargs", "student_kwargs"):
                flat.update(flatten(value, f"{prefix}{key}."))
            else:
                flat[f"{prefix}{key}"] = value
        return flat

    old, new = {**ADDED_SETTINGS, **flatten(saved)}, flatten(current)
    old = {k: v for k, v in old.items() if k in new or k not in ADDED_SETTINGS}
    allowed = set(RESUMABLE_CHANGES)
    if old.get("dp.enabled"):
        # The noise multiplier was chosen for the planned number of steps: more epochs would
        # spend more than the recorded ε, and the record would not know.
        allowed.discard("trainer.epochs")
    changed = sorted(
        k for k in old.keys() | new.keys() if not _same(old.get(k), new.get(k)) and k not in allowed
    )
    if "trainer.epochs" in changed and old.get("dp.enabled"):
        raise FreekdError(
            f"--resume in {out} with other --epochs: this DP-SGD run's noise was set for "
            f"{old['trainer.epochs']} epochs; resume with those, or train anew with another --out"
        )
    if changed:
        saved_values = " ".join(f"--set {k}={_yaml_scalar(old.get(k))}" for k in changed)
        raise FreekdError(
            f"--resume in {out} with a different config ({', '.join(changed)}); resume with "
            f"the saved settings ({saved_values}) or start a new run with another --out"
        )


def _same(saved: Any, current: Any) -> bool:
    """Whether a saved setting is the current one. A plug-in parameter saved as the text YAML or
    ``--set`` gave (``"5e-1"``, before runs saved what ``runs.check_params`` read it as) is the
    number it says, so a run saved that way still resumes."""
    if saved == current:
        return True
    if isinstance(saved, dict) and isinstance(current, dict):
        return saved.keys() == current.keys() and all(
            _same(saved[key], current[key]) for key in saved
        )
    if isinstance(saved, str) and isinstance(current, bool | int | float):
        try:
            return bool(coerce_like(current, saved, "") == current)
        except FreekdError:
            return False
    return False


def _yaml_scalar(value: Any) -> str:
    """``value`` as ``--set`` reads it back: YAML scalars, compact JSON for the rest, and a
    string quoted where YAML would read it as something else (``on``, ``1e-3``)."""
    if isinstance(value, str):
        try:
            plain = safe_yaml(value) == value
        except yaml.YAMLError:
            plain = False
        return value if plain else json.dumps(value)
    return json.dumps(value, separators=(",", ":"))
