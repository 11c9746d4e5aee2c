"""The one place that touches global random state.

Pipelines seed a run here, synthesizers re-draw their networks in a :func:`seeded_scope`, and a
resume checkpoint saves and puts back torch's generators through :func:`global_rng_state` and
:func:`set_global_rng_state`.
"""

from __future__ import annotations

import os
import random
from collections.abc import Iterator, Sequence
from contextlib import contextmanager

import numpy as np
import torch


def seed_everything(seed: int, *, deterministic: bool = False) -> torch.Generator:
    """Seed Python, NumPy and torch, optionally force deterministic kernels.

    Args:
        seed: the run's seed.
        deterministic: call ``torch.use_deterministic_algorithms(True)``; CPU runs are then
            bitwise repeatable. On CUDA this also sets ``CUBLAS_WORKSPACE_CONFIG``.

    Returns:
        A CPU ``torch.Generator`` seeded with ``seed`` for components that take an explicit ``rng``.
    """
    random.seed(seed)
    np.random.seed(seed % 2**32)  # noqa: NPY002 -- seeding the legacy global RNG is the point
    torch.manual_seed(seed)
    if deterministic:
        os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", ":4096:8")
        torch.use_deterministic_algorithms(True)
    rng = torch.Generator()
    rng.manual_seed(seed)
    return rng


def reseed(seed: int) -> None:
    """Reset torch's global generator to ``seed``: a pipeline builds two networks the same way.

    Used before building a model whose initial weights must not depend on what ran before it
    (a baseline next to its distilled twin, shadow models of an audit).
    """
    torch.manual_seed(seed)


@contextmanager
def seeded_scope(seed: int, *, devices: Sequence[int] = ()) -> Iterator[None]:
    """Run a block under ``seed`` and leave the global RNG exactly as it was afterwards.

    Synthesizers re-initialize their networks mid-run with this: the draw is repeatable, and the
    student's own random stream (dropout, shuffling) is not disturbed, so a resumed run matches.
    """
    with torch.random.fork_rng(devices=list(devices)):
        torch.manual_seed(seed)
        yield


def global_rng_state() -> tuple[torch.Tensor, list[torch.Tensor] | None]:
    """torch's global generator states: the CPU one, and every CUDA device's when CUDA is there.

    A resume checkpoint saves them so a resumed run draws what the uninterrupted one would.
    """
    cuda = torch.cuda.get_rng_state_all() if torch.cuda.is_available() else None
    return torch.get_rng_state(), cuda


def set_global_rng_state(cpu: torch.Tensor, cuda: Sequence[torch.Tensor] | None = None) -> None:
    """Put back states from :func:`global_rng_state`; CUDA ones only where CUDA is there.

    Raises:
        RuntimeError: a state of the wrong size (torch's own check).
    """
    torch.set_rng_state(cpu)
    if cuda is not None and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(cuda)
