"""An ImageNet-size teacher on a laptop: `freekd datafree` with the defaults plus `--student`.

The teacher is torchvision's ResNet-18 (BatchNorm, 3×224×224, 1,000 classes, 11.7M parameters)
with seeded random weights (no ImageNet weights can be downloaded here; memory and time do not
depend on the weights), saved as a plain state_dict and loaded through the user's own factory
function (``imagenet_teacher:resnet18_imagenet``) with ImageNet's mean/std. The run is the real
CLI with the defaults, ``--student torchvision:mobilenet_v3_small`` and a 64-image budget, under
an address-space limit of 14 GB (``ulimit -v``, which freekd's memory plan reads). Written:
whether it finished, its wall and CPU time, the child's peak resident memory, the memory plan's
warnings and whether ``samples.png`` exists.

    PYTHONPATH=. python experiments/2026-12-datafree-imagenet/run.py --out \\
        experiments/2026-12-datafree-imagenet/result.json
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import resource
import subprocess
import sys
import time
from pathlib import Path

import torch

from freekd.io import atomic_write_json

HERE = Path(__file__).parent
ROOT = HERE.parent.parent
LIMIT_GB = 14


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--runs", type=Path, default=ROOT / "runs/imagenet")
    parser.add_argument("--budget", default="64")
    args = parser.parse_args()
    sys.path.insert(0, str(HERE))
    from imagenet_teacher import resnet18_imagenet

    args.runs.mkdir(parents=True, exist_ok=True)
    teacher = args.runs / "teacher.pt"
    torch.manual_seed(0)
    torch.save(resnet18_imagenet().state_dict(), teacher)
    out = args.runs / "run"
    command = [
        "datafree", "--teacher", str(teacher), "--arch", "imagenet_teacher:resnet18_imagenet",
        "--input-shape", "3,224,224", "--mean", "0.485,0.456,0.406", "--std", "0.229,0.224,0.225",
        "--student", "torchvision:mobilenet_v3_small", "--budget", args.budget, "--seed", "0",
        "--out", str(out), "--overwrite",
    ]  # fmt: skip
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(ROOT), str(HERE)])}
    limit = LIMIT_GB * 1024**3

    def limit_memory() -> None:
        resource.setrlimit(resource.RLIMIT_AS, (limit, limit))

    start = time.perf_counter()
    done = subprocess.run(
        [sys.executable, "-m", "freekd", *command], env=env, cwd=ROOT, capture_output=True,
        text=True, preexec_fn=limit_memory,
    )  # fmt: skip
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    report_path = out / "report.json"
    report = json.loads(report_path.read_text()) if report_path.exists() else {}
    result = {
        "command": "freekd " + " ".join(command),
        "address_space_limit_gb": LIMIT_GB,
        "exit_status": done.returncode,
        "wall_seconds": round(time.perf_counter() - start, 1),
        "cpu_seconds": round(usage.ru_utime + usage.ru_stime, 1),
        "peak_rss_gb": round(usage.ru_maxrss / 1024**2, 2),  # ru_maxrss is in KiB on Linux
        "samples_png": (out / "samples.png").exists(),
        "warnings": [line for line in done.stderr.splitlines() if "WARNING" in line],
        "stderr_tail": done.stderr.strip().splitlines()[-3:],
        "synthesized_images": report.get("synthesized_images"),
        "teacher_queries": report.get("teacher_queries"),
        "steps": report.get("steps"),
        "synthesizer": (report.get("method") or {}).get("name"),
        "batch_size": ((report.get("method") or {}).get("params") or {}).get("batch_size"),
        "machine": f"{platform.node()}, {os.cpu_count()} cores",
    }
    atomic_write_json(args.out, result)
    print(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
