"""Paired image–caption data built from labelled images and caption templates.

No captioned image set is available offline, so pairs are made from a labelled set and
templates ("a photo of a {class}."), several per class, as CLIP's zero-shot prompts are
(Radford et al. 2021, arXiv:2103.00020 §3.1.4). Every report that uses them says the captions
are templated. Templates are drawn per image and per epoch from a seeded generator, so a model
sees varied wordings of the same class.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass

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
    """

    images: ImageDataset
    class_names: list[str]
    templates: tuple[str, ...]
    templated: bool = True
    captions: list[str] | None = None

    def __len__(self) -> int:
        return len(self.images)

    def caption(self, index: int, template: int) -> str:
        if self.captions is not None:
            return self.captions[index]
        label = int(self.images.labels[index])
        return self.templates[template % len(self.templates)].format(self.class_names[label])

    def draw_captions(self, indices: Tensor, generator: torch.Generator) -> list[str]:
        """One caption per image at ``indices``, each template drawn from ``generator``."""
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


def class_prompts(pairs: PairedDataset) -> list[list[str]]:
    """Per class, its caption under every template: the zero-shot classifier's prompts."""
    return [[template.format(name) for template in pairs.templates] for name in pairs.class_names]


Tokenize = Callable[[list[str]], Tensor]
