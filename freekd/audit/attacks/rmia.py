"""RMIA, the relative membership-inference attack of Zarifzadeh et al. 2024, online and offline."""

from __future__ import annotations

import math
from typing import ClassVar

import numpy as np

from freekd.audit import scores as statistics
from freekd.audit.attacks.base import ATTACKS, AuditData, require_models
from freekd.errors import FreekdError


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
            require_models((~included).sum(axis=0), 1, name, "OUT")
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
