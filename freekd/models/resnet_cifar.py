"""Residual networks for small images (CIFAR-style), He et al. 2016 (arXiv:1512.03385).

Three families share one implementation, :class:`CifarResNet`, built from post-activation
:class:`BasicBlock` s (conv3×3-BN-ReLU-conv3×3-BN, add the shortcut, ReLU; He et al. Fig. 2):

* ``resnet8`` … ``resnet110``: the CIFAR-10 networks of He et al. §4.2. A 3×3 stem convolution
  with 16 channels, then three stages of n blocks with 16, 32 and 64 channels (the first block of
  the second and third stage has stride 2), global average pooling and a fully-connected layer;
  depth 6n + 2. Shortcuts are option A by default, as in §4.2 ("we use identity shortcuts in all
  cases (i.e., option A)"): the identity, or, where the shape changes, the input subsampled by the
  stride with its extra channels zero-padded; so these networks have exactly the paper's parameter
  counts (resnet20 0.27M, resnet32 0.46M, resnet44 0.66M, resnet56 0.85M, resnet110 1.7M).
* ``resnet8x4`` and ``resnet32x4``: the wider teacher/student pair of CRD (Tian et al. 2020,
  arXiv:1910.10699, Table 1). "x4" means four times the stage widths of resnet8/resnet32, i.e.
  stages of 64, 128 and 256 channels, while the stem has 32 channels (twice, not four times, 16).
  Shortcuts are option B (a 1×1 convolution + BN where the shape changes, identity elsewhere). With
  100 classes this gives CRD's reported 1.23M (resnet8x4) and 7.43M (resnet32x4) parameters; option
  A would give 1.19M and 7.39M.
* ``resnet18`` and ``resnet34``: the ImageNet networks of He et al. Table 1 (BasicBlocks with 64,
  128, 256 and 512 channels, 2-2-2-2 and 3-4-6-3 blocks, option B shortcuts) adapted to small images
  in the way common in the KD literature: a 3×3 stride-1 stem convolution with 64 channels replaces
  the 7×7 stride-2 convolution, and there is no max-pool.

Every family accepts ``shortcut="A"`` or ``shortcut="B"`` as an arch kwarg to override its
default. All of them end in an adaptive average pool, so any input size and channel count works
(a 1×1 input just stays 1×1 through the strided convolutions).

Weights follow He et al. 2015 (arXiv:1502.01852, Eq. 10, the initialization He et al. 2016 cites):
Kaiming-normal convolutions, BN scale 1 and shift 0; the final linear layer keeps PyTorch's default.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Literal

import torch.nn.functional as F  # noqa: N812  (the PyTorch convention)
from torch import Tensor, nn

from freekd.errors import FreekdError
from freekd.models.factory import MODELS

ShortcutOption = Literal["A", "B"]


def check_shortcut(shortcut: str) -> None:
    """Raise :class:`FreekdError` unless ``shortcut`` is "A" or "B"."""
    if shortcut not in ("A", "B"):
        raise FreekdError(
            f"unknown ResNet shortcut option {shortcut!r}; "
            'use "A" (zero-padding) or "B" (projection) in --arch-kwargs'
        )


class ZeroPadShortcut(nn.Module):
    """Option A shortcut (He et al. 2016 §3.3): subsample by ``stride``, zero-pad new channels.

    Parameter-free. Shapes: (B, C_in, H, W) → (B, C_out, ⌈H/stride⌉, ⌈W/stride⌉).
    """

    def __init__(self, in_channels: int, out_channels: int, *, stride: int) -> None:
        super().__init__()
        if out_channels < in_channels:
            raise ValueError("an option A shortcut cannot reduce the channel count")
        self.stride = stride
        self.extra_channels = out_channels - in_channels

    def forward(self, inputs: Tensor) -> Tensor:
        """Subsampled, channel-padded ``inputs``."""
        if self.stride > 1:
            inputs = inputs[:, :, :: self.stride, :: self.stride]
        if self.extra_channels:
            inputs = F.pad(inputs, (0, 0, 0, 0, 0, self.extra_channels))
        return inputs


class BasicBlock(nn.Module):
    """Two 3×3 convolutions with a residual connection, He et al. 2016 Fig. 2 (left).

    Args:
        in_channels: input channels.
        out_channels: output channels of both convolutions.
        stride: stride of the first convolution (2 at the start of a downsampling stage).
        shortcut: "A" (zero-padding, parameter-free) or "B" (1×1 convolution + BN) where the shape
            changes; the shortcut is the identity elsewhere.

    Shapes:
        (B, in_channels, H, W) → (B, out_channels, ⌈H/stride⌉, ⌈W/stride⌉).
    """

    def __init__(
        self, in_channels: int, out_channels: int, *, stride: int, shortcut: ShortcutOption
    ) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(
            in_channels, out_channels, kernel_size=3, stride=stride, padding=1, bias=False
        )
        self.bn1 = nn.BatchNorm2d(out_channels)
        self.conv2 = nn.Conv2d(out_channels, out_channels, kernel_size=3, padding=1, bias=False)
        self.bn2 = nn.BatchNorm2d(out_channels)
        self.shortcut: nn.Module
        if stride == 1 and in_channels == out_channels:
            self.shortcut = nn.Identity()
        elif shortcut == "A":
            self.shortcut = ZeroPadShortcut(in_channels, out_channels, stride=stride)
        else:
            self.shortcut = nn.Sequential(
                nn.Conv2d(in_channels, out_channels, kernel_size=1, stride=stride, bias=False),
                nn.BatchNorm2d(out_channels),
            )

    def forward(self, inputs: Tensor) -> Tensor:
        """ReLU(F(x) + shortcut(x))."""
        residual = F.relu(self.bn1(self.conv1(inputs)))
        residual = self.bn2(self.conv2(residual))
        return F.relu(residual + self.shortcut(inputs))


class CifarResNet(nn.Module):
    """A 3×3-stem ResNet of BasicBlocks for small images (He et al. 2016 §4.2).

    Args:
        num_classes: number of logits K.
        in_channels: channels C of the (normalized) input.
        stem_channels: output channels of the 3×3 stem convolution.
        stage_channels: channels of each stage; stages after the first start with stride 2.
        blocks_per_stage: number of BasicBlocks in each stage.
        shortcut: "A" or "B", see :class:`BasicBlock`.

    Shapes:
        input (B, C, H, W) → output (B, K).
    """

    def __init__(
        self,
        *,
        num_classes: int,
        in_channels: int,
        stem_channels: int,
        stage_channels: Sequence[int],
        blocks_per_stage: Sequence[int],
        shortcut: ShortcutOption,
    ) -> None:
        super().__init__()
        check_shortcut(shortcut)
        if len(stage_channels) != len(blocks_per_stage):
            raise ValueError("stage_channels and blocks_per_stage must have the same length")
        self.stem = nn.Sequential(
            nn.Conv2d(in_channels, stem_channels, kernel_size=3, padding=1, bias=False),
            nn.BatchNorm2d(stem_channels),
            nn.ReLU(inplace=True),
        )
        stages: list[nn.Module] = []
        channels = stem_channels
        for stage_index, (width, blocks) in enumerate(
            zip(stage_channels, blocks_per_stage, strict=True)
        ):
            stage: list[nn.Module] = []
            for block_index in range(blocks):
                stride = 2 if stage_index > 0 and block_index == 0 else 1
                stage.append(BasicBlock(channels, width, stride=stride, shortcut=shortcut))
                channels = width
            stages.append(nn.Sequential(*stage))
        self.stages = nn.Sequential(*stages)
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.fc = nn.Linear(channels, num_classes)
        for module in self.modules():
            if isinstance(module, nn.Conv2d):
                nn.init.kaiming_normal_(module.weight, nonlinearity="relu")
            elif isinstance(module, nn.BatchNorm2d):
                nn.init.ones_(module.weight)
                nn.init.zeros_(module.bias)

    def forward(self, images: Tensor) -> Tensor:
        """Logits (B, K) for normalized images (B, C, H, W)."""
        features = self.stages(self.stem(images))
        return self.fc(self.pool(features).flatten(1))


def _he_cifar_resnet(
    depth: int, *, num_classes: int, input_shape: tuple[int, int, int], shortcut: ShortcutOption
) -> CifarResNet:
    """He et al. §4.2: depth 6n + 2, widths 16/32/64."""
    blocks = (depth - 2) // 6
    return CifarResNet(
        num_classes=num_classes,
        in_channels=input_shape[0],
        stem_channels=16,
        stage_channels=(16, 32, 64),
        blocks_per_stage=(blocks, blocks, blocks),
        shortcut=shortcut,
    )


def _he_factory(depth: int) -> Callable[..., nn.Module]:
    def factory(
        *, num_classes: int, input_shape: tuple[int, int, int], shortcut: ShortcutOption = "A"
    ) -> nn.Module:
        return _he_cifar_resnet(
            depth, num_classes=num_classes, input_shape=input_shape, shortcut=shortcut
        )

    factory.__name__ = f"resnet{depth}"
    factory.__doc__ = f"ResNet-{depth} (n={(depth - 2) // 6}) of He et al. 2016 §4.2."
    return factory


# Parameter counts for 10 classes: 0.08M, 0.17M, 0.27M, 0.46M, 0.66M, 0.85M, 1.7M (paper §4.2).
for _depth in (8, 14, 20, 32, 44, 56, 110):
    MODELS.register(f"resnet{_depth}")(_he_factory(_depth))


def _crd_wide_resnet(
    depth: int, *, num_classes: int, input_shape: tuple[int, int, int], shortcut: ShortcutOption
) -> CifarResNet:
    """CRD's "x4" ResNets: stem 32, stages 64/128/256, depth 6n + 2."""
    blocks = (depth - 2) // 6
    return CifarResNet(
        num_classes=num_classes,
        in_channels=input_shape[0],
        stem_channels=32,
        stage_channels=(64, 128, 256),
        blocks_per_stage=(blocks, blocks, blocks),
        shortcut=shortcut,
    )


def _crd_factory(depth: int) -> Callable[..., nn.Module]:
    def factory(
        *, num_classes: int, input_shape: tuple[int, int, int], shortcut: ShortcutOption = "B"
    ) -> nn.Module:
        return _crd_wide_resnet(
            depth, num_classes=num_classes, input_shape=input_shape, shortcut=shortcut
        )

    factory.__name__ = f"resnet{depth}x4"
    factory.__doc__ = f"ResNet-{depth}×4 of CRD (Tian et al. 2020, arXiv:1910.10699, Table 1)."
    return factory


# 1.23M and 7.43M parameters for 100 classes, as in CRD.
for _depth in (8, 32):
    MODELS.register(f"resnet{_depth}x4")(_crd_factory(_depth))


@MODELS.register("resnet18")
def resnet18(
    *, num_classes: int, input_shape: tuple[int, int, int], shortcut: ShortcutOption = "B"
) -> nn.Module:
    """ResNet-18 (He et al. 2016 Table 1) with a 3×3 stem and no max-pool, ≈11.2M parameters."""
    return CifarResNet(
        num_classes=num_classes,
        in_channels=input_shape[0],
        stem_channels=64,
        stage_channels=(64, 128, 256, 512),
        blocks_per_stage=(2, 2, 2, 2),
        shortcut=shortcut,
    )


@MODELS.register("resnet34")
def resnet34(
    *, num_classes: int, input_shape: tuple[int, int, int], shortcut: ShortcutOption = "B"
) -> nn.Module:
    """ResNet-34 (He et al. 2016 Table 1) with a 3×3 stem and no max-pool, ≈21.3M parameters."""
    return CifarResNet(
        num_classes=num_classes,
        in_channels=input_shape[0],
        stem_channels=64,
        stage_channels=(64, 128, 256, 512),
        blocks_per_stage=(3, 4, 6, 3),
        shortcut=shortcut,
    )
