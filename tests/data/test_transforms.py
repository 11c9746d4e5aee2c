"""Batch augmentations: shapes, ranges, reproducibility and what each one actually does."""

from __future__ import annotations

import pytest
import torch
from torch.nn import functional

from freekd.data.transforms import AUGMENTATIONS, random_crop, random_horizontal_flip
from freekd.errors import UnknownNameError


def _images(batch_size: int = 16, channels: int = 3, size: int = 12) -> torch.Tensor:
    return torch.rand(batch_size, channels, size, size, generator=torch.Generator().manual_seed(7))


def test_registered_names() -> None:
    assert AUGMENTATIONS.names() == ["crop", "crop-flip", "none"]
    with pytest.raises(UnknownNameError, match="crop-flip"):
        AUGMENTATIONS.get("cutout")


@pytest.mark.parametrize("name", ["none", "crop", "crop-flip"])
def test_keeps_shape_dtype_range_and_input(name: str) -> None:
    images = _images()
    original = images.clone()
    augmented = AUGMENTATIONS.get(name)(images, rng=torch.Generator().manual_seed(0))
    assert augmented.shape == images.shape
    assert augmented.dtype == images.dtype
    assert float(augmented.min()) >= 0.0
    assert float(augmented.max()) <= 1.0
    torch.testing.assert_close(images, original, rtol=0, atol=0)


@pytest.mark.parametrize("name", ["crop", "crop-flip"])
def test_same_seed_same_output_other_seed_differs(name: str) -> None:
    augmentation = AUGMENTATIONS.get(name)
    images = _images(batch_size=32)
    first = augmentation(images, rng=torch.Generator().manual_seed(1))
    again = augmentation(images, rng=torch.Generator().manual_seed(1))
    other = augmentation(images, rng=torch.Generator().manual_seed(2))
    assert torch.equal(first, again)
    assert not torch.equal(first, other)


def test_none_returns_images_unchanged() -> None:
    images = _images()
    assert torch.equal(AUGMENTATIONS.get("none")(images, rng=torch.Generator()), images)


def test_random_crop_is_a_window_of_the_zero_padded_image() -> None:
    padding = 2
    images = _images(batch_size=24, channels=2, size=6)
    cropped = random_crop(images, rng=torch.Generator().manual_seed(3), padding=padding)
    padded = functional.pad(images, (padding,) * 4)
    offsets = set()
    for sample in range(images.shape[0]):
        windows = [
            (row, column)
            for row in range(2 * padding + 1)
            for column in range(2 * padding + 1)
            if torch.equal(cropped[sample], padded[sample, :, row : row + 6, column : column + 6])
        ]
        assert windows, f"sample {sample} is not a crop of its padded image"
        offsets.add(windows[0])
    assert len(offsets) > 1, "every sample got the same offset"


def test_random_crop_without_padding_is_identity() -> None:
    images = _images()
    assert torch.equal(random_crop(images, rng=torch.Generator(), padding=0), images)


def test_random_crop_rejects_bad_input() -> None:
    with pytest.raises(ValueError, match="padding"):
        random_crop(_images(), rng=torch.Generator(), padding=-1)
    with pytest.raises(ValueError, match=r"\(B, C, H, W\)"):
        random_crop(torch.rand(3, 8, 8), rng=torch.Generator(), padding=2)


def test_horizontal_flip_mirrors_some_samples_and_keeps_the_rest() -> None:
    images = _images(batch_size=64)
    flipped = random_horizontal_flip(images, rng=torch.Generator().manual_seed(0))
    is_mirrored = [torch.equal(flipped[i], images[i].flip(-1)) for i in range(64)]
    is_unchanged = [torch.equal(flipped[i], images[i]) for i in range(64)]
    assert all(m or u for m, u in zip(is_mirrored, is_unchanged, strict=True))
    assert 10 < sum(is_mirrored) < 54


def test_horizontal_flip_probability_extremes() -> None:
    images = _images()
    always = random_horizontal_flip(images, rng=torch.Generator(), probability=1.0)
    never = random_horizontal_flip(images, rng=torch.Generator(), probability=0.0)
    assert torch.equal(always, images.flip(-1))
    assert torch.equal(never, images)
    with pytest.raises(ValueError, match="probability"):
        random_horizontal_flip(images, rng=torch.Generator(), probability=1.5)


def test_gradients_flow_to_the_input() -> None:
    images = _images(batch_size=4).requires_grad_(True)
    AUGMENTATIONS.get("crop-flip")(images, rng=torch.Generator().manual_seed(0)).sum().backward()
    assert images.grad is not None
    assert float(images.grad.abs().sum()) > 0


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_cuda_images_with_cpu_generator_match_cpu_result() -> None:
    images = _images()
    on_cpu = AUGMENTATIONS.get("crop-flip")(images, rng=torch.Generator().manual_seed(5))
    on_gpu = AUGMENTATIONS.get("crop-flip")(images.cuda(), rng=torch.Generator().manual_seed(5))
    assert on_gpu.device.type == "cuda"
    assert torch.equal(on_gpu.cpu(), on_cpu)
