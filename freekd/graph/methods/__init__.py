"""The distillation rules of ``freekd graph``: one file per method, each registering itself in
:data:`GRAPH_METHODS` (``supervised`` trains teachers and baselines; ``kd``, ``glnn``, ``lsp``
distill)."""

from freekd.graph.methods import glnn, kd, lsp, supervised  # noqa: F401  (registration)
from freekd.graph.methods.base import GRAPH_METHODS, GraphMethod, GraphTargets, build_graph_method

__all__ = ["GRAPH_METHODS", "GraphMethod", "GraphTargets", "build_graph_method"]
