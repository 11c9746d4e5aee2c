"""Pictures people would rather look at than read (matplotlib, Agg backend, imported lazily)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from freekd.io import atomic_write


def _save(figure: Any, out_path: Path, *, dpi: int) -> None:
    """Lay out ``figure``, write it atomically as a PNG and free it."""
    import matplotlib.pyplot as plt

    figure.tight_layout()
    try:
        atomic_write(Path(out_path), lambda stream: figure.savefig(stream, format="png", dpi=dpi))
    finally:
        plt.close(figure)


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
    _save(figure, out_path, dpi=110)


#: Rows of ``samples.png`` at most: one per class up to this many classes.
MAX_CLASS_ROWS = 20


def plot_samples_by_class(
    images: Any, labels: Any, class_names: list[str], out_path: Path, *, per_class: int = 8
) -> None:
    """``samples.png``: a grid of synthetic images, one row per class the teacher assigns (with
    more than ``MAX_CLASS_ROWS`` classes, the most frequent ones).

    Args:
        images: (N, C, H, W) tensor in [0, 1].
        labels: (N,) teacher labels.
        class_names: name of each class (row titles).
        out_path: where to write the PNG.
        per_class: images per row.
    """
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    shown = list(range(len(class_names)))
    if len(shown) > MAX_CLASS_ROWS:  # e.g. 1,000 classes: the most sampled ones only
        counts = [int((labels == k).sum()) for k in shown]
        shown = sorted(shown, key=lambda k: -counts[k])[:MAX_CLASS_ROWS]
    rows = len(shown)
    figure, axes = plt.subplots(
        rows, per_class, figsize=(per_class * 0.9 + 1.6, rows * 0.9 + 0.3), squeeze=False
    )
    for row, klass in enumerate(shown):
        name = class_names[klass]
        chosen = (labels == klass).nonzero().flatten()[:per_class]
        for column in range(per_class):
            axis = axes[row][column]
            axis.set_xticks([])
            axis.set_yticks([])
            for spine in axis.spines.values():
                spine.set_visible(False)
            if column < len(chosen):
                image = images[chosen[column]].permute(1, 2, 0).cpu().numpy()
                if image.shape[2] == 1:
                    axis.imshow(image[:, :, 0], cmap="gray", vmin=0, vmax=1)
                else:
                    axis.imshow(image.clip(0, 1))
        count = int((labels == klass).sum())
        axes[row][0].set_ylabel(
            f"{name} ({count})", rotation=0, ha="right", va="center", fontsize=8
        )
    title = "synthetic inputs by teacher label (count of the sampled batch)"
    if rows < len(class_names):
        title += f"; the {rows} most frequent of {len(class_names)} classes"
    figure.suptitle(title, fontsize=9)
    _save(figure, out_path, dpi=100)


def plot_roc(
    curves: dict[str, tuple[Any, Any]], out_path: Path, *, title: str = "membership inference"
) -> None:
    """``roc.png``: every attack's ROC curve on log-log axes, where low-FPR leakage shows.

    Carlini et al. (2022, §3) argue for log scale: an attack that identifies a few members with
    near certainty is invisible on a linear ROC and obvious on a logarithmic one.

    Args:
        curves: attack name → (false positive rates, true positive rates).
        out_path: where to write the PNG.
        title: the figure title.
    """
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import numpy as np

    figure, axis = plt.subplots(figsize=(5.2, 4.6))
    smallest = 1.0
    for name, (fpr, tpr) in curves.items():
        fpr, tpr = np.asarray(fpr, dtype=float), np.asarray(tpr, dtype=float)
        positive = fpr[fpr > 0]
        if positive.size:
            smallest = min(smallest, float(positive.min()))
        axis.plot(np.maximum(fpr, 1e-5), np.maximum(tpr, 1e-5), label=name, linewidth=1.3)
    floor = max(min(smallest, 1e-3), 1e-5)
    axis.plot([floor, 1], [floor, 1], color="grey", linestyle="--", linewidth=0.8, label="chance")
    axis.set_xscale("log")
    axis.set_yscale("log")
    axis.set(xlim=(floor, 1), ylim=(floor, 1), xlabel="false positive rate",
             ylabel="true positive rate", title=title)  # fmt: skip
    axis.grid(alpha=0.3, which="both")
    axis.legend(fontsize=7, loc="lower right")
    _save(figure, out_path, dpi=110)


def plot_retrieval(
    queries: list[str], images: Any, ranked: Any, correct: Any, out_path: Path, *, title: str
) -> None:
    """``retrieval.png``: for each text query, the images a model ranks first.

    Args:
        queries: Q captions.
        images: (N, C, H, W) tensor in [0, 1], the gallery.
        ranked: (Q, k) gallery indices, best first.
        correct: (Q, k) bool, whether each retrieved image is right for its query.
        out_path: where to write the PNG.
        title: the figure title.
    """
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    rows, columns = len(queries), int(ranked.shape[1])
    figure, axes = plt.subplots(
        rows, columns, figsize=(1.3 * columns + 2.6, 1.3 * rows + 0.6), squeeze=False
    )
    for row, query in enumerate(queries):
        for column in range(columns):
            axis = axes[row][column]
            image = images[int(ranked[row, column])]
            pixels = image[0] if image.shape[0] == 1 else image.permute(1, 2, 0)
            axis.imshow(
                pixels.numpy(), cmap="gray" if image.shape[0] == 1 else None, vmin=0, vmax=1
            )
            axis.set_xticks([])
            axis.set_yticks([])
            colour = "tab:green" if bool(correct[row, column]) else "tab:red"
            for spine in axis.spines.values():
                spine.set_edgecolor(colour)
                spine.set_linewidth(2.5)
        axes[row][0].set_ylabel(query, rotation=0, ha="right", va="center", fontsize=8)
    figure.suptitle(title, fontsize=10)
    _save(figure, out_path, dpi=100)
