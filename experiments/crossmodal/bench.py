"""Fashion-MNIST cross-modal benchmark: a tiny open_clip teacher, a quarter-size CLIP student
distilled by each method, and the same student trained without the teacher, per seed.

    python experiments/crossmodal/bench.py --seeds 0 1 2 --methods contrastive icl feature \
        --out runs/crossmodal-bench

Every run goes through the public CLI (`freekd crossmodal teacher|distill`); results are
collected in experiments/crossmodal/fashion-mnist.json (medians over seeds per model).
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
from pathlib import Path

from freekd.io import atomic_write_json

HERE = Path(__file__).resolve().parent
ROOT = HERE.parents[1]
TEACHER_CONFIG = ROOT / "configs" / "crossmodal" / "tinyclip_fmnist.yaml"
KEYS = ("zero_shot_accuracy", "recall_at_1", "recall_at_5", "recall_at_10")
# Copied from each command's report.json into its rows: the whole command's cost (a distill run
# with a baseline trains both; the teacher row has the teacher's own run).
TIMES = ("wall_seconds", "cpu_seconds")


def times(report: dict) -> dict:
    return {key: report[key] for key in TIMES if key in report}


def freekd(*arguments: str) -> None:
    environment = {**os.environ, "OMP_NUM_THREADS": os.environ.get("OMP_NUM_THREADS", "1")}
    command = [sys.executable, "-m", "freekd", *arguments, "-q"]
    print("$", " ".join(command[2:]), flush=True)
    subprocess.run(command, check=True, env=environment)


def run(out: Path, seed: int, methods: list[str], extra: list[str]) -> dict:
    teacher = out / f"teacher-{seed}"
    if not (teacher / "report.json").exists():
        freekd("crossmodal", "teacher", "--config", str(TEACHER_CONFIG), "--seed", str(seed),
               "--out", str(teacher), "--overwrite")  # fmt: skip
    results = {"teacher-run": json.loads((teacher / "report.json").read_text())}
    for index, method in enumerate(methods):
        folder = out / f"{method}-{seed}"
        if not (folder / "report.json").exists():
            baseline = [] if index == 0 else ["--no-baseline"]
            freekd("crossmodal", "distill", "--teacher", str(teacher / "model.pt"),
                   "--method", method, "--seed", str(seed), "--out", str(folder),
                   "--overwrite", "--set", "min_steps=0", *baseline, *extra)  # fmt: skip
        results[method] = json.loads((folder / "report.json").read_text())
    return results


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--methods", nargs="+", default=["contrastive", "icl", "feature"])
    parser.add_argument("--out", type=Path, default=Path("runs/crossmodal-bench"))
    parser.add_argument("--set", dest="overrides", action="append", default=[])
    parser.add_argument("--result", default="fashion-mnist.json", help="JSON file name in here")
    arguments = parser.parse_args()
    extra = [item for override in arguments.overrides for item in ("--set", override)]
    per_seed = {
        seed: run(arguments.out, seed, arguments.methods, extra) for seed in arguments.seeds
    }
    rows: dict[str, list[dict]] = {}
    for seed, results in per_seed.items():
        first = results[arguments.methods[0]]
        teacher_run = times(results.pop("teacher-run"))
        rows.setdefault("teacher", []).append(first["teacher"] | {"seed": seed} | teacher_run)
        baseline = first["baseline"] | {"seed": seed} | times(first)
        rows.setdefault("baseline (clip loss only)", []).append(baseline)
        for method, report in results.items():
            student = report["student"] | {"seed": seed} | times(report)
            rows.setdefault(f"student ({method})", []).append(student)
    write_result(HERE / arguments.result, rows, seeds=arguments.seeds,
                 overrides=arguments.overrides)  # fmt: skip


def write_result(
    path: Path, rows: dict[str, list[dict]], *, seeds: list[int], overrides: list[str]
) -> None:
    """Medians over seeds per row, and every run's figures, as JSON (printed too)."""
    medians = {
        name: {key: statistics.median(run[key] for run in runs) for key in KEYS}
        | {
            "parameters": runs[0]["parameters"]["total"],
            "seeds": len(runs),
            "chance_recall_at_1": runs[0]["chance"]["recall_at_1"],
        }  # fmt: skip
        for name, runs in rows.items()
    }
    result = {
        "seeds": seeds,
        "overrides": overrides,
        "medians": medians,
        "runs": {
            name: [{k: run[k] for k in (*KEYS, "seed", *TIMES) if k in run} for run in runs]
            for name, runs in rows.items()
        },
        "captions": "templated from the class labels",
    }
    atomic_write_json(path, result)
    print(json.dumps(medians, indent=2))


if __name__ == "__main__":
    main()
