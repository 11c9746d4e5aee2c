"""Fast (meta-learned generator) on the tiny digits teacher: meta-update, samples, CLI run."""

from __future__ import annotations

import copy
import json
from pathlib import Path

import pytest
import torch
from typer.testing import CliRunner

from freekd.cli import app
from freekd.config import TeacherSourceConfig
from freekd.datafree.synthesizers.fast import Fast
from freekd.teachers import Teacher, load_teacher
from tests.datafree.test_contract import SHAPE, make_student


@pytest.fixture(scope="module")
def teacher(tiny_teacher_path: Path) -> Teacher:
    return load_teacher(TeacherSourceConfig(path=str(tiny_teacher_path)))


def make(seed: int = 0, **params: object) -> Fast:
    values: dict[str, object] = {"batch_size": 64}
    values.update(params)
    return Fast(
        image_shape=SHAPE,
        num_classes=10,
        rng=torch.Generator().manual_seed(seed),
        device=torch.device("cpu"),
        **values,  # type: ignore[arg-type]
    )


def test_meta_update_moves_the_shared_initialization_towards_the_adapted_generator(
    teacher: Teacher,
) -> None:
    synthesizer = make(warmup_steps=0, generator_steps=2, meta_lr=0.25)
    before = copy.deepcopy(synthesizer.generator.state_dict())
    synthesizer.synthesize(teacher, make_student())
    adapted = synthesizer.fast_generator.state_dict()
    after = synthesizer.generator.state_dict()
    moved = 0
    for name, initial in synthesizer.generator.named_parameters():
        expected = before[name] + 0.25 * (adapted[name] - before[name])
        torch.testing.assert_close(initial.detach(), expected)
        moved += int(not torch.equal(after[name], before[name]))
    assert moved == len(list(synthesizer.generator.parameters()))
    assert synthesizer.tasks == 1
    assert synthesizer.teacher_queries == 2 * 64
    assert synthesizer.images_synthesized == 64


def test_each_task_starts_from_the_shared_initialization(teacher: Teacher) -> None:
    synthesizer = make(warmup_steps=0, generator_steps=1)
    synthesizer.synthesize(teacher, make_student())
    shared = copy.deepcopy(dict(synthesizer.generator.named_parameters()))
    synthesizer.generator_steps = 0  # no inner step: θ' stays θ and the meta-update is a no-op
    synthesizer.synthesize(teacher, make_student())
    for name, value in synthesizer.fast_generator.named_parameters():
        torch.testing.assert_close(value, shared[name])


def test_samples_become_confident_and_class_balanced(teacher: Teacher) -> None:
    synthesizer = make(batch_size=32, warmup_steps=30, generator_steps=2)
    student = make_student()
    for _ in range(8):
        synthesizer.synthesize(teacher, student)
    assert len(synthesizer.memory) == 8 * 32
    with torch.no_grad():
        probabilities = teacher(synthesizer.sample(256)).softmax(dim=1)
    confidence = float(probabilities.max(dim=1).values.mean())
    counts = torch.bincount(probabilities.argmax(dim=1), minlength=10)
    assert confidence > 0.6, confidence
    assert int((counts > 0).sum()) == 10, counts
    assert int(counts.max()) < 0.25 * 256, counts
    assert all(p.grad is None for p in student.parameters())


@pytest.mark.slow
def test_datafree_fast_end_to_end_writes_the_report(
    tiny_teacher_path: Path, tmp_path: Path
) -> None:
    out = tmp_path / "run"
    result = CliRunner().invoke(
        app,
        [
            "datafree",
            "--teacher",
            str(tiny_teacher_path),
            "--method",
            "fast",
            "--eval-data",
            "digits:test",
            "--epochs",
            "1",
            "--batch-size",
            "16",
            "--set",
            "steps_per_epoch=4",
            "--set",
            "synthesize_every=1",  # one round per step keeps the counts below simple
            "--set",
            "synthesizer.params.batch_size=16",
            "--set",
            "synthesizer.params.warmup_steps=5",
            "--device",
            "cpu",
            "--quiet",
            "--out",
            str(out),
        ],
    )
    assert result.exit_code == 0, result.output
    report = json.loads((out / "report.json").read_text())
    assert report["method"]["name"] == "fast"
    # 4 tasks of 16 images; the first adapts 5 steps, the others 2 (one query per image and step),
    # plus one query per image of the student's 4 batches of 16.
    assert report["synthesized_images"] == 4 * 16
    assert report["teacher_queries"] == (5 + 3 * 2) * 16 + 4 * 16
    assert 0 <= report["student"]["test_accuracy"] <= 1
    assert (out / "samples.png").exists()
