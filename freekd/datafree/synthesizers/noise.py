"""Baseline: random-noise inputs (no synthesis at all)."""

from __future__ import annotations

from typing import Any

import torch
from torch import Tensor, nn

from freekd.datafree.synthesizers.registry import SYNTHESIZERS
from freekd.teachers import Teacher


@SYNTHESIZERS.register("noise")
class RandomNoise:
    """Uniform random images in [0, 1]: the lower bound every data-free method must beat.

    DAFL (Chen et al. 2019, arXiv:1904.01186) Table 1 reports 88.01 % for LeNet-5-half on MNIST
    with "random normal" inputs. No teacher query is spent on synthesis.

    Args:
        image_shape: (C, H, W).
        num_classes: unused; part of the shared constructor.
        rng: source of the noise.
        device: where images are created.
    """

    needs_batchnorm = False

    def __init__(
        self,
        *,
        image_shape: tuple[int, int, int],
        num_classes: int,
        rng: torch.Generator,
        device: torch.device,
    ) -> None:
        self.image_shape = image_shape
        self.rng = rng
        self.device = device
        self.images_synthesized = 0
        self.teacher_queries = 0

    def synthesize(self, teacher: Teacher, student: nn.Module) -> dict[str, float]:
        return {}

    def sample(self, n: int) -> Tensor:
        self.images_synthesized += n
        return torch.rand((n, *self.image_shape), generator=self.rng).to(self.device)

    def reinitialize(self, *, lr_scale: float) -> None:
        """Nothing to restart: noise has no weights and no learning rate."""

    def state_dict(self) -> dict[str, Any]:
        return {"rng": self.rng.get_state(), "images_synthesized": self.images_synthesized}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.rng.set_state(state["rng"])
        self.images_synthesized = int(state["images_synthesized"])
