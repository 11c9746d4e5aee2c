"""Shared fixtures: real tiny data (sklearn digits) and a tiny teacher trained on it by freekd."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
import torch
from hypothesis import settings

from freekd.config import TrainerConfig
from freekd.data import ImageDataset, load_dataset
from freekd.supervised.config import TeacherTrainConfig

# `make test` runs one pytest-xdist worker per core: each worker, and every process a test
# starts, uses one thread, or the workers' torch thread pools fight over the cores
# (tried on 2 cores: the suite took longer than with no workers at all).
if os.environ.get("PYTEST_XDIST_WORKER"):
    os.environ["OMP_NUM_THREADS"] = "1"
    torch.set_num_threads(1)


def assert_same_weights(a: torch.nn.Module, b: torch.nn.Module) -> None:
    """The two modules hold the same tensors under the same names, bit for bit."""
    first, second = a.state_dict(), b.state_dict()
    assert list(first) == list(second)
    for name, value in first.items():
        assert torch.equal(value, second[name]), name


settings.register_profile("ci", derandomize=True, deadline=None, max_examples=50)
settings.load_profile("ci")

# Every skip for a missing offline dataset starts with this, so the summary can count them.
MISSING_DATASET = "offline dataset not installed:"
# CI sets it: a missing dataset then fails its tests instead of skipping them.
REQUIRE_DATASETS = "FREEKD_REQUIRE_DATASETS"


def needs_dataset(installed: bool, name: str, install: str) -> pytest.MarkDecorator:
    """Skip a test whose offline dataset is missing, saying how to install it.

    The skip is listed at the end of every run (``pytest_terminal_summary``); with
    ``FREEKD_REQUIRE_DATASETS=1`` (CI) the test runs anyway and fails on the missing data.
    """
    required = os.environ.get(REQUIRE_DATASETS) == "1"
    return pytest.mark.skipif(
        not installed and not required, reason=f"{MISSING_DATASET} {name} ({install})"
    )


def pytest_terminal_summary(terminalreporter: pytest.TerminalReporter) -> None:
    """One visible line per missing dataset, whatever ``-q`` or ``-r`` say."""
    reasons: dict[str, int] = {}
    for report in terminalreporter.stats.get("skipped", []):
        longrepr = report.longrepr
        reason = str(longrepr[2]) if isinstance(longrepr, tuple) else str(longrepr)
        if MISSING_DATASET in reason:
            reason = reason[reason.index(MISSING_DATASET) + len(MISSING_DATASET) :].strip()
            reasons[reason] = reasons.get(reason, 0) + 1
    if reasons:
        terminalreporter.write_sep("=", "tests skipped: offline dataset not installed", yellow=True)
        for reason, count in sorted(reasons.items()):
            terminalreporter.write_line(f"{count} skipped: {reason}", yellow=True)


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
    from freekd.runs import RunOptions
    from freekd.supervised.pipeline import run_teacher_train

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
