"""PATE on MNIST (issue 4): 250 teachers, Confident-GNMax labels, students, and the timings.

Runs the real CLI stages with the anchors' setting (Papernot et al. 2018, MNIST: T = 200,
σ₁ = 150, σ₂ = 40, δ = 1e-5; queries from the first 9,000 images of the MNIST test split, the
last 1,000 held out for evaluation). The ledger's budget is enforced on the data-dependent figure,
as in the papers; the data-independent ε and the smooth-sensitivity release (sanitized ε) are
reported beside it. Per seed (the labels' noise and the student's initialization): one labelling
run, then two students on its answers, the default (virtual adversarial training over the whole
query pool, as the PATE papers train theirs semi-supervised) and a supervised-only baseline on the
answered queries. It also times one epoch of the 250 teachers trained one by one
(``execution: loop``) against one vectorised batch (``vmap``), run after run on the same machine.

    python experiments/pate/bench.py --runs runs/pate-bench --out experiments/pate/mnist.json
    python experiments/pate/bench.py --reuse-teachers --skip-timing --seeds 0 1 2 ...
    python experiments/pate/bench.py --reuse-teachers --skip-timing \
        --queries-from runs/dpsgd-bench/datafree-student/queries.npz ...   # data-free PATE
    python experiments/pate/bench.py --reuse-teachers --skip-timing --queries-from Q.npz \
        --query-model runs/dpsgd-bench/teacher-eps2.91/model.pt ...   # + its soft targets
    python experiments/pate/bench.py --dataset digits --teachers 8 --epochs 5 --queries 150 \\
        --holdout 97 --sigma1 3 --threshold 6 --sigma2 1 --epsilon 50 --out /tmp/pate.json
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

from freekd.io import atomic_write_json


def freekd(*args: str) -> None:
    env = {**os.environ, "OMP_NUM_THREADS": os.environ.get("OMP_NUM_THREADS", "1")}
    done = subprocess.run([sys.executable, "-m", "freekd", *args], env=env, text=True)
    if done.returncode:
        raise SystemExit(f"freekd {' '.join(args)} failed ({done.returncode})")


def saved_arch(path: Path) -> str:
    """The architecture a freekd checkpoint records (read without unpickling code)."""
    import torch

    return str(torch.load(path, weights_only=True, map_location="cpu")["arch"])


def load(path: Path) -> dict[str, Any]:
    return json.loads((path / "report.json").read_text())


def label_queries(args: argparse.Namespace, labels: Path, pool: list[str], seed: int) -> None:
    """Label the pool: Confident-GNMax, the budget enforced on the data-dependent ε."""
    freekd(
        "pate", "label", "--teachers", str(args.runs / "teachers" / "teachers.pt"),
        *pool, "--queries", str(args.queries), "--aggregator", "confident-gnmax",
        "--sigma1", str(args.sigma1), "--threshold", str(args.threshold),
        "--sigma2", str(args.sigma2), "--epsilon", str(args.epsilon), "--delta", str(args.delta),
        "--set", "budget_on=data-dependent-unsanitized", "--seed", str(seed),
        "--out", str(labels), "--overwrite", "--quiet",
    )  # fmt: skip


def label_and_students(args: argparse.Namespace, seed: int) -> dict[str, Any]:
    runs = args.runs
    tag = "-datafree" if args.queries_from else ""
    labels = runs / f"labels{tag}-seed{seed}"
    reuse = args.reuse_runs and (labels / "report.json").exists()
    if (labels / "ledger.jsonl").exists() and not reuse:  # a ledger is never replaced
        labels.rename(runs / f"labels-seed{seed}-{int(time.time())}.old")
    pool = (
        ["--queries-from", str(args.queries_from), "--set", f"eval_dataset={args.dataset}:test",
         "--set", "holdout=0"]
        if args.queries_from
        else ["--queries-from", f"{args.dataset}:test", "--set", f"holdout={args.holdout}"]
    )  # fmt: skip
    if not reuse:
        label_queries(args, labels, pool, seed)
    label = load(labels)
    row: dict[str, Any] = {
        "seed": seed,
        "asked": label["queries"]["asked"],
        "answered": label["answered"],
        "label_accuracy": label["label_accuracy"],
        "data_dependent_epsilon": label["privacy"]["data_dependent_epsilon"],
        "data_independent_epsilon": label["privacy"]["data_independent_epsilon"],
        "sanitized_epsilon": label["privacy"].get("sanitized_epsilon"),
        "sanitized": label["privacy"].get("sanitized"),
        "queries_source": label["queries"]["source"],
        "composed_with": label["privacy"].get("composed_with"),
        "agreement_with_query_model": label.get("agreement_with_query_model"),
    }
    students = [
        ("vat", [*args.student_set]),
        ("supervised", ["--set", "semi_supervised=none", "--epochs", "60"]),
    ]
    if args.query_model:  # data-free PATE: the answers plus the query model's soft targets
        students.append(
            ("teacher", ["--set", "semi_supervised=teacher",
                         "--set", f"distill_teacher.path={args.query_model}", *args.student_set])
        )  # fmt: skip
    if args.query_model and args.init_student:  # started from the query model's own student
        students.append(
            ("init", ["--set", "semi_supervised=teacher",
                      "--set", f"init_student={args.init_student}",
                      "--set", f"distill_teacher.path={args.query_model}",
                      "--set", f"trainer.lr={args.init_lr}", *args.student_set])
        )  # fmt: skip
    # The pool the labels were made on, named again (a path in the label report is not read).
    pool_flag = ["--queries-from", str(args.queries_from)] if args.queries_from else []
    for name, extra in students:
        out = runs / f"student{tag}-{name}-seed{seed}"
        start = time.perf_counter()
        # A student started from a model takes that model's architecture.
        arch = saved_arch(args.init_student) if name == "init" else args.arch
        if not (args.reuse_runs and (out / "report.json").exists()):
            freekd(
                "pate", "student", "--labels", str(labels), "--student", arch, "--seed", str(seed),
                *pool_flag, *extra, "--out", str(out), "--overwrite", "--quiet",
            )  # fmt: skip
        student = load(out)
        row[f"{name}_student_accuracy"] = student["student"]["test_accuracy"]
        row[f"{name}_student_wall_seconds"] = round(
            student.get("wall_seconds", time.perf_counter() - start), 1
        )
    print(json.dumps(row), flush=True)
    return row


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--dataset", default="mnist")
    parser.add_argument("--arch", default="lenet5")
    parser.add_argument("--teachers", type=int, default=250)
    parser.add_argument("--epochs", type=int, default=40)
    parser.add_argument("--queries", type=int, default=9000)
    parser.add_argument("--holdout", type=int, default=1000)
    parser.add_argument("--sigma1", type=float, default=150.0)
    parser.add_argument("--threshold", type=float, default=200.0)
    parser.add_argument("--sigma2", type=float, default=40.0)
    parser.add_argument("--epsilon", type=float, default=2.0)
    parser.add_argument("--delta", type=float, default=1e-5)
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--student-set", nargs="*", default=[], help="extra pate student flags")
    parser.add_argument(
        "--queries-from", type=Path, default=None,
        help="data-free PATE: a queries.npz of freekd datafree (its teacher's ε is composed); "
        "the students are then evaluated on the whole test split",
    )  # fmt: skip
    parser.add_argument(
        "--query-model", type=Path, default=None,
        help="data-free PATE: the model the queries were synthesized from; adds a student "
        "trained on the answers plus its soft targets (semi_supervised=teacher)",
    )  # fmt: skip
    parser.add_argument(
        "--init-student", type=Path,
        help="data-free PATE: also a student started from this model (the query model's own "
        "data-free student), on the answers plus the query model's soft targets",
    )  # fmt: skip
    parser.add_argument(
        "--init-lr",
        type=float,
        default=0.01,
        help="learning rate of the student started from --init-student (a fine-tuning rate: "
        "the from-scratch 0.05 diverged in session 17)",
    )
    parser.add_argument("--runs", type=Path, default=Path("runs/pate-bench"))
    parser.add_argument("--reuse-teachers", action="store_true")
    parser.add_argument(
        "--reuse-runs", action="store_true",
        help="keep the labels and students already in --runs (no ε spent again); run the rest",
    )  # fmt: skip
    parser.add_argument("--skip-timing", action="store_true")
    parser.add_argument("--out", type=Path, required=True)
    args = parser.parse_args()
    runs = args.runs
    common = ["--dataset", args.dataset, "--teachers", str(args.teachers), "--arch", args.arch]
    timings = {}
    if not args.skip_timing:
        for execution in ("loop", "vmap"):  # one epoch each, one after the other
            freekd(
                "pate", "teachers", *common, "--epochs", "1", "--execution", execution,
                "--out", str(runs / f"timing-{execution}"), "--overwrite", "--quiet",
            )  # fmt: skip
    for execution in ("loop", "vmap"):
        if (runs / f"timing-{execution}" / "report.json").exists():
            timing = load(runs / f"timing-{execution}")
            timings[execution] = {"wall": timing["wall_seconds"], "cpu": timing["cpu_seconds"]}
    if not (args.reuse_teachers and (runs / "teachers" / "teachers.pt").exists()):
        freekd(
            "pate", "teachers", *common, "--epochs", str(args.epochs),
            "--out", str(runs / "teachers"), "--overwrite", "--quiet",
        )  # fmt: skip
    teachers = load(runs / "teachers")
    rows = [label_and_students(args, seed) for seed in args.seeds]

    def median(key: str) -> float | None:
        values = [row[key] for row in rows if row.get(key) is not None]
        return statistics.median(values) if values else None

    result = {
        "setting": {k: str(v) if isinstance(v, Path) else v for k, v in vars(args).items()},
        "teachers": {
            "plurality_accuracy": teachers["plurality_accuracy"],
            "median_teacher_accuracy": teachers["teacher_accuracy"]["median"],
            "shard_size": teachers["shards"]["shard_size"],
            "wall_seconds": teachers["wall_seconds"],
            "cpu_seconds": teachers["cpu_seconds"],
            "one_epoch_seconds": timings,
        },
        "seeds": rows,
        "median": {
            key: median(key)
            for key in (
                "answered",
                "label_accuracy",
                "data_dependent_epsilon",
                "data_independent_epsilon",
                "sanitized_epsilon",
                "vat_student_accuracy",
                "supervised_student_accuracy",
                "teacher_student_accuracy",
                "init_student_accuracy",
            )
        },
        "anchors": {
            "PATE 2017 (LNMax)": {"accuracy": 0.980, "epsilon": 2.04},
            "PATE 2018 (Confident-GNMax)": {"accuracy": 0.985, "epsilon": 1.97},
        },
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    atomic_write_json(args.out, result)
    print(json.dumps(result["median"], indent=2))


if __name__ == "__main__":
    main()
