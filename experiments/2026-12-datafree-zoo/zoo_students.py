"""Students written as a user would write them, for the student-shape experiment (session 40).

``OneConvStudent`` has the one-convolution shape of the ``WideShallowCnn`` / ``ShallowMaxPoolCnn``
teachers in ``zoo_models.py`` at about the size of freekd's ``lenet5-half`` (≈16.5k parameters
against ≈16k): one 5x5 convolution with 32 maps, ReLU, a 4x4 max-pool and a linear classifier.
"""

from __future__ import annotations

import torch
from torch import Tensor, nn


class OneConvStudent(nn.Module):
    """One 5x5 convolution (``width`` maps), ReLU, a 4x4 max-pool (28 -> 7), a linear layer."""

    def __init__(self, num_classes: int = 10, width: int = 32) -> None:
        super().__init__()
        self.conv = nn.Conv2d(1, width, kernel_size=5, padding=2)
        self.pool = nn.MaxPool2d(4)
        self.fc = nn.Linear(width * 7 * 7, num_classes)

    def forward(self, x: Tensor) -> Tensor:
        return self.fc(self.pool(torch.relu(self.conv(x))).flatten(1))


class OneConvAvgStudent(OneConvStudent):
    """``OneConvStudent`` with a 4x4 average pool instead of the max-pool (the pooling of the
    ``ShallowAvgPoolCnn`` teacher); the same parameters."""

    def __init__(self, num_classes: int = 10, width: int = 32) -> None:
        super().__init__(num_classes, width)
        self.pool = nn.AvgPool2d(4)  # type: ignore[assignment]
