"""The Synthesizer protocol: where a data-free run's batches come from."""

from __future__ import annotations

from typing import Any, Protocol, runtime_checkable

import torch
from torch import Tensor, nn

from freekd.seeding import seeded_scope
from freekd.teachers import Teacher


@runtime_checkable
class Synthesizer(Protocol):
    """Produces inputs from what a teacher holds, for the student's training steps.

    One ``synthesize`` call runs one synthesis round (generator updates, pixel optimization, or
    adversarial steps against the current ``student``); ``sample`` then draws images for the
    student's next steps. ``train.sources.SyntheticSource`` alternates the two inside the one
    Trainer loop; there is no data-free training loop of its own.

    Contract (tested for every registered synthesizer):
    - ``sample(n)`` has shape (n, C, H, W), values in [0, 1], and carries no autograd graph;
    - ``synthesize`` leaves no hooks on the teacher, the student's train/eval mode unchanged, and
      never updates the teacher;
    - ``images_synthesized`` and ``teacher_queries`` count, for the report, the images produced and
      the images the teacher was asked about (forward passes, per image);
    - ``state_dict``/``load_state_dict`` hold everything needed to resume exactly;
    - ``reinitialize`` starts synthesis afresh, reproducibly from the synthesizer's ``rng``.
    """

    images_synthesized: int
    teacher_queries: int

    def synthesize(self, teacher: Teacher, student: nn.Module) -> dict[str, float]:
        """One synthesis round; returns named statistics (loss terms) for the logs."""
        ...

    def sample(self, n: int) -> Tensor:
        """``n`` synthetic images, (n, C, H, W) in [0, 1], detached."""
        ...

    def reinitialize(self, *, lr_scale: float) -> None:
        """Start synthesis afresh after a collapse (``generators.collapse``).

        New generator (or pixel) weights drawn from ``rng``, optimizer state cleared, every
        optimizer learning rate multiplied by ``lr_scale``, memory bank (if any) emptied. The
        counters ``images_synthesized`` and ``teacher_queries`` keep counting.
        """
        ...

    def state_dict(self) -> dict[str, Any]: ...

    def load_state_dict(self, state: dict[str, Any]) -> None: ...


def save_state(owner: object, names: tuple[str, ...]) -> dict[str, Any]:
    """The resumable state of ``owner``'s attributes ``names``.

    Modules, optimizers and memory banks give their ``state_dict()``, a ``torch.Generator`` its
    RNG state, a tensor a detached copy, anything else (counters) itself.
    """
    state: dict[str, Any] = {}
    for name in names:
        value = getattr(owner, name)
        if isinstance(value, torch.Generator):
            state[name] = value.get_state()
        elif isinstance(value, Tensor):
            state[name] = value.detach().clone()
        elif hasattr(value, "state_dict"):
            state[name] = value.state_dict()
        else:
            state[name] = value
    return state


def load_state(owner: object, names: tuple[str, ...], state: dict[str, Any]) -> None:
    """Restore what :func:`save_state` saved, in place."""
    for name in names:
        value = getattr(owner, name)
        if isinstance(value, torch.Generator):
            value.set_state(state[name])
        elif isinstance(value, Tensor):
            with torch.no_grad():
                value.copy_(state[name])
        elif hasattr(value, "load_state_dict"):
            value.load_state_dict(state[name])
        else:
            setattr(owner, name, type(value)(state[name]))


def reset_weights(module: nn.Module, rng: torch.Generator) -> None:
    """Re-draw ``module``'s weights with PyTorch's default initialization, reproducibly.

    The seed comes from ``rng`` and the initializers run under ``torch.random.fork_rng``, so the
    global RNG (dropout, the student's own draws) is left exactly as it was: a resumed run that
    re-initializes at the same step gets the same weights and the same everything else.
    BatchNorm running statistics are reset too.
    """
    seed = int(torch.randint(0, 2**62, (1,), generator=rng))
    cuda = [p.device.index or 0 for p in module.parameters() if p.device.type == "cuda"]
    with seeded_scope(seed, devices=sorted(set(cuda))):
        for child in module.modules():
            reset = getattr(child, "reset_parameters", None)
            if callable(reset):
                reset()


def restart_optimizer(optimizer: torch.optim.Optimizer, *, lr_scale: float) -> None:
    """Clear ``optimizer``'s state (Adam moments, step counts) and scale every group's lr."""
    if lr_scale <= 0:
        raise ValueError(f"lr_scale must be positive, got {lr_scale}")
    optimizer.state.clear()
    for group in optimizer.param_groups:
        group["lr"] = group["lr"] * lr_scale
