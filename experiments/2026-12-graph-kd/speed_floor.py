"""How fast can a graph-free student answer one node, at best? (issue 22's 50× bar)

``freekd graph distill`` reports ``inference.speedup``: the GCN teacher's seconds per 1,000 test
nodes over the MLP student's, one node per request (the teacher gathers the node's 2-hop
neighbourhood with ``k_hop_subgraph`` and runs on it; the student reads one feature row). This
script asks what the ceiling of that ratio is on Cora and CiteSeer: it times, side by side in one
process on one thread, interleaved over several rounds,

- ``teacher``: the trained GCN as freekd serves it (``predict_nodes``), as in the report;
- ``teacher_gather``: the neighbour gathering alone (``k_hop_subgraph``), the GCN's floor;
- ``student``: the trained GLNN MLP as freekd serves it (``predict_nodes``), as in the report;
- ``bare_student``: the same MLP's weights with nothing but the arithmetic, one row read and two
  ``addmm`` with a ReLU between (no module call at all), the floor of any MLP of that width in
  eager PyTorch;
- ``bare_student_h64`` / ``bare_student_h32``: the same floor for narrower random MLPs, which
  shows how much of the student's time is its 1,433- (CiteSeer 3,703-) wide first layer.

It reads the checkpoints the benchmark wrote (``runs/graph-kd/test/...``, seed ``--seed``):

    python experiments/2026-12-graph-kd/bench.py --test ...   # first, if runs/ is empty
    python experiments/2026-12-graph-kd/speed_floor.py --seeds 0 1 2

Writes ``results/speed-floor/<dataset>-seed<seed>.json``.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch

ROOT = Path(__file__).resolve().parents[2]
HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(ROOT))

from freekd import load_model  # noqa: E402
from freekd.graph.data import load_planetoid, make_split  # noqa: E402
from freekd.graph.training import predict_nodes  # noqa: E402
from freekd.io import atomic_write_json  # noqa: E402


def per_node_microseconds(call: Callable[[torch.Tensor], Any], nodes: torch.Tensor) -> float:
    """Microseconds per node, one node per request, over all ``nodes`` once."""
    start = time.perf_counter()
    for node in nodes.split(1):
        call(node)
    return (time.perf_counter() - start) * 1e6 / nodes.numel()


def bare_mlp(weights: list[tuple[torch.Tensor, torch.Tensor]], x: torch.Tensor) -> Callable:
    (w1, b1), (w2, b2) = ((w.t().contiguous(), b) for w, b in weights)

    def call(node: torch.Tensor) -> torch.Tensor:
        return torch.addmm(b2, torch.relu(torch.addmm(b1, x[node], w1)), w2)

    return call


def random_mlp(width: int, x: torch.Tensor, classes: int) -> Callable:
    generator = torch.Generator().manual_seed(0)
    shapes = ((width, x.shape[1]), (classes, width))
    weights = [(torch.randn(shape, generator=generator), torch.zeros(shape[0])) for shape in shapes]
    return bare_mlp(weights, x)


def measure(dataset: str, seed: int, rounds: int) -> dict[str, Any]:
    from torch_geometric.utils import k_hop_subgraph

    runs = ROOT / "runs" / "graph-kd" / "test"
    teacher = load_model(runs / f"{dataset}-transductive-gcn-seed{seed}" / "model.pt").eval()
    student = load_model(runs / f"glnn-gcn-{dataset}-transductive-seed{seed}" / "model.pt").eval()
    data = load_planetoid(dataset)
    x, edges = data.x, data.edge_index
    nodes = make_split(data, torch.zeros(0, dtype=torch.long)).test
    linears = [(layer.weight.detach(), layer.bias.detach()) for layer in student.linears]
    calls: dict[str, Callable] = {
        "teacher": lambda node: predict_nodes(teacher, x, edges, node),
        "teacher_gather": lambda node: k_hop_subgraph(
            node, 2, edges, relabel_nodes=True, num_nodes=x.shape[0]
        ),
        "student": lambda node: predict_nodes(student, x, edges, node),
        "bare_student": bare_mlp(linears, x),
        "bare_student_h64": random_mlp(64, x, student.num_classes),
        "bare_student_h32": random_mlp(32, x, student.num_classes),
    }
    times: dict[str, list[float]] = {name: [] for name in calls}
    with torch.inference_mode():
        for round_ in range(rounds + 1):  # interleaved; round 0 warms up
            for name, call in calls.items():
                value = per_node_microseconds(call, nodes)
                if round_:
                    times[name].append(value)
    medians = {name: statistics.median(values) for name, values in times.items()}
    teacher_us = medians["teacher"]
    return {
        "dataset": dataset,
        "setting": "transductive",
        "seed": seed,
        "nodes": int(nodes.numel()),
        "rounds": rounds,
        "threads": torch.get_num_threads(),
        "microseconds_per_node": medians,
        "all_rounds": times,
        "teacher_over": {name: teacher_us / value for name, value in medians.items()},
        "command": " ".join(sys.argv),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--datasets", nargs="+", default=["cora", "citeseer"])
    parser.add_argument("--seeds", nargs="+", type=int, default=[0, 1, 2])
    parser.add_argument("--rounds", type=int, default=5)
    args = parser.parse_args()
    torch.set_num_threads(1)
    folder = HERE / "results" / "speed-floor"
    folder.mkdir(parents=True, exist_ok=True)
    for dataset in args.datasets:
        for seed in args.seeds:
            row = measure(dataset, seed, args.rounds)
            atomic_write_json((folder / f"{dataset}-seed{seed}.json"), row)
            ratios = {k: round(v, 1) for k, v in row["teacher_over"].items()}
            print(dataset, seed, ratios, flush=True)


if __name__ == "__main__":
    main()
