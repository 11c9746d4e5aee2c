"""A network of one convolution: ``shallow-cnn``, a student for teachers of that shape.

``shallow-cnn`` is one k×k convolution with "same" padding (32 maps of 5×5 by default), ReLU,
a 4×4 max-pool and a linear classifier: 16,522 parameters for 1×28×28 inputs and 10 classes,
about LeNet-5-half's 15,738. It has the shape of the one-convolution MNIST classifiers users
write (a wide 7×7 layer, a pool, a linear layer) and of the zoo teachers with a single
convolution (``experiments/2026-12-datafree-zoo``, session 40: as the data-free student of the
tuning teacher ``wide-maxpool`` it reached 95.96 % on validation digits where LeNet-5-half,
from the same teacher and seed, reached 94.46 %).
"""

from __future__ import annotations

import math

from torch import Tensor, nn

from freekd.errors import FreekdError
from freekd.models.factory import MODELS

#: Side of the max-pool window (and its stride).
POOL = 4


class ShallowCNN(nn.Module):
    """Conv k×k ("same" padding) → ReLU → max-pool 4×4 (ceil mode) → flatten → linear.

    Args:
        num_classes: number of logits K.
        input_shape: (C, H, W) of the (normalized) input; the linear layer sees every pooled map.
        width: output channels of the convolution.
        kernel_size: odd side of the convolution's kernel.

    Shapes:
        input (B, C, H, W) → output (B, K).
    """

    def __init__(
        self, *, num_classes: int, input_shape: tuple[int, int, int], width: int, kernel_size: int
    ) -> None:
        super().__init__()
        channels, height, width_pixels = input_shape
        self.conv = nn.Conv2d(channels, width, kernel_size=kernel_size, padding=kernel_size // 2)
        self.pool = nn.MaxPool2d(POOL, ceil_mode=True)  # ceil mode keeps sides below 4 valid
        pooled = math.ceil(height / POOL) * math.ceil(width_pixels / POOL)
        self.fc = nn.Linear(width * pooled, num_classes)

    def forward(self, images: Tensor) -> Tensor:
        """Logits (B, K) for normalized images (B, C, H, W)."""
        return self.fc(self.pool(self.conv(images).relu()).flatten(1))


def _check(name: str, value: object, *, odd: bool = False) -> int:
    if not isinstance(value, int) or isinstance(value, bool) or not 0 < value <= 4096:
        raise FreekdError(
            f"shallow-cnn {name} must be an integer in [1, 4096], got {value!r}; "
            "check --arch-kwargs"
        )
    if odd and value % 2 == 0:
        raise FreekdError(
            f"shallow-cnn {name} must be odd (the padding keeps the image size), got {value}; "
            "check --arch-kwargs"
        )
    return value


@MODELS.register("shallow-cnn")
def shallow_cnn(
    *, num_classes: int, input_shape: tuple[int, int, int], width: int = 32, kernel_size: int = 5
) -> nn.Module:
    """The one-convolution network (see the module docstring)."""
    return ShallowCNN(
        num_classes=num_classes,
        input_shape=input_shape,
        width=_check("width", width),
        kernel_size=_check("kernel_size", kernel_size, odd=True),
    )
