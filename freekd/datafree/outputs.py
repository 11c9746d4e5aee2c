"""What a data-free run writes besides its report: ``queries.npz`` (``--save-queries``) and
``samples.png``."""

from __future__ import annotations

import logging
import math
from pathlib import Path
from typing import Any

import numpy as np
import torch

from freekd.data import ImageDataset
from freekd.datafree.config import DataFreeConfig
from freekd.errors import FreekdError
from freekd.io import atomic_write
from freekd.plots import plot_samples_by_class
from freekd.teachers import Teacher

logger = logging.getLogger(__name__)


def class_names(teacher: Teacher, eval_set: ImageDataset | None, *, unnamed: str) -> list[str]:
    """The held-out data's class names when it has the teacher's classes, else ``unnamed``
    formatted with each class index."""
    if eval_set is not None and eval_set.num_classes == teacher.num_classes:
        return list(eval_set.classes)
    return [unnamed.format(k) for k in range(teacher.num_classes)]


def save_queries(
    synthesizer: Any,
    teacher: Teacher,
    eval_set: ImageDataset | None,
    config: DataFreeConfig,
    path: Path,
) -> dict[str, Any]:
    """Write ``save_queries`` synthesized images (uint8) and the teacher's classes to ``path``
    (``queries.npz`` of the run folder).

    The images are post-processing of the teacher alone, so they carry the teacher's privacy
    (``report.json["privacy"]`` of the same run), which ``freekd pate label`` composes with
    the PATE answers when it uses them as queries. With ``queries_confidence`` > 0 only images
    the teacher labels with at least that probability are kept, at most ``ceil(count /
    classes)`` per class, from at most 50 × ``count`` draws (fewer images when they run out, with a
    warning): queries like those are what an ensemble trained on real data can recognise.
    """

    count, confidence = config.save_queries, config.queries_confidence
    classes = class_names(teacher, eval_set, unnamed="{}")
    per_class = math.ceil(count / teacher.num_classes) if confidence > 0 else count
    kept = torch.zeros(teacher.num_classes, dtype=torch.long)
    images, labels = [], []
    drawn = 0
    with torch.no_grad():
        step = min(256, getattr(synthesizer, "batch_size", 256))
        while int(kept.sum()) < count and drawn < (50 * count if confidence > 0 else count):
            batch = synthesizer.sample(min(step, count - drawn) if confidence == 0 else step)
            drawn += len(batch)
            probabilities = torch.softmax(teacher(batch).float(), dim=1)
            top, label = probabilities.max(dim=1)
            # In order: the confident images whose class is not full, up to the count.
            chosen = torch.nonzero(top >= confidence).flatten()
            onehot = torch.nn.functional.one_hot(label[chosen], teacher.num_classes)
            rank_in_class = (onehot.cumsum(dim=0) * onehot).sum(dim=1) - 1
            chosen = chosen[kept.to(chosen.device)[label[chosen]] + rank_in_class < per_class]
            chosen = chosen[: count - int(kept.sum())]
            kept += torch.bincount(label[chosen], minlength=teacher.num_classes).cpu()
            images.append((batch[chosen].clamp(0, 1) * 255).round().to(torch.uint8).cpu())
            labels.append(label[chosen].cpu())
    if not int(kept.sum()):
        raise FreekdError(
            f"no synthesized image reached queries_confidence {confidence:g} in {drawn:,} "
            "draws; lower --set queries_confidence"
        )
    x, y = torch.cat(images).numpy(), torch.cat(labels).numpy()
    if len(x) < count:
        logger.warning(
            "only %d of %d queries reached confidence %g in %d draws (classes run short: %s)",
            len(x),
            count,
            confidence,
            drawn,
            ", ".join(classes[k] for k in range(len(kept)) if kept[k] < per_class),
        )
    atomic_write(
        path,
        lambda stream: np.savez(stream, x=x, y=y, classes=np.asarray(classes)),
    )
    shares = np.bincount(y, minlength=teacher.num_classes) / len(y)
    return {
        "path": path.name,
        "images": int(len(x)),
        "drawn": drawn,
        "confidence": confidence,
        "labels": "the teacher's classes (not ground truth)",
        "class_shares": [round(float(share), 4) for share in shares],
    }


def draw_samples(
    images: torch.Tensor, teacher: Teacher, eval_set: ImageDataset | None, path: Path
) -> None:
    """``samples.png``: a labelled grid of the student's inputs per teacher class."""

    with torch.no_grad():
        labels = teacher(images).argmax(dim=1).cpu()
    names = class_names(teacher, eval_set, unnamed="class {}")
    try:
        plot_samples_by_class(images.cpu(), labels, names, path)
    except (OSError, ValueError) as error:  # a picture must never fail a finished run
        logger.warning("could not draw samples.png: %s", error)
