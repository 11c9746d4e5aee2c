"""Baseline: random-noise inputs (no synthesis at all)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

import torch
from torch import Tensor, nn

from freekd.datafree.synthesizers.base import SYNTHESIZERS, SynthesizerBase
from freekd.teachers import Teacher


@SYNTHESIZERS.register("noise")
@dataclass(kw_only=True, eq=False)
class RandomNoise(SynthesizerBase):
    """Uniform random images in [0, 1]: the lower bound every data-free method must beat.

    DAFL (Chen et al. 2019, arXiv:1904.01186) Table 1 reports 88.01 % for LeNet-5-half on MNIST
    with "random normal" inputs. No teacher query is spent on synthesis.

    Args: no hyperparameters (``num_classes`` is unused; ``rng`` is the source of the noise).
    """

    needs_batchnorm = False
    STATE: ClassVar[tuple[str, ...]] = ("rng", "images_synthesized")

    def synthesize(self, teacher: Teacher, student: nn.Module) -> dict[str, float]:
        return {}

    def sample(self, n: int) -> Tensor:
        self.images_synthesized += n
        return torch.rand((n, *self.image_shape), generator=self.rng).to(self.device)

    def reinitialize(self, *, lr_scale: float) -> None:
        """Nothing to restart: noise has no weights and no learning rate."""
