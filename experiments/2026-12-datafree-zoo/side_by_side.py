"""The tail average against the run's own default average, measured side by side in each run
of a tag run with ``trainer.swa_start`` (session 33's rule; README "Session 33").

Each row of ``results/TAG/`` holds the accuracy of what the run saved (the tail average,
``student_accuracy``) and, in its last curve point, what the run would have saved without it
(``accuracy/ema``: the default weight average, the same training). This writes, per
(teacher, seed), both and the change; per teacher the medians over seeds; the mean change over
all pairs; and the verdict of the rule written before the runs:

- the mean change over the pairs is positive,
- no teacher's median falls by more than 0.3 points, and
- no pair loses more than 1 point.

    PYTHONPATH=. python experiments/2026-12-datafree-zoo/side_by_side.py --tag swa50
"""

from __future__ import annotations

import argparse
import json
import statistics
from pathlib import Path
from typing import Any

from freekd.io import atomic_write_json

HERE = Path(__file__).resolve().parent
RESULTS = HERE / "results"
MEDIAN_FLOOR = -0.3  # points
PAIR_FLOOR = -1.0  # points


def pairs(tag: str) -> list[dict[str, Any]]:
    """(teacher, seed, tail, default, change) of every finished run of ``tag``, in points."""
    rows = []
    for path in sorted((RESULTS / tag).glob("*.json")):
        row = json.loads(path.read_text())
        if row.get("exit_status") != 0:
            continue
        last = row["curve"][-1]
        default = last.get("accuracy/ema", last.get("accuracy/raw"))
        tail = 100 * row["student_accuracy"]
        rows.append(
            {
                "teacher": row["teacher"],
                "seed": row["seed"],
                "tail": round(tail, 2),
                "default": round(100 * default, 2),
                "change": round(tail - 100 * default, 2),
                "peak_default": round(100 * max(p.get("accuracy/ema", 0) for p in row["curve"]), 2),
            }
        )
    return rows


def summary(tag: str, expected_pairs: int) -> dict[str, Any]:
    rows = pairs(tag)
    teachers: dict[str, dict[str, Any]] = {}
    for name in sorted({r["teacher"] for r in rows}):
        mine = [r for r in rows if r["teacher"] == name]
        tail = statistics.median(r["tail"] for r in mine)
        default = statistics.median(r["default"] for r in mine)
        teachers[name] = {
            "seeds": [r["seed"] for r in mine],
            "median_tail": round(tail, 2),
            "median_default": round(default, 2),
            "median_change": round(tail - default, 2),
        }
    changes = [r["change"] for r in rows]
    mean = round(statistics.mean(changes), 3) if changes else None
    clauses = {
        "mean_change_positive": mean is not None and mean > 0,
        "no_teacher_median_below_-0.3": all(
            t["median_change"] >= MEDIAN_FLOOR for t in teachers.values()
        ),
        "no_pair_below_-1": all(c >= PAIR_FLOOR for c in changes),
    }
    complete = len(rows) == expected_pairs
    return {
        "tag": tag,
        "what": "tail average (trainer.swa_start) against the default weight average of the "
        "same run (accuracy/ema), validation accuracy in points",
        "pairs": rows,
        "teachers": teachers,
        "mean_change": mean,
        "clauses": clauses,
        "complete": complete,
        "note": None
        if complete
        else "incomplete: the clauses are computed on the pairs run so far (a teacher's "
        "'median' over two seeds is their mean), not the rule's three-seed statistics",
        "expected_pairs": expected_pairs,
        "passes": complete and all(clauses.values()),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--tag", default="swa50")
    parser.add_argument("--pairs", type=int, default=18, help="pairs the rule needs")
    args = parser.parse_args()
    result = summary(args.tag, args.pairs)
    out = HERE / f"side-by-side-{args.tag}.json"
    atomic_write_json(out, result)
    for row in result["pairs"]:
        print(
            f"{row['teacher']:>16} seed {row['seed']}: tail {row['tail']:.2f}  "
            f"default {row['default']:.2f}  change {row['change']:+.2f}"
        )
    print(f"mean change {result['mean_change']}, clauses {result['clauses']}")
    print(f"passes: {result['passes']} (complete: {result['complete']}) -> {out}")


if __name__ == "__main__":
    main()
