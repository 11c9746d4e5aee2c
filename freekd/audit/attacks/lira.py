"""LiRA, the likelihood-ratio attack of Carlini et al. 2022, in its four variants.

``lira-online`` and ``lira-offline``, each with a per-example or a fixed (shared) variance.
"""

from __future__ import annotations

import math
from typing import ClassVar

import numpy as np

from freekd.audit import scores as statistics
from freekd.audit.attacks.base import ATTACKS, AuditData, require_models, shadow_statistic
from freekd.errors import FreekdError


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
        values, included = shadow_statistic(data, name)
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
        require_models(counts, 1, name, which)
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
