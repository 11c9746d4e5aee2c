"""Private-path fixtures: a DP-SGD digits teacher and a small PATE ensemble, trained once."""

from __future__ import annotations

from pathlib import Path

import pytest

from freekd.pate.config import PateTeachersConfig
from freekd.pate.teachers import run_pate_teachers
from freekd.privacy.config import DPConfig
from freekd.runs import RunOptions
from freekd.supervised.config import TeacherTrainConfig
from freekd.supervised.pipeline import run_teacher_train
from tests.conftest import tiny_trainer


@pytest.fixture(scope="session")
def dp_teacher(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("dp") / "teacher"
    config = TeacherTrainConfig(
        dataset="digits",
        arch="tiny-cnn",  # has BatchNorm: replaced by GroupNorm for DP-SGD
        seed=0,
        trainer=tiny_trainer(epochs=6, batch_size=128, lr=1.0, momentum=0.5),
        dp=DPConfig(enabled=True, epsilon=8.0, delta=1e-5, max_grad_norm=1.0),
    )
    run_teacher_train(config, RunOptions(out, quiet=True))
    return out


@pytest.fixture(scope="session")
def teachers(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("pate") / "teachers"
    config = PateTeachersConfig(
        dataset="digits",
        arch="tiny-cnn",
        teachers=8,
        trainer=tiny_trainer(epochs=20, batch_size=16, lr=0.1),
    )
    run_pate_teachers(config, RunOptions(out, quiet=True))
    return out
