"""Graph tests read Cora and CiteSeer from the shared Planetoid folder; without it they skip."""

from __future__ import annotations

import pytest

from freekd.graph.data import GraphData, default_root, load_planetoid

ROOT = default_root()
needs_planetoid = pytest.mark.skipif(
    ROOT is None,
    reason="the Planetoid files (../shared/data/planetoid beside the project) are not here",
)


@pytest.fixture(scope="module")
def cora() -> GraphData:
    if ROOT is None:
        pytest.skip("the Planetoid files (../shared/data/planetoid) are not here")
    return load_planetoid("cora")
