"""Time `.ci/run` (install from nothing + `make test`) in a fresh clone of this repository.

Usage: python experiments/2026-12-suite-time/measure.py [--rev HEAD] [--out result.json]

Clones the committed tree at --rev into a temporary folder, runs `bash .ci/run` there (exactly
what CI runs: `make install`, then the README's `make test`), and writes the wall time of the
install and of the test run, pytest's closing line, the commit and the machine's load to JSON.
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

HERE = Path(__file__).resolve().parent
REPO = HERE.parents[1]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rev", default="HEAD")
    parser.add_argument("--out", type=Path, default=HERE / "result.json")
    args = parser.parse_args()
    commit = subprocess.run(
        ["git", "-C", str(REPO), "rev-parse", args.rev], check=True, capture_output=True, text=True
    ).stdout.strip()
    with tempfile.TemporaryDirectory(prefix="freekd-ci-") as folder:
        clone = Path(folder) / "freekd"
        subprocess.run(["git", "clone", "-q", str(REPO), str(clone)], check=True)
        subprocess.run(["git", "-C", str(clone), "checkout", "-q", commit], check=True)
        shared = REPO.parent / "shared"
        if shared.is_dir():  # the CI layout: the read-only shared folder beside the clone
            (Path(folder) / "shared").symlink_to(shared)
        load_before = os.getloadavg()
        start = time.monotonic()
        install = subprocess.run(["make", "install"], cwd=clone, capture_output=True, text=True)
        installed = time.monotonic()
        if install.returncode != 0:
            sys.exit(f"make install failed:\n{install.stdout[-2000:]}\n{install.stderr[-2000:]}")
        ci = subprocess.run(
            ["bash", ".ci/run"], cwd=clone, capture_output=True, text=True,
            env={**os.environ, "CI": "true"},
        )  # fmt: skip
        finished = time.monotonic()
        load_after = os.getloadavg()
    lines = [line for line in ci.stdout.splitlines() if line.strip()]
    closing = next((line for line in reversed(lines) if re.search(r"\d+ passed", line)), None)
    seconds = re.search(r"in ([\d.]+)s", closing or "")
    result = {
        "what": "bash .ci/run in a fresh clone: make install, then make test (README's command)",
        "commit": commit,
        "exit_status": ci.returncode,
        "install_wall_seconds": round(installed - start, 1),
        "ci_run_wall_seconds": round(finished - installed, 1),
        "pytest_closing_line": closing,
        "pytest_seconds": float(seconds.group(1)) if seconds else None,
        "load_average_before_after": [round(load_before[0], 2), round(load_after[0], 2)],
        "cores": os.cpu_count(),
    }
    # Atomically (the system python runs this script, so without freekd.io): a reader sees the
    # old file or the whole new one.
    partial = args.out.with_name(f".{args.out.name}.tmp")
    partial.write_text(json.dumps(result, indent=2) + "\n")
    partial.replace(args.out)
    print(json.dumps(result, indent=2))
    if ci.returncode != 0:
        sys.exit(f".ci/run failed:\n{ci.stdout[-3000:]}\n{ci.stderr[-3000:]}")


if __name__ == "__main__":
    main()
