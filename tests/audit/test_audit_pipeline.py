"""`freekd audit` and `freekd audit pipeline` end to end on the bundled digits, on CPU.

The privacy check that matters: for every model with a differential-privacy claim the empirical
ε lower bound must stay at or below the accountant's ε. A bound above it is a privacy bug in the
accountant, the DP training or the bound, and fails here.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path
from typing import Any

import pytest
import yaml
from typer.testing import CliRunner

from freekd.audit.config import AuditPipelineConfig
from freekd.audit.threat_model import _check_stages
from freekd.cli import app
from freekd.config import load_config
from freekd.errors import FreekdError

runner = CliRunner()

TINY_PIPELINE = """
dataset: digits
pool: 400
public: 600
paths: [kd, pate, dpsgd-datafree]
teacher:
  arch: tiny-cnn
  trainer: {epochs: 60, batch_size: 32, lr: 0.1, weight_decay: 0.0, device: cpu, augment: none,
            eval_every: 0}
distill:
  student: tiny-cnn
  trainer: {epochs: 4, batch_size: 64, lr: 0.05, device: cpu, eval_every: 0}
datafree:
  student: tiny-cnn
  synthesizer: {name: zskt}
  steps_per_epoch: 5
  budget_cpu_minutes: null
  trainer: {epochs: 2, batch_size: 64, lr: 0.05, device: cpu, eval_every: 0}
dp_teacher:
  arch: tiny-cnn
  dp: {enabled: true, epsilon: 2.0, delta: 1.0e-5}
  trainer: {epochs: 8, batch_size: 64, lr: 0.5, momentum: 0.0, weight_decay: 0.0,
            scheduler: constant, device: cpu, augment: none, eval_every: 0}
pate:
  teachers: {arch: tiny-cnn, teachers: 4,
             trainer: {epochs: 30, batch_size: 16, lr: 0.1, device: cpu, augment: none,
                       eval_every: 0}}
  label: {queries: 300, threshold: 2, sigma_threshold: 0.5, sigma: 0.5, epsilon: 200,
          budget_on: data-independent}
  student: {student: tiny-cnn, semi_supervised: none,
            trainer: {epochs: 5, batch_size: 8, lr: 0.05, device: cpu, eval_every: 0}}
audit:
  shadow:
    models: 4
    trainer: {epochs: 20, batch_size: 32, lr: 0.1, device: cpu, augment: none, eval_every: 0}
"""


@pytest.fixture(scope="module")
def pipeline(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, dict[str, Any]]:
    folder = tmp_path_factory.mktemp("audit-pipeline")
    config = folder / "tiny.yaml"
    config.write_text(TINY_PIPELINE)
    out = folder / "run"
    result = runner.invoke(
        app, ["audit", "pipeline", "--config", str(config), "--out", str(out), "-q"]
    )
    assert result.exit_code == 0, result.output
    return out, json.loads((out / "report.json").read_text())


def test_pipeline_audits_the_teacher_and_every_student(pipeline: tuple[Path, dict]) -> None:
    out, report = pipeline
    names = [row["model"] for row in report["table"]]
    assert names == [
        "teacher", "student-kd", "student-pate", "dp-teacher", "student-dpsgd-datafree"
    ]  # fmt: skip
    assert report["members"] + report["non_members"] == 400
    for name in names:
        audit = json.loads((out / "audit" / name / "report.json").read_text())
        assert set(audit["attacks"]) >= {"loss", "lira-online", "lira-offline", "rmia"}
        for result in audit["attacks"].values():
            assert 0.0 <= result["auc"] <= 1.0
            assert set(result["tpr_at_fpr"]) == {"0.001", "0.01", "0.1"}
        assert (out / "audit" / name / "roc.png").stat().st_size > 0
        assert (out / "audit" / name / "summary.txt").read_text().startswith("Audit of")
    assert (out / "roc.png").stat().st_size > 0
    # one set of shadow models, trained for the teacher and reused for every student
    teacher = json.loads((out / "audit" / "teacher" / "report.json").read_text())
    assert teacher["shadow_models"]["models"] == 4
    for name in names[1:]:
        audit = json.loads((out / "audit" / name / "report.json").read_text())
        assert audit["shadow_models"]["reused_from"].endswith("teacher/shadows.npz")


def test_the_overfit_teacher_leaks_and_its_lower_bound_is_above_zero(
    pipeline: tuple[Path, dict],
) -> None:
    _, report = pipeline
    teacher = report["table"][0]
    assert teacher["member_accuracy"] == 1.0
    assert teacher["non_member_accuracy"] < 0.95
    assert teacher["auc"]["loss"] > 0.55
    assert teacher["epsilon_lower_bound"] > 0.0
    assert teacher["accountant_epsilon"] is None


def test_no_lower_bound_exceeds_a_models_accountant_epsilon(pipeline: tuple[Path, dict]) -> None:
    out, report = pipeline
    private = [row for row in report["table"] if row["accountant_epsilon"] is not None]
    names = [row["model"] for row in private]
    assert names == ["student-pate", "dp-teacher", "student-dpsgd-datafree"]
    for row in private:
        assert row["epsilon_lower_bound"] <= row["accountant_epsilon"], row
        assert row["consistent"] is True
        assert row["accountant_kind"] == "data-independent"  # each compared with a guarantee
    # the data-free student inherits exactly its DP teacher's guarantee
    assert private[1]["accountant_epsilon"] == private[2]["accountant_epsilon"]
    # PATE is compared with its data-independent ε, the mechanism's guarantee
    pate = json.loads((out / "audit" / "student-pate" / "report.json").read_text())
    assert pate["epsilon_lower_bound"]["accountant_kind"] == "data-independent"


def test_audit_command_on_one_model_writes_the_report_keys(
    pipeline: tuple[Path, dict], tmp_path: Path
) -> None:
    run, _ = pipeline
    out = tmp_path / "audit"
    arguments = [
        "audit", "--model", str(run / "teacher" / "model.pt"),
        "--members", str(run / "data" / "members.npz"),
        "--non-members", str(run / "data" / "non_members.npz"),
        "--shadows-from", str(run / "audit" / "teacher"), "--random-split",
        "--attack", "loss,lira-offline-fixed-variance", "--out", str(out), "-q",
    ]  # fmt: skip
    result = runner.invoke(app, arguments)
    assert result.exit_code == 0, result.output
    report = json.loads((out / "report.json").read_text())
    assert list(report["attacks"]) == ["loss", "lira-offline-fixed-variance"]
    strongest = report["strongest_attack"]
    assert report["auc"] == max(result["auc"] for result in report["attacks"].values())
    assert report["tpr_at_fpr"] == report["attacks"][strongest]["tpr_at_fpr"]
    bound = report["epsilon_lower_bound"]
    assert {"epsilon", "confidence", "delta", "attack", "assumption_holds"} <= set(bound)
    assert bound["assumption_holds"] is True
    assert bound["attack"] == "lira-offline-fixed-variance"
    assert bound["consistent"] is None  # the teacher claims no ε (python-api.md reads the key)
    assert "Empirical ε lower bound" in report["summary"]


MODEL, MEMBERS, NON_MEMBERS = "--model", "--members", "--non-members"


@pytest.mark.parametrize(
    ("drop", "extra", "message"),
    [
        (MODEL, [], "--model is required"),
        (MEMBERS, [], "--members is required"),
        (None, ["--attack", "psychic"], "unknown attack 'psychic'"),
        (None, ["--shadow-models", "0", "--attack", "lira-online"], "need shadow models"),
        (None, ["--shadow-models", "1"], "at least 2"),
        (None, ["--shadow-models", "100000000"], "shadow.models must be at most 1,024"),
        # Refused only after the two shadow models had trained (the fixed variance failed).
        (None, ["--shadow-models", "2"], "lira (a default attack) needs at least 4 shadow"),
        (None, ["--shadow-models", "3", "--attack", "rmia"], "bound_attack auto needs at least 4"),
        (None, ["--members", "mnist:test"], "expects 1x8x8"),
    ],
)
def test_audit_errors_are_one_line_with_exit_status_2(
    drop: str | None, extra: list[str], message: str, tiny_teacher_path: Path, tmp_path: Path
) -> None:
    given = {MODEL: str(tiny_teacher_path), MEMBERS: "digits:train", NON_MEMBERS: "digits:test"}
    given.pop(drop, None)  # type: ignore[arg-type]
    if MEMBERS in extra:
        given.pop(MEMBERS)
    arguments = ["audit", *[item for pair in given.items() for item in pair], *extra]
    result = runner.invoke(app, [*arguments, "--out", str(tmp_path / "out"), "-q"])
    assert result.exit_code == 2, result.output
    assert message in result.output
    assert "Traceback" not in result.output
    assert not (tmp_path / "out" / "report.json").exists()


def test_reused_shadow_models_must_come_from_the_same_pool(
    pipeline: tuple[Path, dict], tiny_teacher_path: Path, tmp_path: Path
) -> None:
    run, _ = pipeline
    arguments = [
        "audit", "--model", str(tiny_teacher_path), "--members", "digits:train",
        "--non-members", "digits:test", "--shadows-from", str(run / "audit" / "teacher"),
        "--out", str(tmp_path / "out"), "-q",
    ]  # fmt: skip
    result = runner.invoke(app, arguments)
    assert result.exit_code == 2
    assert "another audit pool" in result.output


def test_pipeline_rejects_unknown_paths(tmp_path: Path) -> None:
    result = runner.invoke(
        app, ["audit", "pipeline", "--path", "telepathy", "--out", str(tmp_path / "p"), "-q"]
    )
    assert result.exit_code == 2
    assert "unknown path 'telepathy'" in result.output


@pytest.mark.parametrize(
    ("arguments", "message"),
    [
        (["pipeline", "--path", ""], "--path '' has an empty name"),
        (["pipeline", "--path", "kd,,pate"], "--path 'kd,,pate' has an empty name"),
        (["pipeline", "--path", "kd,datafree", "--path", " kd"], "paths names 'kd' twice"),
        (["pipeline", "--set", "paths=[kd, kd]"], "paths names 'kd' twice"),
        (["--attack", ",", "--model", "m.pt"], "--attack ',' has an empty name"),
        (["--attack", "loss,loss", "--model", "m.pt"], "attacks names 'loss' twice"),
    ],
)
def test_empty_and_repeated_paths_and_attacks_are_refused(
    tmp_path: Path, arguments: list[str], message: str
) -> None:
    # An empty --path used to run every path, and a repeated one was accepted and run once.
    out = tmp_path / "p"
    result = runner.invoke(app, ["audit", *arguments, "--out", str(out), "-q"])
    assert result.exit_code == 2, result.output
    assert message in result.output
    assert len(result.output.strip().splitlines()) == 1
    assert not out.exists()


def test_a_missing_model_is_named_by_its_flag(tmp_path: Path) -> None:
    arguments = ["--members", "mnist:train", "--non-members", "mnist:test"]
    missing = str(tmp_path / "missing.pt")
    result = runner.invoke(app, ["audit", "--model", missing, *arguments, "-q"])
    assert result.exit_code == 2
    assert "check --model" in result.output
    assert "--teacher" not in result.output
    result = runner.invoke(app, ["eval", "--model", missing, "--dataset", "digits:test"])
    assert result.exit_code == 2
    assert "check --model" in result.output
    assert "--teacher" not in result.output


def test_pipeline_refuses_a_pate_teacher_average_before_its_first_stage(tmp_path: Path) -> None:
    out = tmp_path / "p"
    arguments = ["audit", "pipeline", "--set", "pate.teachers.trainer.ema_decay=0.99"]
    result = runner.invoke(app, [*arguments, "--out", str(out), "-q"])
    assert result.exit_code == 2
    assert "pate.teachers.trainer.ema_decay in an audit pipeline config" in result.output
    assert not out.exists()  # refused before the teacher stage, not hours later


@pytest.mark.parametrize(
    ("settings", "message"),
    [
        (
            ["distill.method.params.temprature=4"],
            "distill: method kd has no parameter 'temprature'",
        ),
        (
            [
                "paths=[datafree]",
                "datafree.synthesizer.name=auto",
                "datafree.synthesizer.params.lr_gen=1",
            ],
            "datafree: synthesizer.params: --method auto (nayer or zskt) has no parameter 'lr_gen'",
        ),
        (["datafree.synthesizer.name=dfadd"], "datafree: unknown synthesizer 'dfadd'"),
        (["datafree.method.params.temperature=hot"], "datafree: method kd: temperature: expected"),
        (["datafree.synthesizer.name=nayer"], "nayer inverts BatchNorm statistics and the DP-SGD"),
        (
            ["pate.student.semi_supervised=vat", "pate.student.semi_supervised_kwargs.xj=1"],
            "pate: student: semi_supervised vat has no parameter 'xj'",
        ),
        (
            ["audit.attack_params.loss.temperature=2"],
            "attack loss has no parameter 'temperature'; it takes none",
        ),
        (["pate.label.aggregator=gnmix"], "pate: label: unknown aggregation mechanism 'gnmix'"),
        (["pate.teachers.execution=nosuch"], "pate: teachers: unknown execution 'nosuch'"),
        (["pate.student.student=nosuch"], "pate: student: unknown model 'nosuch'"),
        (["distill.student=nosuch"], "distill: unknown model 'nosuch'"),
        (["distill.student=wrn-11-2"], "distill: WideResNet depth 11 is invalid"),
        (["dp_teacher.trainer.max_grad_norm=1"], "dp_teacher: trainer.max_grad_norm clips"),
        (
            ["datafree.synthesizer.name=auto", "datafree.synthesizer.params.bn_weight=5"],
            "datafree: the dpsgd-datafree path runs zskt under auto: --method zskt has no",
        ),
        (["audit.shadow.execution=parallel"], "audit: unknown shadow.execution 'parallel'"),
    ],
)
def test_pipeline_checks_every_stage_before_its_first(
    tmp_path: Path, settings: list[str], message: str
) -> None:
    config, out = tmp_path / "tiny.yaml", tmp_path / "p"
    config.write_text(TINY_PIPELINE)
    arguments = ["audit", "pipeline", "--config", str(config), "--out", str(out), "-q"]
    for setting in settings:
        arguments += ["--set", setting]
    result = runner.invoke(app, arguments)
    assert result.exit_code == 2, result.output
    assert message in result.output
    assert not out.exists()  # refused before the teacher stage, not after the students trained


def test_the_shipped_audit_config_loads() -> None:
    root = Path(__file__).resolve().parents[2]
    config = load_config(AuditPipelineConfig, root / "configs" / "audit" / "mnist.yaml")
    assert config.dataset == "mnist"
    assert config.audit.shadow.models >= 4


def test_resumed_audit_reuses_its_shadow_outputs_and_gives_the_same_report(
    pipeline: tuple[Path, dict], tmp_path: Path
) -> None:
    run, _ = pipeline
    out = tmp_path / "audit"
    arguments = [
        "audit", "--model", str(run / "student-kd" / "model.pt"),
        "--members", str(run / "data" / "members.npz"),
        "--non-members", str(run / "data" / "non_members.npz"),
        "--shadow-models", "4", "--attack", "loss,rmia-offline,lira-offline-fixed-variance",
        "--set", "shadow.recipe=config", "--set", "shadow.arch=tiny-cnn",
        "--set", "shadow.trainer.epochs=3", "--set", "shadow.trainer.device=cpu",
        "--out", str(out), "-q",
    ]  # fmt: skip
    first = runner.invoke(app, arguments)
    assert first.exit_code == 0, first.output
    before = json.loads((out / "report.json").read_text())
    assert before["shadow_models"]["recipe"] == "shadow config"
    again = runner.invoke(app, [*arguments, "--resume"])
    assert again.exit_code == 0, again.output
    after = json.loads((out / "report.json").read_text())
    assert after["attacks"] == before["attacks"]
    assert after["shadow_models"]["reused_from"] == str(out / "shadows.npz")
    fresh = runner.invoke(app, [*arguments[:-3], "--out", str(tmp_path / "new"), "--resume"])
    assert fresh.exit_code == 2
    assert "nothing to resume" in fresh.output


def audit_arguments(run: Path, out: Path, *extra: str) -> list[str]:
    return [
        "audit", "--model", str(run / "teacher" / "model.pt"),
        "--members", str(run / "data" / "members.npz"),
        "--non-members", str(run / "data" / "non_members.npz"),
        "--random-split", *extra, "--out", str(out), "-q",
    ]  # fmt: skip


def test_a_bound_above_the_claimed_epsilon_is_reported_as_a_privacy_bug(
    pipeline: tuple[Path, dict], tmp_path: Path
) -> None:
    # Positive control of the consistency check: the overfit, non-private teacher's bound is
    # above zero, so a claim of ε = 0.01 must be caught.
    run, _ = pipeline
    out = tmp_path / "claim"
    arguments = audit_arguments(
        run, out, "--shadows-from", str(run / "audit" / "teacher"),
        "--set", "accountant_epsilon=0.01",
    )  # fmt: skip
    result = runner.invoke(app, arguments)
    assert result.exit_code == 1, result.output
    report = json.loads((out / "report.json").read_text())
    assert report["epsilon_lower_bound"]["consistent"] is False
    assert "EXCEEDS IT" in report["summary"]


def test_an_odd_pool_with_four_shadow_models_runs_every_attack(
    pipeline: tuple[Path, dict], tmp_path: Path
) -> None:
    run, _ = pipeline
    out = tmp_path / "odd"
    arguments = audit_arguments(
        run, out, "--max-examples", "151", "--shadow-models", "4",
        "--set", "shadow.trainer.epochs=5", "--set", "attack_params.rmia.gamma=1e0",
    )  # fmt: skip
    result = runner.invoke(app, arguments)
    assert result.exit_code == 0, result.output
    saved = yaml.safe_load((out / "config.yaml").read_text())
    assert saved["attack_params"] == {"rmia": {"gamma": 1.0}}  # what it ran with, not "1e0"
    report = json.loads((out / "report.json").read_text())
    assert report["members"]["n"] + report["non_members"]["n"] == 151
    assert len(report["attacks"]) == 10


@pytest.mark.parametrize(
    ("extra", "message"),
    [
        (["--set", "attack_params.rmia.temperature=2"], "has no parameter 'temperature'"),
        (["--set", "attack_params.psychic.power=1"], "unknown attack 'psychic'"),
        (["--set", "attack_params.rmia=5"], "attack_params.rmia must map rmia's parameters"),
        (["--max-examples", "1"], "at least 2"),
    ],
)
def test_bad_audit_settings_fail_before_any_work(
    pipeline: tuple[Path, dict], tmp_path: Path, extra: list[str], message: str
) -> None:
    run, _ = pipeline
    result = runner.invoke(app, audit_arguments(run, tmp_path / "out", *extra))
    assert result.exit_code == 2, result.output
    assert message in result.output


def test_a_corrupt_shadow_file_is_refused_in_one_line(
    pipeline: tuple[Path, dict], tmp_path: Path
) -> None:
    run, _ = pipeline
    (tmp_path / "old").mkdir()
    (tmp_path / "old" / "shadows.npz").write_bytes(b"")
    result = runner.invoke(
        app, audit_arguments(run, tmp_path / "out", "--shadows-from", str(tmp_path / "old"))
    )
    assert result.exit_code == 2, result.output
    assert "not a freekd shadow file" in result.output


def test_overwrite_refuses_to_delete_the_shadow_file_it_reuses(
    pipeline: tuple[Path, dict], tmp_path: Path
) -> None:
    """``--shadows-from out --out out --overwrite`` deleted shadows.npz, then failed."""
    run, _ = pipeline
    out = tmp_path / "again"
    shutil.copytree(run / "audit" / "teacher", out)
    before = {p.name: p.read_bytes() for p in out.iterdir() if p.is_file()}
    result = runner.invoke(
        app, audit_arguments(run, out, "--shadows-from", str(out), "--overwrite")
    )
    assert result.exit_code == 2, result.output
    assert "would delete it" in result.output
    assert {p.name: p.read_bytes() for p in out.iterdir() if p.is_file()} == before


def test_resuming_the_pipeline_with_another_seed_is_refused(
    pipeline: tuple[Path, dict], tmp_path: Path
) -> None:
    import shutil

    run, _ = pipeline
    copy = tmp_path / "copy"
    shutil.copytree(run, copy)
    (copy / "config.yaml").unlink()  # as if the saved config were lost: the data files decide
    config = tmp_path / "tiny.yaml"
    config.write_text(TINY_PIPELINE)
    result = runner.invoke(
        app,
        ["audit", "pipeline", "--config", str(config), "--seed", "1", "--out", str(copy),
         "--resume", "-q"],
    )  # fmt: skip
    assert result.exit_code == 2, result.output
    assert "differs from what this config draws" in result.output


def test_pate_run_writes_the_stage_folders_the_audit_pipeline_writes(
    pipeline: tuple[Path, dict], tmp_path: Path
) -> None:
    # Both chain the stages through freekd.pate.pipeline.run_pate; only the folder names differ.
    run, _ = pipeline
    folders = {"teachers": "pate-teachers", "labels": "pate-labels", "student": "student-pate"}
    sections = {"teachers": "teachers", "labels": "label", "student": "student"}
    config = tmp_path / "pate.yaml"
    config.write_text(
        yaml.safe_dump(
            {
                sections[name]: yaml.safe_load((run / folder / "config.yaml").read_text())
                for name, folder in folders.items()
            }
        )
    )
    out = tmp_path / "pate"
    result = runner.invoke(app, ["pate", "run", "--config", str(config), "--out", str(out), "-q"])
    assert result.exit_code == 0, result.output

    def files(folder: Path) -> set[str]:
        return {str(path.relative_to(folder)) for path in folder.rglob("*") if path.is_file()}

    for name, folder in folders.items():
        assert files(out / name) == files(run / folder), name
        ours = json.loads((out / name / "report.json").read_text())
        theirs = json.loads((run / folder / "report.json").read_text())
        assert set(ours) == set(theirs), name
        assert ours["command"] == theirs["command"] == f"pate {sections[name]}"
    assert files(out) - {"report.json"} == {
        f"{name}/{path}" for name in folders for path in files(out / name)
    }
    assert json.loads((out / "report.json").read_text())["command"] == "pate run"
    assert json.loads((run / "report.json").read_text())["command"] == "audit pipeline"


def test_a_resumed_pipeline_keeps_every_finished_stage(
    pipeline: tuple[Path, dict], tmp_path: Path
) -> None:
    import shutil

    run, report = pipeline
    copy = tmp_path / "copy"
    shutil.copytree(run, copy)
    config = tmp_path / "tiny.yaml"
    config.write_text(TINY_PIPELINE)

    def stage_files() -> dict[str, int]:
        return {
            str(path.relative_to(copy)): path.stat().st_mtime_ns
            for path in copy.rglob("*")
            if path.is_file() and path.parent != copy
        }

    before = stage_files()
    assert "pate-labels/ledger.jsonl" in before
    arguments = ["audit", "pipeline", "--config", str(config), "--out", str(copy), "--resume"]
    result = runner.invoke(app, [*arguments, "-q"])
    assert result.exit_code == 0, result.output
    assert stage_files() == before  # no stage ran again: not one file rewritten
    assert json.loads((copy / "report.json").read_text())["table"] == report["table"]


@pytest.mark.parametrize(
    ("setting", "hint"),
    [
        ("audit.shadow.recipe=config", "--set audit.shadow.arch=lenet5"),
        ("pate.student.semi_supervised=teacher", "--set pate.student.distill_teacher.path=MODEL"),
    ],
)
def test_pipeline_hints_name_the_keys_as_the_pipeline_spells_them(
    tmp_path: Path, setting: str, hint: str
) -> None:
    config, out = tmp_path / "tiny.yaml", tmp_path / "p"
    config.write_text(TINY_PIPELINE)
    arguments = ["audit", "pipeline", "--config", str(config), "--set", setting, "--out", str(out)]
    result = runner.invoke(app, [*arguments, "-q"])
    assert result.exit_code == 2, result.output
    assert hint in result.output
    assert not out.exists()


def test_the_up_front_check_passes_settings_a_stage_never_uses(tmp_path: Path) -> None:
    # A proxy-data student synthesizes nothing, so a BatchNorm-inverting name is never used;
    # no shadow model is trained, so the shadow recipe's arch is never built.
    config = tmp_path / "tiny.yaml"
    config.write_text(TINY_PIPELINE)
    unused = [
        "paths=[dpsgd-datafree]", "datafree.synthesizer.name=nayer",
        "datafree.proxy_dataset=digits", "audit.shadow.models=0", "audit.attacks=[loss]",
        "audit.shadow.recipe=config", "audit.shadow.arch=nosuch",
    ]  # fmt: skip
    _check_stages(load_config(AuditPipelineConfig, config, overrides=unused))


def test_a_dp_teacher_without_dp_is_checked_as_a_plain_teacher(tmp_path: Path) -> None:
    # With dp.enabled false the dpsgd-datafree path trains an ordinary teacher: its DP
    # settings are never read, and batch-gradient clipping is allowed.
    config = tmp_path / "tiny.yaml"
    config.write_text(TINY_PIPELINE)
    plain = ["dp_teacher.dp.enabled=false", "dp_teacher.trainer.max_grad_norm=1"]
    _check_stages(load_config(AuditPipelineConfig, config, overrides=plain))
    with pytest.raises(FreekdError, match="--set dp_teacher.dp.max_grad_norm=..."):
        _check_stages(load_config(AuditPipelineConfig, config, overrides=plain[1:]))


def test_shadow_trainer_settings_the_target_recipe_overrides_are_warned_about(
    caplog: pytest.LogCaptureFixture,
) -> None:
    # --set shadow.trainer.epochs=1 was dropped without a word while config.yaml recorded it.
    import dataclasses
    import logging

    from freekd.audit.config import ShadowConfig
    from freekd.audit.shadows import warn_unused_trainer

    with caplog.at_level(logging.WARNING):
        warn_unused_trainer(ShadowConfig())
        warn_unused_trainer(
            ShadowConfig(trainer=dataclasses.replace(ShadowConfig().trainer, device="cpu"))
        )
    assert not caplog.records
    changed = dataclasses.replace(ShadowConfig().trainer, epochs=1, lr=0.5)
    with caplog.at_level(logging.WARNING):
        warn_unused_trainer(ShadowConfig(trainer=changed))
    assert "shadow.trainer.epochs, shadow.trainer.lr not used" in caplog.text
    assert "--set shadow.recipe=config" in caplog.text
