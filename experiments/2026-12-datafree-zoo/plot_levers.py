"""Every finished variant on the one-convolution teachers against the default, as one picture.

Reads ``results/<tag>/<teacher>-seed<k>-<eval>.json`` for the four teachers with a single
convolution (``shallow-maxpool``, ``shallow-avgpool`` and ``wide-maxpool``, tuning, on
validation; ``wide-shallow``, held-out, on ``mnist:test``) and plots, for every variant tag,
each finished run's accuracy minus the default's on the same teacher, seed and data (the default
runs named in ``DEFAULT_TAG``). Runs stopped by hand are left out (their rows keep only part of a
curve); so are the default runs themselves, repeats of them, the real-image bound
(``real-proxy``, not data-free) and the tags whose own default was an earlier one (``relative``,
``anneal``: sessions 14–15, before the weight average). Writes ``one-convolution-levers.json``
(the plotted numbers) and ``one-convolution-levers.png``:

    python experiments/2026-12-datafree-zoo/plot_levers.py
"""

from __future__ import annotations

import json
import statistics
from pathlib import Path
from typing import Any

from freekd.io import atomic_write_text

HERE = Path(__file__).parent
RESULTS = HERE / "results"
#: Each one-convolution teacher's default runs (three seeds each) and the data they report on.
DEFAULT_TAG = {
    "shallow-maxpool": ("default-s27", "validation"),
    "shallow-avgpool": ("default-s25", "validation"),
    "wide-maxpool": ("default-s33", "validation"),
    "wide-shallow": ("ema-default", "test"),
}
#: Tags that are not variants of the current default (see the module docstring).
NOT_VARIANTS = {
    "default", "default-s25", "default-s27", "default-s29", "default-s33", "default-s39",
    "default-s40", "ema-default",
    "prior-s29", "repeat-s29", "probe-s31", "probe-balance1", "real-proxy", "relative",
    "anneal", "earlier-noreplay",
}  # fmt: skip


def finished(path: Path) -> dict[str, Any] | None:
    row = json.loads(path.read_text())
    if row.get("student_accuracy") is None or row.get("exit_status") != 0:
        return None
    return row  # type: ignore[no-any-return]


def defaults() -> dict[tuple[str, int], float]:
    table = {}
    for teacher, (tag, data) in DEFAULT_TAG.items():
        for path in sorted((RESULTS / tag).glob(f"{teacher}-seed*-{data}.json")):
            row = finished(path)
            if row is not None:
                table[(teacher, int(row["seed"]))] = 100 * float(row["student_accuracy"])
    return table


def changes() -> dict[str, list[dict[str, Any]]]:
    base = defaults()
    found: dict[str, list[dict[str, Any]]] = {}
    for folder in sorted(p for p in RESULTS.iterdir() if p.is_dir()):
        if folder.name in NOT_VARIANTS:
            continue
        for teacher, (_, data) in DEFAULT_TAG.items():
            for path in sorted(folder.glob(f"{teacher}-seed*-{data}.json")):
                row = finished(path)
                if row is None or (teacher, int(row["seed"])) not in base:
                    continue
                accuracy = 100 * float(row["student_accuracy"])
                default = base[(teacher, int(row["seed"]))]
                found.setdefault(folder.name, []).append(
                    {
                        "teacher": teacher,
                        "seed": int(row["seed"]),
                        "accuracy": round(accuracy, 2),
                        "default": round(default, 2),
                        "change": round(accuracy - default, 2),
                    }
                )
    return found


def plot(found: dict[str, list[dict[str, Any]]], out: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    order = sorted(found, key=lambda tag: statistics.median(r["change"] for r in found[tag]))
    markers = {"shallow-maxpool": "o", "shallow-avgpool": "s", "wide-maxpool": "^"}
    colours = {"shallow-maxpool": "C0", "shallow-avgpool": "C1", "wide-maxpool": "C2"}
    fig, ax = plt.subplots(figsize=(8, 0.32 * len(order) + 2.4))
    for y, tag in enumerate(order):
        for row in found[tag]:
            held_out = row["teacher"] == "wide-shallow"
            ax.scatter(
                row["change"], y, s=60 if held_out else 30,
                marker="*" if held_out else markers[row["teacher"]],
                color="C3" if held_out else colours[row["teacher"]],
                edgecolors="black" if held_out else "none", zorder=3,
            )  # fmt: skip
    ax.axvline(0, color="grey", linewidth=1)
    ax.axvspan(0.5, ax.get_xlim()[1], color="C2", alpha=0.06)
    ax.set_yticks(range(len(order)), order)
    ax.set_xlabel("accuracy minus the default's, same teacher and seed (points)")
    ax.set_title(
        "Every finished variant on the one-convolution MNIST teachers\n(against LeNet-5-half's "
        "defaults; onec-*, shallow-student: a student of the teacher's shape)",
        fontsize=10,
    )
    handles = [
        plt.Line2D([], [], linestyle="", marker=markers[t], color=colours[t], label=f"{t} (tuning)")
        for t in markers
    ] + [
        plt.Line2D(
            [], [], linestyle="", marker="*", color="C3", markeredgecolor="black",
            markersize=10, label="wide-shallow (held-out, mnist:test)",
        )
    ]  # fmt: skip
    ax.legend(handles=handles, loc="upper center", bbox_to_anchor=(0.5, -0.1), ncol=2, fontsize=8)
    ax.grid(axis="x", alpha=0.3)
    fig.tight_layout()
    fig.savefig(out, dpi=110)
    plt.close(fig)


def main() -> None:
    found = changes()
    record = {
        "defaults": {f"{t}-seed{s}": a for (t, s), a in sorted(defaults().items())},
        "default_tags": {t: tag for t, (tag, _) in DEFAULT_TAG.items()},
        "variants": found,
    }
    atomic_write_text(HERE / "one-convolution-levers.json", json.dumps(record, indent=1) + "\n")
    plot(found, HERE / "one-convolution-levers.png")
    lifted = sorted(
        (row["change"], tag, row["teacher"], row["seed"])
        for tag, rows in found.items()
        for row in rows
        if row["change"] >= 0.5
    )
    print(f"{sum(map(len, found.values()))} runs of {len(found)} variants; +0.5 or more: {lifted}")


if __name__ == "__main__":
    main()
