"""Shared fixtures: real tiny data (sklearn digits) and a tiny teacher trained on it by freekd."""

from __future__ import annotations

from pathlib import Path

import pytest
from hypothesis import settings

from freekd.config import TeacherTrainConfig, TrainerConfig
from freekd.data import ImageDataset, load_dataset

settings.register_profile("ci", derandomize=True, deadline=None, max_examples=50)
settings.load_profile("ci")


@pytest.fixture(scope="session")
def digits_train() -> ImageDataset:
    return load_dataset("digits:train")


@pytest.fixture(scope="session")
def digits_test() -> ImageDataset:
    return load_dataset("digits:test")


def tiny_trainer(**changes: object) -> TrainerConfig:
    """A fast loop for tests: CPU, no AMP, few epochs."""
    values: dict[str, object] = {
        "epochs": 2,
        "batch_size": 64,
        "lr": 0.05,
        "device": "cpu",
        "augment": "none",
        "log_every": 5,
        "checkpoint_every": 10,
    }
    values.update(changes)
    return TrainerConfig(**values)  # type: ignore[arg-type]


@pytest.fixture(scope="session")
def tiny_teacher_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A tiny-cnn (with BatchNorm) trained on digits for 15 epochs: a real freekd checkpoint."""
    from freekd.pipelines import RunOptions, run_teacher_train

    out = tmp_path_factory.mktemp("teacher") / "run"
    config = TeacherTrainConfig(
        dataset="digits", arch="tiny-cnn", seed=0, trainer=tiny_trainer(epochs=15, lr=0.1)
    )
    report = run_teacher_train(config, RunOptions(out, quiet=True))
    assert report["test_accuracy"] > 0.9, report
    return out


@pytest.fixture(scope="session")
def tiny_teacher_path(tiny_teacher_dir: Path) -> Path:
    return tiny_teacher_dir / "model.pt"
