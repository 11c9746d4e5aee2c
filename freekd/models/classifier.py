"""The wrapper every freekd model lives in: [0, 1] images in, logits out, normalization inside."""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from typing import Any

import torch
from torch import Tensor, nn

from freekd.errors import FreekdError
from freekd.models.branching import first_conv_channels
from freekd.models.build import (
    build_model,
    check_trusted_arch,
    replace_batchnorm,
    validate_input_shape,
)


class ImageClassifier(nn.Module):
    """A network plus the input normalization it was trained with and the facts to rebuild it.

    Every image tensor between freekd components is in [0, 1]; the classifier normalizes for
    itself, so teachers, students and generators never share a preprocessing assumption.

    The per-channel ``mean``/``std`` are *non-persistent* buffers (they follow ``.to(device)`` but
    are not in ``state_dict()``), so the wrapper's state dict holds only ``net.*`` keys. Checkpoints
    store ``classifier.net.state_dict()`` (no prefix) next to :meth:`metadata`, from which
    :meth:`from_metadata` rebuilds the classifier.

    When the data has one channel but the network's first convolution expects three (a
    ``torchvision:`` ImageNet architecture, or a user network built for RGB), the normalized grey
    channel is repeated three times before the network.

    Args:
        net: the bare network, mapping normalized (B, C', H, W) images to (B, K) logits.
        arch: the architecture string ``net`` was built from (see :func:`build_model`).
        arch_kwargs: the keyword arguments it was built with; plain Python values only (numbers,
            strings, booleans, None, lists, str-keyed dicts), since they go into checkpoints.
        num_classes: number of logits K.
        input_shape: (C, H, W) of the data images.
        mean: per-channel mean of the data, length 1 (broadcast to C) or C.
        std: per-channel standard deviation, length 1 or C, all positive.
        batchnorm_replacement: ``"groupnorm"`` when ``net``'s BatchNorm layers were replaced
            for DP-SGD (``models.build.replace_batchnorm``); recorded so the network rebuilds.

    Attributes:
        expected_channels: input channels C' of ``net``: the first ``nn.Conv2d``'s
            ``in_channels`` if the network has a convolution, else C.

    Shapes:
        input (B, C, H, W) in [0, 1] → output (B, K) logits.
    """

    mean: Tensor  # (1, C, 1, 1) non-persistent buffer
    std: Tensor  # (1, C, 1, 1) non-persistent buffer

    def __init__(
        self,
        net: nn.Module,
        *,
        arch: str,
        arch_kwargs: Mapping[str, Any],
        num_classes: int,
        input_shape: tuple[int, int, int],
        mean: Sequence[float],
        std: Sequence[float],
        batchnorm_replacement: str | None = None,
    ) -> None:
        super().__init__()
        shape = validate_input_shape(input_shape)
        self.batchnorm_replacement = batchnorm_replacement
        channels = shape[0]
        self.net = net
        self.arch = arch
        self.arch_kwargs: dict[str, Any] = _plain_value(dict(arch_kwargs), "arch_kwargs")
        self.num_classes = int(num_classes)
        self.input_shape = shape
        self.mean_values = _per_channel("mean", mean, channels)
        self.std_values = _per_channel("std", std, channels)
        check_normalization(self.mean_values, self.std_values, fix="check the input mean and std")
        self.register_buffer(
            "mean", torch.tensor(self.mean_values).view(1, channels, 1, 1), persistent=False
        )
        self.register_buffer(
            "std", torch.tensor(self.std_values).view(1, channels, 1, 1), persistent=False
        )
        self.expected_channels = first_conv_channels(net) or channels
        self.repeats_grey = channels == 1 and self.expected_channels == 3

    def forward(self, images: Tensor) -> Tensor:
        """Logits (B, K) for images (B, C, H, W) with values in [0, 1]."""
        if images.shape[1] != self.input_shape[0]:
            raise FreekdError(
                f"model {self.arch} takes {self.input_shape[0]}-channel images, got "
                f"{images.shape[1]} channels; check --input-shape"
            )
        normalized = (images - self.mean) / self.std
        if self.repeats_grey:
            normalized = normalized.repeat(1, 3, 1, 1)
        return self.net(normalized)

    def metadata(self) -> dict[str, Any]:
        """What a checkpoint needs to rebuild this classifier; plain Python values only.

        Returns:
            ``{"arch", "arch_kwargs", "num_classes", "input": {"shape", "mean", "std"}}`` with
            ``mean``/``std`` broadcast to one value per channel, plus ``batchnorm_replacement``
            when the network's BatchNorm layers were replaced.
        """
        extra = {}
        if self.batchnorm_replacement is not None:
            extra["batchnorm_replacement"] = self.batchnorm_replacement
        return {
            **extra,
            "arch": self.arch,
            "arch_kwargs": _plain_value(self.arch_kwargs, "arch_kwargs"),
            "num_classes": self.num_classes,
            "input": {
                "shape": list(self.input_shape),
                "mean": list(self.mean_values),
                "std": list(self.std_values),
            },
        }

    @classmethod
    def from_metadata(
        cls,
        metadata: Mapping[str, Any],
        *,
        source: str = "model metadata",
        trust_code: bool = False,
    ) -> ImageClassifier:
        """A freshly initialized classifier described by :meth:`metadata` (load weights after).

        Args:
            metadata: the mapping :meth:`metadata` returns (e.g. read from a file).
            source: where it came from, for messages.
            trust_code: allow an import-path ``arch`` (it runs code); only on the user's word.

        Raises:
            FreekdError: a key is missing, an import-path ``arch`` without ``trust_code``, or the
                architecture cannot be built.
        """
        try:
            arch = metadata["arch"]
            arch_kwargs = dict(metadata.get("arch_kwargs") or {})
            num_classes = metadata["num_classes"]
            input_description = metadata["input"]
            shape = input_description["shape"]
            mean, std = input_description["mean"], input_description["std"]
        except (KeyError, TypeError) as error:
            raise FreekdError(
                f"model metadata is missing {error}; the checkpoint is not a freekd model"
            ) from None
        check_trusted_arch(arch, source=source, trust_code=trust_code)
        input_shape = validate_input_shape(shape)
        net = build_model(
            arch,
            num_classes=num_classes,
            input_shape=input_shape,
            arch_kwargs=arch_kwargs,
            trust_code=trust_code,
        )
        replacement = metadata.get("batchnorm_replacement")
        if replacement is not None:
            net = replace_batchnorm(net, replacement)
        return cls(
            net,
            arch=arch,
            arch_kwargs=arch_kwargs,
            num_classes=num_classes,
            input_shape=input_shape,
            mean=mean,
            std=std,
            batchnorm_replacement=replacement,
        )


def check_normalization(mean: Sequence[float], std: Sequence[float], *, fix: str) -> None:
    """Refuse input normalization no image source has: a mean or std that is not finite, a std
    outside [1e-6, 1e6] or a mean beyond ±1e6 (``(x - mean) / std`` of a [0, 1] pixel would
    overflow, or every prediction would be the same)."""
    if not all(math.isfinite(m) and abs(m) <= 1e6 for m in mean) or not all(
        math.isfinite(s) and 1e-6 <= s <= 1e6 for s in std
    ):
        raise FreekdError(
            f"input normalization mean {list(mean)}, std {list(std)} is not usable (finite "
            f"means within ±1e6, stds in [1e-6, 1e6]); {fix}"
        )


def _per_channel(name: str, values: Sequence[float], channels: int) -> list[float]:
    """``values`` as ``channels`` floats, broadcasting a single value."""
    floats = [float(value) for value in values]
    if len(floats) == 1:
        return floats * channels
    if len(floats) != channels:
        raise FreekdError(
            f"{name} has {len(floats)} values but the input has {channels} channel(s); "
            + ("give 1 value" if channels == 1 else f"give 1 or {channels} values")
        )
    return floats


def _plain_value(value: Any, where: str) -> Any:
    """A deep copy of ``value`` as plain Python (tuples become lists), or a FreekdError."""
    if value is None or isinstance(value, bool | int | float | str):
        return value
    if isinstance(value, list | tuple):
        return [_plain_value(item, where) for item in value]
    if isinstance(value, Mapping):
        if not all(isinstance(key, str) for key in value):
            raise FreekdError(
                f"{where} keys must be strings, got {list(value)}; check --arch-kwargs"
            )
        return {key: _plain_value(item, where) for key, item in value.items()}
    raise FreekdError(
        f"{where} value {value!r} of type {type(value).__name__} cannot be stored in a checkpoint; "
        "use numbers, strings, booleans, lists or dicts in --arch-kwargs"
    )
