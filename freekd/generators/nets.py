"""Generator networks: latent codes → images in [0, 1]."""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import Tensor, nn


class Generator(nn.Module):
    """DCGAN-style generator (Radford et al. 2016, arXiv:1511.06434 §3), as DAFL uses it (§3.4).

    z (B, latent_dim) → linear → (B, width, ⌈H/4⌉, ⌈W/4⌉) → [upsample ×2, conv 3×3, BatchNorm,
    LeakyReLU(0.2)] × 2 → conv 3×3 → sigmoid. Sizes that are not multiples of 4 are resized to
    (H, W) before the last convolution. The sigmoid keeps images in [0, 1], the range every freekd
    model takes (models normalize themselves).

    Args:
        latent_dim: size of the latent code z.
        image_shape: (C, H, W) of the images to produce.
        width: channels of the first feature map (halved after the second upsampling).
    """

    def __init__(
        self, *, latent_dim: int = 100, image_shape: tuple[int, int, int], width: int = 128
    ) -> None:
        super().__init__()
        channels, height, width_pixels = image_shape
        self.latent_dim = latent_dim
        self.image_shape = image_shape
        self.base = (math.ceil(height / 4), math.ceil(width_pixels / 4))
        self.project = nn.Sequential(
            nn.Linear(latent_dim, width * self.base[0] * self.base[1]),
        )
        self.project_norm = nn.BatchNorm2d(width)
        self.body = nn.Sequential(
            nn.Upsample(scale_factor=2),
            nn.Conv2d(width, width, 3, padding=1, bias=False),
            nn.BatchNorm2d(width),
            nn.LeakyReLU(0.2, inplace=True),
            nn.Upsample(scale_factor=2),
            nn.Conv2d(width, width // 2, 3, padding=1, bias=False),
            nn.BatchNorm2d(width // 2),
            nn.LeakyReLU(0.2, inplace=True),
        )
        self.head = nn.Conv2d(width // 2, channels, 3, padding=1)
        self.width = width

    def forward(self, latent: Tensor) -> Tensor:
        """(B, latent_dim) codes → (B, C, H, W) images in [0, 1]."""
        features = self.project(latent).view(latent.shape[0], self.width, *self.base)
        features = self.body(self.project_norm(features))
        if tuple(features.shape[-2:]) != tuple(self.image_shape[1:]):
            features = F.interpolate(
                features, size=self.image_shape[1:], mode="bilinear", align_corners=False
            )
        return torch.sigmoid(self.head(features))
