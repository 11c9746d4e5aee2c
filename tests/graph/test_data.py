"""Reading the Planetoid files: the published counts, the restricted unpickler, the splits."""

from __future__ import annotations

import os
import pickle
import shutil
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch

from freekd.errors import FreekdError
from freekd.graph import data as data_module
from freekd.graph.data import (
    GraphData,
    check_held_out,
    inductive_held_out,
    load_planetoid,
    make_split,
)
from tests.graph.conftest import ROOT, needs_planetoid

pytestmark = needs_planetoid


def test_cora_and_citeseer_have_the_published_sizes(cora: GraphData) -> None:
    assert (cora.num_nodes, cora.num_features, cora.num_classes) == (2708, 1433, 7)
    assert cora.edge_index.shape == (2, 2 * 5278)
    assert (cora.train.numel(), cora.validation.numel(), cora.test.numel()) == (140, 500, 1000)
    assert torch.equal(cora.y[cora.train].bincount(), torch.full((7,), 20))
    citeseer = load_planetoid("citeseer")
    assert (citeseer.num_nodes, citeseer.num_features, citeseer.num_classes) == (3327, 3703, 6)
    assert citeseer.test.numel() == 1000
    # Undirected, no self-loops, no duplicates; rows normalised (CiteSeer's padded rows are 0).
    edges = {tuple(e) for e in cora.edge_index.T.tolist()}
    assert len(edges) == cora.edge_index.shape[1]
    assert all((b, a) in edges and a != b for a, b in edges)
    sums = citeseer.x.sum(1)
    assert torch.allclose(sums[sums > 0], torch.ones_like(sums[sums > 0]))
    # The splits are disjoint.
    ids = torch.cat([cora.train, cora.validation, cora.test])
    assert ids.unique().numel() == ids.numel()


def test_the_inductive_split_removes_every_edge_of_the_held_out_nodes(cora: GraphData) -> None:
    held_out = inductive_held_out(cora, 0.2, seed=3)
    assert held_out.numel() == 200
    assert torch.isin(held_out, cora.test).all()
    assert torch.equal(held_out, inductive_held_out(cora, 0.2, seed=3))
    assert not torch.equal(held_out, inductive_held_out(cora, 0.2, seed=4))
    split = make_split(cora, held_out)
    assert split.setting == "inductive"
    assert not torch.isin(split.train_edges, held_out).any()
    assert torch.equal(split.test, held_out)
    assert split.observed_test.numel() == 800
    transductive = make_split(cora, cora.test[:0])
    assert transductive.setting == "transductive"
    assert torch.equal(transductive.train_edges, cora.edge_index)
    with pytest.raises(FreekdError, match="not test nodes"):
        check_held_out(cora, cora.train[:3], source="x")


class _Shell:
    def __reduce__(self) -> tuple[object, tuple[str]]:
        return (os.system, ("echo pwned",))


def _copy(tmp_path: Path, name: str = "planetoid") -> Path:
    assert ROOT is not None
    folder = tmp_path / name
    shutil.copytree(ROOT / "Cora", folder / "Cora")
    return folder


def test_a_pickle_that_names_other_code_is_refused(tmp_path: Path) -> None:
    folder = _copy(tmp_path)
    target = next(folder.glob("Cora/**/ind.cora.graph"))
    target.chmod(0o644)
    target.write_bytes(pickle.dumps(_Shell(), protocol=2))
    with pytest.raises(FreekdError, match=r"ind\.cora\.graph is not a readable Planetoid file.*"
                       "refused global posix.system"):  # fmt: skip
        load_planetoid("cora", folder)


def test_missing_and_unknown_data_fail_in_one_line(tmp_path: Path) -> None:
    with pytest.raises(FreekdError, match="unknown graph data set 'pubmed'"):
        load_planetoid("pubmed")
    with pytest.raises(FreekdError, match="pass --data-root"):
        load_planetoid("cora", tmp_path)
    folder = _copy(tmp_path)
    next(folder.glob("Cora/**/ind.cora.tx")).unlink()
    with pytest.raises(FreekdError, match=r"missing Planetoid file .*ind\.cora\.tx"):
        load_planetoid("cora", folder)
    folder = _copy(tmp_path, "second")
    bad = next(folder.glob("Cora/**/ind.cora.test.index"))
    bad.chmod(0o644)
    bad.write_text("1\nnot-a-number\n")
    with pytest.raises(FreekdError, match="not a list of node ids"):
        load_planetoid("cora", folder)
    bad.write_text("2708\n2708\n")  # a test node counted twice was accepted
    with pytest.raises(FreekdError, match="names a node twice"):
        load_planetoid("cora", folder)


@pytest.mark.parametrize(
    ("part", "edit", "message"),
    [
        ("ally", lambda a: np.full(a.shape, np.nan), "NaN or infinite values"),
        ("allx", lambda a: np.where(a > 0, np.inf, a), "NaN or infinite values"),
        ("allx", lambda a: a.astype(np.complex64), "complex numbers"),
        ("y", lambda a: a[:, :1], "one-hot over the same two or more classes"),
        ("ally", lambda a: a + 1, "not one-hot"),
        ("y", lambda a: np.zeros_like(a), "training nodes without a label"),
    ],
    ids=[
        "NaN labels",
        "infinite features",
        "complex features",
        "one class",
        "two-hot",
        "unlabelled training nodes",
    ],  # fmt: skip
)
def test_files_with_values_no_planetoid_file_holds_are_refused(
    monkeypatch: pytest.MonkeyPatch, part: str, edit: Any, message: str
) -> None:
    # NaN labels trained a teacher reported at 100 % validation accuracy; one label column a
    # 1-class model at 100 %; NaN features a run blamed on the learning rate.
    read = data_module._read_pickle

    def edited(path: Path) -> Any:
        value = read(path)
        if path.name.endswith(f".{part}"):
            dense = value.dense() if hasattr(value, "dense") else value
            return edit(np.asarray(dense))
        return value

    monkeypatch.setattr(data_module, "_read_pickle", edited)
    with pytest.raises(FreekdError, match=f"does not hold valid Planetoid files.*{message}"):
        load_planetoid("cora")
