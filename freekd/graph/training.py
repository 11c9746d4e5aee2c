"""What graph runs add to the one loop: node batches, the best-epoch choice, node accuracy and
inference timing."""

from __future__ import annotations

import copy
import math
import statistics
import time
from collections.abc import Callable, Iterator
from typing import Any

import torch
from torch import Tensor

from freekd.data.batch import Batch
from freekd.graph.models import GraphNetwork
from freekd.train.sources import seeded_generator
from freekd.train.trainer import Callback, Trainer, TrainState


class NodeSource:
    """Batches of nodes for the Trainer: ``nodes`` shuffled each epoch (seeded by the epoch, so a
    resumed run draws the same batches), ``batch_size`` per step; a batch as large as the node
    set gives one full-graph step per epoch (Kipf & Welling's training).

    Args:
        nodes: (M,) the node ids trained on.
        x: (N, F) every node's features.
        labels: (N,) labels, -1 where the run may not use one.
        batch_size: nodes per step.
        seed: the run's seed.
    """

    def __init__(self, nodes: Tensor, x: Tensor, labels: Tensor, *, batch_size: int, seed: int):
        if nodes.numel() == 0:
            raise ValueError("no nodes to train on")
        self.nodes, self.x, self.labels = nodes, x, labels
        self.batch_size = min(batch_size, nodes.numel())
        self.seed = seed

    def steps_per_epoch(self) -> int:
        return math.ceil(self.nodes.numel() / self.batch_size)

    def batches(self, state: TrainState) -> Iterator[Batch]:
        order = self.nodes[
            torch.randperm(self.nodes.numel(), generator=seeded_generator(self.seed, state.epoch))
        ]
        for step in range(state.step_in_epoch, self.steps_per_epoch()):
            chosen = order[step * self.batch_size : (step + 1) * self.batch_size]
            yield Batch(self.x[chosen], self.labels[chosen], indices=chosen)


@torch.no_grad()
def node_accuracy(
    network: GraphNetwork, x: Tensor, edge_index: Tensor, labels: Tensor, nodes: Tensor
) -> float:
    """Accuracy of ``network`` (eval mode) on ``nodes``; a GNN sees ``edge_index``."""
    was_training = network.training
    network.eval()
    device = next(network.parameters()).device
    if network.needs_graph:
        logits = network(x.to(device), edge_index.to(device))[nodes.to(device)]
    else:
        logits = network(x[nodes].to(device))
    network.train(was_training)
    return float((logits.argmax(-1).cpu() == labels[nodes]).float().mean())


class KeepBest(Callback):
    """Measure the student on the validation nodes after every epoch (``eval_accuracy``) and
    keep the weights of the best epoch; they are the student when the fit ends (the model
    selection of Kipf & Welling and GLNN). Saved in the resume checkpoint.

    Args:
        measure: validation accuracy of a network.
        student: the network trained (its shapes check a resumed best state).
    """

    def __init__(
        self, measure: Callable[[GraphNetwork], float], student: GraphNetwork | None = None
    ) -> None:
        self.measure = measure
        #: The student's parameter shapes, against which a resumed best state is checked.
        self.shapes = (
            None
            if student is None
            else {k: tuple(v.shape) for k, v in student.state_dict().items()}
        )
        self.best_accuracy = -1.0
        self.best_epoch = -1
        self.best_state: dict[str, Tensor] | None = None

    def on_epoch_end(self, trainer: Trainer, state: TrainState) -> None:
        student = trainer.unwrapped("student")
        assert isinstance(student, GraphNetwork)
        accuracy = self.measure(student)
        state.metrics["eval_accuracy"] = accuracy
        if accuracy > self.best_accuracy:
            self.best_accuracy, self.best_epoch = accuracy, state.epoch
            self.best_state = copy.deepcopy(student.state_dict())

    def on_fit_end(self, trainer: Trainer, state: TrainState) -> None:
        if self.best_state is not None:
            trainer.unwrapped("student").load_state_dict(self.best_state)
            state.metrics["eval_accuracy"] = self.best_accuracy

    def state_dict(self) -> dict[str, Any]:
        return {"accuracy": self.best_accuracy, "epoch": self.best_epoch, "state": self.best_state}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Restore from a resume checkpoint; weights that do not fit the student are refused
        (``ValueError``, which the resume turns into one line) before training goes on."""
        best = state.get("state")
        if best is not None:
            if not isinstance(best, dict) or self.shapes is None:
                raise ValueError("the best epoch's weights are not a state dict")
            given = {k: tuple(v.shape) for k, v in best.items() if isinstance(v, Tensor)}
            if given != self.shapes:
                raise ValueError("the best epoch's weights do not fit the student")
        self.best_accuracy = float(state["accuracy"])
        self.best_epoch = int(state["epoch"])
        self.best_state = best


def _hops(network: GraphNetwork) -> int:
    return len(getattr(network, "convs", ()))


def predict_nodes(network: GraphNetwork, x: Tensor, edge_index: Tensor, nodes: Tensor) -> Tensor:
    """The work of serving ``nodes``, for timing: a GNN gathers the nodes' L-hop neighbourhood
    (L = its layers) and runs on that subgraph; an MLP reads their features. A GCN's degree
    normalisation sees only the subgraph, so its logits can differ slightly from the full-graph
    ones at the neighbourhood's edge (accuracy is always measured on the full graph)."""
    if not network.needs_graph:
        return network(x[nodes])
    from torch_geometric.utils import k_hop_subgraph  # imported with the network's layers

    subset, edges, mapping, _ = k_hop_subgraph(
        nodes, _hops(network), edge_index, relabel_nodes=True, num_nodes=x.shape[0]
    )
    return network(x[subset], edges)[mapping]


def time_per_thousand(
    network: GraphNetwork,
    x: Tensor,
    edge_index: Tensor,
    nodes: Tensor,
    *,
    request: int,
    repeats: int,
) -> float:
    """Median seconds to predict 1,000 of ``nodes`` arriving in requests of ``request`` nodes
    (neighbour gathering included for a GNN), over ``repeats`` timed passes after a warm-up."""
    network.eval()
    chunks = nodes.split(request)
    times = []
    with torch.inference_mode():
        for repeat in range(repeats + 1):
            start = time.perf_counter()
            for chunk in chunks:
                predict_nodes(network, x, edge_index, chunk)
            if repeat:  # the first pass warms up
                times.append(time.perf_counter() - start)
    return statistics.median(times) * 1000 / nodes.numel()
