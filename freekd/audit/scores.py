"""Per-example statistics of a classifier's outputs that membership-inference attacks threshold.

Every function takes logits (..., N, K) and integer labels (N,) and returns one value per example
(..., N) in float64 NumPy, computed in log space so that a model that is 100 % sure of a training
image (softmax probability 1.0 in float32) still gives a finite, ordered statistic.
"""

from __future__ import annotations

import numpy as np
import torch
from torch import Tensor


def _log_softmax(logits: Tensor) -> Tensor:
    return torch.log_softmax(logits.double(), dim=-1)


def _true_class(values: Tensor, labels: Tensor) -> Tensor:
    index = labels.long().expand(*values.shape[:-1]).unsqueeze(-1)
    return values.gather(-1, index).squeeze(-1)


def cross_entropy_loss(logits: Tensor, labels: Tensor) -> np.ndarray:
    """−log p_y, the loss Yeom et al. (2018, §3.2) threshold: members have lower loss."""
    return (-_true_class(_log_softmax(logits), labels)).cpu().numpy()  # type: ignore[no-any-return]


def true_class_probability(logits: Tensor, labels: Tensor) -> np.ndarray:
    """p_y, the confidence in the correct class (Song & Mittal 2021, §3.1, "confidence")."""
    return _true_class(_log_softmax(logits), labels).exp().cpu().numpy()  # type: ignore[no-any-return]


def true_class_log_probability(logits: Tensor, labels: Tensor) -> np.ndarray:
    """log p_y: what RMIA's likelihood ratios are computed from (in log space)."""
    return _true_class(_log_softmax(logits), labels).cpu().numpy()  # type: ignore[no-any-return]


def prediction_entropy(logits: Tensor, labels: Tensor | None = None) -> np.ndarray:
    """H(p) = −Σ_i p_i log p_i (Song & Mittal 2021, §3.1, "entropy"); the label is unused."""
    log_p = _log_softmax(logits)
    return (-(log_p.exp() * log_p).sum(dim=-1)).cpu().numpy()  # type: ignore[no-any-return]


def modified_entropy(logits: Tensor, labels: Tensor) -> np.ndarray:
    """Mentr(p, y) = −(1 − p_y) log p_y − Σ_{i≠y} p_i log(1 − p_i) (Song & Mittal 2021, Eq. 6).

    Unlike the entropy it uses the label: a confident wrong prediction scores high (non-member
    like), a confident right one low.
    """
    log_p = _log_softmax(logits)
    p = log_p.exp()
    # log(1 − p_i) = log(Σ_{j≠i} p_j), stable even where p_i rounds to 1.
    log_rest = torch.log(torch.clamp(-torch.expm1(log_p), min=0.0))
    log_rest = torch.where(p > 0.5, _log_sum_others(log_p), log_rest)
    true_mask = torch.nn.functional.one_hot(labels.long(), num_classes=logits.shape[-1]).bool()
    true_mask = true_mask.expand_as(p)
    true_term = -(1 - p) * log_p
    other_term = -p * log_rest
    values = torch.where(true_mask, true_term, other_term).sum(dim=-1)
    return values.cpu().numpy()  # type: ignore[no-any-return]


def _log_sum_others(log_p: Tensor) -> Tensor:
    """log Σ_{j≠i} p_j for every i, as a logsumexp with entry i masked out."""
    classes = log_p.shape[-1]
    eye = torch.eye(classes, dtype=torch.bool, device=log_p.device)
    expanded = log_p.unsqueeze(-2).expand(*log_p.shape[:-1], classes, classes)
    masked = expanded.masked_fill(eye, float("-inf"))
    return torch.logsumexp(masked, dim=-1)


def true_class_log_odds(logits: Tensor, labels: Tensor) -> np.ndarray:
    """φ = log(p_y / (1 − p_y)) = z_y − logsumexp_{i≠y} z_i, LiRA's statistic.

    Carlini et al. 2022 (§4.2, "logit scaling") show that φ of a model's confidence in an
    example is close to Gaussian across models trained with and without it, which the
    likelihood-ratio test assumes; computing it from the logits keeps it finite where p_y = 1.
    """
    z = logits.double()
    true = _true_class(z, labels)
    mask = torch.nn.functional.one_hot(labels.long(), num_classes=z.shape[-1]).bool()
    others = torch.logsumexp(z.masked_fill(mask.expand_as(z), float("-inf")), dim=-1)
    return (true - others).cpu().numpy()  # type: ignore[no-any-return]
