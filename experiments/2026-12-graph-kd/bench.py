"""Graph KD on Cora and CiteSeer (issue 22): GNN teachers, MLP students (GLNN), small GNNs (LSP).

Every row is the real CLI (``freekd graph teacher`` / ``freekd graph distill``). Settings are
chosen on the validation nodes of Cora, transductive (``--tune``); the table reports the test
nodes of Cora and CiteSeer in both settings over five seeds (``--test``). CiteSeer is never
looked at while choosing. A distill run trains its baseline (the same student alone) in the
same process and times teacher and student one after the other.

    python experiments/2026-12-graph-kd/bench.py --tune
    python experiments/2026-12-graph-kd/bench.py --test --student-wd WD --lsp-weight W
    python experiments/2026-12-graph-kd/bench.py --summary

Results: one JSON per run in ``results/<stage>/``; ``--summary`` prints the README table.
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

from freekd.io import atomic_write_json

ROOT = Path(__file__).resolve().parents[2]
HERE = Path(__file__).resolve().parent
TEACHERS = ("gcn", "sage")


def freekd(*args: str) -> None:
    env = {**os.environ, "OMP_NUM_THREADS": os.environ.get("OMP_NUM_THREADS", "1")}
    done = subprocess.run([sys.executable, "-m", "freekd", *args], env=env, cwd=ROOT)
    if done.returncode:
        raise SystemExit(f"freekd {' '.join(args)} failed ({done.returncode})")


def teacher(runs: Path, dataset: str, setting: str, arch: str, seed: int) -> Path:
    out = runs / f"{dataset}-{setting}-{arch}-seed{seed}"
    if not (out / "report.json").exists():
        freekd(
            "graph",
            "teacher",
            "--dataset",
            dataset,
            "--setting",
            setting,
            "--arch",
            arch,
            "--seed",
            str(seed),
            "--device",
            "cpu",
            "--quiet",
            "--out",
            str(out),
            "--overwrite",
        )
    return out


def distill(out: Path, teacher_dir: Path, seed: int, *flags: str) -> dict[str, Any]:
    if not (out / "report.json").exists():
        freekd(
            "graph",
            "distill",
            "--teacher",
            str(teacher_dir / "model.pt"),
            "--seed",
            str(seed),
            "--device",
            "cpu",
            "--quiet",
            "--out",
            str(out),
            "--overwrite",
            *flags,
        )
    return json.loads((out / "report.json").read_text())


def save(stage: str, name: str, row: dict[str, Any]) -> None:
    folder = HERE / "results" / stage
    folder.mkdir(parents=True, exist_ok=True)
    row = {**row, "command": " ".join(sys.argv)}
    atomic_write_json((folder / f"{name}.json"), row)
    print(json.dumps({k: v for k, v in row.items() if k != "report"}), flush=True)


def tune(args: argparse.Namespace) -> None:
    """Cora, transductive, seeds 0-1: the MLP student's weight decay for GLNN and the LSP
    weight, by validation accuracy only."""
    runs = args.runs / "tune"
    for seed in (0, 1):
        gcn = teacher(runs, "cora", "transductive", "gcn", seed)
        for wd in ("0", "0.0005", "0.005"):
            name = f"glnn-wd{wd}-seed{seed}"
            report = distill(
                runs / name,
                gcn,
                seed,
                "--no-baseline",
                "--set",
                f"trainer.weight_decay={wd}",
                "--set",
                "timing_repeats=1",
            )
            save(
                "tune",
                name,
                {
                    "student_weight_decay": float(wd),
                    "seed": seed,
                    "validation_accuracy": report["student"]["validation_accuracy"],
                },
            )
        for weight in ("1", "10", "100"):
            name = f"lsp-w{weight}-seed{seed}"
            report = distill(
                runs / name,
                gcn,
                seed,
                "--no-baseline",
                "--method",
                "lsp",
                "--student",
                "gcn-small",
                "--set",
                f"method.params.weight={weight}",
                "--set",
                "trainer.weight_decay=0.0005",
                "--set",
                "timing_repeats=1",
            )
            save(
                "tune",
                name,
                {
                    "lsp_weight": float(weight),
                    "seed": seed,
                    "validation_accuracy": report["student"]["validation_accuracy"],
                },
            )


def test(args: argparse.Namespace) -> None:
    runs = args.runs / "test"
    for seed in args.seeds:
        for dataset in args.datasets:
            for setting in args.settings:
                one_cell(args, runs, dataset, setting, seed)


def one_cell(args: argparse.Namespace, runs: Path, dataset: str, setting: str, seed: int) -> None:
    tag = f"{dataset}-{setting}-seed{seed}"
    dirs = {arch: teacher(runs, dataset, setting, arch, seed) for arch in TEACHERS}
    for arch, folder in dirs.items():
        report = json.loads((folder / "report.json").read_text())
        save(
            "test",
            f"teacher-{arch}-{tag}",
            {
                "kind": "teacher",
                "arch": arch,
                "dataset": dataset,
                "setting": setting,
                "seed": seed,
                "report": report,
            },
        )
    mlp = ["--set", f"trainer.weight_decay={args.student_wd}"]
    for arch, folder in dirs.items():  # the MLP alone is trained once, beside GCN's student
        extra = [] if arch == "gcn" else ["--no-baseline"]
        report = distill(runs / f"glnn-{arch}-{tag}", folder, seed, *mlp, *extra)
        save(
            "test",
            f"glnn-{arch}-{tag}",
            {
                "kind": "glnn",
                "teacher": arch,
                "dataset": dataset,
                "setting": setting,
                "seed": seed,
                "report": report,
            },
        )
    if args.with_kd:
        report = distill(
            runs / f"kd-gcn-{tag}", dirs["gcn"], seed, "--method", "kd", "--no-baseline", *mlp
        )
        save(
            "test",
            f"kd-gcn-{tag}",
            {
                "kind": "kd",
                "teacher": "gcn",
                "dataset": dataset,
                "setting": setting,
                "seed": seed,
                "report": report,
            },
        )
    report = distill(
        runs / f"lsp-gcn-{tag}",
        dirs["gcn"],
        seed,
        "--method",
        "lsp",
        "--student",
        "gcn-small",
        "--set",
        f"method.params.weight={args.lsp_weight}",
        "--set",
        "trainer.weight_decay=0.0005",
    )
    save(
        "test",
        f"lsp-gcn-{tag}",
        {
            "kind": "lsp",
            "teacher": "gcn",
            "dataset": dataset,
            "setting": setting,
            "seed": seed,
            "report": report,
        },
    )


def _cell(values: list[float]) -> str:
    if not values:
        return "—"
    values = sorted(100 * v for v in values)
    return f"{statistics.median(values):.2f} ({values[0]:.2f}–{values[-1]:.2f})"


def summary() -> None:
    rows = [json.loads(p.read_text()) for p in sorted((HERE / "results" / "test").glob("*.json"))]
    cells = sorted({(r["dataset"], r["setting"]) for r in rows})
    print("| row | " + " | ".join(f"{d} {s}" for d, s in cells) + " |")
    print("|---|" + "---|" * len(cells))
    lines = [
        ("GCN teacher", lambda r: r["kind"] == "teacher" and r["arch"] == "gcn", "self"),
        ("SAGE teacher", lambda r: r["kind"] == "teacher" and r["arch"] == "sage", "self"),
        ("MLP alone", lambda r: r["kind"] == "glnn" and r["teacher"] == "gcn", "baseline"),
        ("MLP, GLNN from GCN", lambda r: r["kind"] == "glnn" and r["teacher"] == "gcn", "student"),
        (
            "MLP, GLNN from SAGE",
            lambda r: r["kind"] == "glnn" and r["teacher"] == "sage",
            "student",
        ),
        ("MLP, KD on labelled nodes (GCN)", lambda r: r["kind"] == "kd", "student"),
        ("GCN-small alone", lambda r: r["kind"] == "lsp", "baseline"),
        ("GCN-small, LSP from GCN", lambda r: r["kind"] == "lsp", "student"),
    ]
    for label, match, part in lines:
        out = []
        for dataset, setting in cells:
            mine = [
                r for r in rows if match(r) and (r["dataset"], r["setting"]) == (dataset, setting)
            ]
            entries = [r["report"] if part == "self" else r["report"][part] for r in mine]
            out.append(_cell([e["test_accuracy"] for e in entries]))
        print(f"| {label} | " + " | ".join(out) + " |")
    for arch in TEACHERS:
        out = []
        for dataset, setting in cells:
            mine = [
                r["report"]["inference"]
                for r in rows
                if r["kind"] == "glnn"
                and r["teacher"] == arch
                and (r["dataset"], r["setting"]) == (dataset, setting)
            ]
            online = sorted(m["speedup"] for m in mine)
            batch = sorted(m["batch_speedup"] for m in mine)
            out.append(
                f"{statistics.median(online):.1f}× / {statistics.median(batch):.1f}×"
                if mine
                else "—"
            )
        print(
            f"| MLP speed-up over {arch.upper()} (one node / all test nodes) | "
            + " | ".join(out)
            + " |"
        )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--tune", action="store_true")
    parser.add_argument("--test", action="store_true")
    parser.add_argument("--summary", action="store_true")
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2, 3, 4])
    parser.add_argument("--datasets", nargs="+", default=["cora", "citeseer"])
    parser.add_argument("--settings", nargs="+", default=["transductive", "inductive"])
    parser.add_argument("--student-wd", default="0", help="MLP weight decay (from --tune)")
    parser.add_argument("--lsp-weight", default="100", help="LSP's λ (from --tune)")
    parser.add_argument("--with-kd", action="store_true", help="also KD on labelled nodes only")
    parser.add_argument("--runs", type=Path, default=Path("runs/graph-kd"))
    args = parser.parse_args()
    if args.tune:
        tune(args)
    if args.test:
        test(args)
    if args.summary:
        summary()


if __name__ == "__main__":
    main()
