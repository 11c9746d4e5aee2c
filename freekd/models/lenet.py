"""LeNet-5 and LeNet-5-half, the MNIST teacher and student of DAFL (Chen et al. 2019).

Chen et al., "Data-Free Learning of Student Networks", arXiv:1904.01186, §4.1: the teacher is
LeNet-5 (LeCun et al. 1998) with about 62k parameters, the student is LeNet-5-half, the same
network with half the channels in every layer, with about 16k parameters. Both use ReLU and
max-pooling.

Layers (LeNet-5 / LeNet-5-half), for a 32×32 input as in the paper:

====================  =======================  =======================  =========
layer                 LeNet-5                  LeNet-5-half             output
====================  =======================  =======================  =========
conv 5×5 + ReLU       C → 6                    C → 3                    28×28
max-pool 2×2                                                            14×14
conv 5×5 + ReLU       6 → 16                   3 → 8                    10×10
max-pool 2×2                                                            5×5
conv 5×5 + ReLU       16 → 120                 8 → 60                   1×1
fc + ReLU             120 → 84                 60 → 42
fc                    84 → K                   42 → K
====================  =======================  =======================  =========

Other input sizes (the paper resizes MNIST to 32×32; freekd keeps the dataset's own size):

* An input smaller than 32×32 (e.g. 28×28 MNIST) gets ``padding=2`` in the first convolution,
  which is how LeCun et al. 1998 placed 28×28 digits in a 32×32 field. The spatial sizes are then
  28 → 14 → 10 → 5 → 1, exactly as in the table.
* An input that is still too small for the three 5×5 convolutions (smaller than 28×28 with the
  padding, 32×32 without) is bilinearly upsampled inside ``forward`` to the smallest size that
  works, so 8×8 digits work too.
* An input larger than 32×32 leaves a feature map larger than 1×1 after the third convolution; an
  adaptive average pool reduces it to 1×1. At the paper's size the pool is the identity, so the
  network and its parameter count are the paper's.
"""

from __future__ import annotations

import torch.nn.functional as F  # noqa: N812  (the PyTorch convention)
from torch import Tensor, nn

from freekd.models.factory import MODELS

# Smallest spatial size the three 5×5 convolutions and two 2×2 pools accept when the first
# convolution is unpadded: 32 → 28 → 14 → 10 → 5 → 1.
_UNPADDED_MINIMUM_SIZE = 32


class LeNet5(nn.Module):
    """LeNet-5 as used in DAFL (Chen et al. 2019, arXiv:1904.01186, §4.1).

    Args:
        num_classes: number of logits K.
        in_channels: channels C of the (normalized) input.
        widths: output channels of the three convolutions and the hidden fully-connected layer;
            (6, 16, 120, 84) for LeNet-5 and (3, 8, 60, 42) for LeNet-5-half.
        first_padding: zero padding of the first convolution (0 for 32×32 inputs, 2 for 28×28).

    Shapes:
        input (B, C, H, W) → output (B, K).
    """

    def __init__(
        self,
        *,
        num_classes: int,
        in_channels: int,
        widths: tuple[int, int, int, int] = (6, 16, 120, 84),
        first_padding: int = 0,
    ) -> None:
        super().__init__()
        conv1_channels, conv2_channels, conv3_channels, hidden_features = widths
        self.minimum_size = _UNPADDED_MINIMUM_SIZE - 2 * first_padding
        self.features = nn.Sequential(
            nn.Conv2d(in_channels, conv1_channels, kernel_size=5, padding=first_padding),
            nn.ReLU(inplace=True),
            nn.MaxPool2d(kernel_size=2),
            nn.Conv2d(conv1_channels, conv2_channels, kernel_size=5),
            nn.ReLU(inplace=True),
            nn.MaxPool2d(kernel_size=2),
            nn.Conv2d(conv2_channels, conv3_channels, kernel_size=5),
            nn.ReLU(inplace=True),
            nn.AdaptiveAvgPool2d(1),  # identity for the paper's 32×32 input
        )
        self.classifier = nn.Sequential(
            nn.Flatten(),
            nn.Linear(conv3_channels, hidden_features),
            nn.ReLU(inplace=True),
            nn.Linear(hidden_features, num_classes),
        )

    def forward(self, images: Tensor) -> Tensor:
        """Logits (B, K) for normalized images (B, C, H, W); small images are upsampled first."""
        height, width = images.shape[-2:]
        if height < self.minimum_size or width < self.minimum_size:
            size = (max(height, self.minimum_size), max(width, self.minimum_size))
            images = F.interpolate(images, size=size, mode="bilinear", align_corners=False)
        return self.classifier(self.features(images))


def _first_padding(input_shape: tuple[int, int, int]) -> int:
    """2 for inputs below 32×32 (28×28 MNIST), as in LeCun et al. 1998; else 0 as in DAFL."""
    return 2 if min(input_shape[1:]) < _UNPADDED_MINIMUM_SIZE else 0


@MODELS.register("lenet5")
def lenet5(*, num_classes: int, input_shape: tuple[int, int, int]) -> nn.Module:
    """LeNet-5, conv 6-16-120 + fc 84 (DAFL §4.1, ≈62k parameters for 1×32×32 and 10 classes)."""
    return LeNet5(
        num_classes=num_classes,
        in_channels=input_shape[0],
        widths=(6, 16, 120, 84),
        first_padding=_first_padding(input_shape),
    )


@MODELS.register("lenet5-half")
def lenet5_half(*, num_classes: int, input_shape: tuple[int, int, int]) -> nn.Module:
    """LeNet-5-half, conv 3-8-60 + fc 42 (DAFL §4.1, ≈16k parameters for 1×32×32, 10 classes)."""
    return LeNet5(
        num_classes=num_classes,
        in_channels=input_shape[0],
        widths=(3, 8, 60, 42),
        first_padding=_first_padding(input_shape),
    )
