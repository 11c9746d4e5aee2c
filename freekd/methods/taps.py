"""Which features of an unmodified network a method reads, and reading them in one forward pass.

A *tap* names one feature of a network:

- a module path inside the user's own network (``"layer2"``, ``"features.6"``, ``"stages.1"``),
  the way torchdistill's forward-hook configs name them; freekd's wrappers (``Teacher``,
  ``ImageClassifier``) are looked through, so the same path works on a freekd checkpoint, a
  ``torchvision:`` model and a user class;
- ``"@stage:HxW"``, the end of the resolution stage with H×W maps (``hooks.spatial_blocks``),
  which is how layers are paired automatically when none are named;
- ``"@embedding"``, the flattened input of the last ``nn.Linear`` (the penultimate features).

The ``@`` keeps the two special taps apart from module paths (a module may be called
``embedding``). A layer must run once per forward pass: a module the network reuses (one
``nn.ReLU`` applied after several layers, as torchvision's ResNets do) is refused, since which
of its outputs a hook would keep is not what the user named.

:func:`capture` fills every tap of one network during one forward pass and removes its hooks on
exit. :func:`stage_pairs` pairs two networks' stages automatically.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Sequence
from contextlib import ExitStack, contextmanager
from typing import Any

import torch
from torch import Tensor, nn
from torch.nn.parallel import DistributedDataParallel

from freekd.errors import FreekdError
from freekd.hooks import (
    capture_input,
    eval_mode,
    last_linear,
    refuse_torchscript,
    spatial_blocks,
)
from freekd.models import ImageClassifier
from freekd.teachers import Teacher

EMBEDDING = "@embedding"
STAGE = "@stage:"


def stage_tap(size: tuple[int, int]) -> str:
    """The tap of the stage that ends with (H, W) maps."""
    return f"{STAGE}{size[0]}x{size[1]}"


def network_of(model: nn.Module) -> nn.Module:
    """The user's own network inside freekd's wrappers (what layer paths are relative to)."""
    while True:
        if isinstance(model, Teacher):
            model = model.model
        elif isinstance(model, ImageClassifier):
            model = model.net
        elif isinstance(model, (DistributedDataParallel, nn.DataParallel)):
            model = model.module
        else:
            return model


def layer_paths(model: nn.Module) -> list[str]:
    """Every named submodule of the network, in registration order."""
    return [name for name, _ in network_of(model).named_modules() if name]


def _shown(paths: list[str], limit: int = 12) -> str:
    shown = ", ".join(paths[:limit]) or "none"
    return shown + (f" (and {len(paths) - limit} more)" if len(paths) > limit else "")


def find_layer(model: nn.Module, path: str, *, who: str) -> nn.Module:
    """The submodule ``path`` of ``model``'s network.

    Raises:
        FreekdError: there is no such submodule; the message lists the network's top layers.
    """
    network = network_of(model)
    if isinstance(network, torch.jit.ScriptModule):
        refuse_torchscript(network, who=who)
    try:
        layer = network.get_submodule(path)
    except AttributeError:
        tops = [name for name in layer_paths(model) if "." not in name]
        raise FreekdError(
            f"the {who} has no layer {path!r}; its layers: {_shown(tops)} (name deeper ones by "
            f"their module path, e.g. {tops[0] + '.0' if tops else 'features.0'})"
        ) from None
    if isinstance(layer, torch.jit.ScriptModule):  # a scripted block in an eager network
        raise FreekdError(
            f"the {who}'s layer {path!r} is TorchScript and cannot be tapped; name its parent "
            "or another layer that is not TorchScript"
        )
    return layer


def _first_tensor(output: Any) -> Tensor:
    if isinstance(output, Tensor):
        return output
    if isinstance(output, (tuple, list)) and output and isinstance(output[0], Tensor):
        return output[0]
    raise FreekdError(
        f"a tapped layer returned {type(output).__name__}, not a tensor; name a layer that "
        "returns a tensor (its parent or child module)"
    )


@contextmanager
def capture(
    model: nn.Module, taps: Sequence[str], *, who: str
) -> Iterator[Callable[[], dict[str, Tensor]]]:
    """Inside the block, forward passes of ``model`` record ``taps``; the yielded function gives
    {tap: feature} of the latest pass.

    Raises:
        FreekdError: a layer path that does not exist, or a network without the requested
            ``embedding`` (no ``nn.Linear``); checked on entry, before any forward pass.
    """
    found: dict[str, Tensor] = {}
    calls: dict[str, int] = {}
    paths = [tap for tap in taps if tap != EMBEDDING and not tap.startswith(STAGE)]
    modules = {path: find_layer(model, path, who=who) for path in paths}
    with ExitStack() as stack:
        for path, module in modules.items():

            def record(module: nn.Module, inputs: Any, output: Any, path: str = path) -> None:
                # A copy: a later in-place op (ReLU(inplace=True)) would otherwise change it.
                found[path] = _first_tensor(output).clone()
                calls[path] = calls.get(path, 0) + 1

            stack.callback(module.register_forward_hook(record).remove)
        blocks = (
            stack.enter_context(spatial_blocks(model, who=who))
            if any(tap.startswith(STAGE) for tap in taps)
            else {}
        )
        embedding = None
        if EMBEDDING in taps:
            layer = last_linear(network_of(model))
            if layer is None:
                raise FreekdError(
                    f"the {who} has no nn.Linear layer whose input is its embedding; name a "
                    f"layer with method.params.{who}_layers"
                )
            embedding = stack.enter_context(capture_input(layer))

        def read() -> dict[str, Tensor]:
            reused = [path for path, count in calls.items() if count > 1]
            if reused:
                raise FreekdError(
                    f"the {who}'s layer {reused[0]!r} runs {calls[reused[0]]} times in one forward "
                    "pass (a reused module); name a layer that runs once, e.g. its parent block"
                )
            for size, block in blocks.items():
                found[stage_tap(size)] = block
            if embedding is not None and embedding.value is not None:
                found[EMBEDDING] = embedding.value.flatten(1)
            return found

        yield read


def _stage_sizes(
    model: nn.Module, input_shape: Sequence[int], *, who: str
) -> list[tuple[int, int]]:
    probe = torch.zeros((2, *input_shape), device=_device(model))
    with torch.no_grad(), eval_mode(model), spatial_blocks(model, who=who) as blocks:
        model(probe)
    return list(blocks)


def _device(module: nn.Module) -> torch.device:
    parameter = next(module.parameters(), None)
    return parameter.device if parameter is not None else torch.device("cpu")


def stage_pairs(
    student: nn.Module, teacher: nn.Module, input_shape: Sequence[int]
) -> list[tuple[str, str]]:
    """The two networks' resolution stages, paired automatically, in forward order.

    Stages with the same spatial size pair up when there are any (LeNet-5 and LeNet-5-half,
    ResNets of one family); otherwise the last stage of one pairs with the last of the other,
    the one before with the one before, and so on. Empty when either network has no feature maps.
    """
    student_sizes = _stage_sizes(student, input_shape, who="student")
    teacher_sizes = _stage_sizes(teacher, input_shape, who="teacher")
    shared = [size for size in student_sizes if size in teacher_sizes]
    if shared:
        return [(stage_tap(size), stage_tap(size)) for size in shared]
    count = min(len(student_sizes), len(teacher_sizes))
    if not count:
        return []
    ends = zip(student_sizes[-count:], teacher_sizes[-count:], strict=True)
    return [(stage_tap(s), stage_tap(t)) for s, t in ends]


def probe(
    model: nn.Module, taps: Sequence[str], input_shape: Sequence[int], *, who: str
) -> dict[str, tuple[int, ...]]:
    """The shape (batch dimension left out) of each tap, from one pass of two blank images in
    eval mode under no_grad (BatchNorm statistics do not move; modes are restored)."""
    blank = torch.zeros((2, *input_shape), device=_device(model))
    with torch.no_grad(), eval_mode(model), capture(model, taps, who=who) as read:
        model(blank)
        found = read()
    missing = [tap for tap in taps if tap not in found]
    if missing:
        raise FreekdError(
            f"the {who}'s forward pass never ran layer {missing[0]!r}; name a layer it uses"
        )
    return {tap: tuple(int(n) for n in found[tap].shape[1:]) for tap in taps}
