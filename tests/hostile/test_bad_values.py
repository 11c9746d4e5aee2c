"""Bad values on the command line: one ``error:`` line, exit status 2, nothing in ``--out``.

Issue 17, §4: values that trained an untrained model with exit status 0 (``--epochs 0``, a NaN
learning rate, a stray label 99), values answered with a traceback (``--batch-size 0``,
``--device tpu``, a full disk) and typer's boxed usage errors. Every row of the table must fail
before any training starts, so the table runs in seconds.
"""

from __future__ import annotations

import json
import logging
import os
import resource
import signal
import subprocess
import sys
import warnings
from pathlib import Path

import numpy as np
import pytest
from typer.testing import CliRunner

from freekd.cli import app
from freekd.config import TrainerConfig, load_config
from freekd.data import load_dataset
from freekd.datafree.config import DataFreeConfig
from freekd.errors import FreekdError
from freekd.runs import FEW_STEPS
from freekd.supervised.config import TeacherTrainConfig
from tests.hostile.checks import assert_one_line_error

REPO = Path(__file__).resolve().parents[2]
TEACHER = ["teacher", "train", "--dataset", "digits", "--arch", "tiny-cnn", "--quiet"]


@pytest.fixture(scope="module")
def label_99(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """20 digits images with labels 0..9, one of them mislabelled 99."""
    digits = load_dataset("digits:train")
    labels = digits.labels[:20].numpy().copy()
    assert sorted(set(labels.tolist())) == list(range(10))
    labels[3] = 99
    path = tmp_path_factory.mktemp("npz") / "label99.npz"
    np.savez(path, x=digits.images[:20].numpy(), y=labels)
    return path


@pytest.fixture(scope="module")
def yaml_epochs_0(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("yaml") / "zero.yaml"
    path.write_text("trainer:\n  epochs: 0\n")
    return path


# (arguments after the command, text the one line must hold). {teacher}, {label_99} and
# {yaml_epochs_0} are filled in from fixtures.
CASES: list[tuple[list[str], str]] = [
    # rc 0 with an untrained model before
    (
        [*TEACHER, "--epochs", "0"],
        "trainer.epochs must be at least 1, got 0; pass a valid --epochs",
    ),
    ([*TEACHER, "--epochs", "-3"], "trainer.epochs must be at least 1, got -3"),
    ([*TEACHER, "--batch-size", "-5"], "trainer.batch_size must be at least 1, got -5"),
    ([*TEACHER, "--lr", "nan"], "trainer.lr must be a finite number, got nan; pass a valid --lr"),
    ([*TEACHER, "--lr", "inf"], "trainer.lr must be a finite number, got inf"),
    ([*TEACHER, "--set", "trainer.lr=nan"], "trainer.lr must be a finite number, got nan"),
    ([*TEACHER, "--set", "trainer.lr=-inf"], "trainer.lr must be a finite number"),
    (["teacher", "train", "--config", "{yaml_epochs_0}", "--quiet"], "trainer.epochs must be"),
    (
        ["teacher", "train", "--dataset", "{label_99}", "--arch", "tiny-cnn", "--quiet"],
        "its largest, 99, makes 100 classes, 89 of them without an image; renumber y as 0..K-1",
    ),
    (["datafree", "--teacher", "{teacher}", "--budget", "-5m"], "budget_minutes must be a finite"),
    (["datafree", "--teacher", "{teacher}", "--budget", "0"], "budget_images must be at least 1"),
    (["datafree", "--teacher", "{teacher}", "--budget", "cpu:0m"], "budget_cpu_minutes must be"),
    (
        [
            "audit",
            "--model",
            "{teacher}",
            "--members",
            "digits:train",
            "--non-members",
            "digits:test",
            "--shadow-models",
            "-2",
        ],
        "shadow.models must be 0 (threshold attacks only) or at least 2, got -2",
    ),  # fmt: skip
    # tracebacks before
    ([*TEACHER, "--batch-size", "0"], "trainer.batch_size must be at least 1, got 0"),
    ([*TEACHER, "--lr", "-0.1"], "trainer.lr must be a finite number above 0, got -0.1"),
    ([*TEACHER, "--set", "trainer.momentum=-1"], "trainer.momentum must lie in [0, 1), got -1"),
    ([*TEACHER, "--set", "trainer.momentum=1"], "trainer.momentum must lie in [0, 1), got 1"),
    ([*TEACHER, "--set", "trainer.weight_decay=-1e-4"], "trainer.weight_decay must be at least 0"),
    ([*TEACHER, "--set", "trainer.warmup_steps=-1"], "trainer.warmup_steps must be at least 0"),
    ([*TEACHER, "--set", "trainer.max_grad_norm=0"], "trainer.max_grad_norm must be a finite"),
    ([*TEACHER, "--set", "trainer.log_every=0"], "trainer.log_every must be at least 1"),
    ([*TEACHER, "--set", "trainer.swa_start=1"], "trainer.swa_start must lie in [0, 1), got 1"),
    ([*TEACHER, "--set", "trainer.swa_start=-0.1"], "trainer.swa_start must lie in [0, 1)"),
    ([*TEACHER, "--set", "trainer.swa_start=nan"], "trainer.swa_start must be a finite number"),
    ([*TEACHER, "--set", "label_smoothing=1.5"], "label_smoothing must lie in [0, 1), got 1.5"),
    ([*TEACHER, "--device", "tpu"], "trainer.device must be auto, cpu, cuda, cuda:N or mps"),
    ([*TEACHER, "--device", "cuda:99"], "--device cuda:99 was asked for but"),
    (["eval", "--model", "{teacher}", "--dataset", "digits:test", "--device", "tpu"], "tpu"),
    (
        [*TEACHER, "--dp", "--delta", "2"],
        "dp.delta must lie in (0, 1), got 2; pass a valid --delta",
    ),
    (["pate", "teachers", "--dataset", "digits", "--set", "teachers=0"], "teachers must be at"),
    (
        ["pate", "teachers", "--dataset", "digits", "--set", "trainer.swa_start=0.5"],
        "keeps no weight average; remove trainer.swa_start",
    ),
    (
        ["pate", "teachers", "--dataset", "digits", "--set", "trainer.ema_decay=0.99"],
        "keeps no weight average; remove trainer.ema_decay",
    ),
    # typer/click usage errors: one line, not a boxed panel under a usage banner
    ([*TEACHER, "--batch-size", "abc"], "Invalid value for '--batch-size'"),
    ([*TEACHER, "--no-such-option"], "No such option: --no-such-option"),
    (["eval", "--dataset", "digits:test"], "Missing option '--model'; see "),
    (["no-such-command"], "No such command 'no-such-command'"),
]


def _case_id(arguments: list[str]) -> str:
    shown = arguments[len(TEACHER) :] if arguments[: len(TEACHER)] == TEACHER else arguments
    return " ".join(a for a in shown if not a.startswith("{"))


@pytest.mark.parametrize(("arguments", "needle"), CASES, ids=[_case_id(c[0]) for c in CASES])
def test_bad_value_fails_in_one_line_before_anything_is_written(
    arguments: list[str],
    needle: str,
    tiny_teacher_path: Path,
    label_99: Path,
    yaml_epochs_0: Path,
    tmp_path: Path,
) -> None:
    out = tmp_path / "run"
    filled = [
        a.format(teacher=tiny_teacher_path, label_99=label_99, yaml_epochs_0=yaml_epochs_0)
        for a in arguments
    ]
    if not any(a.startswith("no-such") for a in filled) and filled[0] != "eval":
        filled += ["--out", str(out)]
    result = CliRunner().invoke(app, filled)
    assert_one_line_error(result, out, needle)


def test_values_are_checked_by_the_config_itself_for_the_python_api_and_yaml() -> None:
    with pytest.raises(FreekdError, match=r"^TrainerConfig.epochs must be at least 1, got 0;"):
        TrainerConfig(epochs=0)
    with pytest.raises(FreekdError, match="TrainerConfig.lr must be a finite number, got nan"):
        TrainerConfig(lr=float("nan"))
    with pytest.raises(FreekdError, match="budget_minutes must be a finite number above 0"):
        DataFreeConfig(budget_minutes=-5.0)
    # load_config names the dotted key the user wrote, wherever the group sits.
    with pytest.raises(FreekdError, match=r"^trainer.momentum must lie in \[0, 1\), got -1;"):
        load_config(TeacherTrainConfig, overrides=["trainer.momentum=-1"])
    from freekd.audit.config import AuditPipelineConfig

    with pytest.raises(FreekdError, match=r"^teacher.trainer.epochs must be at least 1"):
        load_config(AuditPipelineConfig, overrides=["teacher.trainer.epochs=0"])
    # Valid edge values pass.
    assert TrainerConfig(momentum=0.0, weight_decay=0.0, device="cuda:1").device == "cuda:1"


def test_an_eval_set_with_classes_the_model_lacks_is_refused(
    tmp_path: Path, tiny_teacher_path: Path
) -> None:
    """Label 12 among the 10 digits: not gap-riddled (11 of 13 classes present), so the set
    loads; training on digits and evaluating on it is refused in one line."""
    digits = load_dataset("digits:test")
    labels = digits.labels[:40].numpy().copy()
    labels[0] = 12
    path = tmp_path / "label12.npz"
    np.savez(path, x=digits.images[:40].numpy(), y=labels)
    out = tmp_path / "run"
    result = CliRunner().invoke(
        app, [*TEACHER, "--eval-data", str(path), "--epochs", "1", "--out", str(out)]
    )
    assert_one_line_error(result, out, "has label 12 but a model trained on digits:train know(s)")


def _limited(limit_bytes: int) -> None:
    """In the child: a file size limit, and SIGXFSZ ignored so a write fails with EFBIG."""
    signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
    resource.setrlimit(resource.RLIMIT_FSIZE, (limit_bytes, resource.RLIM_INFINITY))


def test_a_full_disk_is_one_line_and_leaves_nothing_half_written(tmp_path: Path) -> None:
    """``ulimit -f 20``: config.yaml and the first metrics lines fit, the checkpoint does not."""
    out = tmp_path / "run"
    # Enough steps (2 x 187) that the small-set warning stays silent: the error is the one line.
    command = [sys.executable, "-m", "freekd", *TEACHER, "--device", "cpu"]
    command += ["--epochs", "2", "--batch-size", "8"]
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    result = subprocess.run(
        [*command, "--out", str(out)],
        capture_output=True,
        text=True,
        env=env,
        preexec_fn=lambda: _limited(20 * 1024),
        timeout=300,
        check=False,
    )
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    assert result.returncode == 2, result.stderr
    assert len(lines) == 1, result.stderr
    assert lines[0].startswith("error: "), result.stderr
    assert "the disk is full or a file size limit was hit writing" in lines[0]
    assert "checkpoint.pt" in lines[0]
    names = sorted(path.name for path in out.iterdir())
    assert "model.pt" not in names
    assert "checkpoint.pt" not in names
    assert not [name for name in names if name.endswith(".tmp")], names
    # metrics.jsonl holds whole lines only.
    for line in (out / "metrics.jsonl").read_text().splitlines():
        json.loads(line)


def test_a_small_set_for_the_recipe_draws_one_warning_before_training(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    from freekd.runs import RunOptions
    from freekd.supervised.pipeline import run_teacher_train

    digits = load_dataset("digits:train")
    path = tmp_path / "small.npz"
    np.savez(path, x=digits.images[:100].numpy(), y=digits.labels[:100].numpy())
    config = TeacherTrainConfig(
        dataset=str(path),
        eval_dataset="digits:test",
        arch="tiny-cnn",
        trainer=TrainerConfig(epochs=1, batch_size=32, device="cpu", augment="none"),
    )
    with caplog.at_level(logging.WARNING, logger="freekd"):
        run_teacher_train(config, RunOptions(tmp_path / "run", quiet=True))
    (warning,) = [r.getMessage() for r in caplog.records if "optimizer steps" in r.getMessage()]
    assert "has 100 images: 1 epoch(s) at batch size 32 make only 3 optimizer steps" in warning
    assert warning.endswith("try --batch-size 32 --epochs 300")
    # The full datasets' runs are far above the threshold and draw nothing.
    assert FEW_STEPS <= 60000 // 128 * 10


def test_third_party_warnings_become_one_info_line_and_are_not_printed(
    caplog: pytest.LogCaptureFixture,
) -> None:
    """What the CLI installs as ``warnings.showwarning``: torch's and Opacus' UserWarnings
    (two lines on stderr each) are logged at INFO, shown with --verbose only."""
    from freekd.cli import _log_warning

    with warnings.catch_warnings(), caplog.at_level(logging.INFO):
        warnings.simplefilter("always")
        warnings.showwarning = _log_warning
        warnings.warn(
            "Full backward hook is firing\n when no inputs require grad", UserWarning, stacklevel=1
        )
    (record,) = caplog.records
    assert record.levelno == logging.INFO
    assert record.name == "freekd.warnings"
    assert "\n" not in record.getMessage()
    assert record.getMessage().startswith("UserWarning: Full backward hook is firing when no")
