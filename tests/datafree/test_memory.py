"""Fitting a data-free run into memory: measured activation bytes, the halving plan, and a
224×224, 1,000-class teacher under a memory limit."""

from __future__ import annotations

import json
import resource
import subprocess
import sys
from pathlib import Path

import pytest
import torch
import yaml
from torch import nn
from typer.testing import CliRunner

from freekd.cli import app
from freekd.datafree.memory import (
    BACKWARD_FACTOR,
    BANK_SHARE,
    USABLE_SHARE,
    autograd_bytes,
    bytes_per_image,
    plan_memory,
)
from freekd.errors import FreekdError

ROOT = Path(__file__).resolve().parents[2]
MB = 2**20


def test_a_linear_layer_saves_its_input_and_gives_its_output_per_image() -> None:
    # y = x Wᵀ + b: the weight gradient needs x (10 floats per image); the output is 20 floats.
    assert bytes_per_image(nn.Linear(10, 20), (10,), train=True, input_grad=False) == 30 * 4


def test_measuring_leaves_the_network_and_the_random_stream_as_they_were() -> None:
    network = nn.Sequential(nn.Conv2d(1, 4, 3), nn.BatchNorm2d(4), nn.ReLU())
    before = {key: value.clone() for key, value in network.state_dict().items()}
    state = torch.get_rng_state()
    assert bytes_per_image(network, (1, 8, 8), train=True, input_grad=True) > 0
    assert torch.equal(torch.get_rng_state(), state)
    for key, value in network.state_dict().items():
        assert torch.equal(value, before[key]), key  # running statistics untouched


def test_autograd_bytes_counts_a_storage_saved_twice_once() -> None:
    x = torch.ones(1000, requires_grad=True)
    # x * x saves x twice (as each operand): one storage of 4,000 bytes, plus the output.
    assert autograd_bytes(lambda: x * x) == 4000 + 4000


def plan(available: int | None, **changes: int | None) -> object:
    values: dict[str, int | None] = {
        "synthesis_batch": 256,
        "student_batch": 256,
        "memory_size": 1000,
        "synthesis_per_image": MB,
        "student_per_image": MB // 2,
        "fixed_bytes": 10 * MB,
        "image_bytes": 4096,
    }
    values.update(changes)
    return plan_memory(available=available, source="test", **values)  # type: ignore[arg-type]


def test_a_plan_that_fits_changes_nothing() -> None:
    fitted = plan(10_000 * MB)
    assert (fitted.synthesis_batch, fitted.student_batch, fitted.memory_size) == (256, 256, 1000)
    assert fitted.notes == ()
    unknown = plan(None)
    assert (unknown.synthesis_batch, unknown.notes) == (256, ())


def test_batches_halve_until_the_estimate_fits_and_say_so() -> None:
    available = 400 * MB
    fitted = plan(available)
    room = USABLE_SHARE * available - 1000 * 4096
    # The largest halving of 256 whose estimate fits: 10 MB + 2 · 1 MB · B ≤ room.
    expected = 256
    while 10 * MB + BACKWARD_FACTOR * MB * expected > room:
        expected //= 2
    assert fitted.synthesis_batch == expected < 256
    assert fitted.student_batch == 2 * expected  # half the bytes per image
    assert all("--batch-size" in note for note in fitted.notes)
    assert fitted.synthesis_bytes <= room


def test_the_memory_bank_is_capped_to_its_share() -> None:
    fitted = plan(
        100 * MB,
        image_bytes=MB // 4,
        synthesis_per_image=1024,
        student_per_image=1024,
        synthesis_batch=64,
    )
    assert fitted.memory_size == int(BANK_SHARE * 100 * MB // (MB // 4)) == 100
    assert any("memory_size" in note for note in fitted.notes)


def test_a_run_that_does_not_fit_at_two_images_is_refused_naming_the_flags() -> None:
    with pytest.raises(FreekdError, match=r"2 images needs about .*memory_gb=N"):
        plan(20 * MB)


def test_datafree_refuses_in_one_line_before_writing_anything(
    tiny_teacher_path: Path, tmp_path: Path
) -> None:
    out = tmp_path / "run"
    result = CliRunner().invoke(
        app,
        ["datafree", "--teacher", str(tiny_teacher_path), "--out", str(out), "-q",
         "--set", "memory_gb=0.0001"],
    )  # fmt: skip
    assert result.exit_code == 2, result.output
    message = result.output.strip()
    assert "out of memory before the first step" in message
    assert "memory_gb" in message
    assert len(message.splitlines()) == 1
    assert not (out / "config.yaml").exists()
    assert not (out / "model.pt").exists()


def test_the_synthesis_batch_follows_batch_size(tiny_teacher_path: Path, tmp_path: Path) -> None:
    out = tmp_path / "run"
    result = CliRunner().invoke(
        app,
        ["datafree", "--teacher", str(tiny_teacher_path), "--out", str(out), "-q",
         "--method", "zskt", "--batch-size", "32", "--epochs", "1",
         "--set", "steps_per_epoch=2"],
    )  # fmt: skip
    assert result.exit_code == 0, result.output
    saved = yaml.safe_load((out / "config.yaml").read_text())
    assert saved["synthesizer"]["params"]["batch_size"] == 32
    assert saved["trainer"]["batch_size"] == 32


def test_an_image_budget_caps_the_synthesis_batch(tiny_teacher_path: Path, tmp_path: Path) -> None:
    """cmi synthesizes one batch into its bank: 12 images, not a batch of 32 over budget."""
    out = tmp_path / "run"
    result = CliRunner().invoke(
        app,
        ["datafree", "--teacher", str(tiny_teacher_path), "--out", str(out), "-q",
         "--method", "cmi", "--batch-size", "32", "--budget", "12",
         "--set", "synthesizer.params.iterations=2"],
    )  # fmt: skip
    assert result.exit_code == 0, result.output
    saved = yaml.safe_load((out / "config.yaml").read_text())
    assert saved["synthesizer"]["params"]["batch_size"] == 12
    report = yaml.safe_load((out / "report.json").read_text())
    assert report["synthesized_images"] == 12


@pytest.mark.parametrize(
    ("given", "warmup", "synthesized"), [((), 3, 12), (("warmup_batches=5",), 5, 20)]
)
def test_an_image_budget_caps_nayers_warm_up(
    tiny_teacher_path: Path, tmp_path: Path, given: tuple[str, ...], warmup: int, synthesized: int
) -> None:
    """nayer's first round is its warm-up (10 batches): a 12-image budget at batches of 4 pays
    for 3 of them, not 40 images; a warm-up the user set is kept."""
    out = tmp_path / "run"
    sets = [arg for value in given for arg in ("--set", f"synthesizer.params.{value}")]
    result = CliRunner().invoke(
        app,
        ["datafree", "--teacher", str(tiny_teacher_path), "--out", str(out), "-q",
         "--method", "nayer", "--batch-size", "4", "--budget", "12",
         "--set", "synthesizer.params.generator_steps=1", *sets],
    )  # fmt: skip
    assert result.exit_code == 0, result.output
    saved = yaml.safe_load((out / "config.yaml").read_text())
    assert saved["synthesizer"]["params"]["warmup_batches"] == warmup
    report = yaml.safe_load((out / "report.json").read_text())
    assert report["synthesized_images"] == synthesized


def _limit_address_space() -> None:
    limit = 10 * 1024**3
    resource.setrlimit(resource.RLIMIT_AS, (limit, limit))


@pytest.mark.slow
def test_an_imagenet_size_teacher_runs_under_a_memory_limit(tmp_path: Path) -> None:
    """A 224×224, 1,000-class torchvision teacher with BatchNorm (random weights), the default
    method (nayer) and batch (256), under a 10 GB address-space limit (`ulimit -v`) and a 1.5 GB
    budget (which keeps the test short): the batches shrink to fit before the first step, and
    the run writes samples.png."""
    torch.manual_seed(0)
    import torchvision

    teacher = torchvision.models.mobilenet_v3_small(num_classes=1000)
    torch.save(teacher.state_dict(), tmp_path / "teacher.pt")
    out = tmp_path / "run"
    command = [
        sys.executable, "-m", "freekd", "datafree", "--teacher", str(tmp_path / "teacher.pt"),
        "--arch", "torchvision:mobilenet_v3_small", "--input-shape", "3,224,224",
        "--student", "torchvision:mobilenet_v3_small", "--epochs", "1",
        "--set", "steps_per_epoch=2", "--set", "synthesizer.params.generator_steps=1",
        "--set", "synthesizer.params.warmup_batches=1",
        "--set", "memory_gb=1.5",
        "--out", str(out), "-q",
    ]  # fmt: skip
    result = subprocess.run(
        command, cwd=ROOT, capture_output=True, text=True, preexec_fn=_limit_address_space
    )
    assert result.returncode == 0, result.stderr[-2000:]
    saved = yaml.safe_load((out / "config.yaml").read_text())
    assert saved["synthesizer"]["name"] == "nayer"
    batch = saved["synthesizer"]["params"]["batch_size"]
    assert 2 <= batch < 256
    assert 2 <= saved["trainer"]["batch_size"] < 256
    assert "--batch-size" in result.stderr  # the reduction was said
    report = json.loads((out / "report.json").read_text())
    assert report["synthesized_images"] >= batch
    assert (out / "samples.png").stat().st_size > 0
