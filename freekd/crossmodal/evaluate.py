"""Retrieval recall and zero-shot accuracy of image–text models.

Recall@k (image → text and text → image) counts a query as found when its own pair is among the
k most similar items of the other modality (cosine similarity), as CLIP's retrieval evaluation
does (Radford et al. 2021, §3.1.4 and App. E); with templated captions several texts are
identical, so ``class_recall_at_k`` (the k-th neighbour's class is the query's) is reported as
well. Zero-shot accuracy classifies an image by the class whose prompts' mean embedding is most
similar (§3.1.4, prompt ensembling).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import torch
import torch.nn.functional as F
from torch import Tensor

KS = (1, 5, 10)


def embed(encode: Callable[[Tensor], Tensor], inputs: Tensor, *, batch_size: int = 256) -> Tensor:
    """(N, D) L2-normalized embeddings of ``inputs`` (no gradients), in chunks."""
    chunks = []
    with torch.no_grad():
        for start in range(0, len(inputs), batch_size):
            chunks.append(F.normalize(encode(inputs[start : start + batch_size]).float(), dim=-1))
    return torch.cat(chunks)


def _recall(similarity: Tensor, ks: Sequence[int]) -> dict[str, float]:
    """Rows are queries, column i is query i's pair; ties count against the query."""
    own = similarity.diagonal().unsqueeze(1)
    rank = (similarity > own).sum(dim=1) + (similarity == own).sum(dim=1) - 1
    return {str(k): float((rank < k).float().mean()) for k in ks}


def _class_recall(similarity: Tensor, labels: Tensor, ks: Sequence[int]) -> dict[str, float]:
    top = similarity.topk(min(max(ks), similarity.shape[1]), dim=1).indices
    hit = labels[top] == labels.unsqueeze(1)
    return {str(k): float(hit[:, :k].any(dim=1).float().mean()) for k in ks}


def retrieval(
    image_features: Tensor, text_features: Tensor, labels: Tensor, *, ks: Sequence[int] = KS
) -> dict[str, dict[str, float]]:
    """Recall@k both ways for N pairs (row i of each is pair i), exact and by class."""
    similarity = image_features @ text_features.T
    return {
        "image_to_text": _recall(similarity, ks),
        "text_to_image": _recall(similarity.T, ks),
        "image_to_text_class": _class_recall(similarity, labels, ks),
        "text_to_image_class": _class_recall(similarity.T, labels, ks),
    }


def zero_shot_accuracy(image_features: Tensor, prompt_features: Tensor, labels: Tensor) -> float:
    """Top-1 accuracy of the nearest class; ``prompt_features``: (K, T, D), T prompts per class."""
    classes = F.normalize(prompt_features.mean(dim=1), dim=-1)
    predictions = (image_features @ classes.T).argmax(dim=1)
    return float((predictions == labels).float().mean())
