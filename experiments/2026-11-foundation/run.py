"""Foundation acceptance runs: MNIST LeNet-5 teacher, then LeNet-5-half by Hinton KD, per seed.

Runs the real CLI with the issue's commands and default settings (configs/teacher/mnist_lenet5.yaml
and configs/distill/mnist_lenet5half_kd.yaml spell the same settings out) for each seed and writes
one JSON with test accuracy, wall and CPU minutes per run and the medians.

    python experiments/2026-11-foundation/run.py --seeds 0 1 2
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
from pathlib import Path

from freekd.io import atomic_write_json


def freekd(*args: str) -> None:
    subprocess.run([sys.executable, "-m", "freekd", *args], check=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--runs", type=Path, default=Path("runs/foundation"))
    parser.add_argument("--out", type=Path, default=Path(__file__).with_name("result.json"))
    args = parser.parse_args()

    rows = []
    for seed in args.seeds:
        teacher_dir = args.runs / f"teacher-seed{seed}"
        student_dir = args.runs / f"student-seed{seed}"
        # The commands verbatim: default epochs and settings, only seed and folders added.
        freekd(
            "teacher",
            "train",
            "--dataset",
            "mnist",
            "--arch",
            "lenet5",
            "--seed",
            str(seed),
            "--out",
            str(teacher_dir),
            "--overwrite",
            "--quiet",
        )
        freekd(
            "distill",
            "--teacher",
            str(teacher_dir / "model.pt"),
            "--student",
            "lenet5-half",
            "--dataset",
            "mnist",
            "--method",
            "kd",
            "--seed",
            str(seed),
            "--out",
            str(student_dir),
            "--overwrite",
            "--quiet",
        )
        teacher = json.loads((teacher_dir / "report.json").read_text())
        student = json.loads((student_dir / "report.json").read_text())
        rows.append(
            {
                "seed": seed,
                "teacher_accuracy": teacher["test_accuracy"],
                "teacher_wall_minutes": teacher["wall_seconds"] / 60,
                "teacher_cpu_minutes": teacher["cpu_seconds"] / 60,
                "student_accuracy": student["student"]["test_accuracy"],
                "student_wall_minutes": student["wall_seconds"] / 60,
                "student_cpu_minutes": student["cpu_seconds"] / 60,
            }
        )
        print(json.dumps(rows[-1]))
    medians = {key: statistics.median(row[key] for row in rows) for key in rows[0] if key != "seed"}
    result = {
        "commands": [
            "freekd teacher train --dataset mnist --arch lenet5 --seed S --out T",
            "freekd distill --teacher T/model.pt --student lenet5-half --dataset mnist --method kd "
            "--seed S --out D",
        ],
        "runs": rows,
        "median": medians,
    }
    atomic_write_json(args.out, result)
    print(json.dumps(medians, indent=2))


if __name__ == "__main__":
    main()
