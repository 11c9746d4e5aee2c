"""Small baseline networks: a multilayer perceptron and a tiny CNN for fast tests.

* ``mlp``: flatten, then fully-connected layers with ReLU (default hidden sizes 256 and 128). It is
  tied to the ``input_shape`` it was built for, since its first layer sees every pixel.
* ``tiny-cnn``: two conv3×3-BN-ReLU blocks (16 and 32 channels) with a 2×2 max-pool between them,
  adaptive average pooling and a linear layer; 5,178 parameters for 1×8×8 inputs and 10 classes.
  Made for sub-second tests on the bundled 8×8 digits, and its BatchNorm layers are what
  DeepInversion-style synthesizers (Yin et al. 2020, arXiv:1912.08795) match statistics against.
* ``tiny-cnn-nobn``: the same without BatchNorm (the convolutions get biases instead), for
  synthesizers and tests that must work on teachers without BN statistics.
"""

from __future__ import annotations

from collections.abc import Sequence

from torch import Tensor, nn

from freekd.errors import FreekdError
from freekd.models.factory import MODELS


class MultilayerPerceptron(nn.Module):
    """Flatten, then Linear-ReLU layers and a final Linear.

    Args:
        num_classes: number of logits K.
        input_features: C·H·W of the input images.
        hidden: sizes of the hidden layers, in order.

    Shapes:
        input (B, C, H, W) with C·H·W = ``input_features`` → output (B, K).
    """

    def __init__(self, *, num_classes: int, input_features: int, hidden: Sequence[int]) -> None:
        super().__init__()
        layers: list[nn.Module] = [nn.Flatten()]
        features = input_features
        for width in hidden:
            layers += [nn.Linear(features, width), nn.ReLU(inplace=True)]
            features = width
        layers.append(nn.Linear(features, num_classes))
        self.layers = nn.Sequential(*layers)

    def forward(self, images: Tensor) -> Tensor:
        """Logits (B, K) for normalized images (B, C, H, W)."""
        return self.layers(images)


class TinyCNN(nn.Module):
    """Two conv3×3(-BN)-ReLU blocks, max-pool, adaptive average pool, linear.

    Args:
        num_classes: number of logits K.
        in_channels: channels C of the (normalized) input.
        channels: output channels of the two convolutions.
        batch_norm: whether each convolution is followed by BatchNorm (then it has no bias).

    Shapes:
        input (B, C, H, W), any H, W ≥ 1 → output (B, K).
    """

    def __init__(
        self,
        *,
        num_classes: int,
        in_channels: int,
        channels: tuple[int, int] = (16, 32),
        batch_norm: bool = True,
    ) -> None:
        super().__init__()
        first_channels, second_channels = channels

        def block(inputs: int, outputs: int) -> list[nn.Module]:
            convolution = nn.Conv2d(inputs, outputs, kernel_size=3, padding=1, bias=not batch_norm)
            norm: list[nn.Module] = [nn.BatchNorm2d(outputs)] if batch_norm else []
            return [convolution, *norm, nn.ReLU(inplace=True)]

        self.features = nn.Sequential(
            *block(in_channels, first_channels),
            nn.MaxPool2d(kernel_size=2, ceil_mode=True),  # ceil_mode keeps 1×1 inputs valid
            *block(first_channels, second_channels),
            nn.AdaptiveAvgPool2d(1),
        )
        self.fc = nn.Linear(second_channels, num_classes)

    def forward(self, images: Tensor) -> Tensor:
        """Logits (B, K) for normalized images (B, C, H, W)."""
        return self.fc(self.features(images).flatten(1))


def _check_positive_sizes(name: str, sizes: Sequence[int]) -> tuple[int, ...]:
    if (
        isinstance(sizes, str | bytes)
        or len(sizes) > 1000  # building 200,000 layers hangs before any size check
        or not all(isinstance(s, int) and not isinstance(s, bool) and s > 0 for s in sizes)
    ):
        raise FreekdError(
            f"{name} must be a list of at most 1,000 positive integers, got {sizes!r}; "
            "check --arch-kwargs"
        )
    return tuple(sizes)


@MODELS.register("mlp")
def mlp(
    *, num_classes: int, input_shape: tuple[int, int, int], hidden: Sequence[int] = (256, 128)
) -> nn.Module:
    """A ReLU multilayer perceptron over the flattened ``input_shape`` image."""
    channels, height, width = input_shape
    return MultilayerPerceptron(
        num_classes=num_classes,
        input_features=channels * height * width,
        hidden=_check_positive_sizes("mlp hidden", hidden),
    )


def _tiny_cnn(
    name: str,
    *,
    num_classes: int,
    input_shape: tuple[int, int, int],
    channels: Sequence[int],
    batch_norm: bool,
) -> TinyCNN:
    checked = _check_positive_sizes(f"{name} channels", channels)
    if len(checked) != 2:
        raise FreekdError(
            f"{name} channels must be two integers, got {channels!r}; check --arch-kwargs"
        )
    return TinyCNN(
        num_classes=num_classes,
        in_channels=input_shape[0],
        channels=(checked[0], checked[1]),
        batch_norm=batch_norm,
    )


@MODELS.register("tiny-cnn")
def tiny_cnn(
    *, num_classes: int, input_shape: tuple[int, int, int], channels: Sequence[int] = (16, 32)
) -> nn.Module:
    """The ≈5k-parameter test CNN with BatchNorm."""
    return _tiny_cnn(
        "tiny-cnn",
        num_classes=num_classes,
        input_shape=input_shape,
        channels=channels,
        batch_norm=True,
    )


@MODELS.register("tiny-cnn-nobn")
def tiny_cnn_nobn(
    *, num_classes: int, input_shape: tuple[int, int, int], channels: Sequence[int] = (16, 32)
) -> nn.Module:
    """The ≈5k-parameter test CNN without BatchNorm."""
    return _tiny_cnn(
        "tiny-cnn-nobn",
        num_classes=num_classes,
        input_shape=input_shape,
        channels=channels,
        batch_norm=False,
    )
