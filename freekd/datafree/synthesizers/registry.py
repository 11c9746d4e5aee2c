"""The synthesizer registry and the constructor every synthesizer shares."""

from __future__ import annotations

from typing import Any

from freekd.registry import Registry

# Every entry is a class constructed as
#   cls(*, image_shape=(C, H, W), num_classes=K, rng=torch.Generator, device=torch.device,
#       **hyperparameters)                    # hyperparameters keyword-only, with defaults
# with a class attribute ``needs_batchnorm: bool`` (refuse BatchNorm-free teachers when True)
# and the methods of ``generators.base.Synthesizer``.
SYNTHESIZERS: Registry[Any] = Registry("synthesizer")
