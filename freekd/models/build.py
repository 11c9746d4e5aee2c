"""Build a classifier network from an ``--arch`` string, and check that it fits the data.

An architecture string is one of:

* a registered name (``resnet20``, ``lenet5``, ``wrn-40-2``, ... see ``MODELS.names()``);
* ``wrn-DEPTH-WIDTH`` for any WideResNet, e.g. ``wrn-22-4`` (depth - 4 must be a multiple of 6);
* ``torchvision:NAME`` for any torchvision model, built with random weights (nothing is downloaded);
* ``package.module:Attribute`` for a user class or function that returns an ``nn.Module``.

An import path runs the user's code, so it is built only with ``trust_code=True``: callers pass it
for a name the user typed (``--arch`` on the command line, a Python argument), never for a name read
from a file (checkpoint metadata, a YAML config, ``teachers.pt``) unless the user passed
``--trust-code``. Registry, ``wrn-`` and ``torchvision:`` names are data and always allowed.
"""

from __future__ import annotations

import difflib
import importlib
import importlib.machinery
import importlib.util
import inspect
import os
import re
import sys
from collections.abc import Callable, Mapping, Sequence
from typing import Any, TypeVar

import torch
from torch import Tensor, nn

from freekd.config import TORCHVISION_PREFIX, is_import_path
from freekd.errors import FreekdError, UnknownNameError
from freekd.hostmemory import check_fits
from freekd.lazy import drop_opacus_root_handler
from freekd.models.factory import MODELS
from freekd.models.wrn import check_wrn_depth

_WRN_NAME = re.compile(r"wrn-(\d+)-(\d+)")
#: Where the keyword arguments of an architecture named by each setting go.
KWARGS_SETTING = {"--arch": "--arch-kwargs", "--student": "student_kwargs"}
#: Most values one input image may hold (3 × 4,096 × 4,096 is 50 M): a check pass runs two.
MAX_INPUT_VALUES = 2**26


def count_parameters(module: nn.Module, *, trainable_only: bool = False) -> int:
    """Number of scalar parameters in ``module`` (shared parameters counted once).

    Args:
        module: any module.
        trainable_only: count only parameters with ``requires_grad``.
    """
    return sum(
        parameter.numel()
        for parameter in module.parameters()
        if parameter.requires_grad or not trainable_only
    )


def check_trusted_arch(arch: object, *, source: str, trust_code: bool) -> None:
    """Refuse an import-path architecture read from a file unless the user trusts its code.

    Args:
        arch: the architecture string read from ``source``.
        source: what it was read from, for the message (e.g. ``checkpoint runs/x/model.pt``).
        trust_code: the user passed ``--trust-code`` (or ``trust_code=True`` in Python).

    Raises:
        FreekdError: ``arch`` is an import path and ``trust_code`` is false.
    """
    if is_import_path(arch) and not trust_code:
        raise FreekdError(
            f"{source} names code to import as its architecture ({arch!r}) and freekd never "
            "runs code a file names; if you trust its author and have that code installed, "
            "pass --trust-code (Python: trust_code=True)"
        )


def build_model(
    arch: str,
    *,
    num_classes: int,
    input_shape: tuple[int, int, int],
    arch_kwargs: dict[str, Any] | None = None,
    trust_code: bool = False,
    setting: str = "--arch",
    kwargs_setting: str | None = None,
) -> nn.Module:
    """The network named by ``arch``, mapping normalized (B, C, H, W) images to (B, K) logits.

    Args:
        arch: a registered name, ``wrn-DEPTH-WIDTH``, ``torchvision:NAME`` or
            ``package.module:Attribute`` (see the module docstring).
        num_classes: number of logits K.
        input_shape: (C, H, W) of one input image.
        arch_kwargs: extra keyword arguments for the architecture (``--arch-kwargs``).
        trust_code: allow ``package.module:Attribute`` (it imports and calls user code); pass
            it only for a name the user gave, never for one read from a file.
        setting: the flag or setting the user named ``arch`` with, which errors tell them to
            check (``--student`` for a student).
        kwargs_setting: the same for ``arch_kwargs``; by default the one that goes with
            ``setting`` (:data:`KWARGS_SETTING`, else ``<setting>_kwargs``).

    Returns:
        The bare network (wrap it in :class:`~freekd.models.ImageClassifier` to add normalization).
        torchvision networks are built for their own channel count (3 for the classifiers), which
        ``ImageClassifier`` bridges for grey images.

    Raises:
        UnknownNameError: ``arch`` is no registered, torchvision or WideResNet name.
        FreekdError: bad ``num_classes``/``input_shape``, an import path without ``trust_code``
            or that cannot be imported, or ``arch_kwargs`` the architecture does not accept.
    """
    try:
        arch = check_arch_name(arch, setting=setting)
        _check_num_classes(num_classes)
        shape = validate_input_shape(input_shape)
        if not isinstance(arch_kwargs, (dict, type(None))):
            raise FreekdError(
                f"arch kwargs must be a mapping, got {arch_kwargs!r}; check --arch-kwargs"
            )
        kwargs = dict(arch_kwargs or {})
        if is_import_path(arch):  # the user's own code, which they named: built as it is
            return _build(arch, num_classes, shape, kwargs, trust_code)
        return build_within_memory(
            lambda: _build(arch, num_classes, shape, kwargs, trust_code),
            f"{arch} ({num_classes} classes, input {shape}, kwargs {kwargs})",
            "check --num-classes, --input-shape and --arch-kwargs, or the file they came from",
        )
    except FreekdError as error:
        if kwargs_setting is None:
            kwargs_setting = KWARGS_SETTING.get(setting, f"{setting}_kwargs")
        if (setting, kwargs_setting) == ("--arch", "--arch-kwargs"):
            raise
        raise _naming(error, setting, kwargs_setting) from error.__cause__


def _naming(error: FreekdError, setting: str, kwargs_setting: str) -> FreekdError:
    """``error`` (of the same class) with ``--arch``/``--arch-kwargs`` in its message replaced
    by the settings the user actually named the architecture and its kwargs with."""
    message = re.sub(r"--arch-kwargs\b", kwargs_setting, str(error))
    message = re.sub(r"--arch(?![-\w])", setting, message)
    return type(error)(message)


M = TypeVar("M", bound=nn.Module)


def build_within_memory(build: Callable[[], M], what: str, fix: str) -> M:
    """``build()``, after building it once on PyTorch's meta device (no memory) and refusing
    weights larger than this process can ever have (:func:`~freekd.hostmemory.check_fits`):
    sizes from a file or a flag must not allocate what they like.

    A network that reads tensor values while it builds (torchvision's RegNets) cannot be built
    on the meta device and skips the check.

    Raises:
        FreekdError: the weights would not fit; the message names ``what`` and ``fix``.
    """
    try:
        with torch.device("meta"):
            skeleton = build()
    except (NotImplementedError, RuntimeError):
        skeleton = None
    if skeleton is not None:
        tensors = [*skeleton.parameters(), *skeleton.buffers()]
        size = sum(tensor.numel() * tensor.element_size() for tensor in tensors)
        check_fits(size, f"{what}'s weights", fix)
    return build()


def _build(
    arch: str,
    num_classes: int,
    shape: tuple[int, int, int],
    kwargs: dict[str, Any],
    trust_code: bool,
) -> nn.Module:
    """``build_model`` after its checks."""
    if arch.startswith(TORCHVISION_PREFIX):
        return _build_torchvision(arch, num_classes=num_classes, arch_kwargs=kwargs)
    if arch in MODELS:
        _reject_keys(arch, kwargs, ("num_classes", "input_shape", "trust_code"))
        factory = MODELS.get(arch)
        fixed: dict[str, Any] = {"num_classes": num_classes, "input_shape": shape}
        if "trust_code" in _named_parameters(factory):
            # A composite architecture (models.composite) builds its members under the same
            # trust as itself; a file can never set it (rejected above).
            fixed["trust_code"] = trust_code
        return _call_checked(arch, factory, fixed, kwargs)
    wrn_match = _WRN_NAME.fullmatch(arch)
    if wrn_match is not None:
        depth, widen_factor = int(wrn_match.group(1)), int(wrn_match.group(2))
        _reject_keys(arch, kwargs, ("num_classes", "input_shape", "depth", "widen_factor"))
        fixed = {
            "num_classes": num_classes,
            "input_shape": shape,
            "depth": depth,
            "widen_factor": widen_factor,
        }
        return _call_checked(arch, MODELS.get("wrn"), fixed, kwargs)
    # What check_arch_name lets through besides the above: package.module:Class.
    if not trust_code:  # every caller that reads a file checks first, with a better message
        raise FreekdError(
            f"architecture {arch!r} is an import path and would run its code; it is built "
            "only when you name it yourself (--arch) or pass --trust-code"
        )
    return _build_from_import_path(
        arch, num_classes=num_classes, input_shape=shape, arch_kwargs=kwargs
    )


def check_arch_name(arch: object, *, setting: str = "--arch") -> str:
    """Refuse, before any work, an architecture ``build_model`` could never build by name: not
    a string, a plain name that is neither registered nor ``wrn-DEPTH-WIDTH``, or a WideResNet
    depth or width it refuses (a ``torchvision:`` name or an import path is checked when it is
    built). Returns ``arch``."""
    if not isinstance(arch, str) or not arch:
        raise FreekdError(f"architecture must be a name, got {arch!r}; check {setting}")
    if ":" in arch:  # torchvision:NAME or package.module:Class
        return arch
    wrn_match = None if arch in MODELS else _WRN_NAME.fullmatch(arch)
    if wrn_match is not None:
        depth, widen_factor = int(wrn_match.group(1)), int(wrn_match.group(2))
        check_wrn_depth(depth, setting=setting)
        if widen_factor < 1:
            raise FreekdError(
                f"WideResNet widen_factor must be ≥ 1, got {widen_factor}; check {setting}"
            )
    elif arch not in MODELS:
        raise UnknownNameError(
            f"unknown model {arch!r}; known: {', '.join(MODELS.names())}; "
            f"or use wrn-DEPTH-WIDTH, torchvision:NAME or package.module:Class in {setting}"
        )
    return arch


def check_model(model: nn.Module, *, input_shape: tuple[int, int, int], num_classes: int) -> None:
    """Run a (2, C, H, W) zero batch through ``model`` and check that it gives (2, K) logits.

    The forward pass runs in eval mode under ``torch.no_grad``, on the device and dtype of the
    model's first floating-point parameter or buffer; every submodule's train/eval mode is restored
    afterwards.

    Args:
        model: a bare network (normalized input) or an ``ImageClassifier`` ([0, 1] input).
        input_shape: (C, H, W) of one input image.
        num_classes: expected number of logits K.

    Raises:
        FreekdError: the forward pass fails (e.g. a shape mismatch) or does not return a
            (2, num_classes) tensor.
    """
    name = getattr(model, "arch", None) or type(model).__name__
    shape = validate_input_shape(input_shape)
    reference = next(
        (
            tensor
            for tensor in (*model.parameters(), *model.buffers())
            if tensor.is_floating_point()
        ),
        None,
    )
    device = reference.device if reference is not None else torch.device("cpu")
    dtype = reference.dtype if reference is not None else torch.float32
    modes = {module: module.training for module in model.modules()}
    model.eval()
    try:
        with torch.no_grad():
            output = model(torch.zeros((2, *shape), device=device, dtype=dtype))
    except FreekdError:
        raise
    except Exception as error:  # any failure of user code is reported as a shape problem
        raise FreekdError(
            f"model {name} cannot take input of shape {'×'.join(map(str, shape))}: "
            f"{_first_line(error)}; check --input-shape"
        ) from error
    finally:
        for module, training in modes.items():
            module.training = training
    if not isinstance(output, Tensor):
        raise FreekdError(
            f"model {name} returns {type(output).__name__}, expected a (B, K) logits tensor; "
            "check --arch (networks must return logits only)"
        )
    if tuple(output.shape) != (2, num_classes):
        raise FreekdError(
            f"model {name} outputs shape {tuple(output.shape)} for a batch of 2, expected "
            f"(B, K) = (2, {num_classes}); check --num-classes"
        )


def _build_torchvision(arch: str, *, num_classes: int, arch_kwargs: dict[str, Any]) -> nn.Module:
    # Imported lazily: torchvision is slow to import and only needed here.
    import torchvision.models  # type: ignore[import-untyped]

    name = arch.removeprefix(TORCHVISION_PREFIX)
    known = torchvision.models.list_models()
    if name not in known:
        suggestions = difflib.get_close_matches(name, known, n=5, cutoff=0.5) or [
            "resnet18",
            "mobilenet_v3_small",
            "efficientnet_b0",
            "vgg11_bn",
            "vit_b_16",
        ]
        raise UnknownNameError(
            f"unknown torchvision model {name!r}; e.g. {', '.join(suggestions)} "
            f"({len(known)} in torchvision.models.list_models()); check --arch"
        )
    _reject_keys(arch, arch_kwargs, ("num_classes", "weights", "weights_backbone"))
    fixed: dict[str, Any] = {"weights": None, "num_classes": num_classes}
    builder = torchvision.models.get_model_builder(name)
    if "weights_backbone" in inspect.signature(builder).parameters:
        fixed["weights_backbone"] = None  # detection models would otherwise download a backbone
    return _call_checked(
        arch, lambda **kwargs: torchvision.models.get_model(name, **kwargs), fixed, arch_kwargs
    )


def _import_user_module(name: str) -> Any:
    """``importlib.import_module``, also from the current folder when the module is found
    nowhere else: ``python -m freekd`` looks there, the installed ``freekd`` command does not,
    and a user's ``--arch mypkg.nets:Net`` usually sits beside them. Only the named package is
    taken from the folder (``sys.path`` is left alone, so no other import ever looks there)."""
    try:
        return importlib.import_module(name)
    except ModuleNotFoundError as error:
        top = name.split(".")[0]
        spec = importlib.machinery.PathFinder.find_spec(top, [os.getcwd()])
        if error.name != top or spec is None or spec.loader is None:
            raise
        sys.modules[top] = module = importlib.util.module_from_spec(spec)
        try:
            spec.loader.exec_module(module)
        except BaseException:
            del sys.modules[top]
            raise
        return importlib.import_module(name)


def _build_from_import_path(
    arch: str,
    *,
    num_classes: int,
    input_shape: tuple[int, int, int],
    arch_kwargs: dict[str, Any],
) -> nn.Module:
    module_name, _, attribute_path = arch.partition(":")
    if not module_name or not attribute_path:
        raise FreekdError(f"cannot import {arch}: expected package.module:Class; check --arch")
    try:
        target: Any = _import_user_module(module_name)
        for attribute in attribute_path.split("."):
            target = getattr(target, attribute)
    except (ImportError, AttributeError) as error:
        raise FreekdError(f"cannot import {arch}: {_first_line(error)}; check --arch") from error
    if not callable(target):
        raise FreekdError(f"cannot build {arch}: it is not a class or function; check --arch")
    fixed: dict[str, Any] = {}
    # A user class is called with the data's class count and shape when it asks for them by name.
    accepted = _named_parameters(target)
    if "num_classes" in accepted and "num_classes" not in arch_kwargs:
        fixed["num_classes"] = num_classes
    if "input_shape" in accepted and "input_shape" not in arch_kwargs:
        fixed["input_shape"] = input_shape
    return _call_checked(arch, target, fixed, arch_kwargs)


def _call_checked(
    arch: str,
    factory: Callable[..., Any],
    fixed: Mapping[str, Any],
    arch_kwargs: Mapping[str, Any],
) -> nn.Module:
    """``factory(**fixed, **arch_kwargs)``, turning argument errors into a FreekdError."""
    message = f"{arch} does not accept arch kwargs {dict(arch_kwargs)}"
    try:
        signature: inspect.Signature | None = inspect.signature(factory)
    except (TypeError, ValueError):  # builtins and some C extensions have no signature
        signature = None
    forwards_kwargs = signature is None or any(
        parameter.kind is inspect.Parameter.VAR_KEYWORD
        for parameter in signature.parameters.values()
    )
    if signature is not None:
        try:
            signature.bind(**fixed, **arch_kwargs)
        except TypeError as error:
            raise FreekdError(f"{message}: {error}; check --arch-kwargs") from None
    # Arguments passed on (torchvision builders → model classes), or a value of the right name
    # but a wrong kind or range (torchvision groups=2, a ViT's image_size=8, wrn depth="16"),
    # only show up inside the call.
    refused = (TypeError, ValueError, AssertionError) if arch_kwargs else (TypeError,)
    if forwards_kwargs or arch_kwargs:
        try:
            network = factory(**fixed, **arch_kwargs)
        except refused as error:
            raise FreekdError(f"{message}: {_first_line(error)}; check --arch-kwargs") from None
    else:
        network = factory(**fixed, **arch_kwargs)
    if not isinstance(network, nn.Module):
        raise FreekdError(
            f"{arch} returned {type(network).__name__}, expected a torch.nn.Module; check --arch"
        )
    return network


def _named_parameters(target: Callable[..., Any]) -> set[str]:
    try:
        parameters = inspect.signature(target).parameters
    except (TypeError, ValueError):
        return set()
    return {
        name
        for name, parameter in parameters.items()
        if parameter.kind
        in (inspect.Parameter.POSITIONAL_OR_KEYWORD, inspect.Parameter.KEYWORD_ONLY)
    }


def _reject_keys(arch: str, arch_kwargs: Mapping[str, Any], keys: tuple[str, ...]) -> None:
    clashes = sorted(key for key in keys if key in arch_kwargs)
    if clashes:
        raise FreekdError(
            f"{arch} sets {', '.join(clashes)} itself; remove them from --arch-kwargs "
            "(the class count comes from --num-classes, the shape from --input-shape, and "
            "pretrained weights are never downloaded)"
        )


def _check_num_classes(num_classes: int) -> None:
    if isinstance(num_classes, bool) or not isinstance(num_classes, int) or num_classes < 1:
        raise FreekdError(
            f"num_classes must be a positive integer, got {num_classes!r}; check --num-classes"
        )


def validate_input_shape(input_shape: Sequence[int]) -> tuple[int, int, int]:
    """``input_shape`` as a (C, H, W) tuple of positive ints, or a FreekdError."""
    values = tuple(input_shape)
    if len(values) != 3 or not all(
        isinstance(value, int) and not isinstance(value, bool) and value > 0 for value in values
    ):
        raise FreekdError(
            f"input shape must be three positive integers C, H, W, got {input_shape!r}; "
            "check --input-shape"
        )
    if values[0] * values[1] * values[2] > MAX_INPUT_VALUES:
        raise FreekdError(
            f"input shape {'×'.join(map(str, values))} holds more than {MAX_INPUT_VALUES:,} "
            "values per image; check --input-shape"
        )
    return (values[0], values[1], values[2])


def _first_line(error: BaseException) -> str:
    text = str(error).strip()
    return text.splitlines()[0] if text else type(error).__name__


#: How a network's BatchNorm layers were replaced (checkpoints record it to rebuild the network).
BATCHNORM_REPLACEMENTS = ("groupnorm",)


def replace_batchnorm(net: nn.Module, replacement: str = "groupnorm") -> nn.Module:
    """``net`` with every BatchNorm replaced as Opacus requires for DP-SGD.

    BatchNorm mixes the examples of a batch, so per-example gradients (and DP-SGD's per-example
    clipping) are undefined for it. Opacus' ``ModuleValidator.fix`` swaps each
    ``BatchNorm(C)`` for ``GroupNorm(min(32, C), C)``, deterministically, so a checkpoint that
    records the replacement can rebuild the same network. In-place activations are made
    out-of-place (Opacus' gradient hooks forbid in-place writes to their outputs).

    Raises:
        FreekdError: an unknown replacement, or a network Opacus still cannot train privately.
    """
    if replacement not in BATCHNORM_REPLACEMENTS:
        raise FreekdError(
            f"unknown BatchNorm replacement {replacement!r}; "
            f"known: {', '.join(BATCHNORM_REPLACEMENTS)}"
        )
    from opacus.validators import ModuleValidator

    drop_opacus_root_handler()  # importing opacus configured the root logger
    fixed = ModuleValidator.fix(net)
    # Opacus' backward hooks return views that an in-place activation would overwrite; the
    # out-of-place activation computes the same values (and changes no weight).
    for module in fixed.modules():
        if getattr(module, "inplace", False) is True:
            module.inplace = False
    problems = ModuleValidator.validate(fixed, strict=False)
    if problems:
        raise FreekdError(
            f"this architecture cannot be trained with DP-SGD: {problems[0]}; pick another --arch"
        )
    return fixed  # type: ignore[no-any-return]
