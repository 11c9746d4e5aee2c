"""User-defined networks for the import-path teacher tests (``--arch tests.teachers.user_net:...``).

Neither has BatchNorm, so a teacher built from them has no BN statistics to invert.
"""

from __future__ import annotations

from torch import Tensor, nn


class _OneConvolution(nn.Module):
    """One 3×3 convolution with ``width`` maps, ReLU, ``pool`` to ``cells`` values a map, a
    linear layer: the shape of both user CNNs below."""

    def __init__(self, num_classes: int, *, width: int, pool: nn.Module, cells: int) -> None:
        super().__init__()
        self.conv = nn.Conv2d(1, width, kernel_size=3, padding=1)
        self.pool = pool
        self.fc = nn.Linear(width * cells, num_classes)

    def forward(self, images: Tensor) -> Tensor:
        return self.fc(self.pool(self.conv(images).relu()).flatten(1))


class UserNet(_OneConvolution):
    """A small user CNN without BatchNorm that asks for ``num_classes`` (and nothing else)."""

    def __init__(self, num_classes: int) -> None:
        super().__init__(num_classes, width=8, pool=nn.AdaptiveAvgPool2d(2), cells=2 * 2)


class FlatNet(nn.Module):
    """A user network that only takes 1×8×8 images: its linear layer is sized for 64 pixels."""

    def __init__(self, num_classes: int) -> None:
        super().__init__()
        self.fc = nn.Linear(64, num_classes)

    def forward(self, images: Tensor) -> Tensor:
        return self.fc(images.flatten(1))


class ConvNet(nn.Module):
    """``UserNet`` under a class name that starts like a convolution's (TorchScript keeps only
    class names: it must still count one convolution, not two)."""

    def __init__(self, num_classes: int) -> None:
        super().__init__()
        self.body = UserNet(num_classes)

    def forward(self, images: Tensor) -> Tensor:
        return self.body(images)  # type: ignore[no-any-return]


class WideUserNet(_OneConvolution):
    """A user CNN of one convolution and an average pool, larger than ``shallow-cnn`` on 8×8."""

    def __init__(self, num_classes: int) -> None:
        super().__init__(num_classes, width=32, pool=nn.AvgPool2d(2), cells=4 * 4)
