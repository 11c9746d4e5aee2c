"""Load the four kinds of teacher file a user may bring (DESIGN.md, "Teachers users bring").

1. a freekd checkpoint (all metadata inside);
2. a TorchScript file (needs ``input_shape``; ``mean``/``std`` when it expects normalized input);
3. a plain ``state_dict`` (or ``{"state_dict": ...}`` / ``{"model": ...}``) plus ``arch``;
4. a pickled ``nn.Module``, only with ``trust_pickle=True`` because unpickling runs code.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch
from torch import Tensor, nn

from freekd.checkpoint import (
    is_freekd_checkpoint,
    is_torchscript,
    load_state_dict_checked,
    model_from_checkpoint,
    safe_torch_load,
)
from freekd.config import TeacherSourceConfig
from freekd.errors import FreekdError
from freekd.models import ImageClassifier, build_model, check_model
from freekd.models.classifier import check_normalization
from freekd.teachers.base import Teacher

logger = logging.getLogger(__name__)

EXPECTED = (
    "expected a freekd checkpoint, a TorchScript file, a state_dict with --arch, "
    "or a pickled module with --trust-pickle"
)


class _Normalized(nn.Module):
    """Normalize [0, 1] images per channel, then call a foreign network (TorchScript, pickle)."""

    def __init__(self, net: nn.Module, *, mean: Sequence[float], std: Sequence[float]) -> None:
        super().__init__()
        self.net = net
        self.mean: Tensor
        self.std: Tensor
        self.register_buffer("mean", torch.tensor(list(mean)).view(1, -1, 1, 1), persistent=False)
        self.register_buffer("std", torch.tensor(list(std)).view(1, -1, 1, 1), persistent=False)

    def forward(self, images: Tensor) -> Tensor:
        return self.net((images - self.mean) / self.std)  # type: ignore[no-any-return]


def load_teacher(
    source: TeacherSourceConfig,
    *,
    device: torch.device | str = "cpu",
    trust_code: bool = False,
    flag: str = "--teacher",
) -> Teacher:
    """Load the teacher ``source`` describes, frozen and in eval mode, on ``device``.

    ``source.arch`` (for a plain state_dict) is the user's own word and may be an import path; an
    ``arch`` read from a freekd checkpoint is the file's word and is built as an import path only
    with ``trust_code`` (the user's ``--trust-code``). ``flag`` is the option that named the
    file (``--model`` for ``freekd eval`` and ``freekd audit``), named when it is missing.

    Raises:
        FreekdError: the file is missing, corrupt, holds pickled code without ``trust_pickle``,
            names code to import without ``trust_code``, does not fit ``arch``, or the metadata
            needed for its kind is missing.
    """
    path = Path(source.path)
    if not source.path:
        raise FreekdError(f"no {flag.lstrip('-')} given; pass {flag} PATH")
    if not path.exists():
        raise FreekdError(f"{flag.lstrip('-')} file {path} does not exist; check {flag}")
    if is_torchscript(path):
        teacher = _from_torchscript(path, source)
    else:
        teacher = _from_torch_file(path, source, trust_code=trust_code, what=flag.lstrip("-"))
    _refuse_non_finite(teacher, path, what=flag.lstrip("-"))
    return teacher.to(device)


def _refuse_non_finite(teacher: Teacher, path: Path, *, what: str) -> None:
    """A weight that is NaN or infinite (a training run that diverged, a damaged file) makes
    every output NaN: refused here, in one line, rather than as a NaN loss that blames the
    learning rate. Buffers may hold an infinity on purpose (an attention mask), not a NaN, and
    BatchNorm's running statistics neither."""
    for name, parameter in teacher.named_parameters():
        if not bool(torch.isfinite(parameter).all()):
            raise FreekdError(
                f"{what} {path} holds non-finite weights (NaN or infinity) in {name}; it cannot "
                "be used: check the file, or train it again"
            )
    for name, buffer in teacher.named_buffers():
        if not buffer.is_floating_point():
            continue
        statistic = name.endswith(("running_mean", "running_var"))  # a diverged BatchNorm
        bad = ~torch.isfinite(buffer) if statistic else torch.isnan(buffer)
        if bool(bad.any()):
            raise FreekdError(
                f"{what} {path} holds non-finite values in {name}; it cannot be used: check the "
                "file, or train it again"
            )


def _input_shape(source: TeacherSourceConfig, kind: str) -> tuple[int, int, int]:
    if source.input_shape is None:
        raise FreekdError(f"teacher {source.path} is {kind}; pass --input-shape C,H,W")
    if len(source.input_shape) != 3 or min(source.input_shape) < 1:
        raise FreekdError(f"--input-shape {source.input_shape} must be three positive sizes C,H,W")
    channels, height, width = source.input_shape
    return (channels, height, width)


def _warn_unnormalized(source: TeacherSourceConfig) -> None:
    """Once a file without normalization loaded: say it gets raw [0, 1] images (a teacher at
    chance accuracy was the only sign)."""
    if source.mean is None and source.std is None:
        logger.warning(
            "%s records no input normalization and no --mean/--std was given: it receives [0, 1] "
            "images as they are; if it was trained on normalized inputs, pass --mean and --std "
            "(e.g. MNIST's 0.1307 and 0.3081), else --mean 0 --std 1 to silence this",
            source.path,
        )


def _normalization(source: TeacherSourceConfig, channels: int) -> tuple[list[float], list[float]]:
    mean = list(source.mean) if source.mean is not None else [0.0] * channels
    std = list(source.std) if source.std is not None else [1.0] * channels
    if len(mean) == 1:
        mean = mean * channels
    if len(std) == 1:
        std = std * channels
    if len(mean) != channels or len(std) != channels:
        raise FreekdError(f"--mean/--std need 1 or {channels} values, got {len(mean)}/{len(std)}")
    check_normalization(mean, std, fix="check --mean and --std")
    return mean, std


def _infer_num_classes(model: nn.Module, shape: tuple[int, int, int], source: str) -> int:
    try:
        with torch.no_grad():
            output = model(torch.zeros(2, *shape))
    except Exception as error:  # a foreign network may raise anything on a wrong shape
        first = str(error).strip().splitlines()[0][:200] if str(error).strip() else repr(error)
        raise FreekdError(
            f"teacher {source} cannot take input of shape {'x'.join(map(str, shape))} ({first}); "
            "check --input-shape"
        ) from None
    if not isinstance(output, Tensor) or output.dim() != 2 or output.shape[0] != 2:
        raise FreekdError(f"teacher {source} must return (B, K) logits; check the model")
    return int(output.shape[1])


def _foreign_teacher(
    net: nn.Module, path: Path, source: TeacherSourceConfig, *, kind: str
) -> Teacher:
    shape = _input_shape(source, kind)
    mean, std = _normalization(source, shape[0])
    model = _Normalized(net.eval(), mean=mean, std=std)
    num_classes = _infer_num_classes(model, shape, str(path))
    if source.num_classes is not None and source.num_classes != num_classes:
        raise FreekdError(
            f"teacher {path} outputs {num_classes} classes but --num-classes is "
            f"{source.num_classes}; fix --num-classes"
        )
    metadata = {"input": {"shape": list(shape), "mean": mean, "std": std}, "kind": kind}
    _warn_unnormalized(source)
    return Teacher(
        model, num_classes=num_classes, input_shape=shape, description=kind, metadata=metadata
    )


def _first_line(error: BaseException) -> str:
    """The first non-empty line of an error message (torch's often start with a newline)."""
    lines = [line.strip() for line in str(error).splitlines() if line.strip()]
    return lines[0][:200] if lines else type(error).__name__


def _from_torchscript(path: Path, source: TeacherSourceConfig) -> Teacher:
    try:
        net = torch.jit.load(str(path), map_location="cpu")
    except Exception as error:  # torch raises RuntimeError subclasses with long messages
        raise FreekdError(f"cannot load TorchScript file {path}: {_first_line(error)}") from None
    return _foreign_teacher(net, path, source, kind="a TorchScript file")


def _from_torch_file(
    path: Path, source: TeacherSourceConfig, *, trust_code: bool, what: str = "teacher"
) -> Teacher:
    if source.trust_pickle:
        try:
            data = torch.load(path, map_location="cpu", weights_only=False)
        except Exception as error:
            raise FreekdError(f"cannot load {path}: {_first_line(error)}; {EXPECTED}") from None
    else:
        data = safe_torch_load(path, what=f"{what} file")
    if isinstance(data, nn.Module):
        return _foreign_teacher(data, path, source, kind="a pickled nn.Module")
    if is_freekd_checkpoint(data):
        _warn_ignored_flags(source, path)
        model = model_from_checkpoint(data, source=f"{what} {path}", trust_code=trust_code)
        return _teacher_from_classifier(
            model, description="freekd checkpoint", path=path, privacy=data.get("privacy")
        )
    if isinstance(data, dict) and str(data.get("format", "")).startswith("freekd-graph/"):
        raise FreekdError(
            f"{path} is a graph checkpoint (freekd graph), not an image classifier; distill it "
            "with freekd graph distill --teacher"
        )
    state_dict = _find_state_dict(data)
    if state_dict is None:
        raise FreekdError(f"teacher file {path} holds {type(data).__name__}; {EXPECTED}")
    return _from_state_dict(state_dict, path, source)


def _warn_ignored_flags(source: TeacherSourceConfig, path: Path) -> None:
    """Say which of the user's --arch, --input-shape, ... a freekd checkpoint overrides."""
    given = {
        "--arch": source.arch,
        "--arch-kwargs": source.arch_kwargs,
        "--input-shape": source.input_shape,
        "--num-classes": source.num_classes,
        "--mean": source.mean,
        "--std": source.std,
    }
    ignored = [flag for flag, value in given.items() if value]
    if ignored:
        logger.warning(
            "%s is a freekd checkpoint, which records its own architecture, classes and input "
            "normalization: %s ignored",
            path,
            ", ".join(ignored),
        )


def _find_state_dict(data: Any) -> dict[str, Tensor] | None:
    if isinstance(data, dict):
        if data and all(isinstance(v, Tensor) for v in data.values()):
            return data
        for key in ("state_dict", "model", "model_state_dict", "net"):
            inner = data.get(key)
            if (
                isinstance(inner, dict)
                and inner
                and all(isinstance(v, Tensor) for v in inner.values())
            ):
                return inner
    return None


def _from_state_dict(
    state_dict: dict[str, Tensor], path: Path, source: TeacherSourceConfig
) -> Teacher:
    if not source.arch:
        raise FreekdError(
            f"teacher file {path} is a plain state_dict; pass --arch NAME (a freekd model, "
            "torchvision:NAME or package.module:Class) and --input-shape C,H,W"
        )
    shape = _input_shape(source, "a plain state_dict")
    num_classes = source.num_classes or _guess_num_classes(state_dict)
    if num_classes is None:
        raise FreekdError(f"cannot tell the class count of {path}; pass --num-classes K")
    net = build_model(
        source.arch,
        num_classes=num_classes,
        input_shape=shape,
        arch_kwargs=dict(source.arch_kwargs),
        trust_code=True,  # the user's --arch (a config file's import path is vetted at loading)
    )
    load_state_dict_checked(net, state_dict, arch=source.arch, source=str(path))
    mean, std = _normalization(source, shape[0])
    model = ImageClassifier(
        net,
        arch=source.arch,
        arch_kwargs=dict(source.arch_kwargs),
        num_classes=num_classes,
        input_shape=shape,
        mean=mean,
        std=std,
    )
    teacher = _teacher_from_classifier(model.eval(), description="state_dict + --arch", path=path)
    _warn_unnormalized(source)
    return teacher


def _guess_num_classes(state_dict: dict[str, Tensor]) -> int | None:
    """The output size of the last 2-D weight (the classifier layer in most networks)."""
    for key in reversed(list(state_dict)):
        value = state_dict[key]
        if key.endswith("weight") and value.dim() == 2:
            return int(value.shape[0])
    return None


def _teacher_from_classifier(
    model: ImageClassifier,
    *,
    description: str,
    path: Path,
    privacy: dict[str, Any] | None = None,
) -> Teacher:
    check_model(model, input_shape=model.input_shape, num_classes=model.num_classes)
    metadata: dict[str, Any] = {**model.metadata(), "path": str(path)}
    if privacy is not None:  # a DP-SGD teacher's record: its students inherit it
        metadata["privacy"] = privacy
    return Teacher(
        model,
        num_classes=model.num_classes,
        input_shape=model.input_shape,
        description=description,
        metadata=metadata,
    )
