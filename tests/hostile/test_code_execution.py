"""No file a user hands freekd may choose code to run (issue 17 §1).

A checkpoint loads with ``weights_only=True``, but its ``arch`` field used to be an import path
that freekd imported and called with ``arch_kwargs``: ``os:system`` with
``{"command": "touch PWNED"}`` ran a shell command. Every entry point that reads an architecture
from a file (model.pt, teachers.pt, a tower file, a YAML config, a run's saved config.yaml) is
tried here with that payload; the marker file must never appear, the command must fail with one
``error:`` line and exit status 2, and its ``--out`` folder must hold no run files.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path

import pytest
import torch
import yaml
from typer.testing import CliRunner, Result

import freekd
from freekd.cli import app
from freekd.config import load_config
from freekd.distill.config import DistillConfig
from freekd.errors import FreekdError
from freekd.supervised.config import TeacherTrainConfig
from tests.hostile.checks import assert_one_line_error

runner = CliRunner()
TINY = ["--epochs", "1", "--batch-size", "64", "--device", "cpu", "--quiet"]


def _payload(marker: Path) -> dict[str, object]:
    return {"arch": "os:system", "arch_kwargs": {"command": f"touch {marker}"}}


@pytest.fixture
def marker(tmp_path: Path) -> Path:
    return tmp_path / "PWNED"


@pytest.fixture
def evil_model(tiny_teacher_path: Path, tmp_path: Path, marker: Path) -> Path:
    """The tiny teacher's checkpoint with ``arch`` pointing at ``os.system``."""
    data = torch.load(tiny_teacher_path, weights_only=True)
    data.update(_payload(marker))
    path = tmp_path / "evil.pt"
    torch.save(data, path)
    return path


@pytest.fixture
def evil_teachers(teachers: Path, tmp_path: Path, marker: Path) -> Path:
    """A PATE ``teachers.pt`` whose member metadata names ``os:system``."""
    data = torch.load(teachers / "teachers.pt", weights_only=True)
    data["member"] = {**data["member"], **_payload(marker)}
    path = tmp_path / "evil-teachers.pt"
    torch.save(data, path)
    return path


def _yaml(tmp_path: Path, name: str, content: dict[str, object]) -> Path:
    path = tmp_path / name
    path.write_text(yaml.safe_dump(content))
    return path


def assert_refused(result: Result, marker: Path, out: Path, pattern: str) -> None:
    """Exit 2, one ``error:`` line naming ``pattern``, no run files, and no marker file."""
    assert_one_line_error(result, out, pattern)
    assert not marker.exists(), "a file chose code to run"


# Each case: (name, builder of the command line from the fixtures, what the line must say).
Case = Callable[[dict[str, Path]], list[str]]
CASES: list[tuple[str, Case, str]] = [
    (
        "eval --model",
        lambda f: ["eval", "--model", str(f["model"]), "--dataset", "digits:test"],
        "names code to import",
    ),
    (
        "distill --teacher",
        lambda f: [
            "distill", "--teacher", str(f["model"]), "--student", "mlp", "--dataset", "digits",
            *TINY, "--out", str(f["out"]),
        ],
        "names code to import",
    ),
    (
        "datafree --teacher",
        lambda f: [
            "datafree", "--teacher", str(f["model"]), "--student", "mlp", *TINY,
            "--out", str(f["out"]),
        ],
        "names code to import",
    ),
    (
        "audit --model",
        lambda f: [
            "audit", "--model", str(f["model"]), "--members", "digits:train",
            "--non-members", "digits:test", "--quiet", "--out", str(f["out"]),
        ],
        "names code to import",
    ),
    (
        "pate label --teachers",
        lambda f: [
            "pate", "label", "--teachers", str(f["teachers"]), "--queries-from", "digits:test",
            "--quiet", "--out", str(f["out"]),
        ],
        "names code to import",
    ),
    (
        "crossmodal distill --teacher (image classifier tower)",
        lambda f: [
            "crossmodal", "distill", "--teacher", str(f["model"]), "--pairs", "digits",
            "--quiet", "--out", str(f["out"]),
        ],
        "names code to import",
    ),
    (
        "teacher train --config (YAML arch)",
        lambda f: [
            "teacher", "train", "--config", str(f["yaml_arch"]), *TINY, "--out", str(f["out"]),
        ],
        "names code to import in arch",
    ),
    (
        "distill --config (YAML student)",
        lambda f: [
            "distill", "--teacher", str(f["good_model"]), "--config", str(f["yaml_student"]),
            *TINY, "--out", str(f["out"]),
        ],
        "names code to import in student",
    ),
    (
        "distill --config (YAML teacher.arch for a state_dict)",
        lambda f: [
            "distill", "--config", str(f["yaml_teacher_arch"]), "--dataset", "digits", *TINY,
            "--out", str(f["out"]),
        ],
        "names code to import in teacher.arch",
    ),
    (
        "distill --config (YAML grants trust_pickle)",
        lambda f: [
            "distill", "--teacher", str(f["good_model"]), "--config", str(f["yaml_pickle"]),
            "--dataset", "digits", *TINY, "--out", str(f["out"]),
        ],
        "may not grant itself trust",
    ),
]  # fmt: skip


@pytest.mark.parametrize(("name", "command", "pattern"), CASES, ids=[c[0] for c in CASES])
def test_no_file_chooses_code_to_run(
    name: str,
    command: Case,
    pattern: str,
    evil_model: Path,
    evil_teachers: Path,
    tiny_teacher_path: Path,
    tmp_path: Path,
    marker: Path,
) -> None:
    files = {
        "model": evil_model,
        "teachers": evil_teachers,
        "good_model": tiny_teacher_path,
        "out": tmp_path / "out",
        "yaml_arch": _yaml(tmp_path, "arch.yaml", {"dataset": "digits", **_payload(marker)}),
        "yaml_student": _yaml(
            tmp_path, "student.yaml", {"dataset": "digits", "student": "os:system"}
        ),
        "yaml_teacher_arch": _yaml(
            tmp_path, "teacher.yaml",
            {"teacher": {
                "path": str(tiny_teacher_path), "input_shape": [1, 8, 8], **_payload(marker),
            }},
        ),
        "yaml_pickle": _yaml(tmp_path, "pickle.yaml", {"teacher": {"trust_pickle": True}}),
    }  # fmt: skip
    result = runner.invoke(app, command(files))
    assert_refused(result, marker, files["out"], pattern)


def test_resume_refuses_a_saved_config_that_names_code(
    tiny_teacher_path: Path, tmp_path: Path, marker: Path
) -> None:
    """``--resume`` starts from the run folder's config.yaml: a file too."""
    out = tmp_path / "run"
    first = runner.invoke(
        app, ["teacher", "train", "--dataset", "digits", "--arch", "mlp", *TINY, "--out", str(out)]
    )
    assert first.exit_code == 0, first.output
    saved = yaml.safe_load((out / "config.yaml").read_text())
    saved.update(_payload(marker))
    (out / "config.yaml").write_text(yaml.safe_dump(saved))
    (out / "checkpoint.pt").write_bytes(b"placeholder")  # something to resume from
    before = {p.name: p.stat().st_mtime_ns for p in out.iterdir()}

    result = runner.invoke(app, ["teacher", "train", *TINY, "--resume", "--out", str(out)])

    stderr_lines = [line for line in result.stderr.splitlines() if line.strip()]
    assert result.exit_code == 2, result.stderr
    assert len(stderr_lines) == 1, result.stderr
    assert "names code to import in arch" in stderr_lines[0]
    assert not marker.exists()
    assert {p.name: p.stat().st_mtime_ns for p in out.iterdir()} == before  # nothing touched


def test_info_reads_metadata_without_building(evil_model: Path, marker: Path) -> None:
    """``freekd info`` shows what a file holds, including a hostile arch, and runs none of it."""
    result = runner.invoke(app, ["info", str(evil_model), "--json"])

    assert result.exit_code == 0, result.output
    assert "os:system" in result.stdout
    assert json.loads(result.stdout)["arch_names_code"] is True
    assert not marker.exists()
    table = runner.invoke(app, ["info", str(evil_model)])
    assert "the architecture is an import path" in table.stdout


def test_python_api_refuses_too(evil_model: Path, marker: Path) -> None:
    with pytest.raises(FreekdError, match="names code to import"):
        freekd.load_model(evil_model)
    assert not marker.exists()


def test_trust_code_loads_a_user_class_checkpoint(tmp_path: Path) -> None:
    """A checkpoint of a user's own class loads with --trust-code (and only with it)."""
    out = tmp_path / "user"
    trained = runner.invoke(
        app,
        [
            "teacher", "train", "--dataset", "digits", "--arch",
            "tests.models.user_arch:UserNet", *TINY, "--out", str(out),
        ],
    )  # fmt: skip
    assert trained.exit_code == 0, (trained.output, trained.exception)
    model = out / "model.pt"

    refused = runner.invoke(app, ["eval", "--model", str(model), "--dataset", "digits:test"])
    assert refused.exit_code == 2
    assert "--trust-code" in refused.stderr

    trusted = runner.invoke(
        app, ["eval", "--model", str(model), "--dataset", "digits:test", "--trust-code", "--json"]
    )
    assert trusted.exit_code == 0, (trusted.output, trusted.exception)
    assert freekd.load_model(model, trust_code=True).num_classes == 10


def test_yaml_import_path_with_trust_code_and_cli_import_path(tmp_path: Path) -> None:
    """The command line's own import path is the user's word; a file's needs --trust-code."""
    config = _yaml(tmp_path, "user.yaml", {"arch": "tests.models.user_arch:UserNet"})
    with pytest.raises(FreekdError, match="--trust-code"):
        load_config(TeacherTrainConfig, config)
    assert load_config(TeacherTrainConfig, config, trust_code=True).arch.endswith(":UserNet")
    # a --set on the command line overrides the file and is the user's own word
    overridden = load_config(
        TeacherTrainConfig, config, overrides=["arch=tests.models.user_arch:fixed_net"]
    )
    assert overridden.arch.endswith(":fixed_net")
    student = load_config(DistillConfig, values={"student": "tests.models.user_arch:UserNet"})
    assert student.student.endswith(":UserNet")


def test_clip_config_may_not_reach_outside() -> None:
    from freekd.crossmodal.clip import ClipModel

    config = {
        "embed_dim": 16,
        "vision_cfg": {"image_size": 16, "patch_size": 8, "width": 32, "layers": 1},
        "text_cfg": {"context_length": 8, "width": 16, "heads": 2, "layers": 1,
                     "hf_model_name": "/somewhere/else"},
    }  # fmt: skip
    with pytest.raises(FreekdError, match="hf_model_name"):
        ClipModel(config, mean=[0.5] * 3, std=[0.5] * 3)


@pytest.mark.parametrize(
    ("tower", "setting"),
    [
        ("vision_cfg", {"timm_model_name": "local-dir:/etc"}),
        ("vision_cfg", {"timm_model_name": "hf-hub:someone/model"}),
        ("vision_cfg", {"timm_model_pretrained": True, "timm_model_name": "resnet18"}),
        ("text_cfg", {"hf_tokenizer_name": "someone/tokenizer"}),
    ],
)
def test_clip_towers_may_not_load_from_elsewhere(tower: str, setting: dict[str, object]) -> None:
    """A CLIP or text-student config names no hub model, local folder or pretrained weights."""
    from freekd.crossmodal.clip import ClipModel
    from freekd.crossmodal.towers import TextStudent

    config: dict[str, dict[str, object]] = {
        "vision_cfg": {"image_size": 16, "patch_size": 8, "width": 32, "layers": 1},
        "text_cfg": {"context_length": 8, "width": 16, "heads": 2, "layers": 1},
    }
    config[tower] = {**config[tower], **setting}
    with pytest.raises(FreekdError, match=f"{tower}.{next(iter(setting))}"):
        ClipModel({"embed_dim": 16, **config}, mean=[0.5] * 3, std=[0.5] * 3)
    if tower == "text_cfg":
        with pytest.raises(FreekdError, match="text_cfg.hf_tokenizer_name"):
            TextStudent(dim=16, text_cfg=config["text_cfg"])
