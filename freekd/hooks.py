"""Forward hooks and module-mode helpers shared by methods, synthesizers and cross-modal towers.

Every hook lives only inside a ``with`` block and is removed on exit, even when the block
raises, so no caller can leave one behind on a teacher or a student. Hooks specific to one
plug-in family stay with it (the BatchNorm statistics of the synthesizers in
``generators.hooks``).
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

import torch
from torch import Tensor, nn

from freekd.errors import FreekdError


def refuse_torchscript(model: nn.Module, *, who: str) -> None:
    """Refuse to tap a network that is (or holds) TorchScript: hooks cannot be put on it.

    Raises:
        FreekdError: ``model`` holds a ``torch.jit.ScriptModule``; the message names ``who``.
    """
    scripted = next((m for m in model.modules() if isinstance(m, torch.jit.ScriptModule)), None)
    if scripted is not None:
        # A wrapper (Teacher, ImageClassifier) around a TorchScript file is that file.
        whole = sum(p.numel() for p in scripted.parameters()) == sum(
            p.numel() for p in model.parameters()
        )
        raise FreekdError(
            f"the {who} {'is a TorchScript model' if whole else 'holds a TorchScript block'}, "
            "whose layers cannot be tapped: use a method on its outputs alone (kd, dkd) or give "
            f"the {who} as a state_dict with --arch"
        )


@contextmanager
def spatial_blocks(
    model: nn.Module, *, who: str = "model"
) -> Iterator[dict[tuple[int, int], Tensor]]:
    """Record, per spatial size, the output of the last module that produced that size.

    Inside the block every forward pass of ``model`` fills the dict {(H, W): (B, C, H, W)
    activations}, in the order the modules finish, so each entry is the end of one resolution
    stage: the output of a ResNet stage or WRN group (the container, so the residual sum and a
    functional ReLU after it are included), or of a LeNet's ReLU/pool at 28×28, 14×14, 10×10
    and 5×5. Containers finish after their children, so the outermost module that ends at a
    resolution is the one kept. 1×1 maps (after global pooling) carry no spatial attention and
    are left out.

    Raises:
        FreekdError: ``model`` is TorchScript (:func:`refuse_torchscript`), before any hook.
    """
    refuse_torchscript(model, who=who)
    blocks: dict[tuple[int, int], Tensor] = {}

    def record(module: nn.Module, inputs: tuple[Any, ...], output: Any) -> None:
        if isinstance(output, Tensor) and output.dim() == 4 and output.shape[-2:] != (1, 1):
            size = (int(output.shape[-2]), int(output.shape[-1]))
            blocks.pop(size, None)  # re-insert: dict order stays forward order of stage ends
            blocks[size] = output

    handles = [module.register_forward_hook(record) for module in model.modules()]
    try:
        yield blocks
    finally:
        for handle in handles:
            handle.remove()


def last_linear(model: nn.Module) -> nn.Linear | None:
    """The last ``nn.Linear`` registered in ``model`` (the classifier layer of most networks)."""
    found = None
    for module in model.modules():
        if isinstance(module, nn.Linear):
            found = module
    return found


@dataclass
class CapturedInputs:
    """The input of a hooked layer during the last forward pass."""

    value: Tensor | None = None


@contextmanager
def capture_input(layer: nn.Module) -> Iterator[CapturedInputs]:
    """Keep the input of ``layer`` (e.g. the teacher's penultimate features) during forwards."""
    captured = CapturedInputs()

    def record(module: nn.Module, inputs: tuple[Any, ...]) -> None:
        captured.value = inputs[0]

    handle = layer.register_forward_pre_hook(record)
    try:
        yield captured
    finally:
        handle.remove()


@contextmanager
def eval_mode(module: nn.Module) -> Iterator[nn.Module]:
    """Put ``module`` in eval mode for the block and restore every submodule's own mode after."""
    modes = [(m, m.training) for m in module.modules()]
    module.eval()
    try:
        yield module
    finally:
        for submodule, training in modes:
            submodule.training = training
