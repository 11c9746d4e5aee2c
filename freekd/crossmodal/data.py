"""Paired image–caption data built from labelled images and caption templates.

No captioned image set is available offline, so pairs are made from a labelled set and
templates ("a photo of a {class}."), several per class, as CLIP's zero-shot prompts are
(Radford et al. 2021, arXiv:2103.00020 §3.1.4). Every report that uses them says the captions
are templated. Templates are drawn per image and per epoch from a seeded generator, so a model
sees varied wordings of the same class.
"""

from __future__ import annotations

import csv
import json
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

import torch
from torch import Tensor

from freekd.data.datasets import ImageDataset
from freekd.errors import FreekdError

DIGIT_WORDS = ("zero", "one", "two", "three", "four", "five", "six", "seven", "eight", "nine")

#: Templates per kind of data (DATA.md): photos of objects, handwritten digits, silhouettes.
TEMPLATES: dict[str, tuple[str, ...]] = {
    "photo": (
        "a photo of a {}.",
        "a black and white photo of a {}.",
        "a low resolution photo of a {}.",
        "a blurry photo of a {}.",
        "a close-up photo of a {}.",
        "a picture of a {}.",
        "an image of a {}.",
        "a photo of the {}.",
    ),
    "digit": (
        "a handwritten digit {}.",
        "the number {} written by hand.",
        "a photo of the digit {}.",
        "a scan of a handwritten {}.",
        "a black and white image of the digit {}.",
        "the digit {}.",
    ),
    "silhouette": (
        "a silhouette of a {}.",
        "the outline of a {}.",
        "a black shape of a {}.",
        "a silhouette of the {}.",
        "a shadow of a {}.",
    ),
}


def template_family(dataset_name: str) -> str:
    """Which templates fit a dataset: digits for MNIST and digits, silhouettes for Animal-MNIST."""
    name = dataset_name.lower()
    if "animal" in name:
        return "silhouette"
    if name.startswith(("mnist", "digits")) or "/mnist" in name:
        return "digit"
    return "photo"


def readable_class_names(dataset: ImageDataset, family: str) -> list[str]:
    """Class names as words: digit indices → "zero" …, "t-shirt/top" → "t-shirt or top"."""
    names = []
    for name in dataset.classes:
        if family == "digit" and name.isdigit() and int(name) < len(DIGIT_WORDS):
            names.append(DIGIT_WORDS[int(name)])
        else:
            names.append(name.replace("/", " or ").replace("_", " "))
    return names


@dataclass
class PairedDataset:
    """Images with captions: every image has ``templates`` candidate captions of its class.

    Attributes:
        images: the labelled images (labels are the classes the captions name).
        class_names: the word(s) each class is written as in captions.
        templates: caption templates with one ``{}`` for the class name.
        templated: the captions come from templates (always said in reports).
        captions: per image, fixed captions (users' own pairs); ``None`` for templated pairs.
        labelled: the images' labels are real classes (zero-shot accuracy can be measured);
            users' pairs without labels put every image in one class.
    """

    images: ImageDataset
    class_names: list[str]
    templates: tuple[str, ...]
    templated: bool = True
    captions: list[str] | None = None
    labelled: bool = True

    def __len__(self) -> int:
        return len(self.images)

    def caption(self, index: int, template: int) -> str:
        if self.captions is not None:
            return self.captions[index]
        label = int(self.images.labels[index])
        return self.templates[template % len(self.templates)].format(self.class_names[label])

    def draw_captions(self, indices: Tensor, generator: torch.Generator) -> list[str]:
        """One caption per image at ``indices``, each template drawn from ``generator``."""
        if self.captions is not None:
            return [self.captions[int(i)] for i in indices]
        choice = torch.randint(len(self.templates), (len(indices),), generator=generator)
        return [self.caption(int(i), int(t)) for i, t in zip(indices, choice, strict=True)]


def templated_pairs(
    dataset: ImageDataset, *, family: str | None = None, templates: Sequence[str] | None = None
) -> PairedDataset:
    """Pairs from a labelled set: captions from ``templates`` (default: the family's)."""
    chosen_family = family or template_family(dataset.name)
    if chosen_family not in TEMPLATES:
        raise FreekdError(
            f"unknown caption family {chosen_family!r}; known: {', '.join(sorted(TEMPLATES))}"
        )
    chosen = tuple(templates) if templates else TEMPLATES[chosen_family]
    bad = [template for template in chosen if template.count("{}") != 1]
    if bad:
        raise FreekdError(f"caption template {bad[0]!r} needs exactly one {{}} for the class name")
    return PairedDataset(dataset, readable_class_names(dataset, chosen_family), chosen)


def subset_pairs(pairs: PairedDataset, indices: Tensor) -> PairedDataset:
    """The pairs at ``indices`` (images, labels and fixed captions alike)."""
    return PairedDataset(
        pairs.images.subset(indices),
        list(pairs.class_names),
        pairs.templates,
        pairs.templated,
        None if pairs.captions is None else [pairs.captions[int(i)] for i in indices],
        pairs.labelled,
    )


def limit_pairs(pairs: PairedDataset, count: int, *, generator: torch.Generator) -> PairedDataset:
    """``count`` of the pairs, class-balanced when labelled: a seeded order is taken one class
    at a time in turn (the first of each class, then the second ...), so every class keeps
    ``count // classes`` pairs or one more; unlabelled pairs: the first ``count`` of the order."""
    total = len(pairs)
    if count >= total:
        return pairs
    order = torch.randperm(total, generator=generator)
    if pairs.labelled:
        labels = pairs.images.labels[order]
        rank = torch.zeros(total, dtype=torch.int64)
        for label in labels.unique():
            where = (labels == label).nonzero().flatten()
            rank[where] = torch.arange(where.numel())
        order = order[(rank * total + torch.arange(total)).argsort()]
    return subset_pairs(pairs, order[:count].sort().values)


CAPTION_FILES = ("captions.csv", "captions.jsonl")


def is_pair_folder(spec: str) -> bool:
    """Whether ``spec`` is a folder of users' own pairs (images plus a captions file)."""
    folder = Path(spec).expanduser()
    return folder.is_dir() and any((folder / name).is_file() for name in CAPTION_FILES)


def _caption_rows(folder: Path) -> list[dict[str, str]]:
    """The rows of a pairs folder's captions file, each checked: ``file`` and ``caption``
    non-empty text, ``label`` (if any) on every row or none, ``file`` inside the folder.

    Raises:
        FreekdError: naming the file and line of the first bad row.
    """
    csv_path, jsonl_path = folder / CAPTION_FILES[0], folder / CAPTION_FILES[1]
    path = csv_path if csv_path.is_file() else jsonl_path
    try:
        numbered = _csv_rows(csv_path) if path == csv_path else _jsonl_rows(jsonl_path)
    except UnicodeDecodeError as error:
        raise FreekdError(
            f"{path} is not UTF-8 text (byte {error.start}); save the captions file as UTF-8"
        ) from None
    except csv.Error as error:
        raise FreekdError(f"{path} is not a readable CSV file ({error}); fix the file") from None
    if not numbered:
        raise FreekdError(f"the captions file in {folder} lists no pairs; add file,caption rows")
    labelled = [number for number, row in numbered if row.get("label")]
    if labelled and len(labelled) != len(numbered):
        number = next(number for number, row in numbered if not row.get("label"))
        raise FreekdError(
            f"{path}:{number} has no label while other rows have one; label every row or none"
        )
    for number, row in numbered:
        _inside(folder, row["file"], where=f"{path}:{number}")
    return [row for _, row in numbered]


def _csv_rows(path: Path) -> list[tuple[int, dict[str, str]]]:
    with path.open(newline="", encoding="utf-8") as stream:
        reader = csv.DictReader(stream)
        names = reader.fieldnames
        if names is None or not {"file", "caption"} <= set(names):
            raise FreekdError(
                f"{path} needs a header with columns file,caption (and optionally label)"
            )
        repeated = sorted({name for name in names if names.count(name) > 1})
        if repeated:
            raise FreekdError(
                f"{path} names the column {repeated[0]!r} twice in its header; keep one"
            )
        rows = []
        for row in reader:
            where = f"{path}:{reader.line_num}"
            if None in row:  # more fields than the header
                raise FreekdError(
                    f"{where} has more fields than the header; quote captions that hold commas"
                )
            if any(row.get(key) is None for key in ("file", "caption")):
                raise FreekdError(f"{where} has no caption; give every row file,caption")
            rows.append((reader.line_num, _checked_row(dict(row), where)))
    return rows


def _jsonl_rows(path: Path) -> list[tuple[int, dict[str, str]]]:
    rows = []
    for number, line in enumerate(path.read_text(encoding="utf-8").splitlines(), 1):
        if not line.strip():
            continue
        try:
            row = json.loads(line)
        except json.JSONDecodeError as error:
            raise FreekdError(f"{path}:{number} is not JSON ({error.msg})") from None
        except (RecursionError, ValueError):  # nested too deeply, or a number of 5,000 digits
            raise FreekdError(f"{path}:{number} is not a captions row; fix the file") from None
        if not isinstance(row, dict) or "file" not in row or "caption" not in row:
            raise FreekdError(
                f'{path}:{number} needs {{"file": ..., "caption": ...}} (and optionally "label")'
            )
        where = f"{path}:{number}"
        for key in ("file", "caption"):
            if not isinstance(row[key], str):
                raise FreekdError(f"{where}: {key} is {row[key]!r}; it must be a string")
        label = row.get("label")
        if label is not None and (not isinstance(label, str | int) or isinstance(label, bool)):
            raise FreekdError(f"{where}: label is {label!r}; it must be a string or an integer")
        values = {key: str(value) for key, value in row.items() if value is not None}
        rows.append((number, _checked_row(values, where)))
    return rows


def _checked_row(row: dict[str, str], where: str) -> dict[str, str]:
    if not row["file"].strip():
        raise FreekdError(f"{where} names no image file; give every row file,caption")
    if not row["caption"].strip():
        raise FreekdError(f"{where} has an empty caption; give every row file,caption")
    return row


def _inside(folder: Path, name: str, *, where: str) -> Path:
    """``folder / name``, refused unless it stays inside ``folder`` (no ``..``, absolute path
    or symbolic link leading out): a captions file may only name images next to it."""
    if "\x00" in name:
        raise FreekdError(f"{where}: file {name!r} holds a NUL character; fix the captions file")
    candidate = Path(name)
    root = folder.resolve()
    resolved = (folder / candidate).resolve()
    if candidate.is_absolute() or not resolved.is_relative_to(root):
        raise FreekdError(
            f"{where}: file {name!r} lies outside {folder}; captions may only name images "
            "inside their folder"
        )
    return resolved


def load_caption_pairs(folder: Path) -> PairedDataset:
    """Users' own pairs: a folder of images plus ``captions.csv`` (columns ``file,caption``
    and optionally ``label``) or ``captions.jsonl`` (one ``{"file", "caption"[, "label"]}``
    object per line); ``file`` is relative to the folder.

    All images must have one size; they are kept as uint8, one channel if all are greyscale.
    Without labels on every row the set has one class and no zero-shot accuracy.

    Raises:
        FreekdError: a missing or malformed captions file, a missing or unreadable image,
            images of different sizes.
    """
    import numpy as np
    from PIL import Image, UnidentifiedImageError

    folder = Path(folder).expanduser()
    rows = _caption_rows(folder)
    decoded = []
    for row in rows:
        path = _inside(folder, row["file"], where=str(folder / row["file"]))
        try:
            with Image.open(path) as image:
                image.load()
                decoded.append(image)
        except (OSError, UnidentifiedImageError, Image.DecompressionBombError) as error:
            reason = str(error).splitlines()[0] if str(error) else type(error).__name__
            raise FreekdError(
                f"cannot read image {path} ({reason}); fix the captions file"
            ) from None
    mode = "L" if all(image.mode == "L" for image in decoded) else "RGB"
    size = decoded[0].size
    odd = next(
        (row["file"] for row, image in zip(rows, decoded, strict=True) if image.size != size), None
    )
    if odd is not None:
        raise FreekdError(
            f"{folder / odd} is not {size[0]}x{size[1]} like {rows[0]['file']}; resize all images "
            "to one size"
        )
    stacked = np.stack([np.asarray(image.convert(mode), dtype=np.uint8) for image in decoded])
    pixels = stacked[:, None] if mode == "L" else stacked.transpose(0, 3, 1, 2)
    labelled = all(row.get("label") for row in rows)
    classes = sorted({row["label"] for row in rows}) if labelled else ["unlabelled"]
    labels = torch.tensor(
        [classes.index(row["label"]) if labelled else 0 for row in rows], dtype=torch.int64
    )
    images = ImageDataset(
        torch.from_numpy(np.ascontiguousarray(pixels)), labels, classes, str(folder)
    )
    return PairedDataset(
        images,
        classes,
        TEMPLATES["photo"],
        templated=False,
        captions=[row["caption"] for row in rows],
        labelled=labelled,
    )


def class_prompts(pairs: PairedDataset) -> list[list[str]]:
    """Per class, its caption under every template: the zero-shot classifier's prompts."""
    return [[template.format(name) for template in pairs.templates] for name in pairs.class_names]


Tokenize = Callable[[list[str]], Tensor]
