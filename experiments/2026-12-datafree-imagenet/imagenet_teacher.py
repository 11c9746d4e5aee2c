"""A user's own factory for an ImageNet-size teacher (no freekd imports), for ``--arch``."""

from __future__ import annotations

from torch import nn
from torchvision.models import resnet18


def resnet18_imagenet(num_classes: int = 1000) -> nn.Module:
    """torchvision's ResNet-18 (BatchNorm, 224×224, 1,000 classes), as a user would build it."""
    return resnet18(weights=None, num_classes=num_classes)
