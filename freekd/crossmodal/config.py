"""Configs of ``freekd crossmodal teacher`` and ``freekd crossmodal distill``."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from freekd.config import Checks, ComponentConfig, TrainerConfig


def _tiny_clip() -> dict[str, Any]:
    """The tiny open_clip of DATA.md: 64-d embeddings, a 2-layer ViT (32 px, patch 8, width 64)
    and a 2-layer text transformer (width 64, 16 tokens)."""
    return {
        "embed_dim": 64,
        "vision_cfg": {
            "image_size": 32,
            "layers": 2,
            "width": 64,
            "patch_size": 8,
            "head_width": 32,
        },
        "text_cfg": {
            "context_length": 16,
            "vocab_size": 49408,
            "width": 64,
            "heads": 2,
            "layers": 2,
        },
    }


def _clip_trainer(epochs: int = 2) -> TrainerConfig:
    """CLIP training on small pairs: AdamW at 1e-3 with weight decay 0.1 and a short warm-up
    (open_clip's recipe at CPU scale), 2 epochs (a student's are raised by ``min_steps``)."""
    return TrainerConfig(
        epochs=epochs, batch_size=128, lr=1e-3, optimizer="adamw", weight_decay=0.1,
        warmup_steps=50, augment="none", eval_every=0,
    )  # fmt: skip


def _clip_teacher_trainer() -> TrainerConfig:
    """A teacher's: 6 epochs. Two left it below what its students learn alone from 55,000
    pairs, so it held them back there (validation, experiments/2026-12-crossmodal-pays)."""
    return _clip_trainer(epochs=6)


@dataclass(frozen=True)
class CrossModalTeacherConfig:
    """``freekd crossmodal teacher``: train a small open_clip CLIP on templated pairs.

    Attributes:
        pairs: labelled images whose classes become captions (``fashion-mnist``, ``mnist``,
            ``animal-mnist``, ``digits``, a ``.npz`` …); its ``train`` split by default.
        eval_pairs: held-out labelled images; default: the ``test`` split of ``pairs``.
        limit_pairs: train on this many of the pairs only: a seeded, class-balanced choice
            (``None``: all of them).
        eval_size: pairs of the held-out set used for retrieval recall (a seeded choice);
            zero-shot accuracy uses the whole held-out set.
        captions: template family: ``auto`` (digits for MNIST and digits, silhouettes for
            Animal-MNIST, photos otherwise), ``photo``, ``digit`` or ``silhouette``.
        data_root: torchvision-format root for datasets that need one.
        model: open_clip model config (``embed_dim``, ``vision_cfg``, ``text_cfg``).
        mean: per-channel normalization of the three-channel input; default: the training
            images' own statistics.
        std: per-channel standard deviation.
        seed: seed of weights, order and caption draws.
        trainer: the training loop's settings.
    """

    pairs: str = "fashion-mnist"
    eval_pairs: str | None = None
    limit_pairs: int | None = None
    eval_size: int = 1000
    captions: str = "auto"
    data_root: str | None = None
    model: dict[str, Any] = field(default_factory=_tiny_clip)
    mean: list[float] | None = None
    std: list[float] | None = None
    seed: int = 0
    trainer: TrainerConfig = field(default_factory=_clip_teacher_trainer)

    def __post_init__(self) -> None:
        check = Checks(self)
        check.at_least("eval_size", 1)
        check.at_least("limit_pairs", 1, optional=True)


@dataclass(frozen=True)
class CrossModalDistillConfig:
    """``freekd crossmodal distill``: a small CLIP student distilled from a CLIP teacher.

    Attributes:
        teacher: a ``freekd-clip/1`` checkpoint (``freekd crossmodal teacher``), or one tower:
            an image classifier's ``model.pt`` (its penultimate features teach a text student),
            ``clip-image:PATH`` / ``clip-text:PATH`` (one tower of a CLIP checkpoint) or
            ``minilm`` (the pretrained all-MiniLM-L6-v2 sentence encoder teaches an image
            student).
        student: a CLIP teacher's student: its open_clip model config; ``None``: about a
            quarter of the teacher (text width ÷ 4, image width ÷ 2, embedding ÷ 2, same depth
            and context). An image teacher's text student: its open_clip ``text_cfg``;
            ``None``: width 32, 2 layers, 4 heads, context 16.
        student_arch: a text teacher's image student: a model registry architecture whose
            last layer outputs the teacher's embedding dimension.
        student_kwargs: keyword arguments of ``student_arch``.
        method: the distillation strategy and its parameters: ``auto`` (the default) is
            ``relational`` for a CLIP teacher (chosen on validation pairs, issue 23) and
            ``contrastive`` for a one-tower teacher (the only method one tower supports); or
            one of ``crossmodal.CROSSMODAL_METHODS`` (``contrastive``, ``feature``, ``icl``,
            ``relational``).
        baseline: also train the same student with CLIP's loss alone at the same budget.
        pairs: labelled images whose classes become captions (``train`` split by default).
        eval_pairs: held-out labelled images; default: the ``test`` split of ``pairs``.
        limit_pairs: the student (and its baseline) train on this many of the pairs only: a
            seeded, class-balanced choice (``None``: all of them); the teacher is unaffected.
        min_steps: the student (and its baseline) train at least this many steps: on few
            pairs the epochs are raised until ``epochs × steps per epoch`` reaches it (never
            lowered; ``0`` keeps ``trainer.epochs`` as given). Two epochs of 600 pairs are 8
            steps, too few for any student; the report gives the epochs and steps run.
            ``None`` (the default): 3,000 for a CLIP teacher, 1,000 for a one-tower teacher,
            each chosen on validation pairs (experiments/2026-12-crossmodal-pays) and recorded
            in ``config.yaml``.
        eval_size: held-out pairs used for retrieval recall.
        captions: template family (see ``CrossModalTeacherConfig``).
        data_root: torchvision-format root for datasets that need one.
        seed: seed of weights, order and caption draws (the baseline uses the same).
        trainer: the training loop's settings (the baseline's too).
    """

    teacher: str = ""
    student: dict[str, Any] | None = None
    student_arch: str = "lenet5"
    student_kwargs: dict[str, Any] = field(default_factory=dict)
    method: ComponentConfig = field(default_factory=lambda: ComponentConfig(name="auto"))
    baseline: bool = True
    pairs: str = "fashion-mnist"
    eval_pairs: str | None = None
    limit_pairs: int | None = None
    min_steps: int | None = None
    eval_size: int = 1000
    captions: str = "auto"
    data_root: str | None = None
    seed: int = 0
    trainer: TrainerConfig = field(default_factory=_clip_trainer)

    def __post_init__(self) -> None:
        check = Checks(self)
        check.at_least("eval_size", 1)
        check.at_least("limit_pairs", 1, optional=True)
        check.at_least("min_steps", 0, optional=True)
