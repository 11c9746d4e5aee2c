"""SaveModel: each trained network of a run is written by its own callback."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from freekd.checkpoint import check_checkpoint, checkpoint_dict, read_checkpoint
from freekd.data import Batch, ImageDataset
from freekd.methods.base import Method, StepOutput
from freekd.models import ImageClassifier, build_model
from freekd.seeding import seed_everything
from freekd.train import LoaderSource, SaveModel, Trainer, TrainState
from freekd.train.optim import make_optimizer
from tests.conftest import tiny_trainer


class TwoStudents(Method):
    """Two networks trained side by side on the same labelled batches (online KD's shape)."""

    def __init__(self, student: nn.Module, peer: nn.Module) -> None:
        super().__init__()
        self.student = student
        self.peer = peer

    def training_step(self, batch: Batch) -> StepOutput:
        assert batch.labels is not None
        logits = self.student(batch.images)
        peer_logits = self.peer(batch.images)
        losses = {
            "ce": F.cross_entropy(logits, batch.labels),
            "peer_ce": F.cross_entropy(peer_logits, batch.labels),
        }
        return StepOutput(losses, logits=logits)

    def distributed_modules(self) -> list[str]:
        return ["student", "peer"]


def classifier(arch: str, data: ImageDataset) -> ImageClassifier:
    net = build_model(arch, num_classes=10, input_shape=data.input_shape)
    return ImageClassifier(
        net,
        arch=arch,
        arch_kwargs={},
        num_classes=10,
        input_shape=data.input_shape,
        mean=[0.3],
        std=[0.4],
    )


def cpu_trainer(method: Method, callbacks: list[SaveModel]) -> Trainer:
    config = tiny_trainer(epochs=1)
    optimizer = make_optimizer(method.trainable_parameters(), config)
    return Trainer(
        method, optimizer, config=config, device=torch.device("cpu"), callbacks=callbacks
    )


def fit(method: Method, data: ImageDataset, callbacks: list[SaveModel]) -> TrainState:
    """Three steps on digits."""
    source = LoaderSource(data, batch_size=64, seed=0, max_steps_per_epoch=3)
    return cpu_trainer(method, callbacks).fit(source)


def test_two_networks_are_saved_by_two_callbacks(
    digits_train: ImageDataset, tmp_path: Path
) -> None:
    seed_everything(0)
    method = TwoStudents(classifier("tiny-cnn", digits_train), classifier("mlp", digits_train))
    config = {"run": "two students"}
    record = {"epsilon": 3.0, "delta": 1e-5, "note": "a record only the peer's file carries"}
    savers = [
        SaveModel(tmp_path / "student.pt", config=config),
        SaveModel(tmp_path / "peer.pt", config=config, module="peer", privacy=lambda _: record),
    ]
    state = fit(method, digits_train, savers)
    assert state.step == 3

    for name, module in (("student", method.student), ("peer", method.peer)):
        data = read_checkpoint(tmp_path / f"{name}.pt")
        assert check_checkpoint(data, source=name)  # the weights match their weights_sha256
        expected = checkpoint_dict(
            module, config=config, privacy=record if name == "peer" else None
        )
        assert data.keys() == expected.keys()
        assert data["arch"] == module.arch
        assert data["config"] == config
        for key, value in expected["state_dict"].items():
            assert torch.equal(data["state_dict"][key], value), (name, key)
    assert "privacy" not in read_checkpoint(tmp_path / "student.pt")
    assert read_checkpoint(tmp_path / "peer.pt")["privacy"] == record


def test_another_format_is_written_by_write_and_a_module_function(
    digits_train: ImageDataset, tmp_path: Path
) -> None:
    """An ensemble of the two students is no ImageClassifier: ``write`` saves it."""
    seed_everything(0)
    method = TwoStudents(classifier("tiny-cnn", digits_train), classifier("tiny-cnn", digits_train))
    written: list[tuple[Path, nn.Module, dict[str, object]]] = []

    def write(path: Path, module: nn.Module, *, config: dict[str, object]) -> None:
        written.append((path, module, config))

    def both(trainer: Trainer) -> nn.Module:
        return nn.ModuleList([trainer.unwrapped("student"), trainer.unwrapped("peer")])

    saver = SaveModel(tmp_path / "ensemble.pt", config={"k": 2}, module=both, write=write)
    fit(method, digits_train, [saver])
    [(path, module, config)] = written
    assert path == tmp_path / "ensemble.pt"
    assert config == {"k": 2}
    assert isinstance(module, nn.ModuleList)
    assert module[0] is method.student
    assert module[1] is method.peer

    unwritable = SaveModel(tmp_path / "x.pt", config={}, module=both)
    with pytest.raises(TypeError, match="pass write= to save another format"):
        unwritable.on_fit_end(cpu_trainer(method, [unwritable]), TrainState())
