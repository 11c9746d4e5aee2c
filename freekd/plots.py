"""Pictures people would rather look at than read (matplotlib, Agg backend, imported lazily)."""

from __future__ import annotations

import json
from pathlib import Path

from freekd.io import atomic_write


def plot_training_curves(metrics_path: Path, out_path: Path) -> None:
    """Draw training loss (per logged step) and held-out accuracy (per epoch) from metrics.jsonl."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    steps, losses, epochs, accuracies = [], [], [], []
    for line in Path(metrics_path).read_text().splitlines():
        record = json.loads(line)
        if "loss" in record:
            steps.append(record["step"])
            losses.append(record["loss"])
        if "eval_accuracy" in record:
            epochs.append(record["epoch"])
            accuracies.append(100 * record["eval_accuracy"])
    figure, (left, right) = plt.subplots(1, 2, figsize=(9, 3.2))
    left.plot(steps, losses, color="tab:blue")
    left.set(xlabel="step", ylabel="training loss", title="loss")
    left.set_yscale("log")
    right.plot(epochs, accuracies, marker="o", color="tab:green")
    right.set(xlabel="epoch", ylabel="accuracy (%)", title="held-out accuracy")
    for axis in (left, right):
        axis.grid(alpha=0.3)
    figure.tight_layout()
    try:
        atomic_write(Path(out_path), lambda stream: figure.savefig(stream, format="png", dpi=110))
    finally:
        plt.close(figure)
