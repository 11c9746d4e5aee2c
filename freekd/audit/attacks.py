"""Membership-inference attacks: one score per audit example, higher meaning "member".

Every attack sees the same :class:`AuditData` — the target model's logits on the audit examples
(members and non-members, shuffled together; the attack is never told which is which), their
labels and, for the attacks that need them, the logits of shadow (reference) models with the
record of which examples each shadow model trained on. Attacks are picked by name from
:data:`ATTACKS`; all honour the :class:`Attack` protocol.

Threshold attacks need no shadow models: the loss (Yeom et al. 2018), the confidence, the
prediction entropy and the modified entropy (Song & Mittal 2021). LiRA (Carlini et al. 2022)
fits Gaussians to the shadow models' logit-scaled confidences per example; RMIA (Zarifzadeh et al.
2024) compares the target's likelihood of an example with the reference models' and with a
population of other examples. Scores are only ever compared with each other (ROC curves), so any
strictly increasing transform of a paper's statistic is the same attack.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import ClassVar, Protocol

import numpy as np
from torch import Tensor

from freekd.audit import scores as statistics
from freekd.errors import FreekdError
from freekd.registry import Registry


@dataclass(frozen=True)
class AuditData:
    """What an attacker observes.

    Attributes:
        target_logits: (N, K) logits of the audited model on the N audit examples.
        labels: (N,) their labels.
        shadow_logits: (M, N, K) logits of M shadow models on the same examples, or ``None``.
        shadow_in: (M, N) bool, True where shadow model m trained on example n.
    """

    target_logits: Tensor
    labels: Tensor
    shadow_logits: Tensor | None = None
    shadow_in: Tensor | None = None

    @property
    def shadow_models(self) -> int:
        return 0 if self.shadow_logits is None else int(self.shadow_logits.shape[0])


class Attack(Protocol):
    """A membership-inference attack: ``scores(data)`` → (N,) float64, higher = member."""

    needs_shadows: ClassVar[bool]
    paper: ClassVar[str]

    def scores(self, data: AuditData) -> np.ndarray: ...


ATTACKS: Registry[type[Attack]] = Registry("attack")


@ATTACKS.register("loss")
class LossThreshold:
    """Yeom et al. 2018, "Privacy Risk in Machine Learning", §3.2: members have lower loss.

    Score: −cross-entropy of the true label.
    """

    needs_shadows: ClassVar[bool] = False
    paper: ClassVar[str] = "Yeom et al. 2018 (arXiv:1709.01604) §3.2"

    def scores(self, data: AuditData) -> np.ndarray:
        return -statistics.cross_entropy_loss(data.target_logits, data.labels)


@ATTACKS.register("confidence")
class ConfidenceThreshold:
    """Song & Mittal 2021, "Systematic Evaluation of Privacy Risks of Machine Learning Models",
    §3.1: the probability of the true class, higher for members.

    The paper also sets per-class thresholds from shadow training; the ROC here sweeps one global
    threshold, the attack's threshold-free form. The score is log p_y (the same ranking as p_y,
    which rounds to 1.0 for every well-fitted member); on its own it ranks like the loss.
    """

    needs_shadows: ClassVar[bool] = False
    paper: ClassVar[str] = "Song & Mittal 2021 (arXiv:2003.10595) §3.1"

    def scores(self, data: AuditData) -> np.ndarray:
        return statistics.true_class_log_probability(data.target_logits, data.labels)


@ATTACKS.register("entropy")
class EntropyThreshold:
    """Song & Mittal 2021, §3.1: members get more certain (lower-entropy) predictions.

    Score: −H(p).
    """

    needs_shadows: ClassVar[bool] = False
    paper: ClassVar[str] = "Song & Mittal 2021 (arXiv:2003.10595) §3.1"

    def scores(self, data: AuditData) -> np.ndarray:
        return -statistics.prediction_entropy(data.target_logits)


@ATTACKS.register("modified-entropy")
class ModifiedEntropyThreshold:
    """Song & Mittal 2021, §3.2, Eq. 6: the label-aware modified entropy, lower for members.

    Score: −Mentr(p, y).
    """

    needs_shadows: ClassVar[bool] = False
    paper: ClassVar[str] = "Song & Mittal 2021 (arXiv:2003.10595) §3.2, Eq. 6"

    def scores(self, data: AuditData) -> np.ndarray:
        return -statistics.modified_entropy(data.target_logits, data.labels)


def _shadow_statistic(data: AuditData, attack: str) -> tuple[np.ndarray, np.ndarray]:
    """(M, N) shadow log-odds and the (M, N) inclusion mask, validated."""
    if data.shadow_logits is None or data.shadow_in is None:
        raise FreekdError(
            f"the {attack} attack needs shadow models; pass --shadow-models N (N ≥ 4)"
        )
    return (
        statistics.true_class_log_odds(data.shadow_logits, data.labels),
        data.shadow_in.cpu().numpy().astype(bool),
    )


def _require(counts: np.ndarray, minimum: int, attack: str, which: str) -> None:
    fewest = int(counts.min())
    if fewest < minimum:
        raise FreekdError(
            f"the {attack} attack needs at least {minimum} {which} shadow model(s) per example, "
            f"some example has {fewest}; train more shadow models (--shadow-models)"
        )


def _masked_mean_std(values: np.ndarray, mask: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Per-example mean and (ddof 1) std of ``values`` over the models where ``mask`` is set."""
    counts = mask.sum(axis=0)
    mean = np.where(mask, values, 0.0).sum(axis=0) / np.maximum(counts, 1)
    squared = np.where(mask, (values - mean) ** 2, 0.0).sum(axis=0)
    std = np.sqrt(squared / np.maximum(counts - 1, 1))
    return mean, std


def _pooled_std(values: np.ndarray, mask: np.ndarray, mean: np.ndarray) -> float:
    """One standard deviation for all examples: the spread of every residual around its example's
    mean (Carlini et al. 2022, §4.2 "fixed variance"), stabler with few shadow models."""
    residuals = (values - mean)[mask]
    degrees = int(mask.sum()) - int((mask.sum(axis=0) > 0).sum())
    if degrees < 1:
        raise FreekdError(
            "a fixed variance needs at least 2 shadow models on each side of some example; "
            "train at least 4 shadow models (--shadow-models)"
        )
    return float(math.sqrt(float((residuals**2).sum()) / degrees))


#: Floor on a fitted standard deviation: examples every shadow model fits identically would
#: otherwise give a zero variance and an infinite likelihood ratio.
MIN_STD = 1e-3


def _gaussian_log_density(x: np.ndarray, mean: np.ndarray, std: np.ndarray) -> np.ndarray:
    return -0.5 * ((x - mean) / std) ** 2 - np.log(std)  # type: ignore[no-any-return]


class _LiRA:
    """Carlini et al. 2022, "Membership Inference Attacks From First Principles", §4 (Alg. 1).

    For every example the shadow models' logit-scaled confidences φ = log(p_y / (1 − p_y)) are
    split by whether the shadow model trained on it. Online: Gaussians are fitted to the IN and
    the OUT values and the score is the log-likelihood ratio of the target's φ. Offline (§4.3):
    only the OUT Gaussian is used, scored by its one-sided test Φ((φ − μ_out)/σ_out), for which the
    standardized φ is an equivalent score. ``fixed_variance`` (§4.2) shares one variance across
    examples, the paper's choice below about 64 shadow models.
    """

    needs_shadows: ClassVar[bool] = True
    paper: ClassVar[str] = "Carlini et al. 2022 (arXiv:2112.03570) §4, Alg. 1"
    online: ClassVar[bool]
    fixed_variance: ClassVar[bool]

    def scores(self, data: AuditData) -> np.ndarray:
        name = type(self).__name__
        values, included = _shadow_statistic(data, name)
        target = statistics.true_class_log_odds(data.target_logits, data.labels)
        out_mean, out_std = self._fit(values, ~included, name, "OUT")
        if not self.online:
            return (target - out_mean) / out_std  # type: ignore[no-any-return]
        in_mean, in_std = self._fit(values, included, name, "IN")
        return _gaussian_log_density(target, in_mean, in_std) - _gaussian_log_density(  # type: ignore[no-any-return]
            target, out_mean, out_std
        )

    def _fit(
        self, values: np.ndarray, mask: np.ndarray, name: str, which: str
    ) -> tuple[np.ndarray, np.ndarray]:
        """Per-example mean and std of one side. An example with a single model on that side
        (an odd pool leaves a few) gets the pooled std instead of a per-example one."""
        counts = mask.sum(axis=0)
        _require(counts, 1, name, which)
        mean, std = _masked_mean_std(values, mask)
        pooled = _pooled_std(values, mask, mean)
        std = (
            np.full_like(mean, pooled)
            if self.fixed_variance
            else np.where(counts >= 2, std, pooled)
        )
        return mean, np.maximum(std, MIN_STD)


@ATTACKS.register("lira-online")
class LiRAOnline(_LiRA):
    __doc__ = _LiRA.__doc__
    online = True
    fixed_variance = False


@ATTACKS.register("lira-online-fixed-variance")
class LiRAOnlineFixedVariance(_LiRA):
    __doc__ = _LiRA.__doc__
    online = True
    fixed_variance = True


@ATTACKS.register("lira-offline")
class LiRAOffline(_LiRA):
    __doc__ = _LiRA.__doc__
    online = False
    fixed_variance = False


@ATTACKS.register("lira-offline-fixed-variance")
class LiRAOfflineFixedVariance(_LiRA):
    __doc__ = _LiRA.__doc__
    online = False
    fixed_variance = True


class _RMIA:
    """Zarifzadeh, Liu, Shokri & Low 2024, "Low-Cost High-Power Membership Inference Attacks",
    §3 (Eq. 3–5).

    The likelihood ratio of x against a population example z is
    LR(x, z) = [Pr(x | θ) / Pr(x)] / [Pr(z | θ) / Pr(z)], with Pr(x | θ) the target's probability
    of x's label and Pr(x) its average over reference models. The score is the fraction of the
    population z with LR(x, z) ≥ γ. Online, the reference models are all shadow models (half of
    them trained on x); offline (App. B) only those that did not train on x, and
    Pr(x) = ½ ((1 + a) Pr_OUT(x) + (1 − a)) corrects for the missing IN models. The population
    is the audit examples themselves (the attacker does not know which are members). The count
    is monotone in Pr(x | θ) / Pr(x), so the ranking (every ROC figure) depends on that ratio
    alone: γ and the population only move the score's scale, i.e. the threshold. Ties of the
    count are broken by the ratio's rank (below the count's resolution of 1/N).

    Args:
        gamma: the likelihood-ratio threshold γ (the paper's default 1).
        offline_a: the offline correction a (the paper tunes it on one reference model; 0.3).
    """

    needs_shadows: ClassVar[bool] = True
    paper: ClassVar[str] = "Zarifzadeh et al. 2024 (arXiv:2312.03262) §3"
    online: ClassVar[bool]

    def __init__(self, *, gamma: float = 1.0, offline_a: float = 0.3) -> None:
        if gamma <= 0:
            raise FreekdError(f"RMIA's gamma must be positive, got {gamma}")
        if not 0.0 <= offline_a <= 1.0:
            raise FreekdError(f"RMIA's offline_a must lie in [0, 1], got {offline_a}")
        self.gamma = gamma
        self.offline_a = offline_a

    def scores(self, data: AuditData) -> np.ndarray:
        name = type(self).__name__
        if data.shadow_logits is None or data.shadow_in is None:
            raise FreekdError(f"the {name} attack needs shadow models; pass --shadow-models N")
        log_reference = statistics.true_class_log_probability(data.shadow_logits, data.labels)
        included = data.shadow_in.cpu().numpy().astype(bool)
        if self.online:
            log_marginal = _log_mean(log_reference, np.ones_like(included))
        else:
            _require((~included).sum(axis=0), 1, name, "OUT")
            log_out = _log_mean(log_reference, ~included)
            # ½((1 + a) Pr_OUT + (1 − a)) in log space
            log_marginal = np.logaddexp(
                math.log(0.5 * (1 + self.offline_a)) + log_out,
                math.log(max(0.5 * (1 - self.offline_a), 1e-300)),
            )
        target = statistics.true_class_log_probability(data.target_logits, data.labels)
        log_ratio = target - log_marginal
        # LR(x, z) ≥ γ  ⇔  log_ratio[z] ≤ log_ratio[x] − log γ: count with one sort.
        count = len(log_ratio)
        population = np.sort(log_ratio)
        below = np.searchsorted(population, log_ratio - math.log(self.gamma), side="right")
        rank = np.argsort(np.argsort(log_ratio, kind="stable"), kind="stable")
        return below / count + rank / (2.0 * count * count)  # type: ignore[no-any-return]


def _log_mean(log_values: np.ndarray, mask: np.ndarray) -> np.ndarray:
    """log of the per-example mean of exp(log_values) over the models where ``mask`` is set."""
    masked = np.where(mask, log_values, -np.inf)
    peak = masked.max(axis=0)
    total = np.where(mask, np.exp(masked - peak), 0.0).sum(axis=0)
    return peak + np.log(total) - np.log(mask.sum(axis=0))  # type: ignore[no-any-return]


@ATTACKS.register("rmia")
class RMIAOnline(_RMIA):
    __doc__ = _RMIA.__doc__
    online = True


@ATTACKS.register("rmia-offline")
class RMIAOffline(_RMIA):
    __doc__ = _RMIA.__doc__
    online = False


#: What ``freekd audit`` runs without ``--attack``: every attack, the shadow-model ones when
#: shadow models are trained.
DEFAULT_ATTACKS = (
    "loss",
    "confidence",
    "entropy",
    "modified-entropy",
    "lira-online",
    "lira-online-fixed-variance",
    "lira-offline",
    "lira-offline-fixed-variance",
    "rmia",
    "rmia-offline",
)
