"""The model registry and the factory convention every registered architecture follows."""

from __future__ import annotations

from collections.abc import Callable

from torch import nn

from freekd.registry import Registry

ModelFactory = Callable[..., nn.Module]
"""A model factory: ``fn(*, num_classes, input_shape, **arch_kwargs) -> nn.Module``.

``num_classes`` is the number of logits K and ``input_shape`` is the (C, H, W) shape of one input
image. The returned network maps *normalized* (B, C, H, W) float images to (B, K) logits; it returns
logits only, never a tuple with features. Architecture hyperparameters (``arch_kwargs``) are
keyword-only. A plain ``Callable`` alias rather than a ``Protocol`` so that factories with narrower
signatures (no ``**arch_kwargs``) still type-check when they are registered.
"""

MODELS: Registry[ModelFactory] = Registry("model")
"""Classifier architectures by name; filled when :mod:`freekd.models` is imported."""


# The default data-free/distillation student for a teacher architecture: a smaller model of the
# same family, as in the papers' benchmark pairs (DAFL, DFAD, CRD, CMI tables).
SMALLER_STUDENT: dict[str, str] = {
    "lenet5": "lenet5-half",
    "resnet34": "resnet18",
    "resnet18": "resnet8x4",
    "resnet32x4": "resnet8x4",
    "resnet110": "resnet20",
    "resnet56": "resnet20",
    "resnet44": "resnet14",
    "resnet32": "resnet8",
    "resnet20": "resnet8",
    "resnet14": "resnet8",
    "wrn-40-2": "wrn-16-2",
    "wrn-40-1": "wrn-16-1",
    "wrn-16-2": "wrn-16-1",
    "wrn-28-10": "wrn-16-2",
    "tiny-cnn": "tiny-cnn",
    "tiny-cnn-nobn": "tiny-cnn-nobn",
}
