"""One-tower cross-modal distillation: a classifier or CLIP tower teaches one student tower."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import nn

from freekd.checkpoint import safe_torch_load
from freekd.config import TeacherSourceConfig
from freekd.crossmodal import load_clip
from freekd.crossmodal.clip import FORMAT as CLIP_FORMAT
from freekd.crossmodal.common import (
    TOWER_MIN_STEPS,
    baseline_options,
    captions_report,
    draw_retrieval,
    fit_pairs,
    paired_sets,
    report_entry,
    setup_crossmodal_run,
    training_cost,
    with_method,
    with_min_steps,
)
from freekd.crossmodal.methods import (
    AUTO,
    DualContrastive,
    TowerContrastive,
    check_method_name,
    method_label,
)
from freekd.crossmodal.towers import (
    MINILM,
    ClassifierFeatures,
    ClipTower,
    DualEncoder,
    ImageStudent,
    MiniLMText,
    TextStudent,
    save_tower,
)
from freekd.errors import FreekdError
from freekd.runs import (
    RunOptions,
    check_params,
    common_report,
    dataset_statistics,
    finish_run,
)
from freekd.seeding import reseed
from freekd.teachers import load_teacher
from freekd.train import DistInfo
from freekd.train.evaluate import check_input_shape


def one_tower_teacher(spec: str) -> bool:
    """Whether ``--teacher`` names one tower (an image classifier, one tower of a CLIP, MiniLM)
    rather than a whole CLIP."""

    if spec == MINILM or spec.startswith(("clip-image:", "clip-text:")):
        return True
    data = safe_torch_load(Path(spec), what="teacher")
    return not (isinstance(data, dict) and data.get("format") == CLIP_FORMAT)


def _teacher_tower(
    spec: str, device: torch.device, *, trust_code: bool = False
) -> tuple[Any, dict[str, Any]]:
    """The frozen teacher tower ``--teacher`` names, and what the report says about it."""

    if spec == MINILM:
        return MiniLMText(device=device), {"kind": "all-MiniLM-L6-v2 (pretrained, frozen)"}
    for modality in ("image", "text"):
        prefix = f"clip-{modality}:"
        if spec.startswith(prefix):
            clip = load_clip(Path(spec[len(prefix) :]), device=device)
            return ClipTower(clip, modality), {"kind": f"the {modality} tower of a freekd CLIP"}
    teacher = load_teacher(TeacherSourceConfig(path=spec), device=device, trust_code=trust_code)
    tower = ClassifierFeatures(teacher, input_shape=teacher.input_shape)
    return tower, {
        "kind": f"image classifier {teacher.metadata.get('arch')} (penultimate features)",
        "input_shape": list(teacher.input_shape),
    }


#: The text student of an image teacher: CLIP's text tower at a small width.
DEFAULT_TEXT_STUDENT = {
    "context_length": 16, "vocab_size": 49408, "width": 32, "heads": 4, "layers": 2,
}  # fmt: skip


@dataclass(frozen=True)
class _StudentTowers:
    """Builds the towers a one-tower run trains: the student tower of the other modality, and
    for the baseline a fresh partner of the teacher's modality."""

    config: Any
    dim: int
    input_shape: tuple[int, int, int]
    mean: list[float]
    std: list[float]

    def build(self, modality: str) -> Any:
        if modality == "text":
            text_cfg = dict(self.config.student or DEFAULT_TEXT_STUDENT)
            return TextStudent(dim=self.dim, text_cfg=text_cfg)
        return ImageStudent(
            arch=self.config.student_arch, dim=self.dim, input_shape=self.input_shape,
            mean=list(self.mean), std=list(self.std),
            arch_kwargs=dict(self.config.student_kwargs),
            trust_code=True,  # config.student_arch: vetted when the config was loaded
            setting="--student",
        )  # fmt: skip


def _dual_encoder(first: Any, second: Any) -> DualEncoder:
    """Two towers of different modalities, in either order, as one dual encoder."""
    return DualEncoder(
        image=first if first.modality == "image" else second,
        text=first if first.modality == "text" else second,
    )


def _tower_saver(out: Path) -> Callable[[nn.Module, dict[str, Any]], None]:
    """Writes a trained tower to ``out/model.pt`` (``save_tower``)."""

    def save(module: nn.Module, resolved: dict[str, Any]) -> None:
        save_tower(out / "model.pt", module, config=resolved)  # type: ignore[arg-type]

    return save


def _teacher_entry(teacher: Any, teacher_report: dict[str, Any], spec: str) -> dict[str, Any]:
    """The one-tower teacher's report entry: what it is, with no metrics of its own."""
    return {
        **teacher_report,
        "path": spec,
        "parameters": {"total": teacher.parameter_count()},
        "zero_shot_accuracy": None,
        **{f"recall_at_{k}": None for k in (1, 5, 10)},
        "note": "a one-tower teacher cannot retrieve or classify zero-shot by itself",
    }


def _check_tower_method(config: Any) -> None:
    """A one-tower teacher is distilled by ``contrastive`` (``TowerContrastive``) only."""
    check_method_name(config.method.name)
    if config.method.name not in (AUTO, "contrastive"):
        raise FreekdError(
            f"method {config.method.name} needs a whole CLIP teacher; a one-tower teacher "
            "(image classifier, clip-image:, clip-text:, minilm) is distilled by contrastive"
        )
    what = method_label(config.method.name, "contrastive")
    check_params(TowerContrastive, config.method.params, what=what)


def _train_tower_baseline(
    students: _StudentTowers,
    teacher_modality: str,
    pairs: Any,
    config: Any,
    options: RunOptions,
    *,
    device: torch.device,
    dist: DistInfo,
) -> tuple[DualEncoder, Any, dict[str, Any]]:
    """The student tower trained from scratch with a fresh partner tower (CLIP's loss, same
    budget) in ``OUT/baseline``: the dual encoder, the student tower and their report notes."""
    student_modality = "text" if teacher_modality == "image" else "image"
    reseed(config.seed)
    baseline = students.build(student_modality)
    partner = students.build(teacher_modality)
    run_options = baseline_options(options)
    baseline_text = baseline if student_modality == "text" else partner
    result = fit_pairs(
        DualContrastive(baseline, partner), pairs, config, run_options,
        tokenize=baseline_text.tokenize, save=_tower_saver(run_options.out_dir),
        device=device, dist=dist, description="baseline towers",
    )  # fmt: skip
    extra = {
        "method": "clip loss only (no teacher): the student tower and a fresh "
        f"{teacher_modality} tower ({type(partner).__name__}) trained together",
        **training_cost(result),
    }
    return _dual_encoder(baseline, partner), baseline, extra


def run_tower_distill(config: Any, options: RunOptions) -> dict[str, Any]:
    """``freekd crossmodal distill`` with a one-tower teacher: a student tower of the other
    modality learns the teacher's embedding space through ``TowerContrastive``; evaluated as a
    dual encoder (teacher tower + student tower); the baseline is the same student tower
    trained from scratch together with a fresh partner tower (CLIP's loss, same budget)."""

    _check_tower_method(config)
    config = with_method(config, "contrastive")  # ``auto`` resolved
    pairs, eval_pairs, train_set = paired_sets(config)
    config = with_min_steps(config, len(pairs), default=TOWER_MIN_STEPS)
    dist, device = setup_crossmodal_run(config, options)
    teacher, teacher_report = _teacher_tower(config.teacher, device, trust_code=options.trust_code)
    if teacher.modality == "image" and "input_shape" in teacher_report:
        check_input_shape(train_set, tuple(teacher_report["input_shape"]), who="the teacher")
    mean, std = dataset_statistics(train_set)
    students = _StudentTowers(config, teacher.dim, train_set.input_shape, list(mean), list(std))
    student_modality = "text" if teacher.modality == "image" else "image"
    reseed(config.seed)
    student = students.build(student_modality)
    method = TowerContrastive(student, teacher, **dict(config.method.params))
    text_tower = student if student_modality == "text" else teacher
    direction = f"{teacher.modality} → {student_modality}"
    result = fit_pairs(
        method, pairs, config, options, tokenize=text_tower.tokenize,
        save=_tower_saver(options.out_dir), device=device, dist=dist,
        description=f"contrastive {direction} student",
    )  # fmt: skip
    dual = _dual_encoder(student, teacher)

    def entry(model: DualEncoder, tower: Any, extra: dict[str, Any]) -> dict[str, Any]:
        parameters = {"total": tower.parameter_count()}
        return report_entry(
            model, eval_pairs, config, device=device, parameters=parameters, extra=extra
        )

    draw_retrieval(
        dual, eval_pairs, options.out_dir / "retrieval.png", seed=config.seed, device=device,
        title=f"text → image retrieval ({direction} student with its teacher), held-out pairs",
    )  # fmt: skip
    student_extra = {
        "method": "contrastive",
        "tower": student.spec(),
        "evaluated_with": f"the teacher's {teacher.modality} tower",
    }
    report: dict[str, Any] = {
        "command": "crossmodal distill",
        "direction": direction,
        "teacher": _teacher_entry(teacher, teacher_report, config.teacher),
        "student": entry(dual, student, student_extra),
        "baseline": None,
        "pairs": train_set.name,
        "train_pairs": len(pairs),
        "captions": captions_report(pairs),
        **common_report(config, result),
    }
    if config.baseline:
        baseline_dual, baseline, extra = _train_tower_baseline(
            students, teacher.modality, pairs, config, options, device=device, dist=dist
        )
        report["baseline"] = entry(baseline_dual, baseline, extra)
    finish_run(report, options, dist)
    return report
