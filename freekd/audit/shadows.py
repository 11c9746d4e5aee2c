"""Shadow (reference) models: which audit examples each trains on, and what they output.

LiRA and RMIA estimate, for every audit example, how models trained with and without it behave
(Carlini et al. 2022, §4.1). Shadow models are trained by freekd's own loop and recipe on random
halves of the audit pool (members and non-members together: the attacker does not know which is
which). The halves come in complementary pairs, so every example is in exactly half of the shadow
models and every shadow model trains on the same number of examples, which lets the K models be
trained as one batch (``train.SubsetSource``). Their logits on the pool are kept in
``shadows.npz`` with a fingerprint of the pool, so later audits of other models on the same pool
(a teacher and its students) reuse them.
"""

from __future__ import annotations

import dataclasses
import logging
import zipfile
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import Tensor

from freekd.errors import FreekdError
from freekd.io import atomic_write

logger = logging.getLogger(__name__)

SHADOWS_FILE = "shadows.npz"


def inclusion_design(models: int, examples: int, *, generator: torch.Generator) -> Tensor:
    """(models, examples) bool: shadow model m trains on example n.

    Models 2i and 2i+1 train on a random half and its complement, so with an even count every
    example is in exactly ``models / 2`` models (an odd last model takes a fresh random half).

    Raises:
        FreekdError: fewer than 2 models or 2 examples.
    """
    if models < 2:
        raise FreekdError(f"shadow models come in IN/OUT pairs; use at least 2, got {models}")
    if examples < 2:
        raise FreekdError(f"the audit pool has {examples} example(s); it needs at least 2")
    half = examples // 2
    rows = []
    for _ in range((models + 1) // 2):
        chosen = torch.zeros(examples, dtype=torch.bool)
        chosen[torch.randperm(examples, generator=generator)[:half]] = True
        rows += [chosen, ~chosen]
    design = torch.stack(rows[:models])
    if examples % 2:
        # Each complement has one example too many. Drop, from each, one of its examples that
        # is IN the most models so far, so that IN counts stay as even as possible (an example
        # IN too few models would leave LiRA without an IN distribution for it).
        for row in range(1, models, 2):
            counts = design.sum(dim=0).float()
            candidates = design[row]
            busiest = torch.where(candidates, counts, torch.full_like(counts, -1.0))
            tied = torch.nonzero(busiest == busiest.max()).flatten()
            drop = tied[torch.randint(len(tied), (1,), generator=generator)]
            design[row, drop] = False
    return design


def subsets_of(design: Tensor) -> Tensor:
    """(models, n) example indices of each model's training half, from the design."""
    sizes = design.sum(dim=1)
    if not bool((sizes == sizes[0]).all()):
        raise FreekdError("internal: shadow models must train on equally many examples")
    return torch.stack([torch.nonzero(row).flatten() for row in design])


def save_shadow_outputs(
    path: Path, *, logits: Tensor, included: Tensor, fingerprint: str, arch: str
) -> None:
    """Atomically write the shadow models' (M, N, K) logits and (M, N) design."""

    def write(stream: object) -> None:
        np.savez(
            stream,  # type: ignore[arg-type]
            logits=logits.detach().cpu().numpy().astype(np.float32),
            included=included.cpu().numpy().astype(bool),
            fingerprint=np.array(fingerprint),
            arch=np.array(arch),
        )

    atomic_write(Path(path), write)


def load_shadow_outputs(path: Path, *, fingerprint: str) -> tuple[Tensor, Tensor, str]:
    """(logits, included, arch) from ``shadows.npz``, checked against the pool's fingerprint.

    Raises:
        FreekdError: missing, unreadable, or made for another pool.
    """
    if not path.is_file():
        raise FreekdError(
            f"no {SHADOWS_FILE} in {path.parent}; point at the folder of an earlier audit"
        )
    try:
        with np.load(path, allow_pickle=False) as data:
            logits = torch.from_numpy(np.array(data["logits"]))
            included = torch.from_numpy(np.array(data["included"]))
            saved = str(data["fingerprint"])
            arch = str(data["arch"])
    except (OSError, ValueError, KeyError, EOFError, zipfile.BadZipFile) as error:
        raise FreekdError(
            f"{path} is not a freekd shadow file ({type(error).__name__}); re-run the audit "
            "without reusing shadow models"
        ) from None
    if saved != fingerprint:
        raise FreekdError(
            f"the shadow models in {path} were trained on another audit pool; audit the same "
            "--members and --non-members, or train new shadow models"
        )
    if (
        logits.dim() != 3
        or tuple(included.shape) != tuple(logits.shape[:2])
        or included.dtype != torch.bool
        or not bool(torch.isfinite(logits).all())
    ):
        raise FreekdError(f"{path} holds inconsistent shadow outputs; train new shadow models")
    return logits, included.bool(), arch


def warn_unused_trainer(shadow: Any) -> None:
    """Warn that ``shadow.trainer`` settings a user changed go unused: the shadow models train
    with the audited model's own recipe (``shadow.recipe: target``), read from its run. They used
    to be dropped without a word while ``config.yaml`` recorded them."""
    default = type(shadow)().trainer
    changed = sorted(
        spec.name
        for spec in dataclasses.fields(default)
        if spec.name != "device"
        and getattr(shadow.trainer, spec.name) != getattr(default, spec.name)
    )
    if changed:
        logger.warning(
            "shadow.trainer.%s not used: the shadow models follow the audited model's own "
            "training run; add --set shadow.recipe=config to train them with shadow.*",
            ", shadow.trainer.".join(changed),
        )
