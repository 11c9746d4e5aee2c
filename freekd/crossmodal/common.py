"""What both cross-modal pipelines share: paired sets, the fit, metrics and their pictures."""

from __future__ import annotations

import dataclasses
import logging
import math
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch
from torch import nn

from freekd.crossmodal import save_clip, templated_pairs
from freekd.crossmodal.data import (
    class_prompts,
    is_pair_folder,
    limit_pairs,
    load_caption_pairs,
    subset_pairs,
)
from freekd.crossmodal.evaluate import embed, retrieval, zero_shot_accuracy
from freekd.data import AUGMENTATIONS, ImageDataset, load_dataset
from freekd.errors import FreekdError
from freekd.methods import Method
from freekd.plots import plot_retrieval
from freekd.rundata import resolve_augmentation
from freekd.runs import RunOptions, TrainResult, eval_spec, run_training, seeded, setup_run
from freekd.train import (
    DistInfo,
    PairedSource,
)
from freekd.train.evaluate import check_input_shape

logger = logging.getLogger(__name__)


def setup_crossmodal_run(config: Any, options: RunOptions) -> tuple[DistInfo, torch.device]:
    """``runs.setup_run`` for a cross-modal command, which runs in one process only."""
    dist, device = setup_run(config.seed, config.trainer, options)
    if dist.enabled:
        raise FreekdError("freekd crossmodal runs in one process; start it without torchrun")
    return dist, device


def report_entry(
    model: Any,
    eval_pairs: Any,
    config: Any,
    *,
    device: torch.device,
    parameters: dict[str, Any],
    extra: dict[str, Any],
) -> dict[str, Any]:
    """One model's entry in a cross-modal report: its held-out metrics (``crossmodal_metrics``),
    its parameter counts and what else the caller says about it."""
    metrics = crossmodal_metrics(
        model, eval_pairs, eval_size=config.eval_size, seed=config.seed, device=device
    )
    return metrics | {"parameters": parameters} | extra


def training_cost(result: TrainResult) -> dict[str, Any]:
    """The wall and CPU seconds of a training run, as the reports round them."""
    return {
        "wall_seconds": round(result.wall_seconds, 3),
        "cpu_seconds": round(result.cpu_seconds, 3),
    }


def baseline_options(options: RunOptions) -> RunOptions:
    """The no-teacher baseline's run, in ``OUT/baseline``."""
    return RunOptions(options.out_dir / "baseline", overwrite=True, quiet=options.quiet)


def crossmodal_metrics(
    model: Any, pairs: Any, *, eval_size: int, seed: int, device: torch.device
) -> dict[str, Any]:
    """Zero-shot accuracy on all of ``pairs`` and retrieval recall on ``eval_size`` of them."""

    model.eval()
    images = pairs.images.batch(torch.arange(len(pairs.images))).images
    labels = pairs.images.labels
    image_features = embed(lambda x: model.encode_image(x.to(device)), images)
    prompts = class_prompts(pairs)
    zero_shot: float | None = None
    if pairs.labelled:
        tokens = model.tokenize([prompt for per_class in prompts for prompt in per_class])
        prompt_features = embed(lambda t: model.encode_text(t.to(device)), tokens)
        prompt_features = prompt_features.view(len(prompts), len(prompts[0]), -1)
        zero_shot = zero_shot_accuracy(image_features, prompt_features.cpu(), labels)
    count = min(eval_size, len(pairs.images))
    chosen = torch.randperm(len(pairs.images), generator=seeded(seed, 31))[:count]
    captions = pairs.draw_captions(chosen, seeded(seed, 32))
    text_features = embed(lambda t: model.encode_text(t.to(device)), model.tokenize(captions))
    recall = retrieval(image_features[chosen].cpu(), text_features.cpu(), labels[chosen])
    # A templated caption names a class and nothing else about its image, so there a retrieved
    # item is right when it shows (or names) the query's class; users' own captions describe
    # their image, so there only the exact pair counts. The mean of the two directions; each
    # direction and both kinds are under "retrieval".
    suffix = "_class" if pairs.templated else ""
    return {
        "zero_shot_accuracy": None if zero_shot is None else round(zero_shot, 6),
        **{
            f"recall_at_{k}": round(
                0.5
                * (
                    recall[f"image_to_text{suffix}"][str(k)]
                    + recall[f"text_to_image{suffix}"][str(k)]
                ),
                6,
            )
            for k in (1, 5, 10)
        },
        "recall_counts": "the query's class" if pairs.templated else "the exact pair",
        "chance": {
            "zero_shot_accuracy": round(1 / len(prompts), 6) if pairs.labelled else None,
            "recall_at_1": round(1 / len(prompts) if pairs.templated else 1 / count, 6),
        },
        "retrieval": recall,
        "retrieval_pairs": count,
        "zero_shot_images": len(pairs.images),
    }


def draw_retrieval(
    model: Any, pairs: Any, out_path: Path, *, seed: int, device: torch.device, title: str
) -> None:
    """``retrieval.png``: six held-out captions and the five images the model ranks first
    among 500 held-out images (green: the right class, or the exact pair for users' captions)."""

    model.eval()
    gallery = torch.randperm(len(pairs.images), generator=seeded(seed, 51))[:500]
    images = pairs.images.batch(gallery).images
    labels = pairs.images.labels[gallery]
    image_features = embed(lambda x: model.encode_image(x.to(device)), images).cpu()
    picks = torch.arange(min(6, len(gallery)))
    queries = pairs.draw_captions(gallery[picks], seeded(seed, 52))
    text_features = embed(lambda t: model.encode_text(t.to(device)), model.tokenize(queries)).cpu()
    ranked = (text_features @ image_features.T).topk(min(5, len(gallery)), dim=1).indices
    if pairs.templated:
        correct = labels[ranked] == labels[picks].unsqueeze(1)
    else:
        correct = ranked == picks.unsqueeze(1)
    plot_retrieval(queries, images, ranked, correct, out_path, title=title)


def captions_report(pairs: Any) -> dict[str, Any]:
    if not pairs.templated:
        return {
            "templated": False,
            "labelled": pairs.labelled,
            "class_names": list(pairs.class_names) if pairs.labelled else None,
            "note": "the user's own captions (captions file)",
        }
    return {
        "templated": True,
        "templates": list(pairs.templates),
        "class_names": list(pairs.class_names),
        "note": "captions are templated from the class labels, not written by people",
    }


def fit_clip(
    method: Method,
    pairs: Any,
    config: Any,
    options: RunOptions,
    *,
    device: torch.device,
    dist: DistInfo,
    description: str,
) -> TrainResult:
    """Train ``method.student`` (a CLIP) on ``pairs`` in the one loop; ``model.pt`` is a
    ``freekd-clip/1`` checkpoint in ``options.out_dir``."""

    def save(module: nn.Module, resolved: dict[str, Any]) -> None:
        save_clip(options.out_dir / "model.pt", module, config=resolved)  # type: ignore[arg-type]

    return fit_pairs(
        method, pairs, config, options, tokenize=method.student.tokenize,  # type: ignore[arg-type]
        save=save, device=device, dist=dist, description=description,
    )  # fmt: skip


def fit_pairs(
    method: Method,
    pairs: Any,
    config: Any,
    options: RunOptions,
    *,
    tokenize: Callable[[list[str]], torch.Tensor],
    save: Callable[[nn.Module, dict[str, Any]], None],
    device: torch.device,
    dist: DistInfo,
    description: str,
) -> TrainResult:
    """Train ``method`` on ``pairs`` (captions turned into tensors by ``tokenize``) in the one
    loop; ``save(student, resolved_config)`` writes ``model.pt``."""

    def texts(indices: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
        return tokenize(pairs.draw_captions(indices, generator))

    augment = resolve_augmentation(config.trainer.augment, pairs.images.input_shape)
    source = PairedSource(
        pairs.images, texts, batch_size=config.trainer.batch_size, seed=config.seed,
        augment=None if augment == "none" else AUGMENTATIONS.get(augment),
    )  # fmt: skip
    return run_training(
        method, source, eval_set=None, trainer_config=config.trainer, config=config,
        options=options, device=device, dist=dist, description=description, save=save,
    )  # fmt: skip


def quarter_clip(teacher_config: dict[str, Any]) -> dict[str, Any]:
    """A student config about a quarter of the teacher's size (``crossmodal distill``'s default).

    The text tower's token table dominates a small CLIP (49,408 × width), so the text width is
    divided by 4, the image width and the embedding by 2; depth, patch size, image size and
    context length stay (the student must tokenize like the teacher).
    """
    vision = dict(teacher_config["vision_cfg"])
    text = dict(teacher_config["text_cfg"])
    vision["width"] = max(8, int(vision.get("width", 768)) // 2)
    if "head_width" in vision:
        vision["head_width"] = max(8, int(vision["head_width"]) // 2)
    text["width"] = max(8, int(text.get("width", 512)) // 4)
    heads = max(1, int(text.get("heads", 8)))
    while text["width"] % heads:
        heads -= 1
    text["heads"] = heads
    return {
        "embed_dim": max(8, int(teacher_config["embed_dim"]) // 2),
        "vision_cfg": vision,
        "text_cfg": text,
    }


def paired_sets(config: Any) -> tuple[Any, Any, ImageDataset]:
    """Training and held-out pairs of a cross-modal config: users' own pairs (a folder with a
    captions file; without ``eval_pairs`` a seeded tenth is held out) or templated pairs;
    with ``limit_pairs``, a seeded, class-balanced part of the training pairs."""
    pairs, eval_pairs, train_set = _all_pairs(config)
    if config.limit_pairs is not None and config.limit_pairs < len(pairs):
        pairs = limit_pairs(pairs, config.limit_pairs, generator=seeded(config.seed, 43))
        train_set = pairs.images
    return pairs, eval_pairs, train_set


def with_method(config: Any, name: str, defaults: dict[str, Any] | None = None) -> Any:
    """``config`` with its method renamed (``auto`` resolved) and ``defaults`` under its own
    params, so ``config.yaml`` records the method and parameters run."""
    params = {**(defaults or {}), **dict(config.method.params)}
    return dataclasses.replace(
        config, method=dataclasses.replace(config.method, name=name, params=params)
    )


def steps_per_epoch(config: Any, pair_count: int) -> int:
    """Optimizer steps of one epoch over ``pair_count`` pairs (incomplete batches dropped)."""
    return max(1, pair_count // config.trainer.batch_size)


CLIP_MIN_STEPS, TOWER_MIN_STEPS = 3000, 1000
"""``min_steps: null`` for a CLIP teacher and for a one-tower teacher (validation pairs,
experiments/2026-12-crossmodal-pays: 3,000 steps raised CLIP students at every size, and cost
one-tower students at 600 pairs against 1,000)."""


def with_min_steps(config: Any, pair_count: int, *, default: int) -> Any:
    """``config`` with enough epochs for ``config.min_steps`` steps on ``pair_count`` pairs
    (an epoch is ``pair_count // batch_size`` steps): raised, never lowered. ``min_steps:
    null`` becomes ``default``, so ``config.yaml`` records the floor the run had."""
    if config.min_steps is None:
        config = dataclasses.replace(config, min_steps=default)
    per_epoch = steps_per_epoch(config, pair_count)
    epochs = max(config.trainer.epochs, math.ceil(config.min_steps / per_epoch))
    if epochs == config.trainer.epochs:
        return config
    logger.warning(  # visible: a given --epochs 1 became 1,500 without a word at info level
        "%d pairs are %d steps an epoch: epochs raised from %d to %d to reach min_steps=%d "
        "(--set min_steps=0 keeps --epochs)",
        pair_count, per_epoch, config.trainer.epochs, epochs, config.min_steps,
    )  # fmt: skip
    return dataclasses.replace(config, trainer=dataclasses.replace(config.trainer, epochs=epochs))


def _all_pairs(config: Any) -> tuple[Any, Any, ImageDataset]:

    if is_pair_folder(config.pairs):
        pairs = load_caption_pairs(Path(config.pairs))
        if config.eval_pairs:
            eval_pairs = load_caption_pairs(Path(config.eval_pairs))
        else:
            if len(pairs) < 10:
                raise FreekdError(
                    f"{config.pairs} holds {len(pairs)} pairs; give at least 10 (a tenth is held "
                    "out) or pass --eval-pairs"
                )
            order = torch.randperm(len(pairs), generator=seeded(config.seed, 41))
            held = max(1, len(pairs) // 10)
            pairs, eval_pairs = subset_pairs(pairs, order[held:]), subset_pairs(pairs, order[:held])
        eval_pairs.class_names = pairs.class_names
        return pairs, eval_pairs, pairs.images
    root = Path(config.data_root) if config.data_root else None
    train_set = load_dataset(config.pairs, default_split="train", root=root)
    eval_set = load_dataset(
        config.eval_pairs or eval_spec(config.pairs, None), default_split="test", root=root
    )
    check_input_shape(eval_set, train_set.input_shape, who=f"pairs of {train_set.name}")
    family = None if config.captions == "auto" else config.captions
    pairs = templated_pairs(train_set, family=family)
    eval_pairs = templated_pairs(eval_set, family=family)
    eval_pairs.class_names = pairs.class_names
    return pairs, eval_pairs, train_set
