"""The feature, relation, graph and contrastive methods: layers named on any network, automatic
pairing, adapters, combinations, one-line refusals, state that resumes exactly."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from torch import nn

import freekd
from freekd.data import Batch, ImageDataset
from freekd.errors import FreekdError, UnknownNameError
from freekd.methods import METHODS, MethodContext, build_method
from freekd.methods.crd import EmbeddingQueue, negatives_mask
from freekd.methods.taps import EMBEDDING, stage_tap
from freekd.models import ImageClassifier, build_model
from freekd.teachers import Teacher
from tests.conftest import tiny_trainer

SHAPE = (1, 8, 8)


class UserNet(nn.Module):
    """A network written the way a third party would, with its own layer names."""

    def __init__(self) -> None:
        super().__init__()
        self.body = nn.Sequential(nn.Conv2d(1, 6, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2))
        self.head = nn.Sequential(nn.Flatten(), nn.Linear(6 * 4 * 4, 10))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.body(x))  # type: ignore[no-any-return]


def wrap(net: nn.Module, arch: str = "user") -> ImageClassifier:
    return ImageClassifier(
        net, arch=arch, arch_kwargs={}, num_classes=10, input_shape=SHAPE, mean=[0.3], std=[0.4]
    )


def model(arch: str, seed: int = 0) -> ImageClassifier:
    torch.manual_seed(seed)
    return wrap(build_model(arch, num_classes=10, input_shape=SHAPE), arch)


def teacher_of(net: nn.Module) -> Teacher:
    return Teacher(net, num_classes=10, input_shape=SHAPE, description="test")


def method(name: str, student: nn.Module, teacher: Teacher, **params: object) -> nn.Module:
    return build_method(name, MethodContext.for_teacher(student, teacher, train_size=64), params)


def batch(data: ImageDataset, n: int = 16) -> Batch:
    return data.batch(torch.arange(n))


def test_layers_are_named_on_freekd_torchvision_and_user_models(digits_train: ImageDataset) -> None:
    torch.manual_seed(0)
    teacher = teacher_of(wrap(UserNet()))
    cases = [
        (model("tiny-cnn"), ["features.2"]),  # freekd's, after the first ReLU
        (wrap(build_model("torchvision:resnet18", num_classes=10, input_shape=SHAPE)), ["layer1"]),
        (wrap(UserNet()), ["body.1"]),
    ]
    for student, layers in cases:
        fitnet = method(
            "fitnet", student, teacher, student_layers=layers, teacher_layers=["body.1"]
        )
        output = fitnet.training_step(batch(digits_train))
        assert set(output.losses) == {"hint", "ce"}
        output.loss.backward()
        assert all(p.grad is not None for p in fitnet.regressors.parameters())


def test_automatic_pairs_follow_the_stages() -> None:
    teacher = teacher_of(model("tiny-cnn", 0))
    at = method("at", model("tiny-cnn", 1), teacher)
    assert at.pairs == [(stage_tap((8, 8)), stage_tap((8, 8))), (stage_tap((4, 4)),) * 2]
    fitnet = method("fitnet", model("tiny-cnn", 1), teacher)
    assert fitnet.pairs == [(stage_tap((4, 4)),) * 2]  # the middle of the two stages
    assert method("sp", model("tiny-cnn", 1), teacher).pairs == [(stage_tap((4, 4)),) * 2]
    rkd = method("rkd", model("mlp", 1), teacher)
    assert rkd.pairs == [(EMBEDDING, EMBEDDING)]
    assert rkd.student_shapes != rkd.teacher_shapes  # widths may differ for relations


@pytest.mark.parametrize(
    ("name", "params", "message"),
    [
        (
            "fitnet",
            {"student_layers": ["nope"], "teacher_layers": ["features.0"]},
            "no layer 'nope'",
        ),
        ("fitnet", {"student_layers": ["features.0"]}, "name both student_layers"),
        ("at", {"student_layers": ["features.0"], "teacher_layers": []}, "pair up in order"),
        ("at", {"student_layers": ["fc"], "teacher_layers": ["fc"]}, "feature maps"),
        ("crd", {"student_layers": ["fc", "fc"], "teacher_layers": ["fc", "fc"]}, "one pair"),
        ("rkd", {"student_layers": 5, "teacher_layers": 5}, "student_layers must be a list"),
        ("irg", {"student_layers": True, "teacher_layers": True}, "must be a list of layer"),
        ("fitnet", {"student_layers": "features.0", "teacher_layers": ["features.0"]}, "a list"),
        ("fitnet", {"student_layers": ["features.0"], "teacher_layers": [3]}, "teacher_layers"),
    ],
)
def test_impossible_pairs_are_refused_before_training(
    name: str, params: dict[str, object], message: str
) -> None:
    teacher = teacher_of(model("tiny-cnn", 0))
    with pytest.raises(FreekdError, match=message) as error:
        method(name, model("tiny-cnn", 1), teacher, **params)
    assert "\n" not in str(error.value)


def test_feature_maps_cannot_pair_with_an_mlp_and_torchscript_hides_layers() -> None:
    teacher = teacher_of(model("tiny-cnn", 0))
    with pytest.raises(FreekdError, match="no features to pair automatically"):
        method("at", model("mlp", 1), teacher)
    scripted = teacher_of(torch.jit.trace(model("tiny-cnn", 0).eval(), torch.zeros(2, *SHAPE)))
    with pytest.raises(FreekdError, match="TorchScript"):
        method("fitnet", model("tiny-cnn", 1), scripted, student_layers=["features.0"],
               teacher_layers=["features.0"])  # fmt: skip


@pytest.mark.parametrize("name", ["at", "fitnet", "rkd", "irg", "cc", "sp", "pkt", "crd", "kd+at"])
def test_a_torchscript_teacher_is_refused_in_one_line_when_layers_pair_automatically(
    name: str,
) -> None:
    """Automatic pairing hooks every layer of the teacher: a ScriptModule takes no hooks."""
    scripted = teacher_of(torch.jit.trace(model("tiny-cnn", 0).eval(), torch.zeros(2, *SHAPE)))
    with pytest.raises(FreekdError, match="the teacher is a TorchScript model") as error:
        method(name, model("tiny-cnn", 1), scripted)
    assert "\n" not in str(error.value)


def test_named_eager_layers_of_a_network_holding_a_torchscript_block_can_be_tapped() -> None:
    block = torch.jit.script(nn.Conv2d(4, 4, 3, padding=1))
    net = nn.Sequential(nn.Conv2d(1, 4, 3, padding=1), nn.ReLU(), block, nn.Flatten(),
                        nn.Linear(4 * 8 * 8, 10))  # fmt: skip
    teacher = teacher_of(net)
    fitnet = method("fitnet", model("tiny-cnn", 1), teacher, student_layers=["features.0"],
                    teacher_layers=["1"])  # fmt: skip
    assert fitnet.teacher_shapes == [(4, 8, 8)]
    with pytest.raises(FreekdError, match="layer '2' is TorchScript"):
        method("fitnet", model("tiny-cnn", 1), teacher, student_layers=["features.0"],
               teacher_layers=["2"])  # fmt: skip
    with pytest.raises(FreekdError, match="the teacher holds a TorchScript block"):
        method("fitnet", model("tiny-cnn", 1), teacher)


def test_a_combination_runs_each_network_once_and_keeps_the_terms(
    digits_train: ImageDataset,
) -> None:
    teacher = teacher_of(model("tiny-cnn", 0))
    student = model("tiny-cnn", 1)
    combo = method("kd+at+rkd", student, teacher, at={"weight": 10.0})
    calls = {"teacher": 0, "student": 0}
    teacher.register_forward_hook(lambda *_: calls.__setitem__("teacher", calls["teacher"] + 1))
    handle = student.register_forward_hook(
        lambda *_: calls.__setitem__("student", calls["student"] + 1)
    )
    output = combo.training_step(batch(digits_train))
    handle.remove()
    assert calls == {"teacher": 1, "student": 1}
    assert list(output.losses) == ["kd", "attention", "rkd_distance", "rkd_angle", "ce"]
    # Each part's term is the term it gives alone, and the cross-entropy is added once.
    alone = method("at", student, teacher, weight=10.0).training_step(batch(digits_train))
    assert torch.allclose(output.losses["attention"], alone.losses["attention"])
    assert output.losses["ce"].item() == pytest.approx(0.5 * alone.losses["ce"].item())
    # The networks are registered once: saved once, and the teacher never in the method state.
    names = [name for name, _ in combo.named_parameters()]
    assert not any(name.startswith("parts.") and ".student." in name for name in names)
    assert not any("teacher." in key for key in combo.state_dict() if key.startswith("parts."))


@pytest.mark.parametrize(
    ("name", "error"),
    [
        ("kd+nope", "unknown method 'nope'"),
        (
            "kd+",
            r"unknown method '' to combine; combinable: at, cc, crd, dkd, fitnet, irg, kd, "
            r"pkt, rkd, sp$",
        ),  # not dml or one, which cannot be combined
        ("kd+kd-at", "cannot be combined"),
        ("kd+kd", "two or more"),
    ],
)
def test_bad_combinations_are_named(name: str, error: str) -> None:
    from freekd.methods import CLASSIFIER_METHODS

    with pytest.raises((UnknownNameError, FreekdError), match=error):
        METHODS.get(name)
    with pytest.raises((UnknownNameError, FreekdError), match=error):  # what the commands use
        CLASSIFIER_METHODS.get(name)


@pytest.mark.parametrize(
    ("params", "error"),
    [
        ({"at": {"wieght": 5}}, "method at has no parameter 'wieght'; known: weight"),
        ({"at": 5}, "method.params.at must map"),
        ({"at": {"ce_weight": 1}}, "set the cross-entropy weight once"),
        ({"kd": {"temperature": "warm"}}, "method kd: temperature: expected a number, got 'warm'"),
        ({"kd": {"temperature": "nan"}}, "method kd: temperature: expected a finite number"),
    ],
)
def test_a_part_s_parameters_are_checked_in_one_line(params: dict[str, object], error: str) -> None:
    teacher = teacher_of(model("tiny-cnn", 0))
    with pytest.raises(FreekdError, match=error) as raised:
        method("kd+at", model("tiny-cnn", 1), teacher, **params)
    assert "\n" not in str(raised.value)


def test_a_part_s_parameters_are_read_as_numbers_in_the_config_itself() -> None:
    params = {"kd": {"temperature": "2e0"}, "at": {"weight": "500"}}  # as YAML hands them over
    combined = method("kd+at", model("tiny-cnn", 1), teacher_of(model("tiny-cnn", 0)), **params)
    assert combined.parts["kd"].temperature == 2.0
    assert params == {"kd": {"temperature": 2.0}, "at": {"weight": 500.0}}  # config.yaml's


def test_a_reused_module_is_refused_and_special_taps_can_be_named() -> None:
    class Reuses(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.a, self.b = nn.Conv2d(1, 4, 3, padding=1), nn.Conv2d(4, 4, 3, padding=1)
            self.act, self.fc = nn.ReLU(), nn.Linear(4 * 64, 10)

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return self.fc(self.act(self.b(self.act(self.a(x)))).flatten(1))  # type: ignore[no-any-return]

    teacher = teacher_of(model("tiny-cnn", 0))
    with pytest.raises(FreekdError, match="'act' runs 2 times"):
        method("sp", wrap(Reuses()), teacher, student_layers=["act"], teacher_layers=["features.2"])
    sp = method("sp", wrap(Reuses()), teacher, student_layers=["b", "@embedding"],
                teacher_layers=["@stage:4x4", "@embedding"])  # fmt: skip
    assert sp.student_shapes == [(4, 8, 8), (256,)]


def test_dkd_warms_up_over_its_share_of_the_run(digits_train: ImageDataset) -> None:
    teacher = teacher_of(model("tiny-cnn", 0))
    dkd = build_method(
        "dkd",
        MethodContext.for_teacher(model("mlp", 1), teacher, train_size=64, total_steps=100),
        {"warmup_fraction": 0.1},
    )
    full = method("dkd", model("mlp", 1), teacher, warmup_fraction=0)
    first = dkd.training_step(batch(digits_train)).losses["dkd"]
    reference = full.training_step(batch(digits_train)).losses["dkd"]
    assert first.item() == pytest.approx(reference.item() / 10)  # step 1 of 10
    assert int(dkd.steps) == 1  # a buffer: saved with the method, so a resume continues the ramp


def test_crd_queue_is_constant_memory_fifo_and_masks_own_examples_and_class() -> None:
    queue = EmbeddingQueue(size=4, dim=2)
    queue.push(torch.ones(3, 2), torch.tensor([0, 1, 2]), torch.tensor([10, 11, 12]))
    queue.push(2 * torch.ones(3, 2), torch.tensor([3, 4, 5]), torch.tensor([13, 14, 15]))
    assert queue.labels.tolist() == [4, 5, 2, 3]  # the two oldest were overwritten
    assert int(queue.position) == 2
    # Under bfloat16 autocast the embeddings arrive in bfloat16 (index_put refused the mix).
    mixed = EmbeddingQueue(size=4, dim=2)
    mixed.push(torch.ones(1, 2, dtype=torch.bfloat16), None, None)
    assert mixed.embeddings.dtype == torch.float32
    assert mixed.embeddings[0].tolist() == [1.0, 1.0]
    current = Batch(torch.zeros(2, *SHAPE), torch.tensor([3, 9]), indices=torch.tensor([14, 99]))
    mask = negatives_mask(queue, current, label_aware=True)
    # Anchor 0 (class 3, example 14): not example 14, not class 3; anchor 1 keeps all four.
    assert mask[0, :4].tolist() == [False, True, True, False]
    assert mask[1, :4].tolist() == [True, True, True, True]
    assert mask[:, 4:].tolist() == [[False, True], [True, False]]
    teacher = teacher_of(model("tiny-cnn", 0))
    small = method("crd", model("mlp", 1), teacher, queue_size=128)
    large = build_method(
        "crd",
        MethodContext.for_teacher(model("mlp", 1), teacher, train_size=60_000),
        {"queue_size": 128},
    )
    assert [t.shape for t in small.buffers()] == [t.shape for t in large.buffers()]
    with pytest.raises(ValueError, match=r"order in \[0, 20\], got 0.4, 200"):
        method("cc", model("mlp", 1), teacher, order=200)  # overflowed mid-run
    with pytest.raises(FreekdError, match=r"crd's queues \(10,000,000,000 × 128\) would hold"):
        method("crd", model("mlp", 1), teacher, queue_size=10**10)  # refused, not allocated


def test_adapters_train_with_the_student_but_are_not_saved(
    tmp_path: Path, tiny_teacher_path: Path
) -> None:
    run = freekd.distill(
        teacher=tiny_teacher_path, student="tiny-cnn", data="digits", method="kd+fitnet+crd",
        trainer=tiny_trainer(epochs=1).__dict__, out=tmp_path / "s", device="cpu", quiet=True,
    )  # fmt: skip
    saved = torch.load(run.out / "model.pt", weights_only=True)["state_dict"]
    assert set(saved) == set(model("tiny-cnn").net.state_dict())
    assert {"loss/kd", "loss/hint", "loss/crd", "loss/ce"} <= set(
        (run.out / "metrics.jsonl").read_text().split("\n")[0].split('"')
    )


@pytest.mark.parametrize("name", ["fitnet", "crd", "dkd"])
def test_resume_is_exact_for_methods_with_state(
    name: str, tmp_path: Path, tiny_teacher_path: Path
) -> None:
    common = {
        "teacher": tiny_teacher_path, "student": "tiny-cnn", "data": "digits", "method": name,
        "device": "cpu", "quiet": True,
    }  # fmt: skip
    trainer = {**tiny_trainer().__dict__, "scheduler": "constant"}
    if name == "dkd":  # its warm-up is a share of the planned run, which the resume extends
        common["overrides"] = ["method.params.warmup_fraction=0"]
    straight = freekd.distill(**common, trainer={**trainer, "epochs": 2}, out=tmp_path / "a")
    freekd.distill(**common, trainer={**trainer, "epochs": 1}, out=tmp_path / "b")
    resumed = freekd.distill(
        **common, trainer={**trainer, "epochs": 2}, out=tmp_path / "b", resume=True
    )
    a = torch.load(straight.out / "model.pt", weights_only=True)["state_dict"]
    b = torch.load(resumed.out / "model.pt", weights_only=True)["state_dict"]
    for key, value in a.items():
        assert torch.equal(value, b[key]), key


def test_a_method_is_the_student_rule_of_datafree(tmp_path: Path, tiny_teacher_path: Path) -> None:
    run = freekd.datafree(
        teacher=tiny_teacher_path, student="tiny-cnn", method="deepinversion",
        overrides=["method.name=kd+at", "trainer.epochs=1", "steps_per_epoch=2"],
        out=tmp_path / "d", device="cpu", quiet=True,
    )  # fmt: skip
    lines = (run.out / "metrics.jsonl").read_text()
    assert '"loss/kd"' in lines
    assert '"loss/attention"' in lines


FAMILIES = ["dkd", "fitnet", "at", "rkd", "sp", "pkt", "cc", "irg", "crd"]


@pytest.mark.parametrize("name", FAMILIES)
def test_every_method_runs_through_the_cli_and_as_the_datafree_rule(
    name: str, tmp_path: Path, tiny_teacher_path: Path
) -> None:
    from typer.testing import CliRunner

    from freekd.cli import app

    result = CliRunner().invoke(
        app,
        ["distill", "--teacher", str(tiny_teacher_path), "--student", "tiny-cnn", "--dataset",
         "digits", "--method", name, "--epochs", "1", "--batch-size", "64", "--device", "cpu",
         "--quiet", "--out", str(tmp_path / "d")],
    )  # fmt: skip
    assert result.exit_code == 0, result.output
    assert (tmp_path / "d" / "model.pt").is_file()
    run = freekd.datafree(
        teacher=tiny_teacher_path, student="tiny-cnn", method="deepinversion",
        overrides=[f"method.name={name}", "trainer.epochs=1", "steps_per_epoch=1"],
        out=tmp_path / "f", device="cpu", quiet=True,
    )  # fmt: skip
    assert run.report["student"]["arch"] == "tiny-cnn"


def test_a_bad_layer_name_exits_2_in_one_line(tmp_path: Path, tiny_teacher_path: Path) -> None:
    from typer.testing import CliRunner

    from freekd.cli import app

    result = CliRunner().invoke(
        app,
        ["distill", "--teacher", str(tiny_teacher_path), "--student", "tiny-cnn", "--dataset",
         "digits", "--method", "kd+fitnet", "--set", "method.params.fitnet.student_layers=[layer9]",
         "--set", "method.params.fitnet.teacher_layers=[features.0]", "--out", str(tmp_path / "d")],
    )  # fmt: skip
    assert result.exit_code == 2
    lines = [line for line in result.output.splitlines() if line.strip()]
    assert len(lines) == 1
    assert "no layer 'layer9'" in lines[0]
    assert "features" in lines[0]
