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
