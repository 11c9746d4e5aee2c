"""DeepInversion on the tiny digits teacher: statistics, targets, memory bank, augmentation, CLI."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from torchvision import transforms
from typer.testing import CliRunner

from freekd.cli import app
from freekd.config import TeacherSourceConfig
from freekd.datafree.batches import (
    MemoryBank,
    balanced_targets,
    jitter_flip,
    mix_pairs,
    random_shift,
)
from freekd.datafree.bn_hooks import batchnorm_statistics
from freekd.datafree.synthesizers.deepinversion import DeepInversion
from freekd.errors import FreekdError
from freekd.losses.inversion import bn_statistics
from freekd.teachers import Teacher, load_teacher
from tests.datafree.test_contract import SHAPE, make_student


@pytest.fixture(scope="module")
def teacher(tiny_teacher_path: Path) -> Teacher:
    return load_teacher(TeacherSourceConfig(path=str(tiny_teacher_path)))


def make(seed: int = 0, **params: object) -> DeepInversion:
    values: dict[str, object] = {"batch_size": 64, "iterations": 40}
    values.update(params)
    return DeepInversion(
        image_shape=SHAPE,
        num_classes=10,
        rng=torch.Generator().manual_seed(seed),
        device=torch.device("cpu"),
        **values,  # type: ignore[arg-type]
    )


def r_feature(teacher: Teacher, images: torch.Tensor) -> float:
    with torch.no_grad(), batchnorm_statistics(teacher) as s:
        teacher(images)
    return float(
        bn_statistics(s.batch_means, s.batch_variances, s.running_means, s.running_variances)
    )


def target_probability(teacher: Teacher, synthesizer: DeepInversion) -> float:
    assert synthesizer.memory.images is not None
    with torch.no_grad():
        probabilities = teacher(synthesizer.memory.images[-synthesizer.batch_size :]).softmax(1)
    return float(probabilities.gather(1, synthesizer.targets[:, None]).mean())


@pytest.fixture(scope="module")
def synthesized(teacher: Teacher) -> DeepInversion:
    """One 40-iteration batch of 64 images against a fresh student (about a second)."""
    synthesizer = make()
    synthesizer.synthesize(teacher, make_student())
    return synthesizer


def test_synthesis_brings_batchnorm_statistics_towards_the_running_statistics(
    teacher: Teacher, synthesized: DeepInversion
) -> None:
    noise = torch.sigmoid(torch.randn((64, *SHAPE), generator=torch.Generator().manual_seed(5)))
    before = r_feature(teacher, noise)
    after = r_feature(teacher, synthesized.sample(64))
    assert after < 0.5 * before, (before, after)


def test_teacher_confidence_on_the_requested_targets_rises(
    teacher: Teacher, synthesized: DeepInversion
) -> None:
    almost_noise = make(iterations=1)  # same seed: the same initial noise and targets
    almost_noise.synthesize(teacher, make_student())
    assert torch.equal(almost_noise.targets, synthesized.targets)
    before = target_probability(teacher, almost_noise)
    after = target_probability(teacher, synthesized)
    assert before < 0.3
    assert after > 0.8, (before, after)


def test_counters_and_samples_come_from_the_bank(synthesized: DeepInversion) -> None:
    assert synthesized.images_synthesized == 64
    assert synthesized.teacher_queries == 40 * 64
    assert synthesized.memory.images is not None
    images = synthesized.sample(10)
    bank = synthesized.memory.images.flatten(1)
    assert all(bool((bank == image.flatten()).all(dim=1).any()) for image in images)
    assert synthesized.images_synthesized == 64  # drawing from the bank synthesizes nothing


def test_synthesis_leaves_no_gradient_on_the_student(teacher: Teacher) -> None:
    student = make_student()
    make(iterations=2, batch_size=16).synthesize(teacher, student)
    assert all(p.grad is None for p in student.parameters())


def test_memory_bank_is_first_in_first_out_with_a_capacity(teacher: Teacher) -> None:
    synthesizer = make(iterations=1, batch_size=16, memory_size=40)
    batches = []
    for _ in range(3):
        synthesizer.synthesize(teacher, make_student())
        assert synthesizer.memory.images is not None
        batches.append(synthesizer.memory.images[-16:].clone())
    assert len(synthesizer.memory) == 40
    torch.testing.assert_close(
        synthesizer.memory.images, torch.cat([batches[0][8:], batches[1], batches[2]])
    )


def test_an_empty_bank_refuses_to_sample() -> None:
    with pytest.raises(FreekdError, match="call synthesize"):
        MemoryBank(10).sample(2, torch.Generator())
    with pytest.raises(FreekdError, match="memory_size"):
        MemoryBank(0)


@pytest.mark.parametrize(("jitter", "flip"), [(0, False), (2, False), (0, True), (3, True)])
def test_jitter_and_flip_keep_shapes_and_pixels(jitter: int, flip: bool) -> None:
    images = torch.rand((4, *SHAPE), generator=torch.Generator().manual_seed(0))
    moved = jitter_flip(images, jitter=jitter, flip=flip, rng=torch.Generator().manual_seed(1))
    assert moved.shape == images.shape
    # A cyclic shift and a mirror only move pixels around.
    torch.testing.assert_close(moved.flatten(1).sort().values, images.flatten(1).sort().values)
    if jitter == 0 and not flip:
        assert torch.equal(moved, images)


def test_jitter_shifts_by_at_most_jitter_pixels() -> None:
    image = torch.zeros((1, 1, 8, 8))
    image[0, 0, 4, 4] = 1
    rng = torch.Generator().manual_seed(0)
    for _ in range(20):
        row, column = divmod(int(jitter_flip(image, jitter=2, flip=False, rng=rng).argmax()), 8)
        assert abs(row - 4) <= 2
        assert abs(column - 4) <= 2


@pytest.mark.parametrize("pixels", [1, 2, 4])
def test_random_shift_is_torchvisions_padded_random_crop_per_image(pixels: int) -> None:
    images = torch.rand((12, 3, 9, 7), generator=torch.Generator().manual_seed(0))
    shifted = random_shift(images, pixels=pixels, rng=torch.Generator().manual_seed(1))
    # The same offsets, drawn again, through torchvision's crop of the zero-padded image.
    offsets = torch.randint(0, 2 * pixels + 1, (12, 2), generator=torch.Generator().manual_seed(1))
    for image, moved, (top, left) in zip(images, shifted, offsets.tolist(), strict=True):
        padded = transforms.functional.pad(image, [pixels])
        expected = transforms.functional.crop(padded, top, left, 9, 7)
        assert torch.equal(moved, expected)
    assert len({tuple(o) for o in offsets.tolist()}) > 1  # the images moved differently


def test_random_shift_of_zero_pixels_is_the_identity_and_negative_refuses() -> None:
    images = torch.rand((3, *SHAPE))
    assert random_shift(images, pixels=0, rng=torch.Generator()) is images
    with pytest.raises(ValueError, match="non-negative"):
        random_shift(images, pixels=-1, rng=torch.Generator())


@pytest.mark.parametrize("fraction", [0.25, 0.5, 1.0])
def test_mix_pairs_is_mixup_on_the_drawn_share_of_the_batch(fraction: float) -> None:
    images = torch.rand((8, *SHAPE), generator=torch.Generator().manual_seed(0))
    mixed = mix_pairs(images, fraction=fraction, rng=torch.Generator().manual_seed(1))
    # The same draws again, by hand: which images, their partners, their coefficients.
    rng = torch.Generator().manual_seed(1)
    count = {0.25: 2, 0.5: 4, 1.0: 8}[fraction]
    chosen = torch.randperm(8, generator=rng)[:count].tolist()
    partners = torch.randint(8, (count,), generator=rng).tolist()
    weights = torch.rand(count, generator=rng).tolist()
    expected = images.clone()
    for i, j, w in zip(chosen, partners, weights, strict=True):
        expected[i] = w * images[i] + (1 - w) * images[j]
    torch.testing.assert_close(mixed, expected)
    untouched = sorted(set(range(8)) - set(chosen))
    assert torch.equal(mixed[untouched], images[untouched])
    assert float(mixed.min()) >= 0
    assert float(mixed.max()) <= 1
    assert float(images.mean()) != pytest.approx(float(mixed.mean()), abs=1e-7)


def test_mix_pairs_of_nothing_is_the_identity_and_out_of_range_refuses() -> None:
    images = torch.rand((3, *SHAPE))
    assert mix_pairs(images, fraction=0.0, rng=torch.Generator()) is images
    assert torch.equal(mix_pairs(images[:1], fraction=1.0, rng=torch.Generator()), images[:1])
    # round(0.07 · 100) = 7 images mixed (a float product of 7.000000000000001 is not 8).
    many = torch.rand((100, *SHAPE), generator=torch.Generator().manual_seed(2))
    mixed = mix_pairs(many, fraction=0.07, rng=torch.Generator().manual_seed(3))
    changed = sum(not torch.equal(a, b) for a, b in zip(many, mixed, strict=True))
    assert 5 <= changed <= 7  # an image mixed with itself may come out unchanged
    for bad in (-0.1, 1.5):
        with pytest.raises(ValueError, match=r"\[0, 1\]"):
            mix_pairs(images, fraction=bad, rng=torch.Generator())


def test_balanced_targets_cover_every_class() -> None:
    targets = balanced_targets(25, 10, torch.Generator().manual_seed(0))
    counts = torch.bincount(targets, minlength=10)
    assert int(counts.min()) == 2
    assert int(counts.max()) == 3


def test_balanced_targets_draw_which_classes_get_one_more() -> None:
    """A batch smaller than the class count (a big teacher's batch cut to fit in memory) asked
    for classes 0 … n−1 every round, and the remainder of a larger batch always went to the
    lowest classes."""
    small = [balanced_targets(4, 1000, torch.Generator().manual_seed(s)) for s in range(5)]
    assert all(len(set(t.tolist())) == 4 for t in small)
    assert len({c for t in small for c in t.tolist()}) > 10
    extra = torch.stack(
        [torch.bincount(balanced_targets(25, 10, torch.Generator().manual_seed(s)), minlength=10)
         for s in range(20)]
    )  # fmt: skip
    assert bool(((extra == 2) | (extra == 3)).all())
    assert bool((extra == 3).any(0).all())  # every class gets the extra draw at some seed


def test_cli_refuses_a_batchnorm_free_teacher_in_one_line(tmp_path: Path) -> None:
    from tests.teachers.user_net import UserNet

    torch.manual_seed(0)
    path = tmp_path / "user.pt"
    torch.save(UserNet(num_classes=10).state_dict(), path)
    result = CliRunner().invoke(
        app,
        [
            "datafree",
            "--teacher",
            str(path),
            "--arch",
            "tests.teachers.user_net:UserNet",
            "--input-shape",
            "1,8,8",
            "--num-classes",
            "10",
            "--student",
            "tiny-cnn-nobn",
            "--method",
            "deepinversion",
            "--out",
            str(tmp_path / "run"),
        ],
    )
    assert result.exit_code == 2
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    assert len(lines) == 1, result.stderr
    usable = lines[0].split("use one of:")[1]
    assert "dafl" in usable
    assert "deepinversion" not in usable
    assert "fast" not in usable
    assert not (tmp_path / "run").exists()
