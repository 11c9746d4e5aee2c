"""Self-describing checkpoints (DESIGN.md, "Checkpoint format"): keys, weights-only loading,
``freekd.load_model``, students as teachers, unwrapped keys, atomic saving."""

from __future__ import annotations

import json
import pickle
from collections.abc import Iterator
from pathlib import Path

import pytest
import torch
from torch import Tensor

import freekd
from freekd.checkpoint import load_model, read_checkpoint, save_checkpoint
from freekd.config import TeacherSourceConfig, from_dict, to_dict
from freekd.data import ImageDataset
from freekd.distill.config import DistillConfig
from freekd.distill.pipeline import run_distill
from freekd.errors import FreekdError
from freekd.methods import Supervised
from freekd.models import ImageClassifier, build_model
from freekd.runs import RunOptions
from freekd.seeding import seed_everything
from freekd.supervised.config import TeacherTrainConfig
from freekd.train import LoaderSource, Trainer, evaluate, make_optimizer
from tests.conftest import tiny_trainer

DESIGN_KEYS = {
    "format",
    "arch",
    "arch_kwargs",
    "num_classes",
    "input",
    "state_dict",
    "config",
    "weights_sha256",
    "freekd_version",
}


@pytest.fixture(autouse=True)
def single_thread() -> Iterator[None]:
    """Tiny models on a shared 2-core box: intra-op threads only oversubscribe the cores."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture
def images(digits_test: ImageDataset) -> Tensor:
    return digits_test.batch(torch.arange(64)).images.float()


def classifier(arch: str = "tiny-cnn", **arch_kwargs: object) -> ImageClassifier:
    net = build_model(arch, num_classes=10, input_shape=(1, 8, 8), arch_kwargs=dict(arch_kwargs))
    return ImageClassifier(
        net,
        arch=arch,
        arch_kwargs=dict(arch_kwargs),
        num_classes=10,
        input_shape=(1, 8, 8),
        mean=[0.3],
        std=[0.37],
    )


def trained_classifier(data: ImageDataset) -> ImageClassifier:
    """A tiny-cnn after one real epoch on digits (its BatchNorm statistics have moved)."""
    seed_everything(0)
    model = classifier(channels=[8, 16])
    method = Supervised(model)
    config = tiny_trainer(epochs=1)
    trainer = Trainer(
        method,
        make_optimizer(method.trainable_parameters(), config),
        config=config,
        device=torch.device("cpu"),
    )
    trainer.fit(LoaderSource(data, batch_size=config.batch_size, seed=0))
    return model.eval()


def test_checkpoint_holds_exactly_the_design_keys(tiny_teacher_path: Path) -> None:
    data = torch.load(tiny_teacher_path, map_location="cpu", weights_only=True)

    assert set(data) == DESIGN_KEYS
    assert data["format"] == "freekd/1"
    assert data["arch"] == "tiny-cnn"
    assert data["arch_kwargs"] == {}
    assert data["num_classes"] == 10
    assert set(data["input"]) == {"shape", "mean", "std"}
    assert data["input"]["shape"] == [1, 8, 8]
    assert len(data["input"]["mean"]) == len(data["input"]["std"]) == 1
    assert 0 < data["input"]["std"][0] < 1
    assert data["freekd_version"] == freekd.__version__
    assert all(isinstance(value, Tensor) for value in data["state_dict"].values())
    # The resolved run config, plain data that rebuilds the command's config.
    config = from_dict(TeacherTrainConfig, data["config"])
    assert (config.dataset, config.arch, config.trainer.epochs) == ("digits", "tiny-cnn", 15)


def test_saved_keys_are_the_bare_networks(tiny_teacher_path: Path) -> None:
    data = torch.load(tiny_teacher_path, map_location="cpu", weights_only=True)
    bare = build_model("tiny-cnn", num_classes=10, input_shape=(1, 8, 8)).state_dict()

    assert list(data["state_dict"]) == list(bare)
    assert not any(key.startswith(("module.", "_orig_mod.", "net.")) for key in data["state_dict"])


def test_load_model_predicts_like_the_trained_model(
    digits_train: ImageDataset, images: Tensor, tmp_path: Path
) -> None:
    model = trained_classifier(digits_train)
    path = tmp_path / "model.pt"
    save_checkpoint(path, model, config={"note": "test"})

    loaded = freekd.load_model(str(path))

    assert isinstance(loaded, ImageClassifier)
    assert not any(module.training for module in loaded.modules())
    assert loaded.arch_kwargs == {"channels": [8, 16]}
    assert read_checkpoint(path)["config"] == {"note": "test"}
    with torch.no_grad():
        expected = model(images)
        assert torch.equal(loaded(images), expected)
        # It takes [0, 1] images: the normalization is inside.
        assert torch.equal(loaded.net((images - 0.3) / 0.37), expected)


def test_loaded_checkpoint_reproduces_the_reported_accuracy(
    tiny_teacher_dir: Path, digits_test: ImageDataset
) -> None:
    report = json.loads((tiny_teacher_dir / "report.json").read_text())

    model = load_model(tiny_teacher_dir / "model.pt")

    assert evaluate(model, digits_test, device=torch.device("cpu"))["accuracy"] == pytest.approx(
        report["test_accuracy"], abs=1e-12
    )


def test_student_checkpoint_is_the_next_runs_teacher(
    tiny_teacher_path: Path, tmp_path: Path
) -> None:
    def distill(teacher: Path, out: Path, student: str) -> dict:
        config = DistillConfig(
            teacher=TeacherSourceConfig(path=str(teacher)),
            student=student,
            dataset="digits",
            trainer=tiny_trainer(epochs=1),
        )
        return run_distill(config, RunOptions(out, quiet=True))

    first = distill(tiny_teacher_path, tmp_path / "first", "mlp")
    second = distill(tmp_path / "first" / "model.pt", tmp_path / "second", "tiny-cnn-nobn")

    assert second["teacher"]["kind"] == "freekd checkpoint"
    assert second["teacher"]["arch"] == "mlp"
    assert second["teacher"]["test_accuracy"] == first["student"]["test_accuracy"]
    student = read_checkpoint(tmp_path / "second" / "model.pt")
    assert student["arch"] == "tiny-cnn-nobn"
    assert student["config"]["teacher"]["path"] == str(tmp_path / "first" / "model.pt")


def test_wrapped_networks_are_saved_without_prefixes(images: Tensor, tmp_path: Path) -> None:
    expected_keys = list(classifier().net.state_dict())
    compiled = classifier()
    compiled.net = torch.compile(compiled.net)  # wraps lazily: keys get "_orig_mod."
    assert all(key.startswith("_orig_mod.") for key in compiled.net.state_dict())

    save_checkpoint(tmp_path / "compiled.pt", compiled, config={})

    data = torch.load(tmp_path / "compiled.pt", weights_only=True)
    assert list(data["state_dict"]) == expected_keys
    original = compiled.net._orig_mod.eval()
    with torch.no_grad():
        assert torch.equal(
            load_model(tmp_path / "compiled.pt")(images), original((images - 0.3) / 0.37)
        )


def test_data_parallel_wrapped_network_is_saved_without_prefixes(tmp_path: Path) -> None:
    import torch.distributed as dist
    from torch.nn.parallel import DistributedDataParallel

    if dist.is_initialized():
        pytest.skip("a process group is already running in this process")
    model = classifier()
    dist.init_process_group(
        "gloo", init_method=f"file://{tmp_path / 'store'}", rank=0, world_size=1
    )
    try:
        model.net = DistributedDataParallel(model.net)
        assert all(key.startswith("module.") for key in model.net.state_dict())
        save_checkpoint(tmp_path / "ddp.pt", model, config={})
    finally:
        dist.destroy_process_group()

    data = torch.load(tmp_path / "ddp.pt", weights_only=True)
    assert list(data["state_dict"]) == list(classifier().net.state_dict())


def test_saving_is_atomic(tmp_path: Path) -> None:
    path = tmp_path / "model.pt"
    save_checkpoint(path, classifier(), config={})
    saved = path.read_bytes()

    assert [entry.name for entry in tmp_path.iterdir()] == ["model.pt"]

    # A save that fails half-way (the config cannot be pickled) leaves the old file untouched
    # and no temporary file behind.
    with pytest.raises((pickle.PicklingError, AttributeError)):
        save_checkpoint(path, classifier(), config={"callback": lambda: None})

    assert [entry.name for entry in tmp_path.iterdir()] == ["model.pt"]
    assert path.read_bytes() == saved
    assert load_model(path).num_classes == 10


def test_run_folder_holds_no_temporary_files(tiny_teacher_dir: Path) -> None:
    names = sorted(entry.name for entry in tiny_teacher_dir.iterdir())

    assert not [name for name in names if name.startswith(".") or name.endswith(".tmp")], names
    assert "model.pt" in names


@pytest.mark.filterwarnings("ignore:`torch.jit.*` is deprecated:FutureWarning")
def test_load_model_refuses_what_is_no_freekd_checkpoint(tmp_path: Path) -> None:
    model = classifier()
    torch.save(model.net.state_dict(), tmp_path / "state_dict.pt")
    # Traced, not scripted: scripting Conv2d failed once in a full CI run ("builtin cannot be
    # used as a value" at F.pad) after passing in tests/teachers; a traced file is just as
    # much a TorchScript file for what this test checks.
    torch.jit.trace(model.net.eval(), torch.rand(2, 1, 8, 8)).save(str(tmp_path / "script.pt"))
    save_checkpoint(tmp_path / "full.pt", model, config=to_dict(TeacherTrainConfig()))
    data = torch.load(tmp_path / "full.pt", weights_only=True)
    del data["state_dict"]
    torch.save(data, tmp_path / "damaged.pt")

    for name, needle in [
        ("state_dict.pt", "not a freekd checkpoint"),
        ("script.pt", "TorchScript"),
        ("damaged.pt", "missing state_dict"),
    ]:
        with pytest.raises(FreekdError, match=needle) as caught:
            load_model(tmp_path / name)
        assert "\n" not in str(caught.value)


def test_a_device_that_is_no_device_is_one_line(tiny_teacher_path: Path) -> None:
    # load_model(path, device="os:system") raised torch's bare RuntimeError.
    with pytest.raises(FreekdError, match="'os:system' is not a device; use cpu, cuda"):
        freekd.load_model(tiny_teacher_path, device="os:system")
