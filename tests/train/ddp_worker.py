"""Run by tests/train/test_ddp.py under torchrun: train a tiny model, save the final weights."""

from __future__ import annotations

import sys
from pathlib import Path

import torch

from freekd.config import TrainerConfig
from freekd.runs import RunOptions
from freekd.supervised.config import TeacherTrainConfig
from freekd.supervised.pipeline import run_teacher_train


def distill(out: Path, teacher: str) -> None:
    """FitNets between named layers: the student under DDP, the regressor averaged by hand.

    The layers are the two networks' ``fc`` (vectors, so the regressor is a linear layer: a
    convolutional regressor's BatchNorm would see each process's half batch)."""
    from freekd.config import ComponentConfig, TeacherSourceConfig
    from freekd.distill.config import DistillConfig
    from freekd.distill.pipeline import run_distill

    config = DistillConfig(
        teacher=TeacherSourceConfig(path=teacher),
        student="tiny-cnn-nobn",
        dataset="digits",
        method=ComponentConfig("fitnet", {"student_layers": ["fc"], "teacher_layers": ["fc"]}),
        seed=0,
        trainer=TrainerConfig(epochs=1, batch_size=64, lr=0.01, device="cpu", log_every=5),
    )
    run_distill(config, RunOptions(out, quiet=True))


def online(out: Path) -> None:
    """DML with two peers without BatchNorm (each process would see half the batch's
    statistics), no baseline: each peer is its own DDP module."""
    from freekd.config import ComponentConfig
    from freekd.online.config import OnlineConfig
    from freekd.online.pipeline import run_online

    config = OnlineConfig(
        dataset="digits",
        archs=["tiny-cnn-nobn", "mlp"],
        method=ComponentConfig("dml"),
        baseline=False,
        seed=0,
        trainer=TrainerConfig(epochs=1, batch_size=64, lr=0.05, device="cpu", log_every=5),
    )
    run_online(config, RunOptions(out, quiet=True))


def main(out: Path) -> None:
    torch.set_num_threads(1)  # two processes on two cores
    config = TeacherTrainConfig(
        dataset="digits",
        arch="tiny-cnn-nobn",
        seed=0,
        trainer=TrainerConfig(epochs=2, batch_size=64, lr=0.05, device="cpu", log_every=5),
    )
    run_teacher_train(config, RunOptions(out, quiet=True))


if __name__ == "__main__":
    if sys.argv[2:] == ["online"]:
        torch.set_num_threads(1)
        online(Path(sys.argv[1]))
    elif len(sys.argv) > 2:
        torch.set_num_threads(1)
        distill(Path(sys.argv[1]), sys.argv[2])
    else:
        main(Path(sys.argv[1]))
