"""The PATE path end to end on digits: teachers on shards → ledgered noisy labels → student."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch
import yaml
from typer.testing import CliRunner

from freekd.cli import app
from freekd.errors import FreekdError
from freekd.pate.config import PateLabelConfig, PateStudentConfig
from freekd.pate.label import run_pate_label
from freekd.pate.student import run_pate_student
from freekd.runs import RunOptions
from freekd.teachers.ensemble import load_ensemble
from tests.conftest import tiny_trainer


def test_teachers_train_on_disjoint_shards(teachers: Path) -> None:
    report = json.loads((teachers / "report.json").read_text())
    assert report["shards"]["shard_size"] == 1500 // 8
    assert report["teacher_accuracy"]["median"] > 0.7
    assert report["plurality_accuracy"] >= report["teacher_accuracy"]["median"]
    ensemble = load_ensemble(teachers / "teachers.pt")  # weights_only
    images = torch.rand(5, 1, 8, 8)
    assert ensemble.votes(images).sum(dim=1).tolist() == [8] * 5


def label_config(teachers: Path, **changes: object) -> PateLabelConfig:
    values: dict[str, object] = {
        "teachers": str(teachers / "teachers.pt"),
        "query_dataset": "digits:test",
        "queries": 150,
        "holdout": 97,
        "aggregator": "gnmax",
        "sigma": 0.5,
        "epsilon": 1e4,
        "budget_on": "data-dependent-unsanitized",
    }
    values.update(changes)
    return PateLabelConfig(**values)  # type: ignore[arg-type]


def test_label_then_student(teachers: Path, tmp_path: Path) -> None:
    labels = tmp_path / "labels"
    report = run_pate_label(label_config(teachers), RunOptions(labels, quiet=True))
    assert report["answered"] == report["queries"]["asked"] == 150
    assert report["label_accuracy"] > 0.8
    assert report["privacy"]["queries_answered"] == 150
    sanitized = report["privacy"]["sanitized"]
    assert sanitized["kind"] == "data-dependent-sanitized"
    assert report["privacy"]["sanitized_epsilon"] == sanitized["epsilon"] > 0
    assert len((labels / "ledger.jsonl").read_text().splitlines()) == 151  # header + answers
    with np.load(labels / "labels.npz") as data:
        assert (data["labels"] >= 0).all()
    student = run_pate_student(
        PateStudentConfig(
            labels=str(labels),
            student="tiny-cnn",
            semi_supervised="none",
            trainer=tiny_trainer(epochs=15, batch_size=32),
        ),
        RunOptions(tmp_path / "student", quiet=True),
    )
    assert student["trained_on"] == 150
    assert student["student"]["test_accuracy"] > 0.5
    assert student["semi_supervised"] == {"method": "none"}
    # Virtual adversarial training over the pool's 200 non-held-out images, 30 labels of them.
    few = tmp_path / "few-labels"
    run_pate_label(label_config(teachers, queries=30), RunOptions(few, quiet=True))
    # "5e-1" is how YAML and --set hand over a number it reads as text.
    accuracies, vat_params = {}, {"epsilon": "5e-1", "entropy_weight": 0.0}
    for semi in ("none", "vat"):
        semi_report = run_pate_student(
            PateStudentConfig(
                labels=str(few),
                student="tiny-cnn",
                semi_supervised=semi,
                semi_supervised_kwargs=vat_params if semi == "vat" else {},
                labelled_batch_size=30,
                trainer=tiny_trainer(epochs=40, batch_size=30),
            ),
            RunOptions(tmp_path / f"student-{semi}", quiet=True),
        )
        accuracies[semi] = semi_report["student"]["test_accuracy"]
    assert accuracies["vat"] > accuracies["none"] + 0.1, accuracies
    assert semi_report["semi_supervised"]["unlabelled_images"] == 200  # 297 − 97 held out
    assert semi_report["semi_supervised"]["params"]["epsilon"] == 0.5
    saved_config = yaml.safe_load((tmp_path / "student-vat" / "config.yaml").read_text())
    assert saved_config["semi_supervised_kwargs"]["epsilon"] == 0.5  # the number it ran with
    assert student["privacy"]["epsilon"] == report["privacy"]["epsilon"]
    saved = torch.load(tmp_path / "student" / "model.pt", weights_only=True)
    assert saved["privacy"]["epsilon"] == report["privacy"]["epsilon"]

    # A second round with Interactive-GNMax: the student labels what it is sure of itself.
    interactive = run_pate_label(
        label_config(
            teachers,
            aggregator="interactive-gnmax",
            sigma_threshold=2.0,
            threshold=4.0,
            confidence_scale=8.0,
            student_threshold=0.3,
            student_model=str(tmp_path / "student" / "model.pt"),
        ),
        RunOptions(tmp_path / "round2", quiet=True),
    )
    assert interactive["answered_by_student"] > 0
    assert interactive["answered_by_teachers"] == interactive["privacy"]["queries_answered"]
    with np.load(tmp_path / "round2" / "labels.npz") as data:
        assert int(data["by_teachers"].sum()) == interactive["answered_by_teachers"]
    with pytest.raises(FreekdError, match="needs --student-model"):
        run_pate_label(
            label_config(
                teachers, aggregator="interactive-gnmax", sigma_threshold=2.0, threshold=4.0,
                confidence_scale=8.0, student_threshold=0.9,
            ),
            RunOptions(tmp_path / "round3", quiet=True),
        )  # fmt: skip


def test_a_ledger_is_never_replaced(teachers: Path, tmp_path: Path) -> None:
    labels = tmp_path / "labels"
    first = run_pate_label(label_config(teachers, queries=20), RunOptions(labels, quiet=True))
    for options in (RunOptions(labels, quiet=True), RunOptions(labels, overwrite=True, quiet=True)):
        with pytest.raises(FreekdError, match="never replaced"):
            run_pate_label(label_config(teachers, queries=20), options)
    again = run_pate_label(
        label_config(teachers, queries=20), RunOptions(labels, resume=True, quiet=True)
    )
    assert again["privacy"] == first["privacy"]  # nothing spent twice
    with pytest.raises(FreekdError, match="another mechanism"):
        run_pate_label(
            label_config(teachers, queries=20, sigma=2.0), RunOptions(labels, resume=True)
        )
    # Another command's --overwrite replaced the label report and config beside the ledger.
    overwrite = CliRunner().invoke(
        app, ["teacher", "train", "--dataset", "digits", "--out", str(labels), "--overwrite"]
    )
    assert overwrite.exit_code == 2
    assert "holds a privacy ledger (ledger.jsonl), which is never replaced" in overwrite.output
    # Another query count on resume rewrote labels.npz and config.yaml, then failed.
    before = {name: (labels / name).read_bytes() for name in ("labels.npz", "config.yaml")}
    with pytest.raises(FreekdError, match="records an answer to query 19, beyond the 10"):
        run_pate_label(label_config(teachers, queries=10), RunOptions(labels, resume=True))
    assert before == {name: (labels / name).read_bytes() for name in before}


@pytest.mark.parametrize("forged", ["report", "labels"])
def test_a_student_inherits_only_the_privacy_its_ledger_records(
    teachers: Path, tmp_path: Path, forged: str
) -> None:
    # Every ε in report.json set to 0.01 became the student's "only guarantee" (the ledger
    # gave 771.8); labels.npz is checked against the released answers too.
    labels = tmp_path / "labels"
    run_pate_label(label_config(teachers, queries=20), RunOptions(labels, quiet=True))
    if forged == "report":
        report = json.loads((labels / "report.json").read_text())
        for key in ("epsilon", "data_independent_epsilon"):
            report["privacy"][key] = 0.01
        (labels / "report.json").write_text(json.dumps(report))
        message = "report.json says privacy .*epsilon 0.01, its ledger gives"
    else:
        with np.load(labels / "labels.npz") as data:
            arrays = {key: data[key] for key in data.files}
        arrays["labels"][0] = (arrays["labels"][0] + 1) % 10
        np.savez(labels / "labels.npz", **arrays)
        message = "labels.npz holds labels its ledger did not release"
    config = PateStudentConfig(labels=str(labels), student="tiny-cnn", semi_supervised="none")
    with pytest.raises(FreekdError, match=message):
        run_pate_student(config, RunOptions(tmp_path / "student", quiet=True))


PATE_RUN_YAML = """
teachers: {dataset: digits, arch: tiny-cnn, teachers: 8}
label: {query_dataset: "digits:test", queries: 60, holdout: 97, aggregator: gnmax, sigma: 0.5,
        epsilon: 1.0e4, budget_on: data-dependent-unsanitized}
student: {student: tiny-cnn, semi_supervised: none,
          trainer: {epochs: 2, batch_size: 32, device: cpu}}
"""

SUMMARY_KEYS = {
    "command", "stages", "teachers", "labels", "student", "privacy", "wall_seconds",
    "cpu_seconds", "freekd_version",
}  # fmt: skip


def test_pate_run_writes_a_summary_report(teachers: Path, tmp_path: Path) -> None:
    # The session's teachers stand in for the teachers stage: a resumed run keeps them.
    out = tmp_path / "run"
    shutil.copytree(teachers, out / "teachers")
    config = tmp_path / "pate.yaml"
    # Kept teachers must be the ones the config asks for: its section is theirs.
    sections = yaml.safe_load(PATE_RUN_YAML)
    sections["teachers"] = yaml.safe_load((teachers / "config.yaml").read_text())
    config.write_text(yaml.safe_dump(sections))
    arguments = ["pate", "run", "--config", str(config), "--out", str(out), "--resume", "--quiet"]
    # Other teachers than the kept ones were accepted silently.
    other = CliRunner().invoke(app, [*arguments, "--set", "teachers.teachers=3"])
    assert other.exit_code == 2
    assert "teachers: --resume in" in other.output
    assert "--set teachers.teachers=8" in other.output
    result = CliRunner().invoke(app, arguments)
    assert result.exit_code == 0, result.output
    assert "PATE labels (gnmax)" in result.output
    assert "PATE student" in result.output
    summary = json.loads((out / "report.json").read_text())
    assert set(summary) == SUMMARY_KEYS
    assert summary["command"] == "pate run"
    assert summary["stages"] == {
        name: str(out / name) for name in ("teachers", "labels", "student")
    }
    stage = {
        name: json.loads((out / name / "report.json").read_text())
        for name in ("teachers", "labels", "student")
    }
    assert (
        summary["teachers"]["teacher_accuracy"]["median"]
        == (stage["teachers"]["teacher_accuracy"]["median"])
    )
    assert summary["teachers"]["plurality_accuracy"] == stage["teachers"]["plurality_accuracy"]
    labels = summary["labels"]
    assert labels["answered"] == labels["asked"] == stage["labels"]["answered"] == 60
    assert labels["epsilon"] == stage["labels"]["privacy"]["epsilon"] > 0
    assert labels["kind"] == "data-dependent-unsanitized"
    assert summary["student"]["test_accuracy"] == stage["student"]["student"]["test_accuracy"]
    assert summary["student"]["trained_on"] == 60
    assert summary["privacy"] == stage["student"]["privacy"]
    assert summary["privacy"]["epsilon"] == labels["epsilon"]


def test_pate_run_names_the_teachers_section_of_its_config(tmp_path: Path) -> None:
    config = tmp_path / "pate.yaml"
    config.write_text(
        PATE_RUN_YAML.replace("teachers: 8}", "teachers: 8, trainer: {ema_decay: 0.99}}")
    )
    out = tmp_path / "run"
    result = CliRunner().invoke(app, ["pate", "run", "--config", str(config), "--out", str(out)])
    assert result.exit_code == 2
    assert "teachers.trainer.ema_decay in a pate run config" in result.output
    assert not out.exists()


def test_pate_run_checks_the_students_settings_before_the_teachers_train(tmp_path: Path) -> None:
    config = tmp_path / "pate.yaml"
    vat = "semi_supervised: vat, semi_supervised_kwargs: {xj: 1},"
    config.write_text(PATE_RUN_YAML.replace("semi_supervised: none,", vat))
    out = tmp_path / "run"
    result = CliRunner().invoke(app, ["pate", "run", "--config", str(config), "--out", str(out)])
    assert result.exit_code == 2
    assert "semi_supervised vat has no parameter 'xj'" in result.output
    assert not out.exists()  # not after the teachers and the labels


def test_pate_run_takes_set_overrides_by_section(tmp_path: Path) -> None:
    # The label stage's own hints say "--set label.sigma=...": pate run takes them.
    config = tmp_path / "pate.yaml"
    config.write_text(PATE_RUN_YAML)
    out = tmp_path / "run"
    arguments = ["pate", "run", "--config", str(config), "--out", str(out), "--set"]
    result = CliRunner().invoke(app, [*arguments, "label.sigma=nan"])
    assert result.exit_code == 2
    assert "fix it with --set label.sigma=" in result.output
    assert not out.exists()


def test_pate_run_hints_name_the_keys_of_its_config(tmp_path: Path) -> None:
    config = tmp_path / "pate.yaml"
    config.write_text(PATE_RUN_YAML)
    out = tmp_path / "run"
    arguments = ["pate", "run", "--config", str(config), "--out", str(out)]
    result = CliRunner().invoke(app, [*arguments, "--set", "student.semi_supervised=teacher"])
    assert result.exit_code == 2
    assert "student: semi_supervised teacher and distill_teacher.path go together" in result.output
    assert "--set student.distill_teacher.path=MODEL" in result.output
    assert not out.exists()


def test_info_describes_a_teacher_ensemble(teachers: Path) -> None:
    # `freekd info teachers.pt` said it was "not a freekd checkpoint".
    result = CliRunner().invoke(app, ["info", str(teachers / "teachers.pt"), "--json"])
    assert result.exit_code == 0, result.output
    details = json.loads(result.output)
    assert details["format"] == "freekd-ensemble/1"
    assert details["model"]["teachers"] == 8
    assert details["model"]["arch"] == "tiny-cnn"
    assert details["weights_checksum"] == "verified"
    assert details["trained_on"] == "digits"
    ensemble = load_ensemble(teachers / "teachers.pt")
    assert details["parameters"] == sum(p.numel() for p in ensemble.stacked_state_dict().values())


def test_info_on_a_torchscript_file_says_what_it_is(tmp_path: Path) -> None:
    # It said the file was "not a readable torch file" and expected "a TorchScript file".
    path = tmp_path / "scripted.pt"
    torch.jit.save(torch.jit.trace(torch.nn.Linear(4, 2), torch.zeros(1, 4)), str(path))
    result = CliRunner().invoke(app, ["info", str(path)])
    assert result.exit_code == 2
    assert "is a TorchScript file: it holds no freekd metadata to show" in result.output


def test_a_spent_budget_is_refused(teachers: Path, tmp_path: Path) -> None:
    # Resuming an exhausted ledger exited 0 and rewrote the report; a budget too small for one
    # answer exited 0 with none, leaving a ledger that blocked the folder.
    spent = {"sigma": 5.0, "epsilon": 3.0, "budget_on": "data-independent"}
    labels = tmp_path / "labels"
    first = run_pate_label(label_config(teachers, **spent), RunOptions(labels, quiet=True))
    assert first["stopped_by_budget"]
    assert 0 < first["answered"] < 150
    report = (labels / "report.json").read_bytes()
    with pytest.raises(FreekdError, match=r"the privacy budget of .* \(ε 3\) is spent: \d+ labels"):
        run_pate_label(label_config(teachers, **spent), RunOptions(labels, resume=True))
    assert (labels / "report.json").read_bytes() == report
    tiny = {**spent, "epsilon": 0.001}
    with pytest.raises(FreekdError, match="--epsilon 0.001 cannot pay for one answer of gnmax"):
        run_pate_label(label_config(teachers, **tiny), RunOptions(tmp_path / "tiny", quiet=True))
    assert not (tmp_path / "tiny").exists()


def test_pate_run_continues_teachers_killed_while_they_trained(tmp_path: Path) -> None:
    # The resumed run said "output folder .../teachers already exists; pass --overwrite", a flag
    # pate run does not have.
    out, config = tmp_path / "run", tmp_path / "pate.yaml"
    small = "teachers: 2, trainer: {epochs: 1, batch_size: 32, device: cpu}}"
    config.write_text(PATE_RUN_YAML.replace("teachers: 8}", small))
    arguments = ["pate", "run", "--config", str(config), "--out", str(out), "--quiet"]
    assert CliRunner().invoke(app, arguments).exit_code == 0
    for name in ("labels", "student", "report.json"):  # as if killed during the teachers stage
        shutil.rmtree(out / name) if (out / name).is_dir() else (out / name).unlink()
    for name in ("teachers.pt", "report.json"):
        (out / "teachers" / name).unlink()
    refused = CliRunner().invoke(app, arguments)
    assert refused.exit_code == 2
    assert "already holds a pate run (its teachers stage); continue it with --resume" in (
        refused.output
    )
    resumed = CliRunner().invoke(app, [*arguments, "--resume"])
    assert resumed.exit_code == 0, resumed.output
    assert (out / "teachers" / "teachers.pt").exists()
    assert json.loads((out / "report.json").read_text())["student"]["trained_on"] == 60
