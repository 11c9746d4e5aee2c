"""The classic KD families on Fashion-MNIST at three training-set sizes (issue 20).

Every row is the real CLI: ``freekd distill --method M`` for each method, and the student alone
(``freekd teacher train --arch STUDENT``) with the same loop settings, per training-set size and
seed. The teacher is trained once on all of the training images; the student sees a fixed,
class-stratified part of them (the same images for every method and seed). Settings are chosen on
a validation split (5,000 training images never used for training, ``--eval validation``); the
table reports ``fashion-mnist:test`` (``--eval test``). CPU seconds of each run are divided by
those of plain KD at the same size and seed, in the same invocation.

    python experiments/2026-12-kd-families/bench.py --fractions 0.01 0.1 --seeds 0 1 2 --eval test
    python experiments/2026-12-kd-families/bench.py --summary test        # the README table
    python experiments/2026-12-kd-families/bench.py --memory              # CRD at 6,000 / 60,000

Results: one JSON per run in ``results/<eval>/`` (``results/<label>/<eval>/`` with ``--label``);
``--summary`` prints the medians and writes ``summary-<eval>.json`` beside that folder: each
method's seeds, median and verdict against the student alone and plain KD (every seed above every
seed of the other, below, or within the spread).
"""

from __future__ import annotations

import argparse
import json
import os
import re
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np

from freekd.io import atomic_write_json

ROOT = Path(__file__).resolve().parents[2]
HERE = Path(__file__).resolve().parent
METHODS = ["student", "kd", "dkd", "fitnet", "at", "rkd", "sp", "pkt", "cc", "irg", "crd"]
VALIDATION = 5000
RUNS = Path("runs/kd-families")  # run folders; with --label, runs/kd-families-<label>
# Optimizer steps stay near 1,000-4,000 whatever the size: epochs per training-set fraction.
EPOCHS = {0.01: 100, 0.1: 20, 1.0: 5}


def distill_args(args: argparse.Namespace, dataset: Path, method: str) -> list[str]:
    """The ``freekd distill`` arguments every run of this bench shares."""
    return ["distill", "--teacher", str(args.teacher), "--student", args.student,
            "--dataset", str(dataset), "--method", method]  # fmt: skip


class RunFailedError(Exception):
    """A run that stopped with an error (e.g. the loss became NaN): recorded, not fatal."""


def freekd(*args: str) -> dict[str, Any]:
    """Run ``python -m freekd ARGS``; its peak memory (MB) and CPU seconds from the OS."""
    env = {**os.environ, "OMP_NUM_THREADS": os.environ.get("OMP_NUM_THREADS", "1")}
    start = time.perf_counter()
    with tempfile.TemporaryFile() as errors:  # its error line goes into the row
        process = subprocess.Popen(
            [sys.executable, "-m", "freekd", *args], env=env, cwd=ROOT, stderr=errors
        )
        try:
            _, status, usage = os.wait4(process.pid, 0)
        finally:  # shown even when the bench is interrupted (after the run, not live)
            errors.seek(0)
            text = errors.read().decode(errors="replace")
            sys.stderr.write(text)
    process.returncode = os.waitstatus_to_exitcode(status)
    if process.returncode:
        lines = [line for line in text.splitlines() if line.strip()]
        errors_named = [line for line in lines if line.startswith("error:")]
        # freekd's one-line error, else the last line written (a traceback's, a signal's).
        last = (errors_named or lines or [""])[-1].removeprefix("error: ")
        reason = f": {last}" if last else ""
        raise RunFailedError(f"exit status {process.returncode}{reason}")
    return {
        "peak_rss_mb": round(usage.ru_maxrss / 1024, 1),
        "cpu_seconds": round(usage.ru_utime + usage.ru_stime, 1),
        "wall_seconds": round(time.perf_counter() - start, 1),
    }


def failure_reasons(rows: list[dict[str, Any]]) -> str:
    """What stopped these runs, as their rows recorded it ("loss NaN", "loss inf" for freekd's
    error on a loss that is not finite; rows written before the error text was kept say only their
    exit status)."""
    reasons = []
    for row in rows:
        text = str(row.get("failed", "unknown"))
        diverged = re.search(r"the loss became (\S+) at step", text)
        value = diverged.group(1) if diverged else ""
        reasons.append(f"loss {'NaN' if value == 'nan' else value}" if diverged else text)
    return ", ".join(sorted(set(reasons)))


def as_uint8(images: Any) -> np.ndarray:
    """A dataset's images as uint8 pixels (freekd keeps 8-bit sources as uint8 already)."""
    array = images.numpy()
    return array if array.dtype == np.uint8 else (array * 255).round().astype(np.uint8)


def split_data(runs: Path, fractions: list[float]) -> dict[str, Path]:
    """fashion-mnist:train split once (seed 0) into validation and training parts, as .npz."""
    sys.path.insert(0, str(ROOT))
    from freekd.data import load_dataset

    folder = runs / "data"
    folder.mkdir(parents=True, exist_ok=True)
    full = load_dataset("fashion-mnist:train")
    images = as_uint8(full.images)
    labels = full.labels.numpy()
    order = np.random.default_rng(0).permutation(len(labels))
    paths = {"validation": folder / "validation.npz"}
    parts = {"validation": order[:VALIDATION]}
    pool = order[VALIDATION:]
    for fraction in fractions:
        per_class = int(round(fraction * len(pool) / 10))
        chosen = np.concatenate([pool[labels[pool] == k][:per_class] for k in range(10)])
        paths[f"{fraction:g}"] = folder / f"train-{fraction:g}.npz"
        parts[f"{fraction:g}"] = np.sort(chosen)
    for key, path in paths.items():
        if not path.exists():  # written once, then read by every run (several benches at once)
            temporary = path.with_suffix(".tmp.npz")
            np.savez(temporary, x=images[parts[key]], y=labels[parts[key]])
            temporary.replace(path)
    return paths


def one_run(
    args: argparse.Namespace, data: dict[str, Path], method: str, fraction: float, seed: int
) -> dict[str, Any]:
    out = args.runs / args.eval / f"{method}{row_tag(args, method)}-{fraction:g}-seed{seed}"
    evaluation = str(data["validation"]) if args.eval == "validation" else "fashion-mnist:test"
    loop = [
        "--set",
        f"trainer.epochs={EPOCHS[fraction]}",
        "--set",
        f"trainer.lr={args.lr}",
        "--set",
        f"trainer.batch_size={args.batch_size}",
        "--set",
        "trainer.eval_every=0",
        "--set",
        f"eval_dataset={evaluation}",
        "--seed",
        str(seed),
        "--out",
        str(out),
        "--overwrite",
        "--quiet",
    ]
    try:
        usage, accuracy = _train(args, data, method, fraction, loop, out), None
        accuracy = usage.pop("accuracy")
    except RunFailedError as failure:  # kept as a row: a method that diverges is a result
        usage, accuracy = {"failed": str(failure)}, None
    return {
        "method": method,
        "fraction": fraction,
        "seed": seed,
        "eval": args.eval,
        "accuracy": accuracy,
        "epochs": EPOCHS[fraction],
        **usage,
        "extra": args.extra.get(method, []),
        "tag": row_tag(args, method),
    }


def row_tag(args: argparse.Namespace, method: str) -> str:
    """The suffix of a row run with its own settings: ``--tag`` or ``-tuned``; none at defaults."""
    if not args.extra.get(method):
        return ""
    return f"-{args.tag}" if args.tag else "-tuned"


def _train(
    args: argparse.Namespace,
    data: dict[str, Path],
    method: str,
    fraction: float,
    loop: list[str],
    out: Path,
) -> dict[str, Any]:
    """One run of the student alone or of a method; its usage and accuracy."""
    if method == "student":
        usage = freekd(
            "teacher",
            "train",
            "--dataset",
            str(data[f"{fraction:g}"]),
            "--arch",
            args.student,
            *loop,
        )
        accuracy = json.loads((out / "report.json").read_text())["test_accuracy"]
    else:
        usage = freekd(
            *distill_args(args, data[f"{fraction:g}"], method),
            *[f for p in args.extra.get(method, []) for f in ("--set", p)],
            *loop,
        )
        accuracy = json.loads((out / "report.json").read_text())["student"]["test_accuracy"]
    return {**usage, "accuracy": accuracy}


def results_folder(label: str, evaluation: str) -> Path:
    """Where one table's rows live: ``results/<eval>/`` or, for another teacher,
    ``results/<label>/<eval>/`` (tables with different teachers never mix)."""
    return HERE / "results" / label / evaluation if label else HERE / "results" / evaluation


def summary(evaluation: str, label: str = "") -> None:
    rows = [
        json.loads(p.read_text()) for p in sorted(results_folder(label, evaluation).glob("*.json"))
    ]
    for row in rows:  # a row with its own settings is its own line ("dkd-tuned")
        row["method"] += row.get("tag", "-tuned" if row.get("extra") else "")
    fractions = sorted({row["fraction"] for row in rows})
    print(
        "| method | " + " | ".join(f"{f:.0%} of the images" for f in fractions) + " | CPU vs KD |"
    )
    print("|---|" + "---|" * (len(fractions) + 1))
    known = [m for m in METHODS for m in (m, f"{m}-tuned")]
    others = sorted({r["method"] for r in rows} - set(known))  # combinations (``kd+sp``)
    for method in known + others:
        if not any(r["method"] == method for r in rows):
            continue
        cells, ratios = [], []
        for fraction in fractions:
            mine = [r for r in rows if r["method"] == method and r["fraction"] == fraction]
            failed = [r for r in mine if r["accuracy"] is None]
            mine = [r for r in mine if r["accuracy"] is not None]
            values = sorted(100 * r["accuracy"] for r in mine)
            note = f"; {len(failed)} stopped: {failure_reasons(failed)}" if failed else ""
            cells.append(
                f"{statistics.median(values):.2f} ({' / '.join(f'{v:.2f}' for v in values)}{note})"
                if values
                else "—"
            )
            for r in mine:
                kd = [
                    k
                    for k in rows
                    if k["method"] == "kd" and k["fraction"] == fraction and k["seed"] == r["seed"]
                ]
                if kd:
                    ratios.append(r["cpu_seconds"] / kd[0]["cpu_seconds"])
        ratio = f"{statistics.median(ratios):.2f}×" if ratios else "—"
        print(f"| {method} | " + " | ".join(cells) + f" | {ratio} |")
    write_verdicts(rows, evaluation, label)


def spread_verdict(mine: list[float], other: list[float]) -> str:
    """``above`` when every seed of ``mine`` beats every seed of ``other`` (beyond the seed
    spread), ``below`` when every seed is beaten, ``within`` when the ranges overlap;
    ``unmeasured`` with fewer than two seeds on either side (no spread to go beyond)."""
    if len(mine) < 2 or len(other) < 2:
        return "unmeasured"
    if min(mine) > max(other):
        return "above"
    if max(mine) < min(other):
        return "below"
    return "within"


def write_verdicts(rows: list[dict[str, Any]], evaluation: str, label: str) -> None:
    """``summary-<eval>.json`` beside the rows: per method and training-set size the accuracies
    of its seeds, their median, and whether it beats the student alone and plain KD beyond the
    seed spread (the issue's question); printed as a second table."""

    def accuracies(method: str, fraction: float) -> list[float]:
        return sorted(
            round(100 * r["accuracy"], 2)
            for r in rows
            if r["method"] == method and r["fraction"] == fraction and r["accuracy"] is not None
        )

    def order(method: str) -> tuple[int, str]:  # the table's order: METHODS, then the rest
        base = method.removesuffix("-tuned")
        return (METHODS.index(base) if base in METHODS else len(METHODS), method)

    cells = []
    for method in sorted({r["method"] for r in rows}, key=order):
        for fraction in sorted({r["fraction"] for r in rows}):
            mine = accuracies(method, fraction)
            seeds = sum(r["method"] == method and r["fraction"] == fraction for r in rows)
            cells.append(
                {
                    "method": method,
                    "fraction": fraction,
                    "runs": seeds,
                    "failed": seeds - len(mine),
                    "accuracies": mine,
                    "median": statistics.median(mine) if mine else None,
                    "vs_student": None
                    if method == "student"
                    else spread_verdict(mine, accuracies("student", fraction)),
                    "vs_kd": None
                    if method == "kd"
                    else spread_verdict(mine, accuracies("kd", fraction)),
                }
            )
    folder = results_folder(label, evaluation)
    out = folder.parent / f"summary-{folder.name}.json"
    rule = "above/below: every seed beats / is beaten by every seed of the other; else within"
    atomic_write_json(out, {"command": " ".join(sys.argv), "rule": rule, "cells": cells})
    print(f"\n| method | size | vs student alone | vs KD |  ({out.relative_to(ROOT)})")
    print("|---|---|---|---|")
    for cell in cells:
        if cell["method"] not in ("student", "kd"):
            print(f"| {cell['method']} | {cell['fraction']:.0%} | {cell['vs_student']} "
                  f"| {cell['vs_kd']} |")  # fmt: skip


def method_state_mb(checkpoint: Path) -> float:
    """MB of the tensors a run's method holds besides the networks (queues, heads, adapters),
    read from its resume checkpoint."""
    import torch

    state = torch.load(checkpoint, weights_only=True)["method"]
    tensors = [v for v in state.values() if isinstance(v, torch.Tensor)]
    return round(sum(t.numel() * t.element_size() for t in tensors) / 2**20, 2)


def memory(args: argparse.Namespace) -> None:
    """Peak memory of kd and crd at 6,000 and 60,000 training images (one epoch each)."""
    sys.path.insert(0, str(ROOT))
    from freekd.data import load_dataset

    full = load_dataset("fashion-mnist:train")
    folder = args.runs / "data"
    folder.mkdir(parents=True, exist_ok=True)
    rows = []
    for size in (6000, 60000):
        path = folder / f"first-{size}.npz"
        x = as_uint8(full.images[:size])
        np.savez(path, x=x, y=full.labels[:size].numpy())
        for method in ("kd", "crd"):
            usage = freekd(
                *distill_args(args, path, method),
                "--set",
                "trainer.epochs=1",
                "--set",
                "trainer.eval_every=0",
                "--set",
                "eval_dataset=fashion-mnist:test",
                "--out",
                str(args.runs / "memory" / f"{method}-{size}"),
                "--overwrite",
                "--quiet",
            )
            state = method_state_mb(args.runs / "memory" / f"{method}-{size}" / "checkpoint.pt")
            bank = 2 * size * 128 * 4 / 2**20  # the paper's two N × 128 float32 memory banks
            rows.append(
                {
                    "method": method,
                    "train_images": size,
                    **usage,
                    "method_state_mb": state,
                    "paper_memory_bank_mb": round(bank, 2),
                }
            )
            print(json.dumps(rows[-1]), flush=True)
    out = HERE / "results" / "memory.json"
    out.parent.mkdir(parents=True, exist_ok=True)
    atomic_write_json(out, {"command": " ".join(sys.argv), "rows": rows})


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--teacher", type=Path, default=Path("runs/datafree-bench/teacher-fashion-mnist/model.pt")
    )
    parser.add_argument("--student", default="lenet5-half")
    parser.add_argument("--methods", nargs="+", default=METHODS)
    parser.add_argument("--fractions", type=float, nargs="+", default=[0.01, 0.1, 1.0])
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--eval", choices=["validation", "test"], default="validation")
    parser.add_argument("--lr", type=float, default=0.02)
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument(
        "--extra",
        type=json.loads,
        default={},
        help='per-method --set strings, JSON: {"fitnet": ["method.params.weight=10"]}',
    )
    parser.add_argument("--tag", default="", help="name of the --extra rows (default: tuned)")
    parser.add_argument("--runs", type=Path, default=RUNS)
    parser.add_argument(
        "--label", default="", help="results/<label>/<eval>/: the table of another teacher"
    )
    parser.add_argument("--summary", metavar="EVAL")
    parser.add_argument("--memory", action="store_true")
    parser.add_argument("--skip-done", action="store_true", help="keep rows already written")
    args = parser.parse_args()
    if args.summary:
        sys.path.insert(0, str(ROOT))
        summary(args.summary, args.label)
        return
    if not args.teacher.is_file():
        raise SystemExit(
            f"no teacher at {args.teacher}: build it with freekd teacher train "
            "--dataset fashion-mnist --arch resnet8 --lr 0.1 --out ..."
        )
    if args.memory:
        memory(args)
        return
    if args.label and args.runs == RUNS:  # never the default table's run folders
        args.runs = RUNS.with_name(f"{RUNS.name}-{args.label}")
    data = split_data(args.runs, args.fractions)
    results = results_folder(args.label, args.eval)
    results.mkdir(parents=True, exist_ok=True)
    for seed in args.seeds:
        for fraction in args.fractions:
            for method in args.methods:
                path = results / f"{method}{row_tag(args, method)}-{fraction:g}-seed{seed}.json"
                if args.skip_done and path.exists():
                    continue
                row = one_run(args, data, method, fraction, seed)
                atomic_write_json(path, {**row, "command": " ".join(sys.argv)})
                print(json.dumps(row), flush=True)


if __name__ == "__main__":
    main()
