"""The unit of data that flows from a BatchSource into a Method."""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor

UNLABELLED = -1
"""The label of an unlabelled image in a mixed batch (``train.SemiSupervisedSource``)."""


@dataclass
class Batch:
    """A batch of images in [0, 1] and, when known, their labels and paired texts.

    Args:
        images: (B, C, H, W) float tensor with values in [0, 1]; models normalize themselves.
        labels: (B,) int64 class indices, or ``None`` for unlabelled inputs (synthetic queries).
        texts: (B, L) int64 token ids of each image's caption (cross-modal pairs), or ``None``.
    """

    images: Tensor
    labels: Tensor | None = None
    texts: Tensor | None = None

    def to(self, device: torch.device | str) -> Batch:
        """The same batch on ``device`` (non-blocking where the source tensor is pinned)."""
        labels = None if self.labels is None else self.labels.to(device, non_blocking=True)
        texts = None if self.texts is None else self.texts.to(device, non_blocking=True)
        return Batch(self.images.to(device, non_blocking=True), labels, texts)

    def __len__(self) -> int:
        return int(self.images.shape[0])
