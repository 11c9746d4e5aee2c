"""MNIST privacy-audit benchmark: `freekd audit pipeline` per seed, plus shadow-model timing.

    python experiments/audit/bench.py --seeds 0 1 2 --out runs/audit-bench
    python experiments/audit/bench.py --timing-only --out runs/audit-bench   # loop vs vmap only

Each seed runs the whole distillation threat model (configs/audit/mnist.yaml): a LeNet-5 teacher
on about 1,000 members, students by real-data KD, data-free, PATE and DP-SGD teacher + data-free,
every model audited with 16 shadow models. The timing part trains the same 16 shadow models of
seed 0's teacher one by one (``loop``) and as one vectorised batch (``vmap``), alternating, in
the same process tree, and reports the median of ``--repeats`` runs each. Results go to
experiments/audit/mnist.json (the file the README's table is built from).
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
CONFIG = ROOT / "configs" / "audit" / "mnist.yaml"


def freekd(*arguments: str) -> None:
    environment = {**os.environ, "OMP_NUM_THREADS": os.environ.get("OMP_NUM_THREADS", "1")}
    command = [sys.executable, "-m", "freekd", *arguments, "-q"]
    print("$", " ".join(command[2:]), flush=True)
    subprocess.run(command, check=True, env=environment)


def run_seed(out: Path, seed: int) -> dict:
    folder = out / f"seed-{seed}"
    if not (folder / "report.json").exists():
        resume = ["--resume"] if folder.exists() else []
        freekd("audit", "pipeline", "--config", str(CONFIG), "--seed", str(seed),
               "--out", str(folder), *resume)  # fmt: skip
    return json.loads((folder / "report.json").read_text())


def shadow_timing(out: Path, repeats: int) -> dict:
    seed_dir = out / "seed-0"
    times: dict[str, list[dict]] = {"loop": [], "vmap": []}
    for repeat in range(repeats):
        for execution in ("loop", "vmap"):
            folder = out / "timing" / f"{execution}-{repeat}"
            if not (folder / "report.json").exists():
                freekd(
                    "audit", "--model", str(seed_dir / "teacher" / "model.pt"),
                    "--members", str(seed_dir / "data" / "members.npz"),
                    "--non-members", str(seed_dir / "data" / "non_members.npz"),
                    "--attack", "loss,lira-online", "--shadow-models", "16",
                    "--set", f"shadow.execution={execution}", "--random-split",
                    "--out", str(folder), "--overwrite",
                )  # fmt: skip
            report = json.loads((folder / "report.json").read_text())
            times[execution].append(
                report["shadow_models"] | {"lira_auc": report["attacks"]["lira-online"]["auc"]}
            )
    summary = {
        execution: {
            "wall_seconds_median": statistics.median(r["wall_seconds"] for r in runs),
            "cpu_seconds_median": statistics.median(r["cpu_seconds"] for r in runs),
            "wall_seconds": [r["wall_seconds"] for r in runs],
            "lira_online_auc": [round(r["lira_auc"], 4) for r in runs],
        }
        for execution, runs in times.items()
    }
    summary["vmap_over_loop_wall"] = round(
        summary["vmap"]["wall_seconds_median"] / summary["loop"]["wall_seconds_median"], 3
    )
    summary["models"] = 16
    summary["threads"] = int(os.environ.get("OMP_NUM_THREADS", "1"))
    return summary


def table(reports: dict[int, dict]) -> dict:
    """Per model: every seed's row and the medians of the headline figures."""
    rows: dict[str, list[dict]] = {}
    for seed, report in sorted(reports.items()):
        for row in report["table"]:
            rows.setdefault(row["model"], []).append(row | {"seed": seed})
    medians = {}
    for model, runs in rows.items():

        def median(key: str, runs: list[dict] = runs) -> float | None:
            values = [r[key] for r in runs if r[key] is not None]
            return statistics.median(values) if values else None

        def tpr(attack: str, fpr: str, runs: list[dict] = runs) -> float | None:
            values = [r["tpr_at_fpr"][attack][fpr] for r in runs if attack in r["tpr_at_fpr"]]
            return statistics.median(values) if values else None

        medians[model] = {
            "tpr_at_0.001": {attack: tpr(attack, "0.001") for attack in runs[0]["tpr_at_fpr"]},
            "tpr_at_0.01": {attack: tpr(attack, "0.01") for attack in runs[0]["tpr_at_fpr"]},
            "test_accuracy": median("test_accuracy"),
            "loss_auc": statistics.median(r["auc"]["loss"] for r in runs),
            "lira_online_auc": statistics.median(r["auc"]["lira-online"] for r in runs),
            "rmia_auc": statistics.median(r["auc"]["rmia"] for r in runs),
            "best_auc": median("best_auc"),
            "lira_tpr_at_0.001": median("lira_tpr_at_0.001"),
            "loss_tpr_at_0.001": median("loss_tpr_at_0.001"),
            "epsilon_lower_bound": median("epsilon_lower_bound"),
            "accountant_epsilon": median("accountant_epsilon"),
            "consistent": all(r["consistent"] is not False for r in runs),
            "seeds": len(runs),
        }
    return {"medians": medians, "runs": rows}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--out", type=Path, default=Path("runs/audit-bench"))
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--timing-only", action="store_true")
    parser.add_argument("--no-timing", action="store_true")
    arguments = parser.parse_args()
    result_path = HERE / "mnist.json"
    result = json.loads(result_path.read_text()) if result_path.exists() else {}
    if not arguments.timing_only:
        reports = {seed: run_seed(arguments.out, seed) for seed in arguments.seeds}
        result["seeds"] = sorted(reports)
        result["config"] = str(CONFIG.relative_to(ROOT))
        result |= table(reports)
    if not arguments.no_timing:
        result["shadow_timing"] = shadow_timing(arguments.out, arguments.repeats)
    atomic_write_json(result_path, result)
    print(json.dumps(result.get("medians", {}), indent=2))
    print(json.dumps(result.get("shadow_timing", {}), indent=2))


if __name__ == "__main__":
    main()
