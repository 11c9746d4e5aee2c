"""``GraphMethod``: a node classifier's training rule on one graph, run by the one Trainer.

A batch is a set of nodes (``Batch.indices``, their features in ``Batch.images`` and labels, -1
where a node has none). A graph-free student (MLP) reads the batch's features; a GNN student
runs on the whole training graph and its outputs at the batch's nodes are used. The teacher
is frozen and deterministic in eval mode, so its logits and embeddings on the training graph
are computed once, before training (:class:`GraphTargets`), as GLNN does.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, ClassVar

import torch
from torch import Tensor

from freekd.data.batch import Batch
from freekd.errors import FreekdError
from freekd.graph.models import GraphNetwork
from freekd.methods.base import Method
from freekd.registry import Registry

GRAPH = "graph"
"""``Method.distills`` of the node-classification methods (``freekd graph``)."""


@dataclass
class GraphTargets:
    """What a graph method needs besides its student.

    Attributes:
        x: (N, F) features of every node (held-out nodes included; they are never in a batch).
        edge_index: (2, E) the training graph (no edge touches a held-out node).
        logits: (N, K) the teacher's logits on the training graph, or ``None`` (no teacher).
        features: (N, H) the teacher's last hidden layer there, or ``None``.
    """

    x: Tensor
    edge_index: Tensor
    logits: Tensor | None = None
    features: Tensor | None = None


class GraphMethod(Method):
    """Base of the graph rules: the student, the graph and the teacher's targets as buffers
    (not saved: they are rebuilt from the data and the teacher on resume)."""

    distills: ClassVar[str] = GRAPH
    student: GraphNetwork
    x: Tensor
    edge_index: Tensor
    teacher_logits: Tensor | None
    teacher_features: Tensor | None
    needs_teacher: ClassVar[bool] = True
    #: Train on every observed node (GLNN's soft labels) rather than the labelled ones only.
    uses_all_nodes: ClassVar[bool] = False

    def __init__(self, student: GraphNetwork, targets: GraphTargets) -> None:
        super().__init__()
        self.student = student
        self.register_buffer("x", targets.x, persistent=False)
        self.register_buffer("edge_index", targets.edge_index, persistent=False)
        for name in ("logits", "features"):
            value = getattr(targets, name)
            self.register_buffer(f"teacher_{name}", value, persistent=False)

    def student_outputs(self, batch: Batch) -> tuple[Tensor, Tensor]:
        """The student's (hidden, logits) at the batch's nodes."""
        if self.student.needs_graph:
            hidden, logits = self.student.features(self.x, self.edge_index)
            return hidden[batch.indices], logits[batch.indices]
        return self.student.features(batch.images)


GRAPH_METHODS: Registry[type[GraphMethod]] = Registry("graph method")


def build_graph_method(
    name: str, student: GraphNetwork, targets: GraphTargets, params: dict[str, Any]
) -> GraphMethod:
    """The registered method ``name`` for ``student``; a parameter it does not take is refused
    in one line (each method checks its values' ranges)."""
    try:
        return GRAPH_METHODS.get(name)(student, targets, **params)
    except TypeError as error:
        raise FreekdError(f"graph method {name}: {error}; see docs/graph.md") from None


def number(name: str, value: object, *, low: float = 0.0, high: float = float("inf")) -> float:
    """A method parameter that must be a number in [low, high] (one-line error otherwise)."""
    if isinstance(value, bool) or not isinstance(value, int | float) or not low <= value <= high:
        span = f"[{low:g}, {high:g}]" if high != float("inf") else f"at least {low:g}"
        raise FreekdError(f"method parameter {name} must be a number {span}, got {value!r}")
    return float(value)


def labelled_cross_entropy(logits: Tensor, labels: Tensor) -> Tensor:
    """Mean CE over the nodes with a label (0 when there is none)."""
    labelled = labels >= 0
    if not labelled.any():
        return logits.sum() * 0.0
    return torch.nn.functional.cross_entropy(logits[labelled], labels[labelled])
