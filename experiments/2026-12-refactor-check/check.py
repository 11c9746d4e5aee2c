"""Issue 18 kept behaviour: the same short runs, one per feature, on the commit before the
refactor and on the commit after it, side by side on one machine.

Each commit is cloned into a temporary folder and its ``freekd`` run (with the project's venv and
``PYTHONPATH`` pointing at the clone) on seeded CPU commands:

- ``demo``: MNIST LeNet-5 teacher → KD student → data-free (zskt) student (the README's demo);
- ``pate run`` on configs/pate/digits_k8_gnmax.yaml (three stages, ledger, ε);
- ``audit`` of the demo teacher, 4 shadow models on 300 members and 300 non-members;
- ``crossmodal teacher`` then ``crossmodal distill`` on digits, 1 epoch each.

Every numeric leaf of every ``report.json`` is compared, except times, paths and versions.
Writes a JSON with both commits' figures and the differences.

    python experiments/2026-12-refactor-check/check.py --old 9aabbcb --new HEAD --out result.json
"""

from __future__ import annotations

import argparse
import json
import os
import re
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from freekd.io import atomic_write_text

REPO = Path(__file__).resolve().parents[2]
# Keys whose values differ between two runs of the same code (times, places, versions).
VOLATILE = re.compile(r"(seconds|wall|path|folder|_dir|version|host|pid|date|files?|^out)$|time")


def commands(run: Path) -> list[tuple[str, list[str], Path]]:
    """(name, freekd arguments, folder whose report.json is compared)."""
    demo = run / "demo"
    return [
        ("demo", ["demo", "--out", str(demo), "--overwrite"], demo),
        (
            "pate-run",
            ["pate", "run", "--config", "configs/pate/digits_k8_gnmax.yaml",
             "--out", str(run / "pate"), "-q"],
            run / "pate",
        ),
        (
            "audit",
            ["audit", "--model", str(demo / "teacher" / "model.pt"), "--members", "mnist:train",
             "--non-members", "mnist:test", "--max-examples", "300", "--shadow-models", "4",
             "--seed", "0", "--out", str(run / "audit"), "-q"],
            run / "audit",
        ),
        (
            "crossmodal-teacher",
            ["crossmodal", "teacher", "--pairs", "digits", "--epochs", "1", "--deterministic",
             "--out", str(run / "clip-teacher"), "-q"],
            run / "clip-teacher",
        ),
        (
            "crossmodal-distill",
            ["crossmodal", "distill", "--teacher", str(run / "clip-teacher" / "model.pt"),
             "--pairs", "digits", "--epochs", "1", "--deterministic",
             "--out", str(run / "clip-student"), "-q"],
            run / "clip-student",
        ),
    ]  # fmt: skip


def numbers(value: Any, prefix: str = "") -> dict[str, float]:
    """Every numeric leaf of a report, by dotted key, without the volatile ones."""
    found: dict[str, float] = {}
    if isinstance(value, dict):
        for key, item in value.items():
            if not VOLATILE.search(str(key)):
                found.update(numbers(item, f"{prefix}{key}."))
    elif isinstance(value, list):
        for index, item in enumerate(value):
            found.update(numbers(item, f"{prefix}{index}."))
    elif isinstance(value, int | float):  # bool is an int
        found[prefix[:-1]] = float(value)
    return found


def reports(folder: Path) -> dict[str, float]:
    """Numbers of the folder's report.json and of every stage folder's report.json below it."""
    found: dict[str, float] = {}
    for path in sorted(folder.rglob("report.json")):
        stage = str(path.parent.relative_to(folder)) or "."
        if "shadows" in path.parts:
            continue
        for key, value in numbers(json.loads(path.read_text())).items():
            found[f"{stage}:{key}"] = value
    return found


def run_commit(rev: str, work: Path) -> dict[str, Any]:
    clone = work / f"clone-{rev}"
    subprocess.run(["git", "clone", "-q", str(REPO), str(clone)], check=True)
    subprocess.run(["git", "-C", str(clone), "checkout", "-q", rev], check=True)
    sha = subprocess.run(["git", "-C", str(clone), "rev-parse", "HEAD"], check=True,
                         capture_output=True, text=True).stdout.strip()  # fmt: skip
    env = {**os.environ, "PYTHONPATH": str(clone), "COLUMNS": "200"}
    runs: dict[str, Any] = {}
    for name, arguments, folder in commands(work / f"runs-{rev}"):
        start = time.perf_counter()
        done = subprocess.run([sys.executable, "-m", "freekd", *arguments], cwd=clone, env=env,
                              capture_output=True, text=True)  # fmt: skip
        runs[name] = {
            "command": "freekd " + " ".join(arguments),
            "exit": done.returncode,
            "stderr_tail": done.stderr.strip().splitlines()[-3:],
            "wall_seconds": round(time.perf_counter() - start, 1),
            "figures": reports(folder) if folder.exists() else {},
        }
        print(f"{rev} {name}: exit {done.returncode}, {runs[name]['wall_seconds']} s", flush=True)
    return {"rev": rev, "sha": sha, "runs": runs}


def compare(old: dict[str, Any], new: dict[str, Any]) -> dict[str, Any]:
    result = {}
    for name, before in old["runs"].items():
        after = new["runs"].get(name, {"figures": {}, "exit": None})
        a, b = before["figures"], after["figures"]
        common = sorted(set(a) & set(b))
        differ = {k: [a[k], b[k]] for k in common if abs(a[k] - b[k]) > 1e-9}
        result[name] = {
            "exit": [before["exit"], after["exit"]],
            "figures_compared": len(common),
            "only_before": sorted(set(a) - set(b)),
            "only_after": sorted(set(b) - set(a)),
            "different": differ,
            "identical": before["exit"] == after["exit"] == 0 and not differ and bool(common),
        }
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--old", required=True)
    parser.add_argument("--new", default="HEAD")
    parser.add_argument("--out", type=Path, required=True)
    args = parser.parse_args()
    new_rev = subprocess.run(["git", "-C", str(REPO), "rev-parse", "--short", args.new],
                             check=True, capture_output=True, text=True).stdout.strip()  # fmt: skip
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        old = run_commit(args.old, work)
        new = run_commit(new_rev, work)
    result = {"old": old, "new": new, "comparison": compare(old, new)}
    atomic_write_text(args.out, json.dumps(result, indent=1))
    for name, row in result["comparison"].items():
        print(f"{name}: identical={row['identical']} compared={row['figures_compared']} "
              f"different={len(row['different'])}")  # fmt: skip


if __name__ == "__main__":
    main()
