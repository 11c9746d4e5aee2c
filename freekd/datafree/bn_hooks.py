"""The synthesizers' forward hooks: BatchNorm statistics read out of a frozen teacher.

Hooks live only inside a ``with`` block, so no synthesizer can leave one behind on a teacher.
The generic hooks (``capture_input``, ``last_linear``, ``eval_mode``) are in ``freekd.hooks``.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any

from torch import Tensor, nn

from freekd.errors import FreekdError


@dataclass
class BatchNormStatistics:
    """Per BatchNorm layer: the current batch's input mean/variance and the layer's running ones.

    Filled by :func:`batchnorm_statistics` during a forward pass; lists are in layer order.
    """

    batch_means: list[Tensor] = field(default_factory=list)
    batch_variances: list[Tensor] = field(default_factory=list)
    running_means: list[Tensor] = field(default_factory=list)
    running_variances: list[Tensor] = field(default_factory=list)

    def clear(self) -> None:
        for values in (
            self.batch_means,
            self.batch_variances,
            self.running_means,
            self.running_variances,
        ):
            values.clear()


def batchnorm_layers(model: nn.Module) -> list[nn.modules.batchnorm._BatchNorm]:
    """The BatchNorm layers (with running statistics) of ``model``, in module order."""
    return [
        m
        for m in model.modules()
        if isinstance(m, nn.modules.batchnorm._BatchNorm) and m.running_mean is not None
    ]


@contextmanager
def batchnorm_statistics(model: nn.Module) -> Iterator[BatchNormStatistics]:
    """Record, for every BatchNorm layer, the statistics of its input during forward passes.

    Yin et al. 2020 (arXiv:1912.08795) §3.2: the mean and (biased) variance over the batch and
    spatial positions of the features entering each BatchNorm layer, next to the layer's running
    mean and variance. The statistics keep their autograd graph so they can be optimized.
    """
    statistics = BatchNormStatistics()

    def record(module: nn.Module, inputs: tuple[Any, ...], output: Tensor) -> None:
        features = inputs[0]
        dims = [0, *range(2, features.dim())]
        statistics.batch_means.append(features.mean(dim=dims))
        statistics.batch_variances.append(features.var(dim=dims, unbiased=False))
        statistics.running_means.append(module.running_mean)  # type: ignore[arg-type]
        statistics.running_variances.append(module.running_var)  # type: ignore[arg-type]

    handles = [layer.register_forward_hook(record) for layer in batchnorm_layers(model)]
    try:
        yield statistics
    finally:
        for handle in handles:
            handle.remove()


def require_batchnorm(statistics: BatchNormStatistics, *, who: str) -> None:
    """Refuse a teacher whose forward pass met no BatchNorm layer: ``who`` inverts their
    statistics (``needs_batchnorm``), so there is nothing to invert."""
    if not statistics.batch_means:
        raise FreekdError(
            f"{who} inverts BatchNorm statistics and this teacher has no BatchNorm layers; "
            "use a method without BatchNorm needs (e.g. dafl)"
        )
