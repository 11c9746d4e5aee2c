"""Graph networks and their checkpoint: shapes, the round trip, damaged and hostile files."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from freekd.checkpoint import load_any_model, load_model
from freekd.errors import FreekdError
from freekd.graph.models import GRAPH_MODELS, build_graph_model, save_graph_model
from tests.conftest import assert_same_weights

X = torch.rand(5, 8)
EDGES = torch.tensor([[0, 1, 1, 2, 3, 4], [1, 0, 2, 1, 4, 3]])
RECORD = {"dataset": "cora", "num_nodes": 5, "setting": "transductive",
          "held_out": torch.zeros(0, dtype=torch.int64)}  # fmt: skip


@pytest.mark.parametrize("arch", GRAPH_MODELS.names())
def test_every_architecture_maps_nodes_to_logits_and_round_trips(arch: str, tmp_path: Path) -> None:
    torch.manual_seed(0)
    network = build_graph_model(arch, in_features=8, num_classes=3).eval()
    hidden, logits = network.features(X, EDGES)
    assert logits.shape == (5, 3)
    assert hidden.shape[0] == 5
    save_graph_model(tmp_path / "m.pt", network, graph=RECORD, config={})
    loaded = load_any_model(tmp_path / "m.pt")
    assert type(loaded) is type(network)
    assert loaded.arch == arch
    assert torch.equal(loaded(X, EDGES), network(X, EDGES))


def test_a_gnn_without_its_graph_says_so() -> None:
    with pytest.raises(FreekdError, match="pass the graph"):
        build_graph_model("gcn", in_features=8, num_classes=3)(X)


def test_damaged_fields_and_weights_are_refused(tmp_path: Path) -> None:
    network = build_graph_model("mlp", in_features=8, num_classes=3)
    path = tmp_path / "m.pt"
    save_graph_model(path, network, graph=RECORD, config={})
    data = torch.load(path, weights_only=True)
    cases = {
        "arch_kwargs": {**data, "arch_kwargs": {"hidden": "os.system"}},
        "weights": {**data, "state_dict": {k: v + 1 for k, v in data["state_dict"].items()}},
        "graph": {**data, "graph": {**RECORD, "setting": "../../etc"}},
        "num_classes": {**data, "num_classes": -1},
        "import": {**data, "arch": "package.module:Class"},
        "unchecked": {k: v for k, v in data.items() if k != "weights_sha256"},
        "huge": {**data, "arch_kwargs": {"hidden": 60_000}},
        "bool": {**data, "arch_kwargs": {"hidden": True}},
        "setting": {**data, "graph": {**RECORD, "held_out": torch.tensor([1, 2])}},
        "nodes": {**data, "graph": {**RECORD, "num_nodes": "abc"}},
    }
    for name, bad in cases.items():
        torch.save(bad, tmp_path / f"{name}.pt")
        with pytest.raises(FreekdError):
            load_any_model(tmp_path / f"{name}.pt")
    with pytest.raises(FreekdError, match="unknown graph architecture"):
        build_graph_model("gat", in_features=8, num_classes=3)
    with pytest.raises(FreekdError, match="unexpected keyword"):
        build_graph_model("gcn", in_features=8, num_classes=3, arch_kwargs={"heads": 2})


def test_image_commands_refuse_a_graph_checkpoint_in_one_line(tmp_path: Path) -> None:
    network = build_graph_model("mlp", in_features=8, num_classes=3)
    save_graph_model(tmp_path / "m.pt", network, graph=RECORD, config={})
    with pytest.raises(FreekdError, match="is a graph checkpoint"):
        load_model(tmp_path / "m.pt")


@pytest.mark.parametrize("arch", GRAPH_MODELS.names())
def test_sizes_are_checked_on_the_meta_device_without_changing_the_weights(arch: str) -> None:
    factory = GRAPH_MODELS.get(arch)
    torch.manual_seed(1)
    plain = factory(8, 3)
    torch.manual_seed(1)
    checked = build_graph_model(arch, in_features=8, num_classes=3)
    assert_same_weights(plain, checked)
    huge = {"hidden": 65_536, "layers": 16}  # within each keyword's range, 240+ GB in all
    with pytest.raises(FreekdError, match="weights would hold .* GB, more than this process"):
        build_graph_model(arch, in_features=60_000, num_classes=3, arch_kwargs=huge)
