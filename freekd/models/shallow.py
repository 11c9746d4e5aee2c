"""A network of one convolution: ``shallow-cnn``, a student for teachers of that shape.

``shallow-cnn`` is one k×k convolution with "same" padding (32 maps of 5×5 by default), ReLU,
a 4×4 max-pool (``pool="avg"``: an average pool) and a linear classifier: 16,522 parameters for
1×28×28 inputs and 10 classes, about LeNet-5-half's 15,738. It has the shape of the
one-convolution MNIST classifiers users write (a wide 7×7 layer, a pool, a linear layer) and of
the zoo teachers with a single convolution, whose default data-free student it is
(``models.students``; ``experiments/2026-12-datafree-zoo``, session 40).
"""

from __future__ import annotations

import math

from torch import Tensor, nn

from freekd.errors import FreekdError
from freekd.models.factory import MODELS

#: Side of the pooling window (and its stride).
POOL = 4
#: The pooling kinds (``pool``).
POOLS = ("max", "avg")


class ShallowCNN(nn.Module):
    """Conv k×k ("same" padding) → ReLU → 4×4 max- or average pool (ceil mode) → linear.

    Args:
        num_classes: number of logits K.
        input_shape: (C, H, W) of the (normalized) input; the linear layer sees every pooled map.
        width: output channels of the convolution.
        kernel_size: odd side of the convolution's kernel.
        pool: ``"max"`` or ``"avg"``.

    Shapes:
        input (B, C, H, W) → output (B, K).
    """

    def __init__(
        self,
        *,
        num_classes: int,
        input_shape: tuple[int, int, int],
        width: int,
        kernel_size: int,
        pool: str = "max",
    ) -> None:
        super().__init__()
        channels, height, width_pixels = input_shape
        self.conv = nn.Conv2d(channels, width, kernel_size=kernel_size, padding=kernel_size // 2)
        # ceil mode keeps sides below 4 valid
        self.pool: nn.Module = (
            nn.MaxPool2d(POOL, ceil_mode=True)
            if pool == "max"
            else nn.AvgPool2d(POOL, ceil_mode=True)
        )
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
    *,
    num_classes: int,
    input_shape: tuple[int, int, int],
    width: int = 32,
    kernel_size: int = 5,
    pool: str = "max",
) -> nn.Module:
    """The one-convolution network (see the module docstring)."""
    if pool not in POOLS:
        raise FreekdError(
            f"shallow-cnn pool must be one of {', '.join(POOLS)}, got {pool!r}; check --arch-kwargs"
        )
    return ShallowCNN(
        num_classes=num_classes,
        input_shape=input_shape,
        width=_check("width", width),
        kernel_size=_check("kernel_size", kernel_size, odd=True),
        pool=pool,
    )
