"""In-memory labelled image datasets: registered sources, ``.npz`` files and image folders.

Everything a run trains or evaluates on becomes an :class:`ImageDataset`: the whole set as one
``(N, C, H, W)`` tensor (uint8 pixels where the source stores uint8, to save memory) plus int64
labels and class names. :func:`load_dataset` turns the ``--dataset`` strings of the CLI into one:

* a registered name with an optional split, ``name[:split]`` (``mnist``, ``mnist:test``,
  ``fashion-mnist:train``, ``digits``); the names are in :data:`DATASETS`;
* a ``.npz`` file with arrays ``x`` (images) and ``y`` (labels), see :func:`load_npz`;
* an image-folder directory, one subdirectory per class, see :func:`load_image_folder`.

The named sources (offline ``digits``, ``mnist``, ``fashion-mnist``, ``animal-mnist``; torchvision
``cifar10``, ``cifar100``, ``svhn``) are in :mod:`freekd.data.named`, which registers them here.
Their loaders cache what they decoded, but cached tensors are never handed out: every
:class:`ImageDataset` owns a fresh copy, so callers may modify its tensors in place without
corrupting later loads.
"""

from __future__ import annotations

import hashlib
import math
import pickle
import zipfile
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

import numpy as np
import torch
from torch import Tensor
from torch.utils.data import Dataset

from freekd.data.batch import Batch
from freekd.errors import FreekdError, UnknownNameError, check_regular_file
from freekd.registry import Registry


@dataclass(eq=False, repr=False)
class ImageDataset(Dataset[tuple[Tensor, int]]):
    """A labelled image set held in memory.

    Validated on construction; a problem raises :class:`~freekd.errors.FreekdError`. Floating
    images are stored as float32 and labels as int64.

    Args:
        images: (N, C, H, W) uint8 pixels 0–255, or floating values in [0, 1].
        labels: (N,) integer class indices in ``[0, len(classes))``.
        classes: class names; label ``k`` means ``classes[k]``.
        name: where the data came from, for messages and reports (``"mnist:test"``, a file path).
    """

    images: Tensor
    labels: Tensor
    classes: list[str]
    name: str

    def __post_init__(self) -> None:
        self.classes = [str(class_name) for class_name in self.classes]
        self.images, self.labels = _validated(self.images, self.labels, self.classes, self.name)

    @property
    def num_classes(self) -> int:
        """Number of classes, ``len(classes)``."""
        return len(self.classes)

    @property
    def input_shape(self) -> tuple[int, int, int]:
        """Shape of one image, ``(C, H, W)``."""
        channels, height, width = self.images.shape[1:]
        return int(channels), int(height), int(width)

    def __len__(self) -> int:
        return int(self.images.shape[0])

    def __getitem__(self, index: int) -> tuple[Tensor, int]:
        """One ``(C, H, W)`` float image in [0, 1] and its label, for ``torch.utils.data``."""
        return _as_float(self.images[index]), int(self.labels[index])

    def batch(self, indices: Tensor | Sequence[int]) -> Batch:
        """The samples at ``indices`` as a :class:`Batch` of float32 images in [0, 1].

        Args:
            indices: 1-D integer positions (or a boolean mask of length N).

        Returns:
            A batch whose tensors are new (uint8 pixels are divided by 255).
        """
        index = _as_index(indices)
        return Batch(_as_float(self.images[index]), self.labels[index])

    def subset(self, indices: Tensor | Sequence[int]) -> ImageDataset:
        """A new dataset holding copies of the samples at ``indices`` (same classes and name).

        Args:
            indices: 1-D integer positions (or a boolean mask of length N); must select something.
        """
        index = _as_index(indices)
        return ImageDataset(self.images[index], self.labels[index], list(self.classes), self.name)

    def __repr__(self) -> str:
        return (
            f"ImageDataset(name={self.name!r}, size={len(self)}, input_shape={self.input_shape}, "
            f"num_classes={self.num_classes}, dtype={self.images.dtype})"
        )


def _as_index(indices: Tensor | Sequence[int]) -> Tensor:
    index = indices if isinstance(indices, Tensor) else torch.as_tensor(indices, dtype=torch.long)
    if index.dim() != 1:
        raise ValueError(f"indices must be 1-D, got shape {tuple(index.shape)}")
    return index


def _as_float(images: Tensor) -> Tensor:
    if images.dtype == torch.uint8:
        return images.to(torch.float32).div_(255.0)
    return images


def _validated(
    images: Tensor, labels: Tensor, classes: list[str], name: str
) -> tuple[Tensor, Tensor]:
    """Checks an image set and returns it as (uint8 or float32 images, int64 labels)."""
    if not isinstance(images, Tensor) or not isinstance(labels, Tensor):
        raise FreekdError(f"dataset {name!r}: images and labels must be torch tensors")
    if images.dim() != 4:
        raise FreekdError(
            f"dataset {name!r}: images must be (N, C, H, W), got shape {tuple(images.shape)}; "
            "add the missing channel or batch dimension"
        )
    if images.shape[0] == 0:
        raise FreekdError(f"dataset {name!r} is empty; give it at least one image")
    if labels.dim() != 1 or labels.shape[0] != images.shape[0]:
        raise FreekdError(
            f"dataset {name!r}: {images.shape[0]} images but labels of shape "
            f"{tuple(labels.shape)}; give one integer label per image"
        )
    if labels.is_floating_point() or labels.is_complex() or labels.dtype == torch.bool:
        raise FreekdError(
            f"dataset {name!r}: labels have dtype {labels.dtype}; use integer class indices"
        )
    if not classes:
        raise FreekdError(f"dataset {name!r} has no class names; give one name per class")
    if images.dtype != torch.uint8:
        if not images.is_floating_point():
            raise FreekdError(
                f"dataset {name!r}: images have dtype {images.dtype}; "
                "use uint8 pixels 0-255 or float values in [0, 1]"
            )
        images = images.to(torch.float32)
        # One pass: NaN propagates into both extremes and an infinity shows up in one of them.
        low, high = (float(extreme) for extreme in torch.aminmax(images))
        if not (math.isfinite(low) and math.isfinite(high)):
            raise FreekdError(
                f"dataset {name!r}: images contain NaN or infinite values; remove or fix them"
            )
        if low < 0.0 or high > 1.0:
            raise FreekdError(
                f"dataset {name!r}: float images span [{low:g}, {high:g}] but must lie in [0, 1]; "
                "divide 0-255 pixels by 255 or store them as uint8"
            )
    labels = labels.to(torch.int64)
    low_label, high_label = (int(extreme) for extreme in torch.aminmax(labels))
    if low_label < 0 or high_label >= len(classes):
        raise FreekdError(
            f"dataset {name!r}: labels span [{low_label}, {high_label}] but there are "
            f"{len(classes)} classes; labels must be class indices 0..{len(classes) - 1}"
        )
    return images, labels


# ----------------------------------------------------------------------------------------------
# Registry of named sources


class DatasetFactory(Protocol):
    """Builds one split of a named dataset.

    Args:
        split: which part (``"train"``, ``"test"``, ...); an unknown split raises FreekdError.
        root: a torchvision-style data root, or ``None`` for the built-in offline source.
        download: let torchvision fetch missing files into ``root`` (needs a network).
    """

    def __call__(self, split: str, *, root: Path | None, download: bool) -> ImageDataset: ...


DATASETS: Registry[DatasetFactory] = Registry("dataset")


def _check_split(dataset: str, split: str, known: Sequence[str]) -> None:
    if split not in known:
        raise FreekdError(
            f"unknown split {split!r} for dataset {dataset!r}; known splits: {', '.join(known)} "
            f"(write e.g. '{dataset}:{known[-1]}')"
        )


def _make(
    dataset: str,
    split: str,
    images: Tensor,
    labels: Tensor,
    classes: Sequence[str],
    index: Tensor | None = None,
) -> ImageDataset:
    """An ImageDataset over (a copy of) cached tensors; the cache itself is never handed out."""
    if index is None:
        images, labels = images.clone(), labels.clone()
    else:
        images, labels = images[index], labels[index]  # advanced indexing copies
    return ImageDataset(images, labels, list(classes), f"{dataset}:{split}")


def _one_line(error: BaseException) -> str:
    lines = str(error).strip().splitlines()
    return lines[0] if lines else type(error).__name__


# ----------------------------------------------------------------------------------------------
# Files and folders


def _npz_array(archive: Any, key: str, path: Path) -> np.ndarray:
    try:
        return np.asarray(archive[key])
    except ValueError as error:
        if "allow_pickle" in str(error) or "Object arrays" in str(error):
            raise FreekdError(
                f"{path}: array {key!r} holds Python objects, which are not loaded (unpickling can "
                "run code); save plain numeric arrays (uint8 or float images, integer labels)"
            ) from None
        raise FreekdError(
            f"{path} is not a valid .npz file ({_one_line(error)}); "
            "write it with numpy.savez(path, x=images, y=labels)"
        ) from None
    except (OSError, EOFError, zipfile.BadZipFile) as error:
        raise FreekdError(
            f"{path} is not a valid .npz file ({_one_line(error)}); "
            "write it with numpy.savez(path, x=images, y=labels)"
        ) from None


def _images_to_nchw(x: np.ndarray, path: Path) -> np.ndarray:
    if x.ndim == 3:
        return x[:, None]
    if x.ndim == 4:
        channels_last = x.shape[3] in (1, 3) and x.shape[1] not in (1, 3)
        return np.ascontiguousarray(x.transpose(0, 3, 1, 2)) if channels_last else x
    raise FreekdError(
        f"{path}: x has shape {x.shape}; images must be [N, H, W], [N, C, H, W] or [N, H, W, C]"
    )


def _inferred_class_count(y: np.ndarray, path: Path) -> int:
    """K = max(y) + 1 for labels 0..K-1 without a ``classes`` array, refusing a gap-riddled set.

    A held-out sample may miss a few classes, but when most of the K classes the largest label
    implies have no image at all (a stray 99 among digits), K is a typo, not a class count: the
    model would get K outputs, most of them never trained. Naming the classes fixes K explicitly.
    """
    count = int(y.max()) + 1
    present = len(np.unique(y))
    if 2 * present < count:
        raise FreekdError(
            f"{path}: labels must be class indices 0..K-1, but y holds {present} distinct labels "
            f"and its largest, {count - 1}, makes {count} classes, {count - present} of them "
            "without an image; renumber y as 0..K-1 (or save the K class names as classes=...)"
        )
    return count


def load_npz(path: Path) -> ImageDataset:
    """A dataset from a ``.npz`` file, loaded with ``allow_pickle=False``.

    Arrays: ``x`` images as ``[N, H, W]`` or ``[N, C, H, W]`` (``[N, H, W, C]`` with C in {1, 3} is
    recognised when the second dimension is not 1 or 3), uint8 0–255 (kept as uint8) or floating
    0–1; ``y`` integer labels ``[N]``; optionally ``classes``, a string array of class names
    (otherwise the names are ``"0" .. str(max(y))``).

    Raises:
        FreekdError: the file is missing or not an npz, lacks ``x`` or ``y``, holds object arrays,
            or its arrays have the wrong shape, dtype or values.
    """
    path = Path(path)
    check_regular_file(path, "dataset")
    if not path.is_file():
        raise FreekdError(f"no such file: {path}; check the path")
    fix = "write it with numpy.savez(path, x=images, y=labels)"
    try:
        archive = np.load(path, allow_pickle=False)
    except (OSError, ValueError, EOFError, zipfile.BadZipFile, pickle.UnpicklingError) as error:
        raise FreekdError(f"{path} is not a valid .npz file ({_one_line(error)}); {fix}") from None
    if not isinstance(archive, np.lib.npyio.NpzFile):  # a single .npy array
        raise FreekdError(f"{path} is a .npy array, not a .npz archive; {fix}")
    with archive:
        keys = list(archive.files)
        for key in ("x", "y"):
            if key not in keys:
                raise FreekdError(
                    f"{path} has no array {key!r} (found: {', '.join(keys) or 'none'}); {fix}"
                )
        x = _npz_array(archive, "x", path)
        y = _npz_array(archive, "y", path)
        names = _npz_array(archive, "classes", path) if "classes" in keys else None
    x = _images_to_nchw(x, path)
    if x.shape[0] == 0:
        raise FreekdError(f"{path}: x holds no images; save at least one")
    if x.dtype != np.uint8 and x.dtype.kind != "f":
        raise FreekdError(
            f"{path}: x has dtype {x.dtype}; save uint8 pixels 0-255 or float images in [0, 1]"
        )
    if y.ndim != 1 or y.dtype.kind not in "iu":
        raise FreekdError(
            f"{path}: y has shape {y.shape} and dtype {y.dtype}; save a 1-D integer array of "
            "class indices"
        )
    if len(y) != len(x):
        raise FreekdError(f"{path}: {len(x)} images in x but {len(y)} labels in y; make them match")
    if len(y) and int(y.min()) < 0:
        raise FreekdError(f"{path}: y holds negative label {int(y.min())}; use indices 0..K-1")
    if names is not None:
        if names.ndim != 1 or names.dtype.kind != "U":
            raise FreekdError(f"{path}: classes must be a 1-D string array of class names")
        classes = [str(class_name) for class_name in names]
    else:
        classes = [str(class_index) for class_index in range(_inferred_class_count(y, path))]
    images = torch.from_numpy(np.ascontiguousarray(x))
    return ImageDataset(images, torch.from_numpy(y.astype(np.int64)), classes, str(path))


def load_image_folder(directory: Path) -> ImageDataset:
    """A dataset from an image-folder directory (``torchvision.datasets.ImageFolder`` layout).

    Each subdirectory is a class (sorted names → labels 0..K-1) and holds that class's images. All
    images are decoded into memory as uint8: one channel if every image has PIL mode ``"L"``, else
    converted to RGB. They must all have the same size.

    Raises:
        FreekdError: no class folders or images, an unreadable image, or images of different sizes.
    """
    from PIL import Image, UnidentifiedImageError
    from torchvision.datasets import ImageFolder

    directory = Path(directory)
    try:
        folder = ImageFolder(str(directory))
    except (FileNotFoundError, OSError) as error:
        raise FreekdError(
            f"{directory} is not an image folder ({_one_line(error)}); put each class's images in "
            f"its own subdirectory, e.g. {directory / 'cat' / '0001.png'}"
        ) from None
    decoded = []
    for file_name, _ in folder.samples:
        try:
            with Image.open(file_name) as image:
                image.load()
                decoded.append(image)
        except (OSError, UnidentifiedImageError) as error:
            raise FreekdError(
                f"cannot read image {file_name} ({_one_line(error)}); fix or remove it"
            ) from None
    mode = "L" if all(image.mode == "L" for image in decoded) else "RGB"
    first_size = decoded[0].size
    arrays = []
    for image, (file_name, _) in zip(decoded, folder.samples, strict=True):
        if image.size != first_size:
            raise FreekdError(
                f"{directory}: {file_name} is {image.size[0]}x{image.size[1]} but "
                f"{folder.samples[0][0]} is {first_size[0]}x{first_size[1]}; resize all images "
                "to one size"
            )
        arrays.append(np.asarray(image.convert(mode), dtype=np.uint8))
    stacked = np.stack(arrays)
    images = stacked[:, None] if mode == "L" else stacked.transpose(0, 3, 1, 2)
    labels = torch.tensor(folder.targets, dtype=torch.int64)
    return ImageDataset(
        torch.from_numpy(np.ascontiguousarray(images)), labels, list(folder.classes), str(directory)
    )


# ----------------------------------------------------------------------------------------------
# Entry point


def _looks_like_path(spec: str) -> bool:
    return (
        "/" in spec
        or "\\" in spec
        or spec.startswith((".", "~"))
        or Path(spec).suffix.lower() in (".npz", ".npy")
    )


def pool_fingerprint(images: Tensor, labels: Tensor) -> str:
    """SHA-256 of a pool's pixels (8-bit) and labels: which images these are, whatever file
    or folder they came from (an audit's shadow outputs, a PATE student's query pool)."""
    digest = hashlib.sha256()
    if images.dtype == torch.uint8:
        pixels = images.contiguous()
    else:
        pixels = (images.clamp(0, 1) * 255).round().to(torch.uint8).contiguous()
    digest.update(pixels.numpy().tobytes())
    digest.update(labels.to(torch.int64).contiguous().numpy().tobytes())
    return digest.hexdigest()


def load_dataset(
    spec: str,
    *,
    default_split: str = "train",
    root: Path | None = None,
    download: bool = False,
) -> ImageDataset:
    """The dataset a ``--dataset``-style string names.

    ``spec`` is tried in this order: a registered name with an optional ``:split``
    (``mnist:test``; a bare name gets ``default_split``), then an existing directory (image folder,
    :func:`load_image_folder`), then an existing file (``.npz``, :func:`load_npz`). A registered
    name wins over a same-named directory; write ``./mnist`` to mean the directory.

    Args:
        spec: ``name[:split]``, a ``.npz`` path or an image-folder path.
        default_split: split used when a registered name has no ``:split``.
        root: torchvision-style data root for the registered datasets (needed by ``cifar10``,
            ``cifar100`` and ``svhn``; optional for ``mnist`` and ``fashion-mnist``).
        download: let torchvision download missing files into ``root`` (needs a network).

    Returns:
        A dataset whose tensors the caller owns (they are not shared with the loader cache).

    Raises:
        FreekdError: a path that does not exist, an unreadable file, an unknown split, or data
            that fails validation; :class:`~freekd.errors.UnknownNameError` for an unknown name.
    """
    if not spec.strip():
        raise FreekdError(
            f"empty dataset; pass a dataset name ({', '.join(DATASETS.names())}), "
            "a .npz file or an image folder"
        )
    name, separator, split = spec.partition(":")
    if name in DATASETS:
        factory = DATASETS.get(name)
        root_path = None if root is None else Path(root)
        return factory(split if separator else default_split, root=root_path, download=download)
    path = Path(spec).expanduser()
    if path.is_dir():
        return load_image_folder(path)
    if path.exists():
        return load_npz(path)
    if _looks_like_path(spec):
        raise FreekdError(
            f"no such file or directory: {spec}; pass an existing .npz file or image folder, "
            f"or a dataset name ({', '.join(DATASETS.names())})"
        )
    raise UnknownNameError(
        f"unknown dataset {name!r}; known: {', '.join(DATASETS.names())}; "
        "or pass an existing .npz file or image-folder directory"
    )
