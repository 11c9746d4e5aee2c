"""MNIST classifiers written the way a third party would write them: plain torch.nn, no freekd.

Each class maps a (B, 1, 28, 28) batch to (B, 10) logits and accepts ``num_classes`` (freekd
passes it by name when it builds ``--arch zoo_models:Class``). The input each expects is part of
the variation, and except where a class says otherwise it is applied outside the class (by the
training loop here, by freekd's ``--mean/--std`` at load time):

* ``DropoutCnn``: MNIST mean 0.1307 / std 0.3081; no BatchNorm (the kind of teacher in issue 19).
* ``BatchNormCnn``: MNIST mean/std; BatchNorm after every convolution.
* ``ThreeLayerMlp``: [-1, 1] input (mean 0.5, std 0.5), flattened; no convolution at all.
* ``EluAvgPoolCnn``: raw [0, 1] pixels; ELU and average pooling instead of ReLU and max-pooling.
* ``WideShallowCnn``: MNIST mean/std; one wide 7x7 convolution and a linear layer.
* ``ShallowAvgPoolCnn``: MNIST mean/std; one 5x5 convolution, average pooling, a linear layer.
* ``ShallowMaxPoolCnn``: the same with max-pooling, as ``WideShallowCnn`` has.
* ``PixelGroupNormCnn``: raw 0-255 pixel values; GroupNorm (normalization layers, but no
  BatchNorm statistics to invert).
* ``SelfNormalizingCnn``: [0, 1] input, normalized *inside* ``forward`` with the MNIST mean/std
  (a deliberate input-convention variation: loaded without ``--mean/--std``); BatchNorm and
  strided convolutions instead of pooling.
"""

from __future__ import annotations

import torch
from torch import Tensor, nn

MNIST_MEAN = 0.1307
MNIST_STD = 0.3081


class DropoutCnn(nn.Module):
    """Two 5x5 conv-ReLU-maxpool stages, dropout, two linear layers; no BatchNorm."""

    def __init__(self, num_classes: int = 10) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(1, 20, kernel_size=5, padding=2)
        self.conv2 = nn.Conv2d(20, 40, kernel_size=5, padding=2)
        self.pool = nn.MaxPool2d(2)
        self.drop_features = nn.Dropout(0.25)
        self.hidden = nn.Linear(40 * 7 * 7, 100)
        self.drop_hidden = nn.Dropout(0.5)
        self.out = nn.Linear(100, num_classes)

    def forward(self, x: Tensor) -> Tensor:
        x = self.pool(torch.relu(self.conv1(x)))  # 28 -> 14
        x = self.pool(torch.relu(self.conv2(x)))  # 14 -> 7
        x = self.drop_features(x).flatten(1)
        x = self.drop_hidden(torch.relu(self.hidden(x)))
        return self.out(x)


class BatchNormCnn(nn.Module):
    """Three 3x3 conv-BN-ReLU layers with two max-pools, then global average pooling."""

    def __init__(self, num_classes: int = 10) -> None:
        super().__init__()

        def stage(inputs: int, outputs: int) -> list[nn.Module]:
            return [
                nn.Conv2d(inputs, outputs, kernel_size=3, padding=1, bias=False),
                nn.BatchNorm2d(outputs),
                nn.ReLU(inplace=True),
            ]

        self.body = nn.Sequential(
            *stage(1, 16),
            *stage(16, 32),
            nn.MaxPool2d(2),  # 28 -> 14
            *stage(32, 64),
            nn.MaxPool2d(2),  # 14 -> 7
            nn.AdaptiveAvgPool2d(1),
        )
        self.classifier = nn.Linear(64, num_classes)

    def forward(self, x: Tensor) -> Tensor:
        return self.classifier(self.body(x).flatten(1))


class ThreeLayerMlp(nn.Module):
    """784 -> 512 -> 256 -> classes, ReLU and dropout between the linear layers."""

    def __init__(self, num_classes: int = 10, dropout: float = 0.2) -> None:
        super().__init__()
        self.net = nn.Sequential(
            nn.Flatten(),
            nn.Linear(28 * 28, 512),
            nn.ReLU(),
            nn.Dropout(dropout),
            nn.Linear(512, 256),
            nn.ReLU(),
            nn.Dropout(dropout),
            nn.Linear(256, num_classes),
        )

    def forward(self, x: Tensor) -> Tensor:
        return self.net(x)


class EluAvgPoolCnn(nn.Module):
    """Unpadded 5x5 convolutions with ELU and average pooling (28 -> 24 -> 12 -> 8 -> 4)."""

    def __init__(self, num_classes: int = 10) -> None:
        super().__init__()
        self.features = nn.Sequential(
            nn.Conv2d(1, 16, kernel_size=5),
            nn.ELU(),
            nn.AvgPool2d(2),
            nn.Conv2d(16, 32, kernel_size=5),
            nn.ELU(),
            nn.AvgPool2d(2),
        )
        self.head = nn.Sequential(
            nn.Flatten(), nn.Linear(32 * 4 * 4, 64), nn.ELU(), nn.Linear(64, num_classes)
        )

    def forward(self, x: Tensor) -> Tensor:
        return self.head(self.features(x))


class WideShallowCnn(nn.Module):
    """One wide 7x7 convolution (96 maps), a 4x4 max-pool, and a linear classifier."""

    def __init__(self, num_classes: int = 10, width: int = 96) -> None:
        super().__init__()
        self.conv = nn.Conv2d(1, width, kernel_size=7, padding=3)
        self.pool = nn.MaxPool2d(4)  # 28 -> 7
        self.fc = nn.Linear(width * 7 * 7, num_classes)

    def forward(self, x: Tensor) -> Tensor:
        return self.fc(self.pool(torch.relu(self.conv(x))).flatten(1))


class ShallowAvgPoolCnn(nn.Module):
    """One 5x5 convolution (64 maps), a 4x4 average pool, and a linear classifier."""

    def __init__(self, num_classes: int = 10, width: int = 64) -> None:
        super().__init__()
        self.conv = nn.Conv2d(1, width, kernel_size=5, padding=2)
        self.pool = nn.AvgPool2d(4)  # 28 -> 7
        self.fc = nn.Linear(width * 7 * 7, num_classes)

    def forward(self, x: Tensor) -> Tensor:
        return self.fc(self.pool(torch.relu(self.conv(x))).flatten(1))


class ShallowMaxPoolCnn(ShallowAvgPoolCnn):
    """``ShallowAvgPoolCnn`` with a 4x4 max-pool instead of the average (the same parameter
    names and shapes)."""

    def __init__(self, num_classes: int = 10, width: int = 64) -> None:
        super().__init__(num_classes, width)
        self.pool = nn.MaxPool2d(4)  # type: ignore[assignment]  # 28 -> 7


class PixelGroupNormCnn(nn.Module):
    """Conv-GroupNorm-ReLU stages on raw 0-255 pixels (the first layer learns the scale)."""

    def __init__(self, num_classes: int = 10) -> None:
        super().__init__()

        def stage(inputs: int, outputs: int) -> list[nn.Module]:
            return [
                nn.Conv2d(inputs, outputs, kernel_size=3, padding=1),
                nn.GroupNorm(4, outputs),
                nn.ReLU(inplace=True),
                nn.MaxPool2d(2),
            ]

        self.features = nn.Sequential(*stage(1, 24), *stage(24, 48))  # 28 -> 14 -> 7
        self.fc = nn.Linear(48 * 7 * 7, num_classes)

    def forward(self, x: Tensor) -> Tensor:
        return self.fc(self.features(x).flatten(1))


class SelfNormalizingCnn(nn.Module):
    """Takes [0, 1] images and normalizes them itself; strided conv-BN-ReLU layers, no pooling."""

    def __init__(self, num_classes: int = 10) -> None:
        super().__init__()
        self.register_buffer("mean", torch.tensor(MNIST_MEAN))
        self.register_buffer("std", torch.tensor(MNIST_STD))

        def stage(inputs: int, outputs: int, stride: int) -> list[nn.Module]:
            return [
                nn.Conv2d(inputs, outputs, kernel_size=3, stride=stride, padding=1, bias=False),
                nn.BatchNorm2d(outputs),
                nn.ReLU(inplace=True),
            ]

        self.body = nn.Sequential(
            *stage(1, 32, 1),
            *stage(32, 48, 2),  # 28 -> 14
            *stage(48, 64, 2),  # 14 -> 7
        )
        self.fc = nn.Linear(64 * 7 * 7, num_classes)

    def forward(self, x: Tensor) -> Tensor:
        x = (x - self.mean) / self.std
        return self.fc(self.body(x).flatten(1))
