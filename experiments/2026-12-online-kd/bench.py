"""Online KD on Fashion-MNIST: vanilla vs DML (2 and 4 peers) vs ONE (3 branches) (issue 21).

Every row is the real CLI, ``freekd online``, per regime and seed:

- ``dml2``: DML with two peers, and the vanilla network trained alone in the same run (its
  ``baseline``, same loop, data and seed): the vanilla row and the CPU reference;
- ``dml4``: DML with four peers (``--no-baseline``);
- ``one``: ONE with three branches (``--no-baseline``).

Regimes: ``full`` (all 60,000 training images) and ``10pct`` (a class-stratified 6,000 of them,
fixed seed 0). Each run holds out 10 % of its training images (``validation_fraction``) to choose
its deployable network; nothing is chosen on the test split, which is ``fashion-mnist:test``.

    python experiments/2026-12-online-kd/bench.py --regimes 10pct --seeds 0 1 2
    python experiments/2026-12-online-kd/bench.py --regimes full --seeds 0 1 2
    python experiments/2026-12-online-kd/bench.py --summary          # the README table

Results: one JSON per run in ``results/<regime>/<row>-seed<k>.json``.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
from pathlib import Path
from typing import Any

import numpy as np

from freekd.io import atomic_write_json

ROOT = Path(__file__).resolve().parents[2]
HERE = Path(__file__).resolve().parent
ROWS = {
    "dml2": ["--method", "dml", "--peers", "2"],
    "dml4": ["--method", "dml", "--peers", "4", "--no-baseline"],
    "one": ["--method", "one", "--no-baseline"],
}
EPOCHS = {"full": 3, "10pct": 20}


def regime_data(runs: Path, regime: str) -> str:
    """The training data spec of a regime (the 10 % subset written once, atomically)."""
    if regime == "full":
        return "fashion-mnist"
    path = runs / "data" / "train-10pct.npz"
    if not path.exists():
        sys.path.insert(0, str(ROOT))
        from freekd.data import load_dataset

        full = load_dataset("fashion-mnist:train")
        labels = full.labels.numpy()
        order = np.random.default_rng(0).permutation(len(labels))
        chosen = np.sort(np.concatenate([order[labels[order] == k][:600] for k in range(10)]))
        images = full.images[chosen].numpy()
        if images.dtype != np.uint8:  # stored as uint8 by freekd; keep the pixels exact
            images = np.round(images * 255).astype(np.uint8)
        path.parent.mkdir(parents=True, exist_ok=True)
        temporary = path.with_suffix(".tmp.npz")
        np.savez(temporary, x=images[:, 0], y=labels[chosen])
        temporary.replace(path)
    return str(path)


def one_run(args: argparse.Namespace, regime: str, row: str, seed: int) -> dict[str, Any]:
    out = args.runs / regime / f"{row}-seed{seed}"
    command = [
        sys.executable, "-m", "freekd", "online", "--dataset", regime_data(args.runs, regime),
        "--eval-data", "fashion-mnist:test", "--arch", args.arch, *ROWS[row],
        "--epochs", str(EPOCHS[regime]), "--batch-size", str(args.batch_size),
        "--lr", str(args.lr), "--seed", str(seed), "--out", str(out), "--overwrite", "--quiet",
    ]  # fmt: skip
    env = {**os.environ, "OMP_NUM_THREADS": os.environ.get("OMP_NUM_THREADS", "1")}
    result = subprocess.run(command, cwd=ROOT, env=env, capture_output=True, text=True)
    if result.returncode:
        return {"failed": result.stderr.strip().splitlines()[-1:]}
    report = json.loads((out / "report.json").read_text())
    keep = ("networks", "ensemble", "student", "baseline", "cpu_seconds", "wall_seconds", "steps")
    return {key: report[key] for key in keep}


def summary() -> None:
    """Medians of the test accuracy (each seed in parentheses) and CPU relative to vanilla."""
    for regime in EPOCHS:
        rows: dict[str, dict[int, dict[str, Any]]] = {}
        for path in sorted((HERE / "results" / regime).glob("*.json")):
            data = json.loads(path.read_text())
            rows.setdefault(data["row"], {})[data["seed"]] = data
        if not rows:
            continue
        print(f"\n{regime}: test accuracy, median (seeds); CPU vs vanilla")
        vanilla = {s: d["baseline"] for s, d in rows.get("dml2", {}).items() if d.get("baseline")}
        cells = [
            (
                "vanilla",
                {s: next(iter(b.values()))["test_accuracy"] for s, b in vanilla.items()},
                1.0,
            )
        ]  # noqa: E501
        for row, seeds in rows.items():
            ratio = statistics.median(
                d["cpu_seconds"] / next(iter(vanilla[s].values()))["cpu_seconds"]
                for s, d in seeds.items()
                if s in vanilla
            ) if vanilla else float("nan")  # fmt: skip
            single = {s: d["student"]["test_accuracy"] for s, d in seeds.items()}
            ensemble = {s: d["ensemble"]["test_accuracy"] for s, d in seeds.items()}
            cells += [(f"{row} deployable", single, ratio), (f"{row} ensemble", ensemble, ratio)]
        for name, values, ratio in cells:
            shown = " / ".join(f"{100 * values[s]:.2f}" for s in sorted(values))
            median = 100 * statistics.median(values.values())
            print(f"| {name} | {median:.2f} ({shown}) | {ratio:.2f}× |")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--regimes", nargs="+", choices=list(EPOCHS), default=list(EPOCHS))
    parser.add_argument("--rows", nargs="+", choices=list(ROWS), default=list(ROWS))
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--arch", default="resnet8")
    parser.add_argument("--lr", type=float, default=0.05)
    parser.add_argument("--batch-size", type=int, default=128)
    parser.add_argument("--runs", type=Path, default=Path("runs/online-kd"))
    parser.add_argument("--summary", action="store_true")
    parser.add_argument("--skip-done", action="store_true", help="keep rows already written")
    args = parser.parse_args()
    if args.summary:
        summary()
        return
    for seed in args.seeds:
        for regime in args.regimes:
            for row in args.rows:
                path = HERE / "results" / regime / f"{row}-seed{seed}.json"
                if args.skip_done and path.exists():
                    continue
                data = one_run(args, regime, row, seed)
                record = {"row": row, "regime": regime, "seed": seed, "arch": args.arch, **data,
                          "command": " ".join(sys.argv)}  # fmt: skip
                path.parent.mkdir(parents=True, exist_ok=True)
                atomic_write_json(path, record)
                print(json.dumps({k: v for k, v in record.items() if k != "networks"}), flush=True)


if __name__ == "__main__":
    main()
