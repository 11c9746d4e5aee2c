"""Method: a student (+ extra heads) and a frozen teacher → named, weighted loss terms."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass

import torch
from torch import Tensor, nn

from freekd.data.batch import Batch


@dataclass
class StepOutput:
    """What one training step produced.

    Attributes:
        losses: weighted loss terms by name (the loss function names, e.g. ``"kd"``, ``"ce"``);
            the Trainer back-propagates their sum and logs each one.
        logits: (B, K) student logits, for metrics.
    """

    losses: dict[str, Tensor]
    logits: Tensor | None = None

    @property
    def loss(self) -> Tensor:
        """The sum of the weighted terms."""
        return torch.stack(list(self.losses.values())).sum()


class Method(nn.Module):
    """Base class of every training rule run by the Trainer.

    A method holds the ``student`` (the module the run produces) and any extra trainable heads.
    A teacher, when there is one, is a frozen ``Teacher`` attribute; its parameters never require
    gradients, so ``trainable_parameters`` never yields them.
    """

    student: nn.Module

    def training_step(self, batch: Batch) -> StepOutput:
        """Loss terms for one batch."""
        raise NotImplementedError

    def trainable_parameters(self) -> Iterator[nn.Parameter]:
        """The parameters the optimizer updates."""
        return (p for p in self.parameters() if p.requires_grad)

    def distributed_modules(self) -> list[str]:
        """Names of the attributes the Trainer wraps in DistributedDataParallel."""
        return ["student"]
