"""The distillation rules of ``freekd graph``: one file per method, each registering itself in
:data:`GRAPH_METHODS` (``supervised`` trains teachers and baselines; ``kd``, ``glnn``, ``lsp``
distill). Every module but ``base`` is imported here, so a new method is one new file."""

from freekd.graph.methods.base import GRAPH_METHODS, GraphMethod, GraphTargets, build_graph_method
from freekd.registry import import_plugins

__all__ = ["GRAPH_METHODS", "GraphMethod", "GraphTargets", "build_graph_method"]

import_plugins(__name__, __path__, skip=("base",))
