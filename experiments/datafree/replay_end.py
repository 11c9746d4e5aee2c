"""Replay the end of a long data-free run from a mid-run checkpoint, with today's collapse checks.

A 100-epoch zskt run can end with its generator winning the game (experiments/datafree/README.md,
"A generator that wins the game"). To see what the discrepancy check does there without training
100 epochs again, a copy of the run's ``checkpoint.pt`` taken at the end of an epoch before the
trouble (any file copy, e.g. by a loop watching the run) is resumed with ``--resume`` into a new
folder: the resumed run follows the original step for step until a check fires. Both runs' last
evaluations and the replay's collapse events go to the JSON.

    python experiments/datafree/replay_end.py --run runs/L100s2 --snapshot snaps/ckpt-E.pt \\
        --out runs/L100s2-replay --json experiments/datafree/mnist-runaway.json -- \\
        --teacher T --eval-data mnist:test --method zskt --set trainer.epochs=100 --seed 2

Everything after ``--`` is the original run's command line (without ``--out``); ``--set``
options may be added there to try other collapse settings (they may change on resume).
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import torch

from freekd.io import atomic_write_text


def evaluations(run: Path) -> list[dict[str, Any]]:
    lines = (run / "metrics.jsonl").read_text().splitlines()
    return [record for record in map(json.loads, filter(None, lines)) if "eval_accuracy" in record]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--run", type=Path, required=True, help="the original run's folder")
    parser.add_argument("--snapshot", type=Path, required=True, help="a copy of its checkpoint")
    parser.add_argument("--out", type=Path, required=True, help="the replay's folder (new)")
    parser.add_argument("--json", type=Path, required=True, help="results file (rows appended)")
    parser.add_argument("command", nargs=argparse.REMAINDER, help="-- the run's CLI arguments")
    args = parser.parse_args()
    command = [arg for arg in args.command if arg != "--"]
    state = torch.load(args.snapshot, weights_only=True)["state"]
    if args.out.exists():
        sys.exit(f"{args.out} exists; choose a new --out")
    args.out.mkdir(parents=True)
    for name in ("config.yaml", "metrics.jsonl"):
        shutil.copy(args.run / name, args.out / name)
    shutil.copy(args.snapshot, args.out / "checkpoint.pt")
    started = time.time()
    done = subprocess.run(
        [sys.executable, "-m", "freekd", "datafree", *command, "--resume", "--quiet"]
        + ["--out", str(args.out)],
        env={**os.environ, "OMP_NUM_THREADS": os.environ.get("OMP_NUM_THREADS", "1")},
        capture_output=True,
        text=True,
    )
    if done.returncode:
        sys.exit(f"the replay failed ({done.returncode}): {done.stderr.strip()[-500:]}")
    original = json.loads((args.run / "report.json").read_text())
    replay = json.loads((args.out / "report.json").read_text())
    row = {
        "run": str(args.run),
        "command": command,
        "resumed_from": {"epoch": state["epoch"] + 1, "step": state["step"]},
        "original": {
            "student_accuracy": original["student"]["test_accuracy"],
            "collapse": original["collapse"],
            "last_evaluations": [
                (record["epoch"], record["eval_accuracy"]) for record in evaluations(args.run)[-8:]
            ],
        },
        "replay": {
            "student_accuracy": replay["student"]["test_accuracy"],
            "collapse": replay["collapse"],
            "last_evaluations": [
                (record["epoch"], record["eval_accuracy"]) for record in evaluations(args.out)[-8:]
            ],
            "wall_minutes": round((time.time() - started) / 60, 2),
        },
    }
    rows = json.loads(args.json.read_text())["rows"] if args.json.exists() else []
    rows.append(row)
    atomic_write_text(args.json, json.dumps({"rows": rows}, indent=1) + "\n")
    print(json.dumps({k: row[k] for k in ("resumed_from", "original", "replay")}, indent=1))


if __name__ == "__main__":
    main()
