"""Wide residual networks, Zagoruyko & Komodakis 2016 (arXiv:1605.07146).

WRN-d-k (§2, Table 1): a 3×3 stem convolution with 16 channels, then three groups of
n = (d - 4) / 6 wide basic blocks with 16k, 32k and 64k channels (the second and third group start
with stride 2), a final BN-ReLU, global average pooling and a fully-connected layer. A block is
B(3,3) in the pre-activation order of He et al. 2016b (arXiv:1603.05027): BN-ReLU-conv3×3,
then BN-ReLU, optional dropout (§2.4: between the convolutions, after the ReLU), conv3×3, plus the
shortcut: the identity, or a 1×1 convolution (applied to the pre-activated input, as in He et al.
2016b) where the number of channels or the resolution changes.

Deviation: the paper pools with a fixed 8×8 window (the last feature map of a 32×32 input); here
the pool is adaptive, so any input size works and 32×32 inputs are unchanged.

Parameter counts for 3×32×32 and 10 classes match those the paper reports (WRN-40-1 0.6M,
WRN-40-2 2.2M, WRN-40-4 8.9M, WRN-16-8 11.0M, WRN-28-10 36.5M): WRN-16-1 0.18M, WRN-16-2 0.69M,
WRN-40-1 0.56M, WRN-40-2 2.24M, WRN-28-10 36.48M.
"""

from __future__ import annotations

import torch.nn.functional as F  # noqa: N812  (the PyTorch convention)
from torch import Tensor, nn

from freekd.errors import FreekdError
from freekd.models.factory import MODELS


def check_wrn_depth(depth: int, *, setting: str = "--arch") -> None:
    """Raise :class:`FreekdError` unless depth - 4 is a positive multiple of 6 (up to 1,000)."""
    if depth > 1000:  # building 10,000 layers takes minutes before any size check could run
        raise FreekdError(f"WideResNet depth {depth} is above 1,000; check {setting}")
    if depth < 10 or (depth - 4) % 6 != 0:
        raise FreekdError(
            f"WideResNet depth {depth} is invalid: depth - 4 must be a positive multiple of 6 "
            f"(10, 16, 22, 28, 40, ...); check {setting}"
        )


class WideBasicBlock(nn.Module):
    """Pre-activation wide basic block B(3,3) with optional dropout (Zagoruyko & Komodakis §2).

    Args:
        in_channels: input channels.
        out_channels: output channels of both convolutions.
        stride: stride of the first convolution.
        dropout: dropout probability between the two convolutions (0 disables it).

    Shapes:
        (B, in_channels, H, W) → (B, out_channels, ⌈H/stride⌉, ⌈W/stride⌉).
    """

    def __init__(self, in_channels: int, out_channels: int, *, stride: int, dropout: float) -> None:
        super().__init__()
        self.bn1 = nn.BatchNorm2d(in_channels)
        self.conv1 = nn.Conv2d(
            in_channels, out_channels, kernel_size=3, stride=stride, padding=1, bias=False
        )
        self.bn2 = nn.BatchNorm2d(out_channels)
        self.dropout = nn.Dropout(p=dropout)
        self.conv2 = nn.Conv2d(out_channels, out_channels, kernel_size=3, padding=1, bias=False)
        self.projection: nn.Conv2d | None = None
        if stride != 1 or in_channels != out_channels:
            self.projection = nn.Conv2d(
                in_channels, out_channels, kernel_size=1, stride=stride, bias=False
            )

    def forward(self, inputs: Tensor) -> Tensor:
        """F(x) + shortcut(x), no activation after the sum (pre-activation order)."""
        activated = F.relu(self.bn1(inputs))
        shortcut = inputs if self.projection is None else self.projection(activated)
        residual = self.conv1(activated)
        residual = self.conv2(self.dropout(F.relu(self.bn2(residual))))
        return residual + shortcut


class WideResNet(nn.Module):
    """WRN-depth-widen_factor (Zagoruyko & Komodakis 2016, Table 1).

    Args:
        num_classes: number of logits K.
        in_channels: channels C of the (normalized) input.
        depth: total depth d; (d - 4) / 6 blocks per group.
        widen_factor: width multiplier k; the groups have 16k, 32k and 64k channels.
        dropout: dropout probability inside every block (the paper uses 0.3 in some runs).

    Shapes:
        input (B, C, H, W) → output (B, K).
    """

    def __init__(
        self,
        *,
        num_classes: int,
        in_channels: int,
        depth: int,
        widen_factor: int,
        dropout: float = 0.0,
    ) -> None:
        super().__init__()
        check_wrn_depth(depth)
        if widen_factor < 1:
            raise FreekdError(
                f"WideResNet widen_factor must be ≥ 1, got {widen_factor}; check --arch"
            )
        if not 0.0 <= dropout < 1.0:
            raise FreekdError(
                f"WideResNet dropout must be in [0, 1), got {dropout}; check --arch-kwargs"
            )
        blocks_per_group = (depth - 4) // 6
        self.stem = nn.Conv2d(in_channels, 16, kernel_size=3, padding=1, bias=False)
        groups: list[nn.Module] = []
        channels = 16
        for group_index, base_width in enumerate((16, 32, 64)):
            width = base_width * widen_factor
            blocks: list[nn.Module] = []
            for block_index in range(blocks_per_group):
                stride = 2 if group_index > 0 and block_index == 0 else 1
                blocks.append(WideBasicBlock(channels, width, stride=stride, dropout=dropout))
                channels = width
            groups.append(nn.Sequential(*blocks))
        self.groups = nn.Sequential(*groups)
        self.final_norm = nn.BatchNorm2d(channels)
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.fc = nn.Linear(channels, num_classes)
        for module in self.modules():
            if isinstance(module, nn.Conv2d):
                nn.init.kaiming_normal_(module.weight, nonlinearity="relu")
            elif isinstance(module, nn.BatchNorm2d):
                nn.init.ones_(module.weight)
                nn.init.zeros_(module.bias)
            elif isinstance(module, nn.Linear):
                nn.init.zeros_(module.bias)

    def forward(self, images: Tensor) -> Tensor:
        """Logits (B, K) for normalized images (B, C, H, W)."""
        features = F.relu(self.final_norm(self.groups(self.stem(images))))
        return self.fc(self.pool(features).flatten(1))


@MODELS.register("wrn")
def wrn(
    *,
    num_classes: int,
    input_shape: tuple[int, int, int],
    depth: int,
    widen_factor: int,
    dropout: float = 0.0,
) -> nn.Module:
    """A WideResNet of any valid ``depth`` and ``widen_factor`` (arch kwargs)."""
    return WideResNet(
        num_classes=num_classes,
        in_channels=input_shape[0],
        depth=depth,
        widen_factor=widen_factor,
        dropout=dropout,
    )


@MODELS.register("wrn-16-1")
def wrn_16_1(
    *, num_classes: int, input_shape: tuple[int, int, int], dropout: float = 0.0
) -> nn.Module:
    """WRN-16-1, ≈0.18M parameters."""
    return wrn(
        num_classes=num_classes, input_shape=input_shape, depth=16, widen_factor=1, dropout=dropout
    )


@MODELS.register("wrn-16-2")
def wrn_16_2(
    *, num_classes: int, input_shape: tuple[int, int, int], dropout: float = 0.0
) -> nn.Module:
    """WRN-16-2, ≈0.69M parameters."""
    return wrn(
        num_classes=num_classes, input_shape=input_shape, depth=16, widen_factor=2, dropout=dropout
    )


@MODELS.register("wrn-40-1")
def wrn_40_1(
    *, num_classes: int, input_shape: tuple[int, int, int], dropout: float = 0.0
) -> nn.Module:
    """WRN-40-1, ≈0.57M parameters."""
    return wrn(
        num_classes=num_classes, input_shape=input_shape, depth=40, widen_factor=1, dropout=dropout
    )


@MODELS.register("wrn-40-2")
def wrn_40_2(
    *, num_classes: int, input_shape: tuple[int, int, int], dropout: float = 0.0
) -> nn.Module:
    """WRN-40-2, ≈2.2M parameters (the paper reports 2.2M)."""
    return wrn(
        num_classes=num_classes, input_shape=input_shape, depth=40, widen_factor=2, dropout=dropout
    )


@MODELS.register("wrn-28-10")
def wrn_28_10(
    *, num_classes: int, input_shape: tuple[int, int, int], dropout: float = 0.0
) -> nn.Module:
    """WRN-28-10, ≈36.5M parameters (the paper reports 36.5M)."""
    return wrn(
        num_classes=num_classes, input_shape=input_shape, depth=28, widen_factor=10, dropout=dropout
    )
