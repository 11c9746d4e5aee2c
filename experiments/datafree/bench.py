"""Data-free benchmark: every synthesizer and baseline on one teacher, side by side, per seed.

Runs the real CLI (`freekd datafree`) with default settings: only the teacher, the method (or the
proxy data), the held-out data used for reporting, the seed, a 15-minute cap and the output
folder are given. The cap is 15 minutes of CPU time (``--budget cpu:15m``), which other work on
the machine cannot shrink as it shrinks a wall-clock cap. Runs go two at a time with one thread
each (a 2-core machine), and every finished run is added to the JSON at once, so an interrupted
benchmark keeps what it measured.
Methods that refuse the teacher (BatchNorm inversion on a BatchNorm-free teacher) are recorded
with their one-line error.

    python experiments/datafree/bench.py --dataset mnist --seeds 0 1 2
    python experiments/datafree/bench.py --table experiments/datafree/mnist.json
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
from threading import Lock

from freekd.io import atomic_write_json

HERE = Path(__file__).parent
ROOT = HERE.parent.parent

# dataset → (teacher recipe, held-out data for reporting, proxy data, student flags)
TEACHERS = {
    "mnist": ("configs/teacher/mnist_lenet5.yaml", "mnist:test", "animal-mnist", []),
    # ResNet-8 has no smaller model of its family; LeNet-5-half (16k parameters, no BatchNorm)
    # is a fifth of its size.
    "fashion-mnist": (
        "configs/teacher/fashion_mnist_resnet8.yaml",
        "fashion-mnist:test",
        "mnist",
        ["--student", "lenet5-half"],
    ),
}
SYNTHESIZERS = ("zskt", "dafl", "dfad", "fast", "cmi", "deepinversion", "noise")


def rows(dataset: str) -> list[tuple[str, list[str]]]:
    """(row name, extra CLI arguments) for every method and baseline."""
    _, _, proxy, _ = TEACHERS[dataset]
    table = [(name, ["--method", name]) for name in SYNTHESIZERS]
    table.append((f"proxy: {proxy}", ["--proxy-data", f"{proxy}:train"]))
    table.append((f"real: {dataset}:train (upper bound)", ["--proxy-data", f"{dataset}:train"]))
    return table


# Rows outside the 15-minute protocol (``--long``): the best method given more time.
LONG_ROWS = [("zskt-60-epochs", ["--method", "zskt", "--set", "trainer.epochs=60"])]
LONG_BUDGET = "cpu:75m"


def freekd(*args: str, threads: int) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "OMP_NUM_THREADS": str(threads)}
    return subprocess.run(
        [sys.executable, "-m", "freekd", *args], env=env, capture_output=True, text=True
    )


def teacher(dataset: str, runs: Path) -> Path:
    config, _, _, _ = TEACHERS[dataset]
    folder = runs / f"teacher-{dataset}"
    if not (folder / "report.json").exists():
        done = freekd(
            "teacher", "train", "--config", str(ROOT / config), "--out", str(folder),
            "--overwrite", "--quiet", threads=2,
        )  # fmt: skip
        if done.returncode:
            raise SystemExit(done.stderr)
    return folder / "model.pt"


def run_one(
    dataset: str,
    teacher_path: Path,
    name: str,
    extra: list[str],
    seed: int,
    runs: Path,
    budget: str = "cpu:15m",
) -> dict[str, object]:
    _, eval_data, _, student = TEACHERS[dataset]
    slug = name.split(" ")[0].rstrip(":").replace(":", "-")
    if name.startswith(("proxy", "real")):
        slug = name.split(":")[0]
    out = runs / f"{dataset}-{slug}-seed{seed}"
    start = time.perf_counter()
    done = freekd(
        "datafree", "--teacher", str(teacher_path), "--eval-data", eval_data, *student, *extra,
        "--seed", str(seed), "--budget", budget, "--out", str(out), "--overwrite", "--quiet",
        threads=1,
    )  # fmt: skip
    row: dict[str, object] = {"row": name, "seed": seed, "exit_status": done.returncode}
    if done.returncode:
        row["error"] = done.stderr.strip().splitlines()[-1] if done.stderr.strip() else "?"
        row["wall_seconds"] = round(time.perf_counter() - start, 1)
        return row
    row.update(row_from_report(out))
    return row


def row_from_report(out: Path) -> dict[str, object]:
    """The table's figures from a finished run folder's report.json."""
    report = json.loads((out / "report.json").read_text())
    return {
        "student_accuracy": report["student"]["test_accuracy"],
        "teacher_accuracy": report["teacher"]["test_accuracy"],
        "wall_seconds": report["wall_seconds"],
        "cpu_seconds": report["cpu_seconds"],
        "steps": report["steps"],
        "synthesized_images": report["synthesized_images"],
        "teacher_queries": report["teacher_queries"],
        "stopped_by_budget": report["stopped_by_budget"],
        "collapse_recoveries": (report.get("collapse") or {}).get("recoveries"),
        "run": str(out),
    }


def summarize(results: list[dict[str, object]]) -> list[dict[str, object]]:
    """Median over seeds per row (refusals are kept as their error)."""
    summary = []
    for name in dict.fromkeys(str(r["row"]) for r in results):
        mine = [r for r in results if r["row"] == name]
        ok = [r for r in mine if r["exit_status"] == 0]
        if not ok:
            summary.append({"row": name, "error": mine[0].get("error")})
            continue

        def median(key: str, ok: list[dict[str, object]] = ok) -> float:
            return statistics.median(float(r[key]) for r in ok)  # type: ignore[arg-type]

        summary.append(
            {
                "row": name,
                "seeds": [r["seed"] for r in ok],
                "student_accuracy": [r["student_accuracy"] for r in ok],
                "median_student_accuracy": median("student_accuracy"),
                "median_wall_minutes": round(median("wall_seconds") / 60, 2),
                "median_cpu_minutes": round(median("cpu_seconds") / 60, 2),
                "synthesized_images": int(median("synthesized_images")),
                "teacher_queries": int(median("teacher_queries")),
                "teacher_accuracy": ok[0]["teacher_accuracy"],
            }
        )
    return summary


def table(path: Path) -> str:
    data = json.loads(path.read_text())
    lines = [
        "| method | student acc. (median) | per seed | wall min | CPU min | images synthesized "
        "| teacher queries |",
        "|---|---|---|---|---|---|---|",
    ]
    for row in data["summary"]:
        if "error" in row:
            lines.append(f"| {row['row']} | refused: {row['error']} | | | | | |")
            continue
        seeds = " / ".join(f"{100 * a:.2f}" for a in row["student_accuracy"])
        lines.append(
            f"| {row['row']} | **{100 * row['median_student_accuracy']:.2f} %** | {seeds} | "
            f"{row['median_wall_minutes']} | {row['median_cpu_minutes']} | "
            f"{row['synthesized_images']:,} | {row['teacher_queries']:,} |"
        )
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--dataset", choices=sorted(TEACHERS), default="mnist")
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--only", nargs="*", help="row names to run (default: all)")
    parser.add_argument("--runs", type=Path, default=Path("runs/datafree-bench"))
    parser.add_argument("--out", type=Path)
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--table", type=Path, help="print the Markdown table of a result JSON")
    parser.add_argument(
        "--long", action="store_true", help=f"the rows outside the protocol ({LONG_BUDGET} cap)"
    )
    parser.add_argument(
        "--merge", type=Path, nargs="+", help="combine result JSONs of parallel calls into --out"
    )
    args = parser.parse_args()
    if args.table:
        print(table(args.table))
        return
    if args.merge:
        parts = [json.loads(path.read_text()) for path in args.merge]
        runs = [run for part in parts for run in part["runs"]]
        merged = {**parts[0], "runs": runs, "summary": summarize(runs)}
        merged["machine"] = "; ".join(dict.fromkeys(part["machine"] for part in parts))
        atomic_write_json(args.out, merged)
        return
    budget = LONG_BUDGET if args.long else "cpu:15m"
    out = args.out or HERE / f"{args.dataset}{'-long' if args.long else ''}.json"
    teacher_path = teacher(args.dataset, args.runs)
    jobs = [
        (name, extra, seed)
        for name, extra in (LONG_ROWS if args.long else rows(args.dataset))
        if not args.only or name.split(":")[0] in args.only
        for seed in args.seeds
    ]
    results: list[dict[str, object]] = []
    if out.exists():  # keep rows measured earlier that this call does not re-run
        keep = {(name, seed) for name, _, seed in jobs}
        results = [
            r for r in json.loads(out.read_text())["runs"] if (r["row"], r["seed"]) not in keep
        ]
    lock = Lock()

    def work(job: tuple[str, list[str], int]) -> None:
        name, extra, seed = job
        row = run_one(args.dataset, teacher_path, name, extra, seed, args.runs, budget)
        with lock:
            results.append(row)
            data = {
                "dataset": args.dataset,
                "teacher": str(teacher_path),
                "command": "freekd datafree --teacher T --eval-data D [--method M | "
                f"--proxy-data P] --seed S --budget {budget} (defaults otherwise)",
                "machine": f"{os.cpu_count()} cores, one thread per run, {args.workers} at once",
                "runs": results,
                "summary": summarize(results),
            }
            atomic_write_json(out, data)
            print(json.dumps(row), flush=True)

    with ThreadPoolExecutor(args.workers) as pool:
        list(pool.map(work, jobs))


if __name__ == "__main__":
    main()
