"""Datasets, batches and batch augmentations; every image tensor here is in [0, 1] or uint8."""

from __future__ import annotations

from freekd.data import named  # noqa: F401  (registers the named datasets in DATASETS)
from freekd.data.batch import Batch
from freekd.data.datasets import DATASETS, ImageDataset, load_dataset, pool_fingerprint
from freekd.data.transforms import AUGMENTATIONS

__all__ = ["AUGMENTATIONS", "DATASETS", "Batch", "ImageDataset", "load_dataset", "pool_fingerprint"]
