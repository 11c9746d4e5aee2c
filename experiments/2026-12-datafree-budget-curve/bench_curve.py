"""Accuracy over CPU minutes on the Fashion-MNIST ResNet-8 teacher (issue 19): what a budget buys.

Every run is the real CLI with the defaults (``--method auto``: cmi for this BatchNorm teacher)
plus ``--student lenet5-half`` and ``--budget cpu:Nm``, one thread, one JSON per run in
``results/``. Rows:

- ``default``: the budget fits the learning-rate schedule (``fit_schedule_to_budget``, on).
- ``unfitted``: the same with ``--set fit_schedule_to_budget=false``: the schedule is planned
  for ``trainer.epochs`` and the budget cuts it off (the behaviour before the change).
- ``real``: the real-image bound: the same student loop on ``fashion-mnist:train`` without
  labels (``--proxy-data``), at the same budget.
- ``real-N`` (e.g. ``real-3584``): the same with only N real training images (the first N of
  the permutation after the validation images): how much of the gap to ``real`` is the number
  of distinct images rather than what they look like.
- ``--epochs E`` plans E epochs of 200 steps instead of the default 20 (the row's name gets
  ``-eE``), e.g. to give a real row the number of steps a synthesizer reached in its budget.
- ``cmi``, ``nayer``: ``--method cmi`` / ``--method nayer`` named explicitly (session 22: does
  NAYER, Tran et al. 2024, beat cmi, ``auto``'s choice for a BatchNorm teacher, under a budget?).

Accuracy is on ``fashion-mnist:test`` (``--eval test``) or, to *choose* settings, on 5,000
images of ``fashion-mnist:train`` (``--eval validation``: a fixed permutation, seed 0, its first
5,000; the student never sees real images, and the teacher's own training set is all of train).
Result files of the validation split end in ``-validation.json``.

    PYTHONPATH=. python experiments/2026-12-datafree-budget-curve/bench_curve.py \
        --budgets 15 --rows default unfitted --seeds 0
    python experiments/2026-12-datafree-budget-curve/bench_curve.py --summary
"""

from __future__ import annotations

import argparse
import json
import os
import re
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

from freekd.io import atomic_write_json  # noqa: E402

RESULTS = HERE / "results"
ROWS = {
    # The defaults with cmi, auto's choice for this teacher when the rows were measured (auto
    # picks nayer for a BatchNorm teacher since session 26: the "nayer" row).
    "default": ["--method", "cmi"],
    "unfitted": ["--method", "cmi", "--set", "fit_schedule_to_budget=false"],
    "real": ["--proxy-data", "fashion-mnist:train"],
    "cmi": ["--method", "cmi"],
    "nayer": ["--method", "nayer"],
}
VALIDATION_SIZE = 5000
REST = 60_000 - VALIDATION_SIZE  # training images after the validation ones


def permutation() -> tuple:
    """Fashion-MNIST train and its fixed permutation (seed 0): validation first, then the rest."""
    import torch

    from freekd.data import load_dataset

    train = load_dataset("fashion-mnist:train")
    return train, torch.randperm(len(train.labels), generator=torch.Generator().manual_seed(0))


def save_npz(path: Path, images, labels) -> None:  # noqa: ANN001 (uint8 tensors, as loaded)
    import numpy as np

    from freekd.io import atomic_write

    atomic_write(path, lambda stream: np.savez(stream, x=images.numpy(), y=labels.numpy()))


def row_flags(row: str, runs: Path) -> list[str]:
    """The CLI flags of a row (``real-N``: an npz of N training images as the proxy data)."""
    if row in ROWS:
        return ROWS[row]
    digits = row.removeprefix("real-")
    if not (row.startswith("real-") and digits.isdigit() and row == f"real-{int(digits)}"):
        raise SystemExit(f"unknown row {row!r}: use {', '.join(sorted(ROWS))} or real-N")
    count = int(digits)
    if not 1 <= count <= REST:
        raise SystemExit(f"{row}: N must lie in 1..{REST} (the images after the validation ones)")
    # The file name says which images: after the first VALIDATION_SIZE of the seed-0 order.
    path = runs / f"fashion-mnist-train-seed0-from{VALIDATION_SIZE}-{count}.npz"
    if not path.exists():
        train, order = permutation()
        chosen = order[VALIDATION_SIZE : VALIDATION_SIZE + count]
        save_npz(path, train.images[chosen], train.labels[chosen])
    return ["--proxy-data", str(path)]


def eval_data(split: str, runs: Path) -> str:
    """``fashion-mnist:test``, or the validation images as an npz (written once, atomically)."""
    if split == "test":
        return "fashion-mnist:test"
    path = runs / f"fashion-mnist-validation-seed0-{VALIDATION_SIZE}.npz"
    if not path.exists():
        train, order = permutation()
        held = order[:VALIDATION_SIZE]
        save_npz(path, train.images[held], train.labels[held])
    return str(path)


def run_one(
    teacher_path: Path,
    row: str,
    budget: float,
    seed: int,
    runs: Path,
    split: str = "test",
    epochs: int | None = None,
) -> dict:
    flags = row_flags(row, runs)
    if epochs is not None:
        row, flags = f"{row}-e{epochs}", [*flags, "--set", f"trainer.epochs={epochs}"]
    suffix = "" if split == "test" else f"-{split}"
    out = runs / f"{row}-cpu{budget:g}m-seed{seed}{suffix}"
    start = time.perf_counter()
    done = subprocess.run(
        [sys.executable, "-m", "freekd", "datafree", "--teacher", str(teacher_path),
         "--student", "lenet5-half", "--eval-data", eval_data(split, runs), *flags,
         "--budget", f"cpu:{budget:g}m", "--seed", str(seed), "--device", "cpu",
         "--out", str(out), "--overwrite", "--quiet"],
        env={**os.environ, "OMP_NUM_THREADS": "1"}, capture_output=True, text=True,
    )  # fmt: skip
    result: dict = {"row": row, "budget_cpu_minutes": budget, "seed": seed, "eval": split,
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
            curve.append({"step": entry.get("step"), "eval_accuracy": entry["eval_accuracy"],
                          "process_cpu_seconds": entry.get("process_cpu_seconds")})  # fmt: skip
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
    runs = [{**json.loads(p.read_text()), "file": p.stem} for p in sorted(RESULTS.glob("*.json"))]
    lines = ["| row | eval | CPU min budget | median accuracy | per seed | steps (horizon) |",
             "|---|---|---|---|---|---|"]  # fmt: skip

    def key(r: dict) -> tuple[str, str, float]:
        # The file's name without its seed: runs of other code versions that share a row name
        # (first-estimator-default, fitted) stay apart.
        name = re.sub(r"-cpu[0-9.]+m-seed[0-9]+(-validation)?$", "", r["file"])
        return (name, r.get("eval", "test"), r["budget_cpu_minutes"])

    for row, split, budget in sorted({key(r) for r in runs}, key=lambda k: (k[1], k[2], k[0])):
        group = sorted((r for r in runs if key(r) == (row, split, budget)), key=lambda r: r["seed"])
        ok = [r for r in group if r["exit_status"] == 0]
        if not ok:
            lines.append(f"| {row} | {split} | {budget:g} | failed | | |")
            continue
        accs = [100 * r["student_accuracy"] for r in ok]
        steps = ", ".join(f"{r['steps']} ({r['schedule_horizon']})" for r in ok)
        per_seed = " / ".join(f"{a:.2f}" for a in accs)
        lines.append(
            f"| {row} | {split} | {budget:g} | **{statistics.median(accs):.2f} %** | {per_seed} "
            f"| {steps} |"
        )
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--budgets", type=float, nargs="+", default=[5, 15, 30, 60])
    parser.add_argument("--rows", nargs="+", default=["default", "real"],
                        help=f"{', '.join(sorted(ROWS))} or real-N (N real images)")  # fmt: skip
    parser.add_argument("--epochs", type=int, help="planned epochs of 200 steps (default 20)")
    parser.add_argument("--seeds", type=int, nargs="+", default=[0])
    parser.add_argument("--runs", type=Path, default=ROOT / "runs" / "budget-curve")
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--eval", choices=["validation", "test"], default="test")
    parser.add_argument("--summary", action="store_true", help="print the table of results/")
    args = parser.parse_args()
    if args.summary:
        print(summary())
        return
    RESULTS.mkdir(exist_ok=True)
    teacher_path = teacher("fashion-mnist", ROOT / "runs" / "datafree-bench")
    if args.eval == "validation" and "real" in args.rows:
        parser.error(f"row real trains on all of train, validation included: use real-{REST}")
    eval_data(args.eval, args.runs)  # written once, before the workers share it
    for row in args.rows:
        row_flags(row, args.runs)  # refuses unknown rows; writes real-N's npz before the workers
    jobs = [(row, budget, seed) for budget in args.budgets for seed in args.seeds
            for row in args.rows]  # fmt: skip

    def work(job: tuple[str, float, int]) -> None:
        row, budget, seed = job
        result = run_one(teacher_path, row, budget, seed, args.runs, args.eval, args.epochs)
        path = RESULTS / f"{Path(result['run']).name}.json"  # named as its run folder
        atomic_write_json(path, result)
        print(json.dumps({k: v for k, v in result.items() if k != "curve"}), flush=True)

    with ThreadPoolExecutor(args.workers) as pool:
        list(pool.map(work, jobs))


if __name__ == "__main__":
    main()
