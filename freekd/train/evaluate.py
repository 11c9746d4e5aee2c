"""Accuracy of any classifier over a labelled dataset."""

from __future__ import annotations

import torch
from torch import nn

from freekd.data.datasets import ImageDataset
from freekd.errors import FreekdError


def check_input_shape(dataset: ImageDataset, shape: tuple[int, int, int], *, who: str) -> None:
    """Raise a one-line error when ``dataset`` images do not have the (C, H, W) ``who`` expects."""
    if tuple(dataset.input_shape) != tuple(shape):
        have = "x".join(map(str, dataset.input_shape))
        want = "x".join(map(str, shape))
        raise FreekdError(
            f"{dataset.name} has {have} images but {who} expects {want}; "
            "use data of that shape (or a model built for it)"
        )


def check_labels_fit(dataset: ImageDataset, num_classes: int, *, who: str) -> None:
    """Raise a one-line error when ``dataset`` has labels beyond the ``num_classes`` of ``who``."""
    highest = int(dataset.labels.max())
    if highest >= num_classes:
        raise FreekdError(
            f"{dataset.name} has label {highest} but {who} know(s) {num_classes} classes "
            f"(0..{num_classes - 1}); use data of those classes"
        )


@torch.no_grad()
def evaluate(
    model: nn.Module,
    dataset: ImageDataset,
    *,
    device: torch.device,
    batch_size: int = 512,
) -> dict[str, float]:
    """Top-1 accuracy and mean cross-entropy of ``model`` on ``dataset``.

    The model is put in eval mode for the pass and restored to its previous mode afterwards.

    Returns:
        ``{"accuracy": a, "loss": l, "n": N}``.
    """
    was_training = model.training
    model.eval()
    correct = 0
    total_loss = 0.0
    try:
        for start in range(0, len(dataset), batch_size):
            indices = torch.arange(start, min(start + batch_size, len(dataset)))
            batch = dataset.batch(indices).to(device)
            logits = model(batch.images).float()
            assert batch.labels is not None
            correct += int((logits.argmax(dim=1) == batch.labels).sum())
            total_loss += float(nn.functional.cross_entropy(logits, batch.labels, reduction="sum"))
    finally:
        model.train(was_training)
    n = len(dataset)
    return {"accuracy": correct / n, "loss": total_loss / n, "n": float(n)}
