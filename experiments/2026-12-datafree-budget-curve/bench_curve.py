"""Accuracy over CPU minutes on the Fashion-MNIST ResNet-8 teacher (issue 19): what a budget buys.

Every run is the real CLI with the defaults (``--method auto``: cmi for this BatchNorm teacher)
plus ``--student lenet5-half`` and ``--budget cpu:Nm``, one thread, one JSON per run in
``results/``. Rows:

- ``default``: the budget fits the learning-rate schedule (``fit_schedule_to_budget``, on).
- ``unfitted``: the same with ``--set fit_schedule_to_budget=false``: the schedule is planned
  for ``trainer.epochs`` and the budget cuts it off (the behaviour before the change).
- ``real``: the real-image bound: the same student loop on ``fashion-mnist:train`` without
  labels (``--proxy-data``), at the same budget.

Accuracy is on ``fashion-mnist:test``; nothing is chosen on it (the settings are the defaults).

    PYTHONPATH=. python experiments/2026-12-datafree-budget-curve/bench_curve.py \
        --budgets 15 --rows default unfitted --seeds 0
    python experiments/2026-12-datafree-budget-curve/bench_curve.py --summary
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent.parent
sys.path.insert(0, str(ROOT / "experiments" / "datafree"))
from bench import teacher  # noqa: E402  (the benchmark's own teacher recipe and folder)

RESULTS = HERE / "results"
ROWS = {
    "default": [],
    "unfitted": ["--set", "fit_schedule_to_budget=false"],
    "real": ["--proxy-data", "fashion-mnist:train"],
}


def run_one(teacher_path: Path, row: str, budget: float, seed: int, runs: Path) -> dict:
    out = runs / f"{row}-cpu{budget:g}m-seed{seed}"
    start = time.perf_counter()
    done = subprocess.run(
        [sys.executable, "-m", "freekd", "datafree", "--teacher", str(teacher_path),
         "--student", "lenet5-half", "--eval-data", "fashion-mnist:test", *ROWS[row],
         "--budget", f"cpu:{budget:g}m", "--seed", str(seed), "--device", "cpu",
         "--out", str(out), "--overwrite", "--quiet"],
        env={**os.environ, "OMP_NUM_THREADS": "1"}, capture_output=True, text=True,
    )  # fmt: skip
    result: dict = {"row": row, "budget_cpu_minutes": budget, "seed": seed,
                    "exit_status": done.returncode, "run": str(out)}  # fmt: skip
    if done.returncode:
        result["error"] = (done.stderr.strip().splitlines() or ["?"])[-1]
        result["wall_seconds"] = round(time.perf_counter() - start, 1)
        return result
    report = json.loads((out / "report.json").read_text())
    curve = []
    for line in (out / "metrics.jsonl").read_text().splitlines():
        entry = json.loads(line)
        if "eval_accuracy" in entry:
            curve.append({"step": entry.get("step"), "eval_accuracy": entry["eval_accuracy"]})
    result.update(
        student_accuracy=report["student"]["test_accuracy"],
        teacher_accuracy=report["teacher"]["test_accuracy"],
        method=report["method"]["name"],
        steps=report["steps"],
        schedule_horizon=report.get("schedule_horizon"),
        stopped_by_budget=report["stopped_by_budget"],
        cpu_seconds=report["cpu_seconds"],
        wall_seconds=report["wall_seconds"],
        synthesized_images=report["synthesized_images"],
        curve=curve,
    )
    return result


def summary() -> str:
    runs = [json.loads(p.read_text()) for p in sorted(RESULTS.glob("*.json"))]
    lines = ["| row | CPU min budget | median accuracy | per seed | steps (horizon) |",
             "|---|---|---|---|---|"]  # fmt: skip
    keys = sorted({(r["row"], r["budget_cpu_minutes"]) for r in runs}, key=lambda k: (k[1], k[0]))
    for row, budget in keys:
        group = sorted(
            (r for r in runs if (r["row"], r["budget_cpu_minutes"]) == (row, budget)),
            key=lambda r: r["seed"],
        )
        ok = [r for r in group if r["exit_status"] == 0]
        if not ok:
            lines.append(f"| {row} | {budget:g} | failed | | |")
            continue
        accs = [100 * r["student_accuracy"] for r in ok]
        steps = ", ".join(f"{r['steps']} ({r['schedule_horizon']})" for r in ok)
        per_seed = " / ".join(f"{a:.2f}" for a in accs)
        lines.append(
            f"| {row} | {budget:g} | **{statistics.median(accs):.2f} %** | {per_seed} | {steps} |"
        )
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--budgets", type=float, nargs="+", default=[5, 15, 30, 60])
    parser.add_argument("--rows", nargs="+", choices=sorted(ROWS), default=["default", "real"])
    parser.add_argument("--seeds", type=int, nargs="+", default=[0])
    parser.add_argument("--runs", type=Path, default=ROOT / "runs" / "budget-curve")
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--summary", action="store_true", help="print the table of results/")
    args = parser.parse_args()
    if args.summary:
        print(summary())
        return
    RESULTS.mkdir(exist_ok=True)
    teacher_path = teacher("fashion-mnist", ROOT / "runs" / "datafree-bench")
    jobs = [(row, budget, seed) for budget in args.budgets for seed in args.seeds
            for row in args.rows]  # fmt: skip

    def work(job: tuple[str, float, int]) -> None:
        row, budget, seed = job
        result = run_one(teacher_path, row, budget, seed, args.runs)
        path = RESULTS / f"{row}-cpu{budget:g}m-seed{seed}.json"
        path.write_text(json.dumps(result, indent=2) + "\n")
        print(json.dumps({k: v for k, v in result.items() if k != "curve"}), flush=True)

    with ThreadPoolExecutor(args.workers) as pool:
        list(pool.map(work, jobs))


if __name__ == "__main__":
    main()
