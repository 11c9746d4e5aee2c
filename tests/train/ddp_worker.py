"""Run by tests/train/test_ddp.py under torchrun: train a tiny model, save the final weights."""

from __future__ import annotations

import sys
from pathlib import Path

import torch

from freekd.config import TrainerConfig
from freekd.runs import RunOptions
from freekd.supervised.config import TeacherTrainConfig
from freekd.supervised.pipeline import run_teacher_train


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
    main(Path(sys.argv[1]))
