"""Data-free defaults on the zoo: `freekd datafree` with no flags but the teacher's, per seed.

Each run is the real CLI with only what the teacher needs (``datafree_flags`` in ``zoo.json``:
``--teacher``, and for a plain state_dict ``--arch``, ``--input-shape``, ``--mean``/``--std``),
the seed, the data accuracy is reported on, and the output folder; a variant adds its own flags
(``--extra``) under its own ``--tag``. Runs go two at a time, one thread each (a 2-core machine).
Every finished run is written at once as its own JSON, so an interrupted benchmark keeps what it
measured:

    results/<tag>/<teacher>-seed<k>-<eval>.json

``--eval validation`` reports on the 5,000 training images the user-class teachers held out
(``runs/zoo/mnist-validation.npz``, written on first use): defaults are *chosen* on that, on the
tuning teachers only. ``--eval test`` reports on ``mnist:test``: the held-out teachers' figures.
Each JSON holds the student's accuracy after every epoch against the process's CPU seconds (the
curve), and the run's collapse measurements.

    PYTHONPATH=. python experiments/2026-12-datafree-zoo/bench_zoo.py --split tuning \\
        --seeds 0 --eval validation --tag default
    python experiments/2026-12-datafree-zoo/bench_zoo.py --summary default
"""

from __future__ import annotations

import argparse
import json
import os
import shlex
import statistics
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import yaml

from freekd.io import atomic_write_json

HERE = Path(__file__).parent
ROOT = HERE.parent.parent
RESULTS = HERE / "results"
VALIDATION = ROOT / "runs/zoo/mnist-validation.npz"
FIT = ROOT / "runs/zoo/mnist-fit.npz"  # the other 55,000 training images (``--real-proxy``)


def zoo() -> dict[str, dict[str, Any]]:
    return {t["name"]: t for t in json.loads((HERE / "zoo.json").read_text())["teachers"]}


def validation_file(part: str = "validation") -> Path:
    """The user loop's 5,000 held-out training images (``build_zoo.load_mnist``) as an npz, or
    with ``part="train"`` the other 55,000 (written once, atomically)."""
    path = {"validation": VALIDATION, "train": FIT}[part]
    if not path.exists():
        import numpy as np

        sys.path.insert(0, str(HERE))
        from build_zoo import load_mnist

        images, labels = load_mnist()[part]
        from freekd.io import atomic_write

        pixels = (images * 255).round().clamp(0, 255).byte().numpy()
        atomic_write(path, lambda stream: np.savez(stream, x=pixels, y=labels.numpy()))
    return path


def curve(out: Path) -> list[dict[str, float]]:
    """(epoch, CPU seconds, held-out accuracy) of every evaluated epoch in metrics.jsonl, with
    the collapse check's latest measurements (``collapse/...``) at that step and, when the
    synthesizer logs it (``balance_target``, ``balance_after``), the mean of
    ``synthesis/balance_active`` over the epoch's logged steps (the last synthesis round before
    each logged step: with zskt's defaults one round in five), and ``confident_probe``'s
    ``probe/...`` measurements of the epoch's student; with a tail average
    (``trainer.swa_start``) also the accuracy of what the run would evaluate without it."""
    points: list[dict[str, float]] = []
    checks: dict[str, float] = {}
    active: list[float] = []
    for line in (out / "metrics.jsonl").read_text().splitlines():
        record = json.loads(line)
        measured = {k: v for k, v in record.items() if k.startswith("collapse/")}
        checks = measured or checks  # a check's measurements replace the last check's
        if "synthesis/balance_active" in record:
            active.append(record["synthesis/balance_active"])
        if "eval_accuracy" in record:
            gate = {"balance_active": statistics.mean(active)} if active else {}
            active = []
            points.append(
                {
                    "epoch": record["epoch"],
                    "step": record["step"],
                    # Named cpu_seconds in runs made before the field was renamed.
                    "process_cpu_seconds": record.get(
                        "process_cpu_seconds", record.get("cpu_seconds")
                    ),
                    "accuracy": record["eval_accuracy"],
                    # What a run with a tail average (trainer.swa_start) would have measured
                    # without it, side by side: ``accuracy/ema`` (or ``accuracy/raw``).
                    **{
                        "accuracy/" + k.removeprefix("eval_accuracy/"): v
                        for k, v in record.items()
                        if k.startswith("eval_accuracy/")
                    },
                    **checks,
                    **gate,
                    # confident_probe's measurement of this epoch's student, if the run has it.
                    **{k: v for k, v in record.items() if k.startswith("probe/")},
                }
            )
    return points


def run_folder(name: str, seed: int, *, tag: str, evaluation: str) -> Path:
    return ROOT / "runs/zoo-bench" / tag / f"{name}-seed{seed}-{evaluation}"


def run_args(name: str, seed: int, *, tag: str, extra: list[str], evaluation: str) -> list[str]:
    """The ``freekd datafree`` arguments of one run: the teacher's own flags and ``extra``."""
    eval_data = str(validation_file()) if evaluation == "validation" else "mnist:test"
    out = run_folder(name, seed, tag=tag, evaluation=evaluation)
    return [
        *zoo()[name]["datafree_flags"], *extra, "--eval-data", eval_data, "--seed", str(seed),
        "--out", str(out), "--overwrite", "--quiet",
    ]  # fmt: skip


def row_head(name: str, seed: int, *, tag: str, evaluation: str, command: str) -> dict[str, Any]:
    """What every row starts with."""
    return {
        "teacher": name,
        "split": zoo()[name]["split"],
        "seed": seed,
        "tag": tag,
        "eval": evaluation,
        "command": command,
    }


def run_one(name: str, seed: int, *, tag: str, extra: list[str], evaluation: str) -> Path:
    out = run_folder(name, seed, tag=tag, evaluation=evaluation)
    args = run_args(name, seed, tag=tag, extra=extra, evaluation=evaluation)
    env = {
        **os.environ,
        "OMP_NUM_THREADS": "1",
        "PYTHONPATH": os.pathsep.join([str(ROOT), str(HERE)]),
    }
    start = time.perf_counter()
    done = subprocess.run(
        [sys.executable, "-m", "freekd", "datafree", *args],
        env=env, cwd=ROOT, capture_output=True, text=True,
    )  # fmt: skip
    command = "freekd datafree " + shlex.join(args)
    row: dict[str, Any] = {
        **row_head(name, seed, tag=tag, evaluation=evaluation, command=command),
        "exit_status": done.returncode,
        "wall_seconds": round(time.perf_counter() - start, 1),
    }
    if done.returncode:
        row["error"] = (done.stderr.strip().splitlines() or ["?"])[-1]
        if (out / "metrics.jsonl").exists():  # what it measured before it stopped
            row["curve"] = curve(out)
    else:
        row.update(measured(out))
    path = write_row(row)
    shown = row.get("student_accuracy", row.get("error"))
    print(f"{tag} {name} seed {seed}: {shown} ({row['wall_seconds']} s)", flush=True)
    return path


def measured(out: Path) -> dict[str, Any]:
    """The figures of a finished run folder."""
    report = json.loads((out / "report.json").read_text())
    return {
        "student": report["student"].get("arch"),
        "student_accuracy": report["student"]["test_accuracy"],
        "teacher_accuracy": report["teacher"]["test_accuracy"],
        "synthesizer": report["method"]["name"],
        "cpu_seconds": report["cpu_seconds"],
        "steps": report["steps"],
        "stopped_by_budget": report["stopped_by_budget"],
        "collapse": report.get("collapse"),
        "curve": curve(out),
    }


def write_row(row: dict[str, Any]) -> Path:
    path = RESULTS / row["tag"] / f"{row['teacher']}-seed{row['seed']}-{row['eval']}.json"
    path.parent.mkdir(parents=True, exist_ok=True)
    atomic_write_json(path, row)
    return path


def collect(tag: str) -> None:
    """Rows for finished runs of ``tag`` whose benchmark process was stopped before it wrote
    them (the run itself finished: ``report.json`` exists). The report keeps only the
    subcommand, so the row also holds the run's resolved ``config.yaml`` (``config``): the
    settings it ran with, e.g. ``trainer.swa_start``."""
    for out in sorted((ROOT / "runs/zoo-bench" / tag).glob("*-seed*-*")):
        name, _, rest = out.name.rpartition("-seed")
        seed, evaluation = rest.split("-", 1)
        if (RESULTS / tag / f"{out.name}.json").exists() or not (out / "report.json").exists():
            continue
        report = json.loads((out / "report.json").read_text())
        row = {
            **row_head(name, int(seed), tag=tag, evaluation=evaluation, command=report["command"]),
            "exit_status": 0,
            "wall_seconds": report["wall_seconds"],
            "collected": "written from the run folder after the benchmark process was stopped",
            "config": yaml.safe_load((out / "config.yaml").read_text()),
            **measured(out),
        }
        print(f"collected {write_row(row)}")


def stopped(tag: str, why: str, extra: list[str], teachers: list[str] | None = None) -> None:
    """Rows for runs of ``tag`` stopped by hand before they finished (no ``report.json``, no
    row yet): the curve they measured, ``exit_status`` None and ``why`` (``{epochs}`` and
    ``{last}``, the last accuracy in %, are filled in). ``extra``: the flags the runs were
    started with, to write their command. ``teachers``: only these (a run of the same tag
    still going for another teacher has no report yet either)."""
    for out in sorted((ROOT / "runs/zoo-bench" / tag).glob("*-seed*-*")):
        name, _, rest = out.name.rpartition("-seed")
        seed, evaluation = rest.split("-", 1)
        if teachers and name not in teachers:
            continue
        done = (RESULTS / tag / f"{out.name}.json").exists() or (out / "report.json").exists()
        if done or not (out / "metrics.jsonl").exists():
            continue
        args = run_args(name, int(seed), tag=tag, extra=extra, evaluation=evaluation)
        points = curve(out)
        last = 100 * points[-1]["accuracy"] if points else float("nan")
        row = {
            **row_head(
                name, int(seed), tag=tag, evaluation=evaluation,
                command="freekd datafree " + shlex.join(args),
            ),
            "exit_status": None,
            "stopped_by_hand": why.format(epochs=len(points), last=last),
            "curve": points,
        }  # fmt: skip
        print(f"stopped {write_row(row)}")


def summary(tag: str) -> str:
    rows = [json.loads(p.read_text()) for p in sorted((RESULTS / tag).glob("*.json"))]
    lines = [f"## {tag}", "| teacher | split | eval | seeds | median | per seed | CPU min |"]
    lines.append("|---|---|---|---|---|---|---|")
    groups: dict[tuple[str, str], list[dict[str, Any]]] = {}
    for row in rows:
        groups.setdefault((row["teacher"], row["eval"]), []).append(row)
    for (name, evaluation), mine in groups.items():
        ok = [r for r in mine if r["exit_status"] == 0]
        if not ok:
            curve = mine[0].get("curve") or [{}]
            last = (
                f"{100 * curve[-1]['accuracy']:.2f} at epoch {curve[-1]['epoch']}"
                if curve[-1]
                else ""
            )
            why = "stopped by hand" if mine[0].get("stopped_by_hand") else mine[0].get("error")
            lines.append(f"| {name} | {mine[0]['split']} | {evaluation} | | {why}: {last} |||")
            continue
        accuracies = [100 * r["student_accuracy"] for r in ok]
        cpu = statistics.median(r["cpu_seconds"] for r in ok) / 60
        lines.append(
            f"| {name} | {ok[0]['split']} | {evaluation} | {len(ok)} | "
            f"{statistics.median(accuracies):.2f} | "
            f"{' / '.join(f'{a:.2f}' for a in accuracies)} | {cpu:.1f} |"
        )
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--teachers", nargs="+", help="zoo names (default: the --split)")
    parser.add_argument("--split", choices=["tuning", "held-out", "reference"])
    parser.add_argument("--seeds", type=int, nargs="+", default=[0])
    parser.add_argument("--eval", choices=["validation", "test"], default="validation")
    parser.add_argument("--tag", default="default")
    parser.add_argument("--extra", default="", help="more CLI flags, as one shell string")
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument(
        "--real-proxy",
        action="store_true",
        help="the real-image bound: distill on the 55,000 non-validation training images "
        "(--proxy-data, labels hidden) instead of synthesizing",
    )
    parser.add_argument("--summary", nargs="+", help="print the tables of these tags")
    parser.add_argument("--recurve", nargs="+", help="re-read these tags' curves from their runs")
    parser.add_argument("--collect", nargs="+", help="write rows for these tags' finished runs")
    parser.add_argument(
        "--stopped",
        metavar="WHY",
        help="write rows for --tag's runs stopped by hand before they finished, saying WHY "
        "({epochs} and {last} are filled in); --extra as the runs were started; --teachers "
        "limits it to those (other runs of the tag may still be going)",
    )
    args = parser.parse_args()
    if args.stopped:
        stopped(args.tag, args.stopped, shlex.split(args.extra), args.teachers)
        return
    if args.collect:
        for tag in args.collect:
            collect(tag)
        return
    if args.recurve:
        for tag in args.recurve:
            for path in sorted((RESULTS / tag).glob("*.json")):
                row = json.loads(path.read_text())
                out = ROOT / "runs/zoo-bench" / tag / path.stem
                if (out / "metrics.jsonl").exists():
                    row["curve"] = curve(out)
                    atomic_write_json(path, row)
        return
    if args.summary:
        print("\n\n".join(summary(tag) for tag in args.summary))
        return
    names = args.teachers or [n for n, t in zoo().items() if t["split"] == args.split]
    if not names:
        parser.error("name --teachers or a --split")
    validation_file()
    extra = shlex.split(args.extra)
    if args.real_proxy:
        if args.tag == "default":
            parser.error("--real-proxy needs its own --tag (e.g. real-proxy), not the default's")
        extra += ["--proxy-data", str(validation_file("train"))]
    jobs = [(name, seed) for seed in args.seeds for name in names]
    with ThreadPoolExecutor(args.workers) as pool:
        futures = [
            pool.submit(
                run_one,
                name,
                seed,
                tag=args.tag,
                extra=extra,
                evaluation=args.eval,
            )  # fmt: skip
            for name, seed in jobs
        ]
        for future in futures:
            future.result()


if __name__ == "__main__":
    main()
