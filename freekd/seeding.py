"""The one place that touches global random state (called from pipelines only)."""

from __future__ import annotations

import os
import random

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
