"""Composition-root helpers: augmentation defaults, normalization statistics, run folders."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from freekd.data import ImageDataset
from freekd.errors import FreekdError, UnknownNameError
from freekd.runs import RunOptions, dataset_statistics, prepare_run_dir, resolve_augmentation


def test_auto_augmentation_shifts_only_images_large_enough() -> None:
    assert resolve_augmentation("auto", (1, 28, 28)) == "crop"
    assert resolve_augmentation("auto", (3, 32, 32)) == "crop"
    assert resolve_augmentation("auto", (1, 8, 8)) == "none"
    assert resolve_augmentation("crop-flip", (1, 8, 8)) == "crop-flip"
    with pytest.raises(UnknownNameError, match="known: crop, crop-flip, none"):
        resolve_augmentation("rotate", (1, 28, 28))


def test_dataset_statistics_match_numpy(digits_train: ImageDataset) -> None:
    mean, std = dataset_statistics(digits_train)
    pixels = digits_train.images.double().numpy()
    pixels = pixels / 255 if digits_train.images.dtype.is_floating_point is False else pixels
    assert mean[0] == pytest.approx(float(np.mean(pixels)), abs=1e-5)
    assert std[0] == pytest.approx(float(np.std(pixels)), abs=1e-5)


def test_run_folder_rules(tmp_path: Path) -> None:
    prepare_run_dir(RunOptions(tmp_path / "new"))  # a new folder is fine
    existing = tmp_path / "old"
    existing.mkdir()
    (existing / "model.pt").write_bytes(b"x")
    with pytest.raises(FreekdError, match="already exists; pass --overwrite"):
        prepare_run_dir(RunOptions(existing))
    prepare_run_dir(RunOptions(existing, overwrite=True))
    with pytest.raises(FreekdError, match="nothing to resume"):
        prepare_run_dir(RunOptions(existing, resume=True))
    with pytest.raises(FreekdError, match="exclude each other"):
        prepare_run_dir(RunOptions(existing, resume=True, overwrite=True))
    (tmp_path / "file").write_text("x")
    with pytest.raises(FreekdError, match="is a file"):
        prepare_run_dir(RunOptions(tmp_path / "file"))


@pytest.mark.slow
def test_demo_ends_with_a_data_free_student(tmp_path: Path) -> None:
    """`make demo`'s job, one epoch each: teacher, KD student, data-free student + samples.png."""
    from freekd.demo import run_demo

    reports = run_demo(
        RunOptions(tmp_path / "demo", quiet=True),
        teacher_epochs=1,
        student_epochs=1,
        datafree_epochs=1,
    )
    assert reports["teacher"]["test_accuracy"] > 0.9
    datafree = reports["datafree"]
    assert datafree["method"]["name"] == "zskt"
    assert datafree["synthesized_images"] > 0
    # 200 data-free steps: far from converged, but clearly above chance (0.1).
    assert datafree["student"]["test_accuracy"] > 0.15
    for name in ("model.pt", "report.json", "samples.png", "config.yaml", "metrics.jsonl"):
        assert (tmp_path / "demo" / "datafree" / name).exists(), name
