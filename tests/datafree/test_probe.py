"""The confident probe: images the teacher is sure of, measured without changing the run."""

from __future__ import annotations

import json
from pathlib import Path
from types import SimpleNamespace

import pytest
import torch
import yaml
from typer.testing import CliRunner

import freekd
from freekd.cli import app
from freekd.config import TeacherSourceConfig
from freekd.datafree.config import DataFreeConfig
from freekd.datafree.probe import ConfidentProbe, _evaluated, confident_images, confident_probe
from freekd.teachers import load_teacher
from freekd.train.averaging import WeightAverage
from freekd.train.trainer import TrainState

runner = CliRunner()


def draw(teacher: torch.nn.Module, seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    return confident_images(
        teacher,
        per_class=2,
        num_classes=10,
        image_shape=(1, 8, 8),
        rng=torch.Generator().manual_seed(seed),
        device=torch.device("cpu"),
        iterations=60,
    )


def drawn_probe(teacher: torch.nn.Module) -> ConfidentProbe:
    """A probe of 2 images per class that has drawn them, as at the start of a fit."""
    probe = ConfidentProbe(
        teacher,
        per_class=2,
        num_classes=10,
        image_shape=(1, 8, 8),
        seed=0,
        device=torch.device("cpu"),
        iterations=60,
    )
    probe.on_fit_start(None, TrainState())  # type: ignore[arg-type]  # the trainer is not read
    assert probe.images is not None
    assert torch.equal(probe.images, draw(teacher, seed=0)[0])
    return probe


def test_the_teacher_is_sure_of_the_images_and_they_repeat(tiny_teacher_path: Path) -> None:
    teacher = load_teacher(TeacherSourceConfig(path=str(tiny_teacher_path)))
    images, logits = draw(teacher, seed=0)
    assert images.shape == (20, 1, 8, 8)
    assert float(images.min()) >= 0
    assert float(images.max()) <= 1
    # Class by class in turn, each image the class it was drawn for.
    assert logits.argmax(1).tolist() == list(range(10)) * 2
    assert float(logits.softmax(1).max(1).values.mean()) > 0.8  # chance: 0.1
    again, _ = draw(teacher, seed=0)
    assert torch.equal(images, again)
    other, _ = draw(teacher, seed=1)
    assert not torch.equal(images, other)


def test_drawing_and_measuring_leave_the_random_stream_and_the_modes_alone(
    tiny_teacher_path: Path,
) -> None:
    # A plain module in training mode as the teacher (freekd's Teacher is always in eval mode):
    # the probe must leave its mode as it was.
    teacher = load_teacher(TeacherSourceConfig(path=str(tiny_teacher_path))).model.train()
    student = torch.nn.Sequential(
        torch.nn.Conv2d(1, 4, 3),
        torch.nn.BatchNorm2d(4),
        torch.nn.Flatten(),
        torch.nn.Linear(144, 10),
    )
    weights = {key: value.clone() for key, value in teacher.state_dict().items()}
    torch.manual_seed(123)
    state = torch.get_rng_state()
    probe = drawn_probe(teacher)
    # Drawn in eval mode: the teacher's BatchNorm statistics did not move.
    assert all(torch.equal(value, weights[key]) for key, value in teacher.state_dict().items())
    running = student[1].running_mean.clone()  # type: ignore[union-attr]
    probe.measure(student)
    assert torch.equal(torch.get_rng_state(), state)
    assert teacher.training
    assert student.training
    # Measured in eval mode: BatchNorm's running statistics did not move.
    assert torch.equal(student[1].running_mean, running)  # type: ignore[union-attr]


def test_the_teacher_agrees_with_itself_and_an_untrained_student_does_not(
    tiny_teacher_path: Path,
) -> None:
    teacher = load_teacher(TeacherSourceConfig(path=str(tiny_teacher_path)))
    probe = drawn_probe(teacher)
    itself = probe.measure(teacher)
    assert itself["probe/agreement"] == 1.0
    assert abs(itself["probe/kl"]) < 1e-5
    torch.manual_seed(0)
    untrained = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(64, 10))
    measured = probe.measure(untrained)
    assert measured["probe/kl"] > 0.5
    assert measured["probe/agreement"] < 0.5
    assert untrained.training  # measured in eval mode, its own mode restored


@pytest.mark.parametrize("average", [True, False])
def test_a_run_with_the_probe_trains_exactly_as_one_without(
    tiny_teacher_path: Path, tmp_path: Path, average: bool
) -> None:
    # A student with BatchNorm (a measurement in training mode would move its statistics),
    # with and without the weight average (the probe measures the average, else the student).
    common = (
        "datafree", "--teacher", tiny_teacher_path, "--method", "zskt", "--student",
        "tiny-cnn", "--eval-data", "digits:test", "--epochs", "2", "--batch-size", "16",
        "--set", "steps_per_epoch=3", "--set", "synthesizer.params.batch_size=16",
        "--device", "cpu", "--quiet", *(() if average else ("--set", "trainer.ema_decay=null")),
    )  # fmt: skip
    outs = {}
    for name, extra in (("plain", ()), ("probe", ("--set", "confident_probe=2"))):
        outs[name] = tmp_path / name
        result = runner.invoke(app, [str(a) for a in (*common, *extra, "--out", outs[name])])
        assert result.exit_code == 0, result.output

    def epochs(out: Path) -> list[dict[str, float]]:
        lines = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
        return [line for line in lines if "eval_accuracy" in line]

    plain, probed = epochs(outs["plain"]), epochs(outs["probe"])
    assert len(plain) == len(probed) == 2
    for before, after in zip(plain, probed, strict=True):
        assert after["eval_loss"] == before["eval_loss"]
        assert 0 <= after["probe/agreement"] <= 1
        assert after["probe/kl"] >= 0
        assert "probe/kl" not in before
    first = freekd.load_model(outs["plain"] / "model.pt").state_dict()
    second = freekd.load_model(outs["probe"] / "model.pt").state_dict()
    assert all(torch.equal(first[key], second[key]) for key in first)
    plain_report = json.loads((outs["plain"] / "report.json").read_text())
    probe_report = json.loads((outs["probe"] / "report.json").read_text())
    # Its queries are counted apart: 20 images, each through the teacher 200 + 1 times.
    assert probe_report["confident_probe"] == {"images": 20, "teacher_queries": 20 * 201}
    assert probe_report["teacher_queries"] == plain_report["teacher_queries"]
    assert "confident_probe" not in plain_report


def two_step_epochs(teacher: Path, out: Path) -> tuple[object, ...]:
    """``freekd datafree`` arguments for a zskt run of two 16-image steps an epoch."""
    return (
        "datafree", "--teacher", teacher, "--method", "zskt", "--student", "tiny-cnn-nobn",
        "--batch-size", "16", "--set", "steps_per_epoch=2",
        "--set", "synthesizer.params.batch_size=16", "--device", "cpu", "--quiet", "--out", out,
    )  # fmt: skip


def test_a_run_saved_before_the_probe_existed_resumes(
    tiny_teacher_path: Path, tmp_path: Path
) -> None:
    out = tmp_path / "run"
    common = two_step_epochs(tiny_teacher_path, out)
    first = runner.invoke(app, [str(a) for a in (*common, "--epochs", "1")])
    assert first.exit_code == 0, first.output
    # As a run of an earlier freekd saved it: without the setting, in config.yaml and in the
    # checkpoint.
    config = yaml.safe_load((out / "config.yaml").read_text())
    del config["confident_probe"]
    (out / "config.yaml").write_text(yaml.safe_dump(config))
    checkpoint = torch.load(out / "checkpoint.pt", weights_only=True)
    del checkpoint["config"]["confident_probe"]
    torch.save(checkpoint, out / "checkpoint.pt")
    second = runner.invoke(app, [str(a) for a in (*common, "--epochs", "2", "--resume")])
    assert second.exit_code == 0, second.output


def test_a_negative_probe_size_is_one_line() -> None:
    result = runner.invoke(
        app, ["datafree", "--teacher", "missing.pt", "--set", "confident_probe=-1", "--quiet"]
    )
    assert result.exit_code == 2
    assert "confident_probe" in result.output
    assert len(result.output.strip().splitlines()) == 1, result.output


def test_a_probe_too_large_for_memory_is_refused_in_one_line(
    tiny_teacher_path: Path, tmp_path: Path
) -> None:
    # 8×8 images of 10 classes: 256 MB would be over 100,000 images a class.
    result = runner.invoke(
        app,
        [
            "datafree", "--teacher", str(tiny_teacher_path), "--method", "zskt", "--student",
            "tiny-cnn-nobn", "--set", "confident_probe=200000", "--device", "cpu", "--quiet",
            "--epochs", "1", "--set", "steps_per_epoch=1", "--out", str(tmp_path / "run"),
        ],
    )  # fmt: skip
    assert result.exit_code == 2
    assert "lower --set confident_probe" in result.output
    assert len(result.output.strip().splitlines()) == 1, result.output
    # Refused before anything was written.
    assert not (tmp_path / "run").exists() or not any((tmp_path / "run").iterdir())


def test_the_probe_measures_the_weight_average_when_the_run_keeps_one() -> None:
    student = torch.nn.Linear(2, 2)
    average = WeightAverage(student, decay=0.9)
    trainer = SimpleNamespace(callbacks=[average], unwrapped=lambda name: student)
    assert _evaluated(trainer) is average.module  # type: ignore[arg-type]
    alone = SimpleNamespace(callbacks=[], unwrapped=lambda name: student)
    assert _evaluated(alone) is student  # type: ignore[arg-type]


def test_a_proxy_run_is_not_probed(
    tiny_teacher_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    teacher = load_teacher(TeacherSourceConfig(path=str(tiny_teacher_path)))
    config = DataFreeConfig(confident_probe=4, proxy_dataset="digits")
    probe = confident_probe(config, teacher, synthesizing=False, device=torch.device("cpu"))
    assert probe.per_class == 0
    assert "ignored with --proxy-data" in caplog.text


def test_a_resume_without_the_probe_logs_no_stale_probe_values(
    tiny_teacher_path: Path, tmp_path: Path
) -> None:
    out = tmp_path / "run"
    common = (*two_step_epochs(tiny_teacher_path, out), "--eval-data", "digits:test")
    first = runner.invoke(
        app, [str(a) for a in (*common, "--epochs", "1", "--set", "confident_probe=2")]
    )
    assert first.exit_code == 0, first.output
    # A resume keeps the saved settings; the probe may be turned off (a measurement).
    off = ("--epochs", "2", "--resume", "--set", "confident_probe=0")
    second = runner.invoke(app, [str(a) for a in (*common, *off)])
    assert second.exit_code == 0, second.output
    lines = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    epochs = [line for line in lines if "eval_accuracy" in line]
    assert [line["epoch"] for line in epochs] == [1, 2]
    assert "probe/kl" in epochs[0]
    assert not any(key.startswith("probe/") for key in epochs[1])
