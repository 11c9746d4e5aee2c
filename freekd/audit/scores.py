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
    like), a confident right one low. 1 − p is computed from the other classes' probabilities,
    so the statistic keeps its resolution where p_y rounds to 1.
    """
    log_p = _log_softmax(logits)
    p = log_p.exp()
    # log(1 − p_i): log1p(−p_i) is exact for p_i ≤ ½; only the top class can exceed ½, and its
    # log(1 − p) is the logsumexp of the others.
    top = log_p.argmax(dim=-1, keepdim=True)
    log_rest_top = torch.logsumexp(log_p.scatter(-1, top, float("-inf")), dim=-1, keepdim=True)
    log_rest = torch.log1p(-p.clamp(max=0.5)).scatter(-1, top, log_rest_top)
    true_mask = torch.nn.functional.one_hot(labels.long(), num_classes=logits.shape[-1]).bool()
    true_mask = true_mask.expand_as(p)
    true_term = -log_rest.exp() * log_p  # −(1 − p_y) log p_y
    other_term = -p * log_rest
    values = torch.where(true_mask, true_term, other_term).sum(dim=-1)
    return values.cpu().numpy()  # type: ignore[no-any-return]


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
