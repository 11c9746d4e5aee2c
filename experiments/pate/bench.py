"""PATE on MNIST (issue 4): 250 teachers, Confident-GNMax labels, a student, and the timings.

Runs the real CLI stages side by side with the anchors' setting (Papernot et al. 2018, MNIST:
T = 200, σ₁ = 150, σ₂ = 40, δ = 1e-5; queries from the first 9,000 images of the MNIST test
split, the last 1,000 held out). The ledger's budget is enforced on the data-dependent figure,
as in the papers; the data-independent ε is reported beside it. It also times one epoch of the
250 teachers trained one by one (``execution: loop``) against one vectorised batch (``vmap``).

    python experiments/pate/bench.py --out experiments/pate/mnist.json
    python experiments/pate/bench.py --dataset digits --teachers 8 --epochs 5 --queries 150 \\
        --holdout 97 --sigma1 3 --threshold 6 --sigma2 1 --epsilon 50 --out /tmp/pate.json
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path


def freekd(*args: str) -> None:
    env = {**os.environ}
    done = subprocess.run([sys.executable, "-m", "freekd", *args], env=env, text=True)
    if done.returncode:
        raise SystemExit(f"freekd {' '.join(args)} failed ({done.returncode})")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--dataset", default="mnist")
    parser.add_argument("--arch", default="lenet5")
    parser.add_argument("--teachers", type=int, default=250)
    parser.add_argument("--epochs", type=int, default=40)
    parser.add_argument("--queries", type=int, default=9000)
    parser.add_argument("--holdout", type=int, default=1000)
    parser.add_argument("--sigma1", type=float, default=150.0)
    parser.add_argument("--threshold", type=float, default=200.0)
    parser.add_argument("--sigma2", type=float, default=40.0)
    parser.add_argument("--epsilon", type=float, default=2.0)
    parser.add_argument("--delta", type=float, default=1e-5)
    parser.add_argument("--runs", type=Path, default=Path("runs/pate-bench"))
    parser.add_argument("--out", type=Path, required=True)
    args = parser.parse_args()
    runs = args.runs
    common = ["--dataset", args.dataset, "--teachers", str(args.teachers), "--arch", args.arch]
    timings = {}
    for execution in ("loop", "vmap"):  # one epoch each, side by side
        start = time.perf_counter()
        freekd(
            "pate", "teachers", *common, "--epochs", "1", "--execution", execution,
            "--out", str(runs / f"timing-{execution}"), "--overwrite", "--quiet",
        )  # fmt: skip
        timings[execution] = round(time.perf_counter() - start, 2)
    freekd(
        "pate", "teachers", *common, "--epochs", str(args.epochs),
        "--out", str(runs / "teachers"), "--overwrite", "--quiet",
    )  # fmt: skip
    labels = runs / "labels"
    if (labels / "ledger.jsonl").exists():
        (labels / "ledger.jsonl").rename(labels / f"ledger-{int(time.time())}.jsonl.old")
    freekd(
        "pate", "label", "--teachers", str(runs / "teachers" / "teachers.pt"),
        "--queries-from", f"{args.dataset}:test", "--queries", str(args.queries),
        "--set", f"holdout={args.holdout}", "--aggregator", "confident-gnmax",
        "--sigma1", str(args.sigma1), "--threshold", str(args.threshold),
        "--sigma2", str(args.sigma2), "--epsilon", str(args.epsilon), "--delta", str(args.delta),
        "--set", "budget_on=data-dependent-unsanitized", "--out", str(labels), "--overwrite",
        "--quiet",
    )  # fmt: skip
    freekd(
        "pate", "student", "--labels", str(labels), "--student", args.arch,
        "--out", str(runs / "student"), "--overwrite", "--quiet",
    )  # fmt: skip
    teachers = json.loads((runs / "teachers" / "report.json").read_text())
    label = json.loads((labels / "report.json").read_text())
    student = json.loads((runs / "student" / "report.json").read_text())
    result = {
        "setting": vars(args) | {"runs": str(runs), "out": str(args.out)},
        "teachers": {
            "plurality_accuracy": teachers["plurality_accuracy"],
            "median_teacher_accuracy": teachers["teacher_accuracy"]["median"],
            "shard_size": teachers["shards"]["shard_size"],
            "wall_seconds": teachers["wall_seconds"],
            "one_epoch_seconds": timings,
        },
        "labels": {
            "asked": label["queries"]["asked"],
            "answered": label["answered"],
            "label_accuracy": label["label_accuracy"],
            "data_dependent_epsilon": label["privacy"]["data_dependent_epsilon"],
            "data_independent_epsilon": label["privacy"]["data_independent_epsilon"],
        },
        "student_accuracy": student["student"]["test_accuracy"],
        "anchors": {
            "PATE 2017 (LNMax)": [0.980, 2.04],
            "PATE 2018 (Confident-GNMax)": [0.985, 1.97],
        },
    }
    args.out.write_text(json.dumps(result, indent=2) + "\n")
    print(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
