"""Graph networks (GCN, GraphSAGE, MLP) and their checkpoint format.

Every network maps node features (N, F), and for a GNN the graph (a (2, E) ``edge_index``), to
(N, K) logits; ``features`` also returns the last hidden layer (what LSP and GLNN's embedding
term compare). The graph layers are PyTorch Geometric's (``GCNConv``, ``SAGEConv``).

A graph ``model.pt`` is a mapping of tensors and plain values (``torch.load(weights_only=True)``)::

    {"format": "freekd-graph/1", "arch": NAME, "arch_kwargs": {...}, "in_features": F,
     "num_classes": K, "graph": {"dataset": "cora", "num_nodes": N, "setting": ...,
     "held_out": LongTensor}, "state_dict": {...}, "weights_sha256": "...", "config": {...},
     "freekd_version": "..."}

``arch`` must be a registered name (:data:`GRAPH_MODELS`): a graph checkpoint never names code
to import, and there is no flag that lets it.
"""

from __future__ import annotations

import warnings
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from freekd import __version__
from freekd.checkpoint import (
    check_mapping,
    check_positive_int,
    check_required,
    check_state_dict,
    check_weight_shapes,
    damaged,
    load_state_dict_checked,
    safe_torch_load,
    verify_weights,
    weights_checksum,
)
from freekd.errors import FreekdError
from freekd.io import atomic_write
from freekd.models import build_within_memory
from freekd.registry import Registry

GRAPH_FORMAT = "freekd-graph/1"
GRAPH_MODELS: Registry[Callable[..., GraphNetwork]] = Registry("graph architecture")
REQUIRED = ("format", "arch", "arch_kwargs", "in_features", "num_classes", "graph", "state_dict")


class GraphNetwork(nn.Module):
    """A node classifier: ``forward(x, edge_index)`` → (N, K) logits.

    Attributes:
        needs_graph: whether the network reads ``edge_index`` (a GNN) or only features (an MLP).
        arch, arch_kwargs, in_features, num_classes: what rebuilds it (the checkpoint's fields).
    """

    needs_graph: bool = True

    def __init__(self, arch: str, arch_kwargs: dict[str, Any], in_features: int, classes: int):
        super().__init__()
        self.arch, self.arch_kwargs = arch, dict(arch_kwargs)
        self.in_features, self.num_classes = in_features, classes

    def features(self, x: Tensor, edge_index: Tensor | None = None) -> tuple[Tensor, Tensor]:
        """(N, H) last hidden layer (after its activation) and (N, K) logits."""
        raise NotImplementedError

    def forward(self, x: Tensor, edge_index: Tensor | None = None) -> Tensor:
        return self.features(x, edge_index)[1]

    def _drop(self, hidden: Tensor) -> Tensor:
        """Dropout while training; nothing at all in eval mode (no call on the serving path)."""
        dropout = float(getattr(self, "dropout", 0.0))
        return F.dropout(hidden, dropout, True) if self.training and dropout > 0 else hidden

    def graph_of(self, edge_index: Tensor | None) -> Tensor:
        if edge_index is None:
            raise FreekdError(f"{self.arch} is a graph network: pass the graph (edge_index)")
        return edge_index


class GNN(GraphNetwork):
    """``layers`` graph convolutions of width ``hidden`` with ReLU and dropout between them."""

    def __init__(
        self,
        arch: str,
        in_features: int,
        num_classes: int,
        *,
        conv: Callable[[int, int], nn.Module],
        hidden: int,
        layers: int,
        dropout: float,
    ) -> None:
        kwargs = {"hidden": hidden, "layers": layers, "dropout": dropout}
        super().__init__(arch, kwargs, in_features, num_classes)
        widths = [in_features] + [hidden] * (layers - 1) + [num_classes]
        self.convs = nn.ModuleList(conv(a, b) for a, b in zip(widths, widths[1:], strict=False))
        self.dropout = dropout

    def features(self, x: Tensor, edge_index: Tensor | None = None) -> tuple[Tensor, Tensor]:
        graph = self.graph_of(edge_index)
        hidden = x
        *body, head = self.convs  # unpacked: slicing a ModuleList builds a new one per call
        for conv in body:
            hidden = F.relu(conv(self._drop(hidden), graph))
        return hidden, head(self._drop(hidden), graph)


class MLP(GraphNetwork):
    """A graph-free student: ``layers`` linear layers on the node features alone."""

    needs_graph = False

    def __init__(
        self, in_features: int, num_classes: int, *, hidden: int, layers: int, dropout: float
    ) -> None:
        kwargs = {"hidden": hidden, "layers": layers, "dropout": dropout}
        super().__init__("mlp", kwargs, in_features, num_classes)
        widths = [in_features] + [hidden] * (layers - 1) + [num_classes]
        self.linears = nn.ModuleList(
            nn.Linear(a, b) for a, b in zip(widths, widths[1:], strict=False)
        )
        self.dropout = dropout

    def features(self, x: Tensor, edge_index: Tensor | None = None) -> tuple[Tensor, Tensor]:
        hidden = x
        *body, head = self.linears  # unpacked: slicing a ModuleList builds a new one per call
        for linear in body:
            hidden = F.relu(linear(self._drop(hidden)))
        return hidden, head(self._drop(hidden))


def _pyg_layer(name: str) -> Any:
    """A PyTorch Geometric layer class; its import's deprecation notice about
    ``torch.jit.script`` (PyG's, not the user's concern) is not shown."""
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", category=FutureWarning, message=".*torch.jit.script")
        import torch_geometric.nn as pyg_nn
    return getattr(pyg_nn, name)


MAX_WIDTH = 65_536
MAX_LAYERS = 16


def _is_int(value: object) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _check(hidden: int, layers: int, dropout: float) -> None:
    """The architecture keywords, checked before anything is allocated."""
    if not (_is_int(hidden) and 1 <= hidden <= MAX_WIDTH):
        raise FreekdError(f"hidden must be an integer in [1, {MAX_WIDTH}], got {hidden!r}")
    if not (_is_int(layers) and 2 <= layers <= MAX_LAYERS):
        raise FreekdError(f"layers must be an integer in [2, {MAX_LAYERS}], got {layers!r}")
    is_number = isinstance(dropout, int | float) and not isinstance(dropout, bool)
    if not (is_number and 0 <= dropout < 1):
        raise FreekdError(f"dropout must be a number in [0, 1), got {dropout!r}")


@GRAPH_MODELS.register("gcn")
def gcn(
    in_features: int, num_classes: int, *, hidden: int = 64, layers: int = 2, dropout: float = 0.5
) -> GraphNetwork:
    """GCN, Kipf & Welling (ICLR 2017) eq. 2: H' = σ(D̂^-½ Â D̂^-½ H W), Â = A + I; two
    layers and dropout 0.5 as in §5.2, 64 hidden units (the paper's 16 is ``gcn-small``)."""
    gcn_conv = _pyg_layer("GCNConv")
    _check(hidden, layers, dropout)
    return GNN(
        "gcn", in_features, num_classes, conv=gcn_conv, hidden=hidden, layers=layers,
        dropout=dropout,
    )  # fmt: skip


@GRAPH_MODELS.register("gcn-small")
def gcn_small(
    in_features: int, num_classes: int, *, hidden: int = 16, layers: int = 2, dropout: float = 0.5
) -> GraphNetwork:
    """The smaller GNN student: Kipf & Welling's own GCN size (16 hidden units, §5.2)."""
    network = gcn(in_features, num_classes, hidden=hidden, layers=layers, dropout=dropout)
    network.arch = "gcn-small"
    return network


@GRAPH_MODELS.register("sage")
def sage(
    in_features: int, num_classes: int, *, hidden: int = 128, layers: int = 2, dropout: float = 0.0
) -> GraphNetwork:
    """GraphSAGE-mean, Hamilton et al. (NeurIPS 2017) Alg. 1 with the mean aggregator:
    h' = σ(W · [h_v ‖ mean_{u∈N(v)} h_u]) over the full neighbourhood; 128 hidden units and no
    dropout, GLNN's teacher setting for Cora and CiteSeer."""
    sage_conv = _pyg_layer("SAGEConv")
    _check(hidden, layers, dropout)
    return GNN(
        "sage", in_features, num_classes, conv=lambda a, b: sage_conv(a, b, aggr="mean"),
        hidden=hidden, layers=layers, dropout=dropout,
    )  # fmt: skip


@GRAPH_MODELS.register("mlp")
def mlp(
    in_features: int, num_classes: int, *, hidden: int = 128, layers: int = 2, dropout: float = 0.6
) -> GraphNetwork:
    """The graph-free student of GLNN (Zhang et al. ICLR 2022, §4): an MLP on node features;
    two layers of 128 with dropout 0.6, GLNN's Cora setting."""
    _check(hidden, layers, dropout)
    return MLP(in_features, num_classes, hidden=hidden, layers=layers, dropout=dropout)


def build_graph_model(
    arch: str, *, in_features: int, num_classes: int, arch_kwargs: dict[str, Any] | None = None
) -> GraphNetwork:
    """The registered graph network ``arch`` (unknown names and keywords fail in one line)."""
    factory = GRAPH_MODELS.get(arch)
    kwargs = dict(arch_kwargs or {})
    for name, size in (("in_features", in_features), ("num_classes", num_classes)):
        if not (_is_int(size) and 1 <= size <= MAX_WIDTH):
            raise FreekdError(f"{name} must be an integer in [1, {MAX_WIDTH}], got {size!r}")
    try:
        return build_within_memory(
            lambda: factory(in_features, num_classes, **kwargs),
            f"graph network {arch} ({in_features} features, {num_classes} classes, {kwargs})",
            "lower hidden or layers (arch_kwargs, student_kwargs) or check the checkpoint",
        )
    except TypeError as error:
        raise FreekdError(f"graph architecture {arch}: {error}; see docs/graph.md") from None


def graph_checkpoint(
    network: GraphNetwork, *, graph: dict[str, Any], config: dict[str, Any]
) -> dict[str, Any]:
    """The ``freekd-graph/1`` mapping of ``network`` trained on ``graph``."""
    state = {k: v.detach().cpu().clone() for k, v in network.state_dict().items()}
    return {
        "format": GRAPH_FORMAT,
        "arch": network.arch,
        "arch_kwargs": dict(network.arch_kwargs),
        "in_features": network.in_features,
        "num_classes": network.num_classes,
        "graph": graph,
        "state_dict": state,
        "weights_sha256": weights_checksum(state),
        "config": config,
        "freekd_version": __version__,
    }


def save_graph_model(
    path: Path, network: GraphNetwork, *, graph: dict[str, Any], config: dict[str, Any]
) -> None:
    """Atomically write ``network`` as a graph checkpoint."""
    data = graph_checkpoint(network, graph=graph, config=config)
    atomic_write(Path(path), lambda stream: torch.save(data, stream))


def is_graph_checkpoint(data: Any) -> bool:
    return isinstance(data, dict) and data.get("format") == GRAPH_FORMAT


def read_graph_checkpoint(path: Path) -> dict[str, Any]:
    """A graph checkpoint's mapping, every field checked before use."""
    return checked_graph_mapping(safe_torch_load(Path(path)), path=Path(path))


def checked_graph_mapping(data: Any, *, path: Path) -> dict[str, Any]:
    """``data`` (a loaded file) if it is a valid graph checkpoint; else a one-line error."""
    if not is_graph_checkpoint(data):
        raise FreekdError(
            f"{path} is not a freekd graph checkpoint (no 'format': '{GRAPH_FORMAT}'); train "
            "one with freekd graph teacher"
        )
    source = f"checkpoint {path}"
    check_required(data, REQUIRED, source=source, kind="graph checkpoint")
    if not isinstance(data["arch"], str) or data["arch"] not in GRAPH_MODELS.names():
        raise damaged(source, "arch", data["arch"], f"one of {', '.join(GRAPH_MODELS.names())}")
    check_mapping(source, "arch_kwargs", data["arch_kwargs"])
    for key in ("in_features", "num_classes"):
        check_positive_int(source, key, data[key], "a positive integer")
    graph = data["graph"]
    check_mapping(source, "graph", graph)
    check_required(graph, ("dataset", "num_nodes", "setting", "held_out"), source=source,
                   kind="graph record")  # fmt: skip
    _check_graph_record(graph, source=source)
    check_state_dict(source, "state_dict", data["state_dict"])
    check_mapping(source, "config", data.get("config"), optional=True)
    if not verify_weights(data, source=source):  # every graph checkpoint carries its checksum
        raise FreekdError(
            f"{source} is damaged: weights_sha256 is missing; re-save it with freekd graph"
        )
    return data  # type: ignore[no-any-return]


def _check_graph_record(graph: dict[str, Any], *, source: str) -> None:
    """The ``graph`` record: a data set name, a node count, and held-out node ids that are
    present exactly when the setting is inductive."""
    if not isinstance(graph["dataset"], str):
        raise damaged(source, "graph.dataset", graph["dataset"], "a data set name")
    check_positive_int(source, "graph.num_nodes", graph["num_nodes"], "a positive integer")
    held_out = graph["held_out"]
    if not isinstance(held_out, torch.Tensor) or held_out.dtype != torch.int64:
        raise damaged(source, "graph.held_out", type(held_out).__name__, "int64 node ids")
    expected = "inductive" if held_out.numel() else "transductive"
    if graph["setting"] != expected:
        raise damaged(
            source, "graph.setting", graph["setting"], f"{expected!r} (its held-out nodes)"
        )


def graph_model_from_checkpoint(data: dict[str, Any], *, source: str) -> GraphNetwork:
    """The eval-mode network a checked graph checkpoint mapping describes."""
    kwargs = data["arch_kwargs"]
    if not all(isinstance(v, int | float) and not isinstance(v, bool) for v in kwargs.values()):
        raise damaged(source, "arch_kwargs", kwargs, "numbers")
    sizes = {"in_features": data["in_features"], "num_classes": data["num_classes"]}
    with torch.device("meta"):  # shapes first: a file must not make us allocate what it likes
        skeleton = build_graph_model(data["arch"], arch_kwargs=dict(kwargs), **sizes)
    fits = f"{sizes['in_features']} features and {sizes['num_classes']} classes"
    fits = f"{data['arch']} with {kwargs}, {fits}"
    check_weight_shapes(skeleton, data["state_dict"], source=source, fits=fits)
    network = build_graph_model(data["arch"], arch_kwargs=dict(kwargs), **sizes)
    load_state_dict_checked(network, data["state_dict"], arch=data["arch"], source=source)
    return network.eval()


def graph_model_from_mapping(data: Any, *, path: Path) -> GraphNetwork:
    """The eval-mode network of a loaded graph checkpoint, every field checked first."""
    checked = checked_graph_mapping(data, path=path)
    return graph_model_from_checkpoint(checked, source=f"checkpoint {path}")


def load_graph_model(path: str | Path, *, device: str = "cpu") -> GraphNetwork:
    """Load a graph checkpoint as an eval-mode module: ``model(x)`` for an MLP, ``model(x,
    edge_index)`` for a GNN (``model.needs_graph`` says which)."""
    data = read_graph_checkpoint(Path(path))
    return graph_model_from_checkpoint(data, source=f"checkpoint {path}").to(device)
