"""The kd-at method: which blocks it pairs, and its refusal when there are none."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from click.testing import Result
from typer.testing import CliRunner

from freekd.cli import app
from freekd.data import Batch
from freekd.errors import FreekdError
from freekd.hooks import spatial_blocks
from freekd.losses import attention_transfer, kd_kl
from freekd.methods import AttentionKD
from freekd.models import ImageClassifier, build_model
from freekd.teachers import Teacher


def lenet(arch: str, seed: int) -> ImageClassifier:
    torch.manual_seed(seed)
    net = build_model(arch, num_classes=10, input_shape=(1, 28, 28))
    return ImageClassifier(
        net,
        arch=arch,
        arch_kwargs={},
        num_classes=10,
        input_shape=(1, 28, 28),
        mean=[0.1],
        std=[0.3],
    )


def images(n: int = 8) -> torch.Tensor:
    return torch.rand((n, 1, 28, 28), generator=torch.Generator().manual_seed(0))


def test_blocks_are_the_ends_of_each_resolution_in_forward_order() -> None:
    model = lenet("lenet5", 0)
    with spatial_blocks(model) as blocks:
        model(images())
    assert list(blocks) == [(28, 28), (14, 14), (10, 10), (5, 5)]  # no 1×1 after pooling
    assert [b.shape[1] for b in blocks.values()] == [6, 6, 16, 16]
    assert all((b >= 0).all() for b in blocks.values())  # after ReLU / pooling of ReLUs
    after = len(blocks)
    model(images())  # hooks are gone after the block
    assert len(blocks) == after


def test_loss_is_kd_plus_beta_attention_on_the_shared_blocks() -> None:
    teacher = Teacher(lenet("lenet5", 0), num_classes=10, input_shape=(1, 28, 28), description="t")
    student = lenet("lenet5-half", 1)
    method = AttentionKD(student, teacher, temperature=2.0, kd_weight=3.0, beta=7.0)
    x = images()
    output = method.training_step(Batch(x, None))
    with torch.no_grad(), spatial_blocks(teacher) as t_blocks:
        t_logits = teacher(x)
    with torch.no_grad(), spatial_blocks(student) as s_blocks:
        s_logits = student(x)
    assert [s.shape[1] for s in s_blocks.values()] == [3, 3, 8, 8]
    expected_at = attention_transfer(list(s_blocks.values()), list(t_blocks.values()))
    torch.testing.assert_close(output.losses["attention"], 3.0 * 7.0 * expected_at)
    torch.testing.assert_close(
        output.losses["kd"], 3.0 * kd_kl(s_logits, t_logits, temperature=2.0)
    )
    assert "ce" not in output.losses


def test_construction_probe_leaves_the_student_as_it_was() -> None:
    teacher = Teacher(lenet("lenet5", 0), num_classes=10, input_shape=(1, 28, 28), description="t")
    student = build_model("tiny-cnn", num_classes=10, input_shape=(1, 28, 28))
    student.train()
    before = {k: v.clone() for k, v in student.state_dict().items()}
    AttentionKD(student, teacher)
    assert all(m.training for m in student.modules())
    for key, value in student.state_dict().items():  # BatchNorm running statistics untouched
        assert torch.equal(value, before[key]), key


def test_student_without_feature_maps_gets_a_one_line_error() -> None:
    teacher = Teacher(lenet("lenet5", 0), num_classes=10, input_shape=(1, 28, 28), description="t")
    torch.manual_seed(0)
    mlp = build_model("mlp", num_classes=10, input_shape=(1, 28, 28))
    with pytest.raises(FreekdError, match="same size.*--method kd"):
        AttentionKD(mlp, teacher)


def test_negative_beta_is_refused() -> None:
    teacher = Teacher(lenet("lenet5", 0), num_classes=10, input_shape=(1, 28, 28), description="t")
    with pytest.raises(ValueError, match="beta"):
        AttentionKD(lenet("lenet5-half", 1), teacher, beta=-1.0)


def datafree_kd_at(teacher: Path, out: Path, *extra: str) -> Result:
    arguments = [
        "datafree", "--teacher", str(teacher), "--method", "zskt", "--set", "method.name=kd-at",
        "--set", "steps_per_epoch=5", "--set", "synthesizer.params.batch_size=16", "--epochs", "1",
        "--batch-size", "16", "--device", "cpu", "--quiet", "--out", str(out), *extra,
    ]  # fmt: skip
    return CliRunner().invoke(app, arguments)


def test_datafree_student_side_kd_at_end_to_end(tiny_teacher_path: Path, tmp_path: Path) -> None:
    out = tmp_path / "run"
    result = datafree_kd_at(tiny_teacher_path, out, "--student", "tiny-cnn-nobn")
    assert result.exit_code == 0, result.output
    report = json.loads((out / "report.json").read_text())
    assert report["student_method"]["name"] == "kd-at"
    lines = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    assert any(line.get("loss/attention", 0) > 0 for line in lines), lines[-1]


@pytest.mark.parametrize(
    ("extra", "message"),
    [
        (["--set", "method.params.beta=-1"], "method kd-at: beta must be non-negative"),
        (["--student", "mlp"], "attention transfer needs feature maps of the same size"),
    ],
)
def test_datafree_kd_at_bad_input_is_one_line_exit_2(
    tiny_teacher_path: Path, tmp_path: Path, extra: list[str], message: str
) -> None:
    out = tmp_path / "run"
    result = datafree_kd_at(tiny_teacher_path, out, *extra)
    assert result.exit_code == 2, result.output
    assert message in result.output
    assert "Traceback" not in result.output
    assert not out.exists()
