"""Classifier architectures and the wrapper every freekd model lives in.

Importing this package registers every architecture in :data:`MODELS`. Networks map normalized
(B, C, H, W) images to (B, K) logits; :class:`ImageClassifier` adds the normalization, so a freekd
model takes [0, 1] images.
"""

from __future__ import annotations

from freekd.models import (  # noqa: F401  (register architectures)
    composite,
    lenet,
    resnet_cifar,
    shallow,
    small,
    wrn,
)
from freekd.models.build import (
    build_model,
    build_within_memory,
    check_arch_name,
    check_model,
    check_trusted_arch,
    count_parameters,
    is_import_path,
    replace_batchnorm,
)
from freekd.models.classifier import ImageClassifier
from freekd.models.factory import MODELS, SMALLER_STUDENT, ModelFactory

__all__ = [
    "MODELS",
    "SMALLER_STUDENT",
    "ImageClassifier",
    "ModelFactory",
    "build_model",
    "build_within_memory",
    "check_arch_name",
    "check_model",
    "check_trusted_arch",
    "is_import_path",
    "count_parameters",
    "replace_batchnorm",
]
