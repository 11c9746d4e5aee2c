"""Planetoid citation graphs (Cora, CiteSeer) read from the original files, and their splits.

The files are those of Yang, Cohen & Salakhutdinov (ICML 2016, "Revisiting Semi-Supervised
Learning with Graph Embeddings"): ``ind.NAME.{x,tx,allx,y,ty,ally,graph}`` are Python-2 pickles,
``ind.NAME.test.index`` is text. The pickles are read by :class:`_PlanetoidUnpickler`, which
allows exactly the six globals the files use (numpy arrays, a sparse-matrix record, a
``defaultdict`` and ``list``) and turns the sparse matrix into a plain record: no other class can
be built, whatever a file says. The public split is the Planetoid one (Kipf & Welling 2017, §5.1):
train = the first ``len(y)`` nodes (20 per class), validation = the next 500, test = the 1,000
nodes of ``test.index``; features are row-normalised, as Kipf & Welling's.

No package registry ships these graphs, so freekd reads them from a folder: by default
``../shared/data/planetoid`` beside the project (or the working directory), or
``$FREEKD_PLANETOID_ROOT``, or ``--data-root``.
"""

from __future__ import annotations

import os
import pickle
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import Tensor

from freekd.errors import FreekdError, UnknownNameError

#: Data set name (as ``--dataset`` spells it) → folder name under the root.
DATASETS = {"cora": "Cora", "citeseer": "CiteSeer"}
PARTS = ("x", "y", "tx", "ty", "allx", "ally", "graph")
VALIDATION_NODES = 500
#: Bounds on what a file may declare before anything is allocated (Planetoid's largest set,
#: PubMed, has 19,717 nodes; CiteSeer 3,703 features).
MAX_NODES = 1_000_000
MAX_FEATURES = 100_000
#: Where the shared copy lives, relative to the project root or to the working directory.
SHARED_ROOT = Path("..") / "shared" / "data" / "planetoid"
#: An environment variable that names the folder instead (a user's own copy).
ROOT_VARIABLE = "FREEKD_PLANETOID_ROOT"


@dataclass(frozen=True)
class GraphData:
    """One node-classification graph with its public split.

    Attributes:
        name: ``cora`` or ``citeseer``.
        x: (N, F) float32 node features (row-normalised).
        y: (N,) int64 labels.
        edge_index: (2, E) int64 directed edges, both directions of every undirected edge, no
            self-loops, no duplicates.
        train: (140,) / (120,) int64 ids of the labelled training nodes.
        validation: (500,) ids of the validation nodes.
        test: (1000,) ids of the test nodes.
    """

    name: str
    x: Tensor
    y: Tensor
    edge_index: Tensor
    train: Tensor
    validation: Tensor
    test: Tensor

    @property
    def num_nodes(self) -> int:
        return int(self.x.shape[0])

    @property
    def num_features(self) -> int:
        return int(self.x.shape[1])

    @property
    def num_classes(self) -> int:
        return int(self.y.max().item()) + 1


class _SparseRecord:
    """What a pickled ``scipy.sparse.csr_matrix`` becomes here: its fields, nothing callable."""

    def __setstate__(self, state: Any) -> None:
        self.state = state

    def dense(self) -> np.ndarray:
        state = self.state if isinstance(self.state, dict) else {}
        try:
            data, indices, indptr = state["data"], state["indices"], state["indptr"]
            rows, cols = (int(v) for v in state["_shape"])
        except (KeyError, TypeError, ValueError) as error:
            raise ValueError(f"a sparse matrix without its fields ({error})") from None
        if not (0 < rows <= MAX_NODES and 0 < cols <= MAX_FEATURES):
            raise ValueError(f"a sparse matrix of shape {rows} x {cols}")
        out = np.zeros((rows, cols), dtype=np.float32)
        counts: np.ndarray = np.diff(np.asarray(indptr, dtype=np.int64)).astype(np.int64)
        if counts.shape[0] != rows or counts.sum() != len(indices) or len(indices) != len(data):
            raise ValueError("a sparse matrix whose fields do not agree")
        rows_of = np.repeat(np.arange(rows), counts.tolist())
        out[rows_of, np.asarray(indices, dtype=np.int64)] = data
        return out


#: numpy's core package: ``numpy._core`` from numpy 2, ``numpy.core`` before.
_NUMPY_CORE: Any = getattr(np, "_core", None) or np.core

_ALLOWED: dict[tuple[str, str], Any] = {
    ("numpy", "ndarray"): np.ndarray,
    ("numpy", "dtype"): np.dtype,
    ("numpy.core.multiarray", "_reconstruct"): _NUMPY_CORE.multiarray._reconstruct,
    ("scipy.sparse.csr", "csr_matrix"): _SparseRecord,
    ("collections", "defaultdict"): lambda *_factory: {},  # the adjacency, as a plain dict
    ("__builtin__", "list"): list,
}


class _PlanetoidUnpickler(pickle.Unpickler):
    """Reads the Planetoid pickles and nothing else: any other global is refused."""

    def find_class(self, module: str, name: str) -> Any:
        try:
            return _ALLOWED[(module, name)]
        except KeyError:
            raise pickle.UnpicklingError(f"refused global {module}.{name}") from None


def default_root() -> Path | None:
    """The Planetoid folder, if present: ``$FREEKD_PLANETOID_ROOT``, else the shared copy
    beside the project, else beside the working directory."""
    if os.environ.get(ROOT_VARIABLE):
        return Path(os.environ[ROOT_VARIABLE])
    project = Path(__file__).resolve().parents[2]
    for base in (project, Path.cwd()):
        candidate = (base / SHARED_ROOT).resolve()
        if candidate.is_dir():
            return candidate
    return None


def load_planetoid(name: str, root: str | Path | None = None) -> GraphData:
    """Cora or CiteSeer with the public split, read from ``root`` (default: :func:`default_root`).

    Raises:
        FreekdError: an unknown name, a missing folder or file, or a file that is not a
            Planetoid file (one line naming it and the fix).
    """
    key = name.lower()
    if key not in DATASETS:
        raise UnknownNameError(
            f"unknown graph data set {name!r}; known: {', '.join(DATASETS)} (no other graph "
            "data set can be installed here)"
        )
    folder = _folder(key, root)
    parts = {part: _read_pickle(folder / f"ind.{key}.{part}") for part in PARTS}
    test_ids = _read_test_index(folder / f"ind.{key}.test.index")
    try:
        return _assemble(key, parts, test_ids)
    except (ValueError, IndexError, TypeError, AttributeError, OverflowError, MemoryError) as error:
        raise FreekdError(
            f"{folder} does not hold valid Planetoid files for {key} ({error}); restore them "
            "from the shared copy"
        ) from None


def _folder(key: str, root: str | Path | None) -> Path:
    base = Path(root) if root is not None else default_root()
    if base is None:
        raise FreekdError(
            f"no Planetoid data found at {SHARED_ROOT} beside the project or the working "
            f"directory; pass --data-root DIR (the folder that holds Cora/ and CiteSeer/) or set "
            f"{ROOT_VARIABLE}"
        )
    for folder in (base / DATASETS[key] / "raw", base / DATASETS[key], base):
        if (folder / f"ind.{key}.x").is_file():
            return folder
    raise FreekdError(
        f"no {DATASETS[key]} files (ind.{key}.x ...) under {base}; pass --data-root DIR, the "
        "folder that holds Cora/ and CiteSeer/"
    )


def _read_pickle(path: Path) -> Any:
    if not path.is_file():
        raise FreekdError(f"missing Planetoid file {path}; restore it from the shared copy")
    try:
        with path.open("rb") as stream:
            return _PlanetoidUnpickler(stream, encoding="latin1").load()
    except Exception as error:  # any unpickling failure of a hostile or damaged file
        raise FreekdError(
            f"{path} is not a readable Planetoid file ({type(error).__name__}: "
            f"{str(error).splitlines()[0] if str(error) else ''}); restore it from the shared copy"
        ) from None


def _read_test_index(path: Path) -> np.ndarray:
    if not path.is_file():
        raise FreekdError(f"missing Planetoid file {path}; restore it from the shared copy")
    try:
        ids = np.array([int(line) for line in path.read_text().split()], dtype=np.int64)
    except (ValueError, UnicodeDecodeError, OverflowError) as error:
        raise FreekdError(f"{path} is not a list of node ids ({error})") from None
    if len(np.unique(ids)) != len(ids):  # a test node counted twice
        raise FreekdError(f"{path} names a node twice; restore it from the shared copy")
    return ids


def _matrix(value: Any) -> np.ndarray:
    array = value.dense() if isinstance(value, _SparseRecord) else value
    if not isinstance(array, np.ndarray) or array.ndim != 2 or array.dtype == object:
        raise ValueError("a feature or label matrix that is not a 2-D numeric array")
    if np.iscomplexobj(array):
        raise ValueError("a feature or label matrix of complex numbers")
    matrix = np.asarray(array, dtype=np.float32)
    if not np.isfinite(matrix).all():
        raise ValueError("a feature or label matrix holding NaN or infinite values")
    return matrix


def _check_labels(y: np.ndarray, ty: np.ndarray, ally: np.ndarray) -> None:
    """One-hot rows over at least two classes; every training node labelled (a test node of
    CiteSeer without a row may be all zeros)."""
    if not y.shape[1] == ty.shape[1] == ally.shape[1] or y.shape[1] < 2:
        raise ValueError("label matrices that are not one-hot over the same two or more classes")
    for labels in (y, ty, ally):
        if not np.isin(labels, (0.0, 1.0)).all() or (labels.sum(1) > 1).any():
            raise ValueError("label rows that are not one-hot")
    if not (y.sum(1) == 1).all():
        raise ValueError("training nodes without a label")


def _assemble(key: str, parts: dict[str, Any], test_ids: np.ndarray) -> GraphData:
    """The Planetoid convention: test rows are stored sorted, the graph names them by id; CiteSeer
    has test ids with no row (isolated nodes), which get zero features and no label."""
    x, tx, allx = (_matrix(parts[p]) for p in ("x", "tx", "allx"))
    y, ty, ally = (_matrix(parts[p]) for p in ("y", "ty", "ally"))
    _check_labels(y, ty, ally)
    ordered = np.sort(test_ids)
    low, high = int(ordered[0]), int(ordered[-1])
    if len(tx) != len(test_ids) or low != len(allx):
        raise ValueError("test rows and test ids do not match")
    span = high - low + 1
    if not 0 < span <= 2 * len(tx) or len(y) + VALIDATION_NODES > len(allx) or len(y) == 0:
        raise ValueError("the split does not fit the rows (train, validation and test overlap)")
    tx_full = np.zeros((span, tx.shape[1]), np.float32)
    ty_full = np.zeros((span, ty.shape[1]), np.float32)
    tx_full[ordered - low], ty_full[ordered - low] = tx, ty
    features, labels = np.vstack([allx, tx_full]), np.vstack([ally, ty_full])
    features[test_ids], labels[test_ids] = features[ordered], labels[ordered]
    sums = features.sum(1, keepdims=True)
    features = features / np.where(sums > 0, sums, 1.0)  # row-normalised (Kipf & Welling)
    n = len(features)
    edges = _edges(parts["graph"], n)
    train = np.arange(len(y))
    validation = np.arange(len(y), len(y) + VALIDATION_NODES)
    return GraphData(
        name=key,
        x=torch.from_numpy(features),
        y=torch.from_numpy(labels.argmax(1).astype(np.int64)),
        edge_index=torch.from_numpy(edges),
        train=torch.from_numpy(train),
        validation=torch.from_numpy(validation),
        test=torch.from_numpy(ordered),
    )


def _edges(graph: Any, n: int) -> np.ndarray:
    if not isinstance(graph, dict):
        raise ValueError("the graph is not an adjacency mapping")
    pairs = [(int(u), int(v)) for u, neighbours in graph.items() for v in neighbours]
    edges = np.array(pairs, dtype=np.int64).reshape(-1, 2)
    if edges.size and (edges.min() < 0 or edges.max() >= n):
        raise ValueError(f"the graph names nodes outside 0..{n - 1}")
    edges = edges[edges[:, 0] != edges[:, 1]]
    both = np.concatenate([edges, edges[:, ::-1]])
    return np.unique(both, axis=0).T.copy()


@dataclass(frozen=True)
class Split:
    """Which nodes a run trains on and which it evaluates (GLNN's two settings).

    Transductive: every node and edge is observed; the test nodes are the public test split.
    Inductive (Zhang et al. ICLR 2022, §5, the production setting): a share of the test nodes
    (``held_out``) is removed from the graph, with every edge that touches them, for training;
    the test accuracy is measured on them alone, the GNN seeing them with their edges and the
    MLP their features only.

    Attributes:
        setting: ``transductive`` or ``inductive``.
        held_out: ids of the nodes removed from the training graph (empty: transductive).
        observed: (N,) bool mask of the nodes in the training graph.
        train_edges: (2, E') edges among observed nodes.
        test: the nodes the test accuracy is measured on.
        observed_test: the test nodes left in the graph (inductive; empty otherwise).
    """

    setting: str
    held_out: Tensor
    observed: Tensor
    train_edges: Tensor
    test: Tensor
    observed_test: Tensor


def make_split(data: GraphData, held_out: Tensor) -> Split:
    """The split that removes ``held_out`` (test node ids) from the training graph."""
    held_out = torch.as_tensor(held_out, dtype=torch.int64).unique()
    observed = torch.ones(data.num_nodes, dtype=torch.bool)
    observed[held_out] = False
    keep = observed[data.edge_index[0]] & observed[data.edge_index[1]]
    inductive = held_out.numel() > 0
    observed_test = data.test[observed[data.test]]
    return Split(
        setting="inductive" if inductive else "transductive",
        held_out=held_out,
        observed=observed,
        train_edges=data.edge_index[:, keep],
        test=held_out if inductive else data.test,
        observed_test=observed_test if inductive else data.test[:0],
    )


def inductive_held_out(data: GraphData, fraction: float, seed: int) -> Tensor:
    """A seeded ``fraction`` of the test nodes (GLNN holds out 20 %), sorted."""
    generator = torch.Generator().manual_seed(seed)
    count = int(round(fraction * data.test.numel()))
    if count == 0:
        raise FreekdError(
            f"held_out_fraction {fraction:g} holds out none of the {data.test.numel()} test "
            "nodes; raise it (GLNN: 0.2)"
        )
    chosen = data.test[torch.randperm(data.test.numel(), generator=generator)[:count]]
    return chosen.sort().values


def check_held_out(data: GraphData, held_out: Any, *, source: str) -> Tensor:
    """Held-out ids read from a file: integers, test nodes of this graph only."""
    if not isinstance(held_out, Tensor) or held_out.dtype != torch.int64 or held_out.dim() != 1:
        raise FreekdError(f"{source} is damaged: graph.held_out is not a list of node ids")
    if held_out.numel() and not torch.isin(held_out, data.test).all():
        raise FreekdError(
            f"{source}: its held-out nodes are not test nodes of {data.name}; it was trained "
            "on another graph or split"
        )
    return held_out
