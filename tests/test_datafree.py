"""`freekd datafree` end to end on the tiny digits teacher: files, report, budget, resume."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from click.testing import Result
from typer.testing import CliRunner

from freekd.cli import app

runner = CliRunner()
FAST = (
    "--epochs",
    "1",
    "--batch-size",
    "16",
    "--set",
    "steps_per_epoch=4",
    "--set",
    "synthesizer.params.batch_size=16",
    "--device",
    "cpu",
    "--quiet",
)


def invoke(*args: object) -> Result:
    return runner.invoke(app, [str(arg) for arg in args])


def test_datafree_writes_every_file_and_the_report(tiny_teacher_path: Path, tmp_path: Path) -> None:
    out = tmp_path / "run"
    result = invoke(
        "datafree",
        "--teacher",
        tiny_teacher_path,
        "--method",
        "dafl",
        "--eval-data",
        "digits:test",
        *FAST,
        "--out",
        out,
    )
    assert result.exit_code == 0, result.output
    for name in (
        "model.pt",
        "report.json",
        "config.yaml",
        "metrics.jsonl",
        "samples.png",
        "curves.png",
    ):
        assert (out / name).exists(), name
    report = json.loads((out / "report.json").read_text())
    assert 0.9 < report["teacher"]["test_accuracy"] <= 1
    assert 0 <= report["student"]["test_accuracy"] <= 1
    assert report["student"]["arch"] == "tiny-cnn"  # the family default for a tiny-cnn teacher
    # 4 generator steps of 16 codes + 4 student batches of 16.
    assert report["synthesized_images"] == 4 * 16 + 4 * 16
    assert report["teacher_queries"] == 4 * 16 + 4 * 16
    assert report["method"]["name"] == "dafl"
    assert {"wall_seconds", "seed", "freekd_version"} <= set(report)


def test_image_budget_stops_the_run(tiny_teacher_path: Path, tmp_path: Path) -> None:
    out = tmp_path / "run"
    result = invoke(
        "datafree",
        "--teacher",
        tiny_teacher_path,
        "--method",
        "noise",
        "--epochs",
        "3",
        "--batch-size",
        "16",
        "--set",
        "steps_per_epoch=10",
        "--budget",
        "50",
        "--device",
        "cpu",
        "--quiet",
        "--out",
        out,
    )
    assert result.exit_code == 0, result.output
    report = json.loads((out / "report.json").read_text())
    assert report["synthesized_images"] < 3 * 10 * 16
    assert report["stopped_by_budget"].startswith("image budget of 50 spent")


def test_resume_continues_the_synthesizer_exactly(tiny_teacher_path: Path, tmp_path: Path) -> None:
    common = (
        "--teacher",
        tiny_teacher_path,
        "--method",
        "dafl",
        "--batch-size",
        "16",
        "--set",
        "steps_per_epoch=3",
        "--set",
        "synthesizer.params.batch_size=16",
        "--set",
        "trainer.scheduler=constant",
        "--device",
        "cpu",
        "--quiet",
    )
    straight = invoke("datafree", *common, "--epochs", "2", "--out", tmp_path / "straight")
    assert straight.exit_code == 0, straight.output
    first = invoke("datafree", *common, "--epochs", "1", "--out", tmp_path / "resumed")
    assert first.exit_code == 0, first.output
    second = invoke("datafree", *common, "--epochs", "2", "--resume", "--out", tmp_path / "resumed")
    assert second.exit_code == 0, second.output
    expected = torch.load(tmp_path / "straight" / "model.pt", weights_only=True)["state_dict"]
    got = torch.load(tmp_path / "resumed" / "model.pt", weights_only=True)["state_dict"]
    for key in expected:
        assert torch.equal(got[key], expected[key]), key


def test_unseen_batchnorm_free_user_class_from_a_plain_state_dict(tmp_path: Path) -> None:
    from tests.teachers.user_net import UserNet

    torch.manual_seed(0)
    path = tmp_path / "user.pt"
    torch.save(UserNet(num_classes=10).state_dict(), path)
    result = invoke(
        "datafree",
        "--teacher",
        path,
        "--arch",
        "tests.teachers.user_net:UserNet",
        "--input-shape",
        "1,8,8",
        "--num-classes",
        "10",
        "--mean",
        "0.3",
        "--std",
        "0.4",
        "--student",
        "tiny-cnn-nobn",
        "--method",
        "dafl",
        *FAST,
        "--out",
        tmp_path / "run",
    )
    assert result.exit_code == 0, result.output
    report = json.loads((tmp_path / "run" / "report.json").read_text())
    assert report["teacher"]["has_batchnorm"] is False


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (("--method", "nope"), "unknown synthesizer 'nope'; known: dafl"),
        (("--method", "dafl", "--set", "synthesizer.params.lrr=1"), "has no parameter 'lrr'"),
        (("--budget", "soon"), "give minutes (e.g. 15m)"),
    ],
)
def test_bad_input_is_one_line(
    tiny_teacher_path: Path, tmp_path: Path, args: tuple[str, ...], message: str
) -> None:
    result = invoke("datafree", "--teacher", tiny_teacher_path, *args, "--out", tmp_path / "x")
    assert result.exit_code == 2
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    assert len(lines) == 1, result.stderr
    assert message in lines[0]
    assert not (tmp_path / "x").exists()


def test_no_default_student_for_an_unknown_family(tmp_path: Path) -> None:
    from tests.teachers.user_net import UserNet

    path = tmp_path / "user.pt"
    torch.save(UserNet(num_classes=10).state_dict(), path)
    result = invoke(
        "datafree",
        "--teacher",
        path,
        "--arch",
        "tests.teachers.user_net:UserNet",
        "--input-shape",
        "1,8,8",
        "--out",
        tmp_path / "x",
    )
    assert result.exit_code == 2
    assert "pass --student" in result.stderr


def test_synthesizer_recommends_the_student_side_defaults(
    tiny_teacher_path: Path, tmp_path: Path
) -> None:
    out = tmp_path / "run"
    result = invoke(
        "datafree", "--teacher", tiny_teacher_path, "--method", "dfad", *FAST, "--out", out
    )
    assert result.exit_code == 0, result.output
    report = json.loads((out / "report.json").read_text())
    assert report["student_method"]["name"] == "logit-l1"
    assert report["synthesize_every"] == 5
    explicit = invoke(
        "datafree",
        "--teacher",
        tiny_teacher_path,
        "--method",
        "dfad",
        *FAST,
        "--set",
        "method.name=kd",
        "--set",
        "synthesize_every=2",
        "--out",
        tmp_path / "explicit",
    )
    assert explicit.exit_code == 0, explicit.output
    report = json.loads((tmp_path / "explicit" / "report.json").read_text())
    assert (report["student_method"]["name"], report["synthesize_every"]) == ("kd", 2)
