"""User architectures for the import-path tests (``--arch tests.models.user_arch:UserNet``)."""

from __future__ import annotations

import torch
from torch import Tensor, nn


class UserNet(nn.Module):
    """A small user CNN that asks for ``num_classes`` by name."""

    def __init__(self, num_classes: int = 3, *, width: int = 4, in_channels: int = 1) -> None:
        super().__init__()
        self.conv = nn.Conv2d(in_channels, width, kernel_size=3, padding=1)
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.fc = nn.Linear(width, num_classes)

    def forward(self, images: Tensor) -> Tensor:
        return self.fc(self.pool(self.conv(images).relu()).flatten(1))


def fixed_net(*, outputs: int = 5) -> nn.Module:
    """A factory without a ``num_classes`` parameter: the caller sets the output size."""
    return nn.Sequential(nn.Flatten(), nn.LazyLinear(outputs))


def shaped_net(*, num_classes: int, input_shape: tuple[int, int, int]) -> nn.Module:
    """A factory that follows the registry convention (asks for the input shape too)."""
    channels, height, width = input_shape
    return nn.Sequential(nn.Flatten(), nn.Linear(channels * height * width, num_classes))


def not_a_module() -> str:
    return "not a network"


class TupleNet(nn.Module):
    """Returns (logits, features), which freekd models must not do."""

    def __init__(self, num_classes: int = 3) -> None:
        super().__init__()
        self.fc = nn.Linear(1, num_classes)

    def forward(self, images: Tensor) -> tuple[Tensor, Tensor]:
        features = images.mean(dim=(1, 2, 3)).unsqueeze(1)
        return self.fc(features), features


class SkipNet(nn.Module):
    """A user CNN whose classifier reads both its last block and the block before it: after
    ``block2`` the trunk's features are mixed in, so ONE cannot branch at ``block2``."""

    def __init__(self, num_classes: int = 10, in_channels: int = 1) -> None:
        super().__init__()
        self.block1 = nn.Sequential(nn.Conv2d(in_channels, 8, 3, padding=1), nn.ReLU())
        self.block2 = nn.Sequential(nn.Conv2d(8, 8, 3, padding=1), nn.ReLU())
        self.head = nn.Linear(8, num_classes)

    def forward(self, images: Tensor) -> Tensor:
        first = self.block1(images)
        second = self.block2(first)
        return self.head((first + second).mean(dim=(2, 3)))


class ScaledHead(nn.Module):
    """A classifier with a learned scale of its own around a linear layer (a module with
    weights that holds another module with weights, as ConvNeXt's blocks do)."""

    def __init__(self, width: int, num_classes: int) -> None:
        super().__init__()
        self.scale = nn.Parameter(torch.ones(1))
        self.fc = nn.Linear(width, num_classes)

    def forward(self, features: Tensor) -> Tensor:
        return self.scale * self.fc(features)


class ScaledNet(nn.Module):
    """UserNet with a :class:`ScaledHead`."""

    def __init__(self, num_classes: int = 10, in_channels: int = 1) -> None:
        super().__init__()
        self.conv = nn.Conv2d(in_channels, 4, kernel_size=3, padding=1)
        self.head = ScaledHead(4, num_classes)

    def forward(self, images: Tensor) -> Tensor:
        return self.head(self.conv(images).relu().mean(dim=(2, 3)))
