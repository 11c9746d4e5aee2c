"""What a run's data-free measurements did, epoch by epoch, beside its accuracy on real digits
(session 31; a diagnosis, it chooses nothing), written to ``epoch_signals.json``.

For each ``bench_zoo.py`` run named (``TAG/TEACHER-seedK-EVAL``, a folder under
``runs/zoo-bench/``), every epoch's held-out accuracy and the mean, over the epoch's logged
steps, of what the run measured without data: the student's KD loss on the generator's images
(``loss/kd``), the collapse probe's discrepancy (the student's KL to the teacher on the current
generator's images), the KL on images kept from earlier generators, the probe's diversity and
label balance, and the generator's adversarial loss; for a run measured with
``confident_probe``, the evaluated student's KL to the teacher and its agreement with it on the
probe's images the teacher is sure of (``probe_kl``, ``probe_agreement``, measured at the end of
the epoch). ``runs/`` is not kept in the repository; this file keeps what the notes quote.

    PYTHONPATH=. python experiments/2026-12-datafree-zoo/epoch_signals.py \\
        balance1/shallow-maxpool-seed1-validation default-s29/shallow-maxpool-seed0-validation
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any

from freekd.io import atomic_write_json

HERE = Path(__file__).parent
RUNS = HERE.parent.parent / "runs/zoo-bench"
OUT = HERE / "epoch_signals.json"
SIGNALS = {
    "loss/kd": "kd_loss",
    "collapse/discrepancy": "discrepancy",
    "collapse/earlier_discrepancy": "earlier_discrepancy",
    "collapse/diversity": "diversity",
    "collapse/balance": "balance",
    "synthesis/adversarial": "adversarial",
}

PROBE = {"probe/kl": "probe_kl", "probe/agreement": "probe_agreement"}


def epochs(run: str) -> list[dict[str, Any]]:
    """One row per evaluated epoch: its accuracy and the means of the signals logged in it."""
    path = RUNS / run / "metrics.jsonl"
    if not path.is_file():
        raise SystemExit(f"error: {path} does not exist; run bench_zoo.py with that tag first")
    sums: dict[int, dict[str, list[float]]] = {}
    rows = []
    for line in path.read_text().splitlines():
        record = json.loads(line)
        epoch = int(record["epoch"])
        if "eval_accuracy" in record:
            logged = sums.get(epoch, {})
            # A run stopped part-way through an epoch and resumed logs that epoch twice: the
            # later line, after the whole epoch, is the one kept.
            rows = [row for row in rows if row["epoch"] != epoch]
            rows.append(
                {
                    "epoch": epoch,
                    "accuracy": round(record["eval_accuracy"], 4),
                    **{
                        name: round(float(record[key]), 6)
                        for key, name in PROBE.items()
                        if key in record
                    },
                    **{
                        name: round(sum(values) / len(values), 4) for name, values in logged.items()
                    },
                }
            )
            continue
        for key, name in SIGNALS.items():
            if key in record:
                sums.setdefault(epoch, {}).setdefault(name, []).append(float(record[key]))
    return rows


def main(runs: list[str]) -> None:
    if not runs:
        raise SystemExit(__doc__)
    result = json.loads(OUT.read_text()) if OUT.is_file() else {}
    for run in runs:
        result[run] = epochs(run)
        print(run)
        for row in result[run]:
            print("  " + " ".join(f"{key} {value}" for key, value in row.items()))
    atomic_write_json(OUT, result)


if __name__ == "__main__":
    main(sys.argv[1:])
