"""The best-epoch choice: what it keeps, what it restores on resume, what it refuses."""

from __future__ import annotations

from types import SimpleNamespace
from typing import Any

import pytest
import torch

from freekd.graph.models import build_graph_model
from freekd.graph.training import KeepBest
from freekd.train.trainer import TrainState


def _trainer(student: torch.nn.Module) -> Any:
    return SimpleNamespace(unwrapped=lambda name="student": student)


def test_the_best_epoch_survives_a_resume_and_is_what_the_fit_ends_with() -> None:
    torch.manual_seed(0)
    student = build_graph_model("mlp", in_features=4, num_classes=2)
    scores = iter([0.5, 0.9, 0.6])
    keep = KeepBest(lambda network: next(scores), student)
    state = TrainState()
    snapshots = []
    for epoch in range(3):
        with torch.no_grad():
            for parameter in student.parameters():
                parameter.add_(1.0)  # every epoch changes the weights
        snapshots.append({k: v.clone() for k, v in student.state_dict().items()})
        state.epoch = epoch
        keep.on_epoch_end(_trainer(student), state)
    assert keep.best_epoch == 1
    resumed = KeepBest(lambda network: 0.0, student)
    resumed.load_state_dict(keep.state_dict())
    resumed.on_fit_end(_trainer(student), state)
    for key, value in student.state_dict().items():
        assert torch.equal(value, snapshots[1][key])
    assert state.metrics["eval_accuracy"] == 0.9


def test_a_resumed_best_state_that_does_not_fit_is_refused() -> None:
    student = build_graph_model("mlp", in_features=4, num_classes=2)
    other = build_graph_model("mlp", in_features=5, num_classes=2)
    keep = KeepBest(lambda network: 0.0, student)
    with pytest.raises(ValueError, match="do not fit"):
        keep.load_state_dict({"accuracy": 1.0, "epoch": 0, "state": other.state_dict()})
    with pytest.raises(ValueError, match="not a state dict"):
        keep.load_state_dict({"accuracy": 1.0, "epoch": 0, "state": "junk"})
