"""The Python API (freekd.api): each function runs its command's pipeline on tiny real data."""

from __future__ import annotations

import json
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import pytest
import torch
import yaml

import freekd
from freekd.data import Batch, ImageDataset
from freekd.distill.config import DistillConfig
from freekd.errors import FreekdError
from tests.conftest import tiny_trainer

FAST = {"device": "cpu", "quiet": True}


def test_import_freekd_loads_no_torch_and_packages_stay_modules() -> None:
    code = (
        "import sys, freekd\n"
        "assert 'torch' not in sys.modules, 'import freekd imported torch'\n"
        "assert callable(freekd.distill) and callable(freekd.crossmodal)\n"
    )
    subprocess.run([sys.executable, "-c", code], check=True, cwd=Path(__file__).parents[1])
    import freekd.distill.pipeline as pipeline  # torch is loaded in this process already

    assert freekd.distill.pipeline is pipeline
    assert freekd.train_teacher is freekd.api.train_teacher


def test_train_teacher_returns_report_model_and_folder(tmp_path: Path) -> None:
    run = freekd.train_teacher(
        data="digits", arch="tiny-cnn", epochs=1, batch_size=64, out=tmp_path / "t", **FAST
    )
    assert run.out == tmp_path / "t"
    assert run.report == json.loads((run.out / "report.json").read_text())
    assert 0.0 <= run.report["test_accuracy"] <= 1.0
    assert isinstance(run.model, torch.nn.Module)
    assert not run.model.training


def test_distill_precedence_config_then_overrides_then_keywords(
    tmp_path: Path, tiny_teacher_path: Path, digits_test: ImageDataset
) -> None:
    config = DistillConfig(student="tiny-cnn", dataset="digits", trainer=tiny_trainer(epochs=3))
    run = freekd.distill(
        teacher=tiny_teacher_path,
        student="mlp",
        config=config,
        overrides=["trainer.epochs=2", "trainer.lr=0.1"],
        epochs=1,
        out=tmp_path / "s",
        quiet=True,
    )
    saved = yaml.safe_load((run.out / "config.yaml").read_text())
    assert saved["trainer"]["epochs"] == 1  # the keyword beats the override ...
    assert saved["trainer"]["lr"] == 0.1  # ... which beats the config object
    assert saved["trainer"]["batch_size"] == 64  # the object beats the defaults
    assert saved["student"] == "mlp"
    assert saved["teacher"]["path"] == str(tiny_teacher_path)
    assert run.report["student"]["arch"] == "mlp"
    batch = digits_test.batch(torch.arange(8))
    with torch.no_grad():
        assert run.model(batch.images).shape == (8, 10)


def test_errors_are_one_line_freekd_errors(tmp_path: Path, tiny_teacher_path: Path) -> None:
    with pytest.raises(FreekdError, match="has no field 'epochz'; did you mean 'epochs'"):
        freekd.distill(teacher=tiny_teacher_path, trainer={"epochz": 1}, out=tmp_path / "a")
    with pytest.raises(FreekdError, match="trainer.lr must be"):
        freekd.distill(teacher=tiny_teacher_path, lr=-1.0, out=tmp_path / "b")
    (tmp_path / "c").mkdir()
    (tmp_path / "c" / "report.json").write_text("{}")
    with pytest.raises(FreekdError, match="already exists; pass --overwrite"):
        freekd.distill(teacher=tiny_teacher_path, dataset="digits", out=tmp_path / "c")
    with pytest.raises(FreekdError, match="config= takes a YAML file"):
        freekd.distill(teacher=tiny_teacher_path, config=42, out=tmp_path / "d")
    # overwrite="false" replaced the finished run in c; out=123 was a TypeError from pathlib.
    with pytest.raises(FreekdError, match="overwrite must be True or False, got 'false'"):
        freekd.distill(teacher=tiny_teacher_path, out=tmp_path / "c", overwrite="false")
    assert (tmp_path / "c" / "report.json").read_text() == "{}"
    with pytest.raises(FreekdError, match="out must be a folder path"):
        freekd.distill(teacher=tiny_teacher_path, out=123)


def test_arguments_of_the_wrong_kind_are_one_line_freekd_errors(
    tmp_path: Path, tiny_teacher_path: Path
) -> None:
    """Each was a raw TypeError/OSError, or a message holding a module's whole printout."""
    module = freekd.load_model(tiny_teacher_path)
    cases: list[tuple[Callable[[], object], str]] = [
        (lambda: freekd.evaluate(model=module, data="digits:test"), "model= takes a file path"),
        (lambda: freekd.load_model(5), "path= takes a file path"),  # type: ignore[arg-type]
        (lambda: freekd.load_model(None), "path= takes a file path"),  # type: ignore[arg-type]
        (
            lambda: freekd.distill(teacher=module, dataset="digits", out=tmp_path / "a"),
            "teacher= takes a file path",
        ),
        (lambda: freekd.graph_distill(teacher=module, out=tmp_path / "g"), "teacher= takes a"),
        (
            lambda: freekd.distill(teacher=tiny_teacher_path, overrides=[5], out=tmp_path / "b"),
            "overrides takes a list of 'key=value' strings, got \\[5\\]",
        ),
        (
            lambda: freekd.distill(
                teacher=tiny_teacher_path, overrides="trainer.lr=0.05", out=tmp_path / "c"
            ),
            "overrides takes a list",
        ),
    ]
    for call, message in cases:
        with pytest.raises(FreekdError, match=message) as raised:
            call()
        assert "\n" not in str(raised.value)
        assert len(str(raised.value)) < 300
    assert not (tmp_path / "a").exists()
    assert not (tmp_path / "b").exists()


def test_dp_settings_without_enabled_are_refused(tmp_path: Path) -> None:
    # dp={"epsilon": 3} used to train a teacher without DP-SGD and no word of it; the command
    # line refuses --epsilon without --dp.
    with pytest.raises(FreekdError, match="dp sets epsilon but DP-SGD is off"):
        freekd.train_teacher(data="digits", arch="tiny-cnn", dp={"epsilon": 3}, out=tmp_path / "t")
    assert not (tmp_path / "t").exists()
    config = tmp_path / "dp.yaml"
    config.write_text("dp: {epsilon: 3}\n")  # a file and --set the same way
    with pytest.raises(FreekdError, match="dp sets epsilon but DP-SGD is off"):
        freekd.train_teacher(data="digits", arch="tiny-cnn", config=config, out=tmp_path / "t")
    with pytest.raises(FreekdError, match="dp sets epsilon"):
        freekd.train_teacher(
            data="digits", arch="tiny-cnn", overrides=["dp.epsilon=3"], out=tmp_path / "t"
        )


def test_a_config_file_naming_code_still_needs_trust_code(tmp_path: Path) -> None:
    config = tmp_path / "run.yaml"
    config.write_text("student: os:system\n")
    with pytest.raises(FreekdError, match="names code to import in student"):
        freekd.distill(config=config, out=tmp_path / "s")


def test_datafree_and_audit(tmp_path: Path, tiny_teacher_path: Path) -> None:
    run = freekd.datafree(
        teacher=str(tiny_teacher_path),
        method="noise",
        eval_data="digits:test",
        epochs=1,
        steps_per_epoch=3,
        batch_size=32,
        out=tmp_path / "df",
        **FAST,
    )
    assert run.report["method"]["name"] == "noise"
    assert run.report["student"]["test_accuracy"] is not None
    assert isinstance(run.model, torch.nn.Module)
    audit = freekd.audit(
        model=run.out / "model.pt",
        members="digits:train",
        non_members="digits:test",
        attacks=["loss", "confidence"],
        shadow={"models": 0},
        max_examples=64,
        out=tmp_path / "audit",
        quiet=True,
    )
    assert audit.model is None
    assert set(audit.report["attacks"]) == {"loss", "confidence"}
    assert (audit.out / "roc.png").exists()


def test_evaluate_matches_freekd_eval(tiny_teacher_path: Path) -> None:
    result = freekd.evaluate(tiny_teacher_path, "digits:test", device="cpu")
    assert result["n"] == 297
    assert result["accuracy"] > 0.9


def test_losses_and_methods_plug_into_a_loop_of_ones_own(
    tiny_teacher_path: Path, digits_train: ImageDataset
) -> None:
    """The library layer without the Trainer: a method's loss terms in a plain PyTorch loop."""
    from freekd.config import TeacherSourceConfig
    from freekd.losses import kd_kl
    from freekd.methods import LogitKD
    from freekd.models import build_model
    from freekd.teachers import load_teacher

    torch.manual_seed(0)
    teacher = load_teacher(TeacherSourceConfig(path=str(tiny_teacher_path)))
    student = build_model("mlp", num_classes=10, input_shape=(1, 8, 8))
    method = LogitKD(student, teacher, temperature=4.0)
    optimizer = torch.optim.SGD(method.trainable_parameters(), lr=0.1)
    images = digits_train.batch(torch.arange(256)).images
    with torch.no_grad():
        before = kd_kl(student(images), teacher(images)).item()
    for start in range(0, 256, 32):
        batch = digits_train.batch(torch.arange(start, start + 32))
        step = method.training_step(Batch(batch.images, batch.labels))
        optimizer.zero_grad()
        step.loss.backward()
        optimizer.step()
    with torch.no_grad():
        assert kd_kl(student(images), teacher(images)).item() < before
    assert all(not p.requires_grad for p in teacher.parameters())


def test_pate_runs_the_three_stages(tmp_path: Path) -> None:
    config = {
        "teachers": {"dataset": "digits", "arch": "mlp", "teachers": 2,
                     "trainer": {"epochs": 1, "device": "cpu", "batch_size": 32}},
        "label": {"query_dataset": "digits:test", "queries": 40, "holdout": 40,
                  "aggregator": "gnmax", "sigma": 1.0, "sigma_threshold": None,
                  "threshold": None, "epsilon": 100.0, "sanitize": False},
        "student": {"student": "mlp", "semi_supervised": "none",
                    "trainer": {"epochs": 1, "device": "cpu", "batch_size": 16}},
    }  # fmt: skip
    run = freekd.pate(config=config, out=tmp_path / "pate", quiet=True)
    assert (run.out / "report.json").exists()
    assert (run.out / "student" / "model.pt").exists()
    assert isinstance(run.model, torch.nn.Module)
    # overwrite=True was accepted and ignored; the teachers stage then suggested --overwrite,
    # which pate run does not have. A ledger is never replaced: resume or another folder.
    with pytest.raises(FreekdError, match="pate run never overwrites: the privacy already"):
        freekd.pate(config=config, out=tmp_path / "pate", quiet=True, overwrite=True)
    with pytest.raises(FreekdError, match="already holds a pate run .*; continue it with --resume"):
        freekd.pate(config=config, out=tmp_path / "pate", quiet=True)


@pytest.mark.slow
def test_crossmodal_teacher_student_and_one_tower(tmp_path: Path, tiny_teacher_path: Path) -> None:
    from freekd.crossmodal import ClipModel
    from tests.crossmodal.test_crossmodal import TINY_CLIP

    trainer = {"epochs": 1, "batch_size": 64, "optimizer": "adamw", "lr": 0.003, "eval_every": 0}
    small = {"eval_size": 100, "trainer": trainer, **FAST}
    clip = freekd.train_clip(pairs="digits", model=TINY_CLIP, out=tmp_path / "clip", **small)
    assert isinstance(clip.model, ClipModel)
    assert 0.0 <= clip.report["teacher"]["zero_shot_accuracy"] <= 1.0
    student = freekd.crossmodal(
        teacher=clip.out / "model.pt",
        pairs="digits",
        baseline=False,
        out=tmp_path / "student",
        min_steps=0,
        **small,
    )
    assert isinstance(student.model, ClipModel)
    assert student.report["baseline"] is None
    tower = freekd.crossmodal(
        teacher=tiny_teacher_path,
        pairs="digits",
        baseline=False,
        out=tmp_path / "tower",
        min_steps=0,
        **small,
    )
    assert "direction" in tower.report
    assert isinstance(tower.model, torch.nn.Module)
    assert not isinstance(tower.model, ClipModel)


def test_the_api_module_exports_every_function_freekd_does() -> None:
    # graph_teacher and graph_distill were missing from freekd.api.__all__.
    from freekd import _API, _CALLABLE_PACKAGES

    assert sorted(freekd.api.__all__) == sorted([*_API, *_CALLABLE_PACKAGES])
    assert all(callable(getattr(freekd.api, name)) for name in freekd.api.__all__)
