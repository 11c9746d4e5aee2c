"""The unit of data that flows from a BatchSource into a Method."""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor

UNLABELLED = -1
"""The label of an unlabelled image in a mixed batch (``train.SemiSupervisedSource``)."""


@dataclass
class Batch:
    """A batch of images in [0, 1] and, when known, their labels, paired texts and indices.

    Args:
        images: (B, C, H, W) float tensor with values in [0, 1]; models normalize themselves.
        labels: (B,) int64 class indices, or ``None`` for unlabelled inputs (synthetic queries).
        texts: (B, L) int64 token ids of each image's caption (cross-modal pairs), or ``None``.
        indices: (B,) int64 position of each example in the dataset it was drawn from (what a
            method with a per-example memory, e.g. CRD's, indexes; (K, B) in ``SubsetSource``'s
            batches for K models), filled by the real-data sources of ``train``; ``None`` for
            synthetic batches.
    """

    images: Tensor
    labels: Tensor | None = None
    texts: Tensor | None = None
    indices: Tensor | None = None

    def to(self, device: torch.device | str) -> Batch:
        """The same batch on ``device`` (non-blocking where the source tensor is pinned)."""
        return Batch(
            self.images.to(device, non_blocking=True),
            _to(self.labels, device),
            _to(self.texts, device),
            _to(self.indices, device),
        )

    def __len__(self) -> int:
        return int(self.images.shape[0])


def _to(tensor: Tensor | None, device: torch.device | str) -> Tensor | None:
    return None if tensor is None else tensor.to(device, non_blocking=True)
