"""`freekd datafree` end to end on the tiny digits teacher: files, report, budget, resume."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
import torch
import yaml
from click.testing import Result
from typer.testing import CliRunner

from freekd.cli import app
from freekd.errors import FreekdError

runner = CliRunner()
# One generator step per student step (dafl's recommended cadence is 5): simple counts.
EVERY_STEP = ("--set", "synthesize_every=1")
# Epochs of three steps, student and synthesizer batches of 16.
THREE_STEPS_OF_16 = (
    "--batch-size", "16", "--set", "steps_per_epoch=3", "--set", "synthesizer.params.batch_size=16",
)  # fmt: skip
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
        *EVERY_STEP,
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
    # Every hyperparameter the run used, defaults included, for reproducing it.
    assert report["method"]["params"]["batch_size"] == 16
    assert "latent_dim" in report["method"]["params"]
    assert report["student_method"]["params"]["temperature"] > 0
    assert {"wall_seconds", "seed", "freekd_version"} <= set(report)
    # The student evaluated and saved is the moving average of its weights by default.
    assert yaml.safe_load((out / "config.yaml").read_text())["trainer"]["ema_decay"] == 0.999


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


@pytest.mark.parametrize("fit", [True, False])
def test_cpu_budget_stops_the_run(tiny_teacher_path: Path, tmp_path: Path, fit: bool) -> None:
    out = tmp_path / "run"
    result = invoke(
        "datafree", "--teacher", tiny_teacher_path, "--method", "noise", "--epochs", "50",
        "--batch-size", "16", "--set", "steps_per_epoch=100", "--budget", "cpu:0.01m",
        "--set", f"fit_schedule_to_budget={str(fit).lower()}",
        "--device", "cpu", "--quiet", "--out", out,
    )  # fmt: skip
    assert result.exit_code == 0, result.output
    report = json.loads((out / "report.json").read_text())
    assert report["steps"] < 50 * 100
    if not fit:
        assert report["schedule_horizon"] is None
        assert report["stopped_by_budget"].startswith("CPU budget of 0.6 s spent")
        return
    # The budget set the schedule's horizon far below the 5,000 planned steps; the run ends
    # at that horizon or, if steps got dearer, when the budget is spent.
    assert report["schedule_horizon"] < 50 * 100
    assert report["steps"] <= report["schedule_horizon"]
    assert report["stopped_by_budget"].startswith(
        ("the schedule fitted to the budget ended", "CPU budget of 0.6 s spent")
    )


@pytest.mark.parametrize(
    "average",
    [
        ("--set", "trainer.ema_decay=null"),
        (),
        ("--set", "trainer.ema_decay=0.9"),
        # The tail average starts at step 0 of both plans (3 and 6 steps: the start is a
        # share of the plan), so the resume at step 3 carries a begun average.
        ("--set", "trainer.swa_start=0.1"),
    ],
)
def test_resume_continues_the_synthesizer_exactly(
    tiny_teacher_path: Path, tmp_path: Path, average: tuple[str, ...]
) -> None:
    common = (
        *average,
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


def test_a_tail_average_changes_what_is_evaluated_not_what_is_trained(
    tiny_teacher_path: Path, tmp_path: Path
) -> None:
    common = (
        "--teacher", tiny_teacher_path, "--method", "dafl", *THREE_STEPS_OF_16, "--epochs", "3",
        "--eval-data", "digits:test", "--device", "cpu", "--quiet",
    )  # fmt: skip
    plain = invoke("datafree", *common, "--out", tmp_path / "plain")
    assert plain.exit_code == 0, plain.output
    tail = invoke("datafree", *common, "--set", "trainer.swa_start=0.5", "--out", tmp_path / "tail")
    assert tail.exit_code == 0, tail.output

    def evaluations(run: str) -> list[dict[str, Any]]:
        lines = (tmp_path / run / "metrics.jsonl").read_text().splitlines()
        return [r for r in map(json.loads, lines) if "eval_accuracy" in r]

    plain_evals, tail_evals = evaluations("plain"), evaluations("tail")
    assert [r["epoch"] for r in tail_evals] == [1, 2, 3]
    # The same training: the exponential average the plain run saves is measured side by side.
    ema = [r["eval_accuracy"] for r in plain_evals]
    assert [r["eval_accuracy/ema"] for r in tail_evals] == ema
    # Epoch 1 ends at step 3 of 9, before the start (step 4): the EMA is what is evaluated.
    assert tail_evals[0]["eval_accuracy"] == ema[0]
    report = json.loads((tmp_path / "tail" / "report.json").read_text())
    assert report["student"]["test_accuracy"] == tail_evals[-1]["eval_accuracy"]
    saved = torch.load(tmp_path / "tail" / "model.pt", weights_only=True)
    trained = torch.load(tmp_path / "plain" / "model.pt", weights_only=True)
    assert saved["config"]["trainer"]["swa_start"] == 0.5
    assert any(
        not torch.equal(saved["state_dict"][k], trained["state_dict"][k])
        for k in trained["state_dict"]
    )


def test_the_discrepancy_settings_may_change_on_resume(tmp_path: Path) -> None:
    from freekd.train.resume import check_config_matches as _check_config_matches

    current = {"collapse": {"enabled": True, "discrepancy_factor": None, "discrepancy_floor": 0.5}}
    older = {"collapse": {"enabled": True}}  # written before the two settings existed
    _check_config_matches(older, current, tmp_path)
    switched_off = {"collapse": {**current["collapse"], "discrepancy_factor": 0.0}}
    _check_config_matches(current, switched_off, tmp_path)
    # The forgetting measurement (collapse/earlier_discrepancy) is a measurement too.
    measured = {"collapse": {**current["collapse"], "keep_per_check": 16, "keep_size": 1024}}
    _check_config_matches(older, measured, tmp_path)
    _check_config_matches(
        measured, {"collapse": {**current["collapse"], "keep_per_check": 0}}, tmp_path
    )
    # What the checks measure is still fixed.
    with pytest.raises(FreekdError, match=r"different config \(collapse.probe_size\)"):
        _check_config_matches(
            current, {"collapse": {**current["collapse"], "probe_size": 8}}, tmp_path
        )


def test_a_setting_added_later_resumes_with_the_old_behaviour_or_names_it(tmp_path: Path) -> None:
    from freekd.train.resume import check_config_matches as _check_config_matches

    older = {"trainer": {"ema_decay": None}}  # saved before budgets fitted the schedule
    _check_config_matches(older, {**older, "fit_schedule_to_budget": False}, tmp_path)
    with pytest.raises(FreekdError) as error:
        _check_config_matches(
            older, {"trainer": {"ema_decay": 0.999}, "fit_schedule_to_budget": True}, tmp_path
        )
    message = str(error.value)
    assert "--set fit_schedule_to_budget=false --set trainer.ema_decay=null" in message


def test_a_parameter_saved_as_text_resumes_as_the_number_it_says(tmp_path: Path) -> None:
    from freekd.train.resume import check_config_matches as _check_config_matches

    # Saved before runs kept what they read a --set string as (pate's semi_supervised_kwargs,
    # a combined method's parts, an attack's parameters).
    older = {"method": {"name": "kd+at", "params": {"kd": {"temperature": "2e0"}}}, "x": "true"}
    _check_config_matches(
        older,
        {"method": {"name": "kd+at", "params": {"kd": {"temperature": 2.0}}}, "x": True},
        tmp_path,
    )
    with pytest.raises(FreekdError, match=r"different config \(method.params\)"):
        _check_config_matches(
            older,
            {"method": {"name": "kd+at", "params": {"kd": {"temperature": 3.0}}}, "x": True},
            tmp_path,
        )
    with pytest.raises(FreekdError, match=r"different config \(x\)"):
        _check_config_matches({"x": "warm"}, {"x": 1.0}, tmp_path)


def test_a_run_saved_before_a_setting_existed_resumes(
    tiny_teacher_path: Path, tmp_path: Path
) -> None:
    common = (
        "--teacher", tiny_teacher_path, "--method", "dafl", *THREE_STEPS_OF_16,
        "--device", "cpu", "--quiet", "--out", tmp_path / "run",
        "--set", "method.params.temperature=2e0",  # YAML reads this as text
    )  # fmt: skip
    first = invoke("datafree", *common, "--epochs", "1")
    assert first.exit_code == 0, first.output
    saved = tmp_path / "run" / "config.yaml"
    config = yaml.safe_load(saved.read_text())
    # The recommended method with the given parameter over its own: saved as the number read.
    assert config["method"] == {"name": "auto", "params": {"temperature": 2.0}}
    del config["fit_schedule_to_budget"]  # as a run saved before the setting existed
    saved.write_text(yaml.safe_dump(config))
    checkpoint = tmp_path / "run" / "checkpoint.pt"
    data = torch.load(checkpoint, weights_only=True)
    del data["config"]["fit_schedule_to_budget"]
    torch.save(data, checkpoint)
    resumed = invoke("datafree", *common, "--epochs", "2", "--resume")
    assert resumed.exit_code == 0, resumed.output
    assert yaml.safe_load(saved.read_text())["fit_schedule_to_budget"] is False


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
        *EVERY_STEP,
        "--out",
        tmp_path / "run",
    )
    assert result.exit_code == 0, result.output
    report = json.loads((tmp_path / "run" / "report.json").read_text())
    assert report["teacher"]["has_batchnorm"] is False
    # Without --method: auto picks zskt for a teacher without BatchNorm.
    auto = invoke(
        "datafree", "--teacher", path, "--arch", "tests.teachers.user_net:UserNet",
        "--input-shape", "1,8,8", "--num-classes", "10", "--mean", "0.3", "--std", "0.4",
        "--student", "tiny-cnn-nobn", *FAST, "--out", tmp_path / "auto",
    )  # fmt: skip
    assert auto.exit_code == 0, auto.output
    chosen = json.loads((tmp_path / "auto" / "report.json").read_text())["method"]
    assert chosen["name"] == "zskt"
    assert chosen["params"]["replay_fraction"] == 0.0  # a CNN teacher: no replay
    assert chosen["params"]["generator_output"] == "batchnorm"  # DAFL's output layer


@pytest.mark.parametrize(
    ("setting", "replay"),
    [((), 0.5), (("--set", "synthesizer.params.replay_fraction=0"), 0.0)],
)
def test_auto_method_replays_for_a_teacher_without_convolutions(
    tmp_path: Path, setting: tuple[str, ...], replay: float
) -> None:
    from tests.teachers.user_net import FlatNet

    torch.manual_seed(0)
    path = tmp_path / "flat.pt"
    torch.save(FlatNet(num_classes=10).state_dict(), path)
    out = tmp_path / "auto"
    result = invoke(
        "datafree", "--teacher", path, "--arch", "tests.teachers.user_net:FlatNet",
        "--input-shape", "1,8,8", "--num-classes", "10", "--student", "tiny-cnn-nobn",
        *FAST, *setting, "--out", out,
    )  # fmt: skip
    assert result.exit_code == 0, result.output
    report = json.loads((out / "report.json").read_text())
    assert report["teacher"]["has_convolution"] is False
    chosen = report["method"]
    assert chosen["name"] == "zskt"
    # zskt with half of every student batch replayed, unless the user said otherwise; the
    # saved config names it, so a resumed run keeps it.
    assert chosen["params"]["replay_fraction"] == replay
    saved = yaml.safe_load((out / "config.yaml").read_text())
    assert saved["synthesizer"]["name"] == "zskt"
    assert saved["synthesizer"]["params"]["replay_fraction"] == replay


def test_auto_resumes_a_run_with_the_parameters_it_saved(tmp_path: Path) -> None:
    """A run saved without the replay (as every run before the auto rule was) resumes under
    ``--method auto`` with what it saved, not with the rule's parameter added."""
    from tests.teachers.user_net import FlatNet

    torch.manual_seed(0)
    path = tmp_path / "flat.pt"
    torch.save(FlatNet(num_classes=10).state_dict(), path)
    common = (
        "--teacher", path, "--arch", "tests.teachers.user_net:FlatNet", "--input-shape",
        "1,8,8", "--num-classes", "10", "--student", "tiny-cnn-nobn", "--batch-size", "16",
        "--set", "steps_per_epoch=2", "--set", "synthesizer.params.batch_size=16",
        "--device", "cpu", "--quiet", "--out", tmp_path / "run",
    )  # fmt: skip
    first = invoke("datafree", *common, "--method", "zskt", "--epochs", "1")
    assert first.exit_code == 0, first.output
    second = invoke("datafree", *common, "--method", "auto", "--epochs", "2", "--resume")
    assert second.exit_code == 0, second.output
    report = json.loads((tmp_path / "run" / "report.json").read_text())
    assert report["method"]["params"]["replay_fraction"] == 0.0
    assert report["method"]["params"]["generator_output"] == "batchnorm"


def test_auto_method_picks_nayer_for_a_batchnorm_teacher_and_saves_the_choice(
    tiny_teacher_path: Path, tmp_path: Path
) -> None:
    out = tmp_path / "run"
    short = ("--set", "synthesizer.params.warmup_batches=1")  # the user's params reach nayer
    result = invoke("datafree", "--teacher", tiny_teacher_path, *FAST, *short, "--out", out)
    assert result.exit_code == 0, result.output
    assert json.loads((out / "report.json").read_text())["method"]["name"] == "nayer"
    assert "name: nayer" in (out / "config.yaml").read_text()


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (("--method", "nope"), "unknown synthesizer 'nope'; known: "),
        (("--method", "dafl", "--set", "synthesizer.params.lrr=1"), "has no parameter 'lrr'"),
        # --set strings are read as what they say, then range-checked by the plug-in.
        (
            ("--method", "zskt", "--set", "synthesizer.params.schedule_power=nan"),
            "--method zskt: schedule_power: expected a finite number, got 'nan'",
        ),
        (
            ("--method", "zskt", "--set", "synthesizer.params.generator_steps=1.5"),
            "--method zskt: generator_steps: expected an integer, got 1.5",
        ),
        (("--set", "method.params.temperature=nan"), "expected a finite number, got 'nan'"),
        (
            ("--method", "dfad", "--set", "synthesizer.params.schedule_power=2"),
            "schedule_power shapes the generator's schedule when it follows the student's",
        ),
        (
            ("--method", "zskt", "--set", "synthesizer.params.temperature=abc"),
            "--method zskt: temperature: expected a number, got 'abc'",
        ),
        (("--set", "method.params.temperature=warm"), "expected a number, got 'warm'"),
        (("--budget", "soon"), "give minutes (15m; or 90s, 1h), CPU minutes (cpu:15m)"),
        (("--budget", "cpu:lots"), "give minutes (15m; or 90s, 1h), CPU minutes (cpu:15m)"),
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


def test_a_one_convolution_teacher_gets_a_one_convolution_student_pooling_as_it_does(
    tmp_path: Path,
) -> None:
    from tests.teachers.user_net import WideUserNet

    path = tmp_path / "user.pt"
    torch.save(WideUserNet(num_classes=10).state_dict(), path)
    out = tmp_path / "x"
    arch = ["--arch", "tests.teachers.user_net:WideUserNet", "--input-shape", "1,8,8"]
    result = invoke("datafree", "--teacher", path, *arch, *FAST, "--out", out)
    assert result.exit_code == 0, result.output
    report = json.loads((out / "report.json").read_text())
    assert report["student"]["arch"] == "shallow-cnn"
    saved = yaml.safe_load((out / "config.yaml").read_text())
    assert (saved["student"], saved["student_kwargs"]) == ("shallow-cnn", {"pool": "avg"})


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


CHECK_EVERY_ROUND = ("--set", "collapse.check_every=1", "--set", "collapse.probe_size=32")
# A diversity no batch reaches: every check is low, so every check is a collapse.
ALWAYS_COLLAPSED = ("--set", "collapse.diversity_threshold=2", "--set", "collapse.patience=1")


def test_collapse_is_recovered_by_reinitializing_and_reported(
    tiny_teacher_path: Path, tmp_path: Path
) -> None:
    out = tmp_path / "run"
    result = invoke(
        "datafree",
        "--teacher",
        tiny_teacher_path,
        "--method",
        "dafl",
        *FAST,
        *EVERY_STEP,
        *CHECK_EVERY_ROUND,
        *ALWAYS_COLLAPSED,
        "--set",
        "collapse.max_recoveries=2",
        "--out",
        out,
    )
    assert result.exit_code == 0, result.output
    collapse = json.loads((out / "report.json").read_text())["collapse"]
    assert [event["action"] for event in collapse["events"]] == [
        "reinitialize",
        "reinitialize",
        "unrecovered",
    ]
    assert [event["step"] for event in collapse["events"]] == [0, 1, 2]
    assert (collapse["checks"], collapse["recoveries"], collapse["recovered"]) == (4, 2, False)
    assert "NOT RECOVERED" in result.output
    assert all(event["reasons"] == ["diversity"] for event in collapse["events"])
    resume_state = torch.load(out / "checkpoint.pt", weights_only=True)
    optimizer = resume_state["extras"]["source"]["synthesizer"]["optimizer"]
    assert optimizer["param_groups"][0]["lr"] == pytest.approx(1e-3 * 0.5**2)
    report = json.loads((out / "report.json").read_text())
    # 4 rounds + 2 rounds after re-initializing, 4 probes of 32, 4 student batches (all × 16).
    assert report["teacher_queries"] == 6 * 16 + 4 * 32 + 4 * 16


def test_healthy_run_has_no_collapse_event_and_logs_the_measurements(
    tiny_teacher_path: Path, tmp_path: Path
) -> None:
    out = tmp_path / "run"
    result = invoke(
        "datafree",
        "--teacher",
        tiny_teacher_path,
        "--method",
        "dafl",
        *FAST,
        *EVERY_STEP,
        *CHECK_EVERY_ROUND,
        "--set",
        "trainer.log_every=1",
        "--out",
        out,
    )
    assert result.exit_code == 0, result.output
    collapse = json.loads((out / "report.json").read_text())["collapse"]
    assert collapse["events"] == []
    assert (collapse["checks"], collapse["recovered"]) == (4, True)
    assert collapse["last_diversity"] > 0.05
    steps = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines() if line]
    logged = [record for record in steps if "loss" in record]
    assert len(logged) == 4
    assert {
        "collapse/diversity",
        "collapse/balance",
        "collapse/discrepancy",
        "synthesis/onehot",
    } <= set(logged[-1])
    # dafl's generator does not play against the student: its KL is measured, never flagged.
    assert collapse["discrepancy_factor"] == 0.0
    # A tiny-cnn student 4 steps into training is far from its teacher, and finitely so.
    assert 0.05 < collapse["best_discrepancy"] < 10


def test_the_forgetting_measurement_changes_nothing_the_run_computes_and_resumes(
    tiny_teacher_path: Path, tmp_path: Path
) -> None:
    common = (
        "--teacher", tiny_teacher_path, "--method", "zskt", *THREE_STEPS_OF_16,
        "--set", "trainer.log_every=1", "--set", "trainer.scheduler=constant",
        *EVERY_STEP, *CHECK_EVERY_ROUND, "--device", "cpu", "--quiet",
    )  # fmt: skip

    def run(name: str, *more: object) -> list[dict[str, Any]]:
        result = invoke("datafree", *common, *more, "--out", tmp_path / name)
        assert result.exit_code == 0, result.output
        text = (tmp_path / name / "metrics.jsonl").read_text()
        return [json.loads(line) for line in text.splitlines() if '"loss"' in line]

    measured = run("measured", "--epochs", "2")
    unmeasured = run("unmeasured", "--epochs", "2", "--set", "collapse.keep_per_check=0")
    run("resumed", "--epochs", "1")
    resumed = run("resumed", "--epochs", "2", "--resume")
    weights = {
        name: torch.load(tmp_path / name / "model.pt", weights_only=True)["state_dict"]
        for name in ("measured", "unmeasured", "resumed")
    }
    for key, value in weights["measured"].items():  # the same student, measured or not
        assert torch.equal(weights["unmeasured"][key], value), key
        assert torch.equal(weights["resumed"][key], value), key
    key = "collapse/earlier_discrepancy"
    assert key not in measured[0]  # nothing kept before the first check
    assert all(key in record for record in measured[1:])
    assert not any(key in record for record in unmeasured)
    assert resumed[-1][key] == pytest.approx(measured[-1][key], rel=1e-6)  # kept images resumed


@pytest.mark.slow
def test_resume_mid_run_keeps_the_collapse_events(tiny_teacher_path: Path, tmp_path: Path) -> None:
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
        *EVERY_STEP,  # a synthesis round, and so a check, at every step
        *CHECK_EVERY_ROUND,
        *ALWAYS_COLLAPSED,
        "--set",
        "collapse.max_recoveries=4",
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
    expected = json.loads((tmp_path / "straight" / "report.json").read_text())["collapse"]
    got = json.loads((tmp_path / "resumed" / "report.json").read_text())["collapse"]
    assert [event["step"] for event in expected["events"]] == [0, 1, 2, 3, 4]
    assert got == expected
    expected_weights = torch.load(tmp_path / "straight" / "model.pt", weights_only=True)
    got_weights = torch.load(tmp_path / "resumed" / "model.pt", weights_only=True)
    for key, value in expected_weights["state_dict"].items():
        assert torch.equal(got_weights["state_dict"][key], value), key


def test_proxy_data_baseline_runs_in_the_same_loop(tiny_teacher_path: Path, tmp_path: Path) -> None:
    out = tmp_path / "run"
    result = invoke(
        "datafree",
        "--teacher",
        tiny_teacher_path,
        "--proxy-data",
        "digits:train",
        "--eval-data",
        "digits:test",
        *FAST,
        "--out",
        out,
    )
    assert result.exit_code == 0, result.output
    for name in ("model.pt", "report.json", "config.yaml", "metrics.jsonl", "samples.png"):
        assert (out / name).exists(), name
    report = json.loads((out / "report.json").read_text())
    assert report["method"] == {"name": "proxy", "proxy_data": "digits:train"}
    assert report["student_method"]["name"] == "kd"
    assert report["synthesized_images"] == 0
    assert report["steps"] == 4  # steps_per_epoch caps the pass over the proxy set
    assert report["teacher_queries"] == 4 * 16
    assert report["collapse"] is None
    # KD on the teacher's own (unlabelled) training images: far above chance after 4 steps.
    assert 0 <= report["student"]["test_accuracy"] <= 1


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (("--proxy-data", "animal-mnist"), "has 1x28x28 images but the teacher expects 1x8x8"),
        (("--proxy-data", "digits", "--method", "dafl"), "give one of them"),
        (("--proxy-data", "digits", "--budget", "500"), "--proxy-data synthesizes none"),
    ],
)
def test_bad_proxy_data_is_one_line(
    tiny_teacher_path: Path, tmp_path: Path, args: tuple[str, ...], message: str
) -> None:
    result = invoke("datafree", "--teacher", tiny_teacher_path, *args, "--out", tmp_path / "x")
    assert result.exit_code == 2
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    assert len(lines) == 1, result.stderr
    assert message in lines[0]
    assert not (tmp_path / "x").exists()


def test_a_raw_pixel_teacher_gives_the_generator_and_student_pixel_statistics(
    tmp_path: Path,
) -> None:
    """``--mean 0 --std 1/255`` (a teacher on raw 0-255 pixels) is a change of units, not the
    statistics of images: the student must not inherit inputs up to 255."""
    from tests.teachers.user_net import UserNet

    path = tmp_path / "user.pt"
    torch.save(UserNet(num_classes=10).state_dict(), path)
    out = tmp_path / "run"
    result = invoke(
        "datafree", "--teacher", path, "--arch", "tests.teachers.user_net:UserNet",
        "--input-shape", "1,8,8", "--mean", "0", "--std", str(1 / 255), "--student", "tiny-cnn",
        "--method", "dafl", *FAST, "--out", out,
    )  # fmt: skip
    assert result.exit_code == 0, result.output
    student = torch.load(out / "model.pt", weights_only=True)
    assert student["input"]["mean"] == [0.5]
    assert student["input"]["std"] == [0.5]


def test_zskt_stopped_by_its_budget_resumes_its_annealed_generator_exactly(
    tiny_teacher_path: Path, tmp_path: Path
) -> None:
    """zskt's generator follows the student's cosine schedule: a run stopped part way (here by
    an image budget) and resumed ends with the weights of one uninterrupted run."""
    common = (
        "--teacher", tiny_teacher_path, "--method", "zskt", "--batch-size", "16",
        "--epochs", "3", "--set", "steps_per_epoch=4", "--set", "synthesize_every=2",
        "--set", "synthesizer.params.batch_size=16", "--device", "cpu", "--quiet",
    )  # fmt: skip
    straight = invoke("datafree", *common, "--out", tmp_path / "straight")
    assert straight.exit_code == 0, straight.output
    first = invoke("datafree", *common, "--budget", "100", "--out", tmp_path / "resumed")
    assert first.exit_code == 0, first.output
    stopped = json.loads((tmp_path / "resumed" / "report.json").read_text())
    assert 0 < stopped["steps"] < 12, stopped["steps"]
    # The stop came part way through an epoch: the resume continues that epoch, not the next.
    saved = torch.load(tmp_path / "resumed" / "checkpoint.pt", weights_only=True)["state"]
    assert saved["epoch_finished"] is False
    second = invoke(
        "datafree", *common, "--budget", "100000", "--resume", "--out", tmp_path / "resumed"
    )
    assert second.exit_code == 0, second.output
    expected = torch.load(tmp_path / "straight" / "model.pt", weights_only=True)["state_dict"]
    got = torch.load(tmp_path / "resumed" / "model.pt", weights_only=True)["state_dict"]
    for key in expected:
        assert torch.equal(got[key], expected[key]), key
    # The generator's rate ends near zero with the student's (cosine over 12 steps).
    state = torch.load(tmp_path / "straight" / "checkpoint.pt", weights_only=True)
    group = state["extras"]["source"]["synthesizer"]["optimizer"]["param_groups"][0]
    assert group["lr"] < 0.1 * group["base_lr"]


def test_the_table_names_the_synthesizer_auto_chose_and_the_student_loss(
    tiny_teacher_path: Path, tmp_path: Path
) -> None:
    out = tmp_path / "run"
    result = invoke("datafree", "--teacher", tiny_teacher_path, *FAST, "--budget", "50",
                    "--out", out)  # fmt: skip
    assert result.exit_code == 0, result.output
    report = json.loads((out / "report.json").read_text())
    chosen, loss = report["method"]["name"], report["student_method"]["name"]
    assert chosen in ("nayer", "zskt")  # the table used to say "auto" whatever ran
    assert f"{chosen} (auto's choice) → tiny-cnn" in result.stdout
    assert f"student loss       │ {loss}" in result.stdout
