"""Composition root of ``freekd graph``: GNN teachers on Planetoid graphs, and their students.

``run_graph_teacher`` trains a GCN / GraphSAGE (or an MLP) on the labelled nodes with the one
Trainer (a ``NodeSource`` of full-graph steps); ``run_graph_distill`` distills a teacher into an
MLP (GLNN) or a smaller GNN (LSP), trains the same student alone beside it (``OUT/baseline``) and
times both networks' inference on the test nodes side by side. Every run keeps the weights of
its best epoch on the validation nodes; the test nodes choose nothing.

Files besides those every run writes: ``baseline/`` (the student trained alone, a run folder of
its own). ``model.pt`` is a graph checkpoint (``freekd.graph.models``), loadable with
``freekd.load_model``.
"""

from __future__ import annotations

import shutil
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import torch

from freekd.config import ComponentConfig
from freekd.errors import FreekdError
from freekd.graph.config import GraphDistillConfig, GraphTeacherConfig
from freekd.graph.data import (
    GraphData,
    Split,
    check_held_out,
    inductive_held_out,
    load_planetoid,
    make_split,
)
from freekd.graph.methods import GRAPH_METHODS, GraphTargets, build_graph_method
from freekd.graph.models import (
    GraphNetwork,
    build_graph_model,
    graph_model_from_checkpoint,
    read_graph_checkpoint,
    save_graph_model,
)
from freekd.graph.training import KeepBest, NodeSource, node_accuracy, time_per_thousand
from freekd.models import count_parameters
from freekd.runlock import locks_run_folder
from freekd.runs import (
    RESUME_FILE,
    RunOptions,
    TrainResult,
    check_params,
    common_report,
    finish_run,
    run_training,
    setup_run,
)
from freekd.seeding import seed_everything
from freekd.train import DistInfo

BASELINE_DIR = "baseline"


@dataclass(frozen=True)
class _Graph:
    """The data a run works on: the graph, its split and the record a checkpoint keeps."""

    data: GraphData
    split: Split

    def record(self) -> dict[str, Any]:
        return {
            "dataset": self.data.name,
            "num_nodes": self.data.num_nodes,
            "setting": self.split.setting,
            "held_out": self.split.held_out.clone(),
        }


@locks_run_folder
def run_graph_teacher(config: GraphTeacherConfig, options: RunOptions) -> dict[str, Any]:
    """``freekd graph teacher``: returns (and writes) ``report.json`` with the network's
    ``validation_accuracy`` and ``test_accuracy``."""
    _check_loop(config)
    data = load_planetoid(config.dataset, config.data_root)
    held_out = (
        inductive_held_out(data, config.held_out_fraction, config.seed)
        if config.setting == "inductive"
        else data.test[:0]
    )
    graph = _Graph(data, make_split(data, held_out))
    dist, device = setup_run(config.seed, config.trainer, options)
    network = build_graph_model(
        config.arch,
        in_features=data.num_features,
        num_classes=data.num_classes,
        arch_kwargs=dict(config.arch_kwargs),
    )
    trained = _fit(network, "supervised", {}, graph, None, config, options, dist=dist,
                   device=device)  # fmt: skip
    report = {
        "command": "graph teacher",
        "dataset": data.name,
        "setting": graph.split.setting,
        "arch": config.arch,
        "parameters": count_parameters(network),
        **_accuracies(network, graph),
        "best_epoch": trained.best_epoch + 1,
        **common_report(config, trained.result),
    }
    finish_run(report, options, dist)
    return report


def _check_loop(config: Any) -> None:
    """What the graph loop does not do: a weight average (the best epoch is kept instead)."""
    for name in ("ema_decay", "swa_start"):
        if getattr(config.trainer, name) is not None:
            raise FreekdError(
                "freekd graph keeps the weights of the best validation epoch and no weight "
                f"average; remove trainer.{name}"
            )


@dataclass
class _Trained:
    result: TrainResult
    best_epoch: int
    validation_accuracy: float


def _fit(
    network: GraphNetwork,
    method_name: str,
    params: dict[str, Any],
    graph: _Graph,
    targets: GraphTargets | None,
    config: Any,
    options: RunOptions,
    *,
    dist: DistInfo,
    device: torch.device,
) -> _Trained:
    """Train ``network`` with the graph method ``method_name`` through the one Trainer; the
    best epoch on the validation nodes is kept and saved as ``model.pt``."""
    data, split = graph.data, graph.split
    targets = targets or GraphTargets(data.x, split.train_edges)
    method = build_graph_method(method_name, network, targets, params)
    labels = torch.full_like(data.y, -1)
    labels[data.train] = data.y[data.train]  # no other label is ever read while training
    nodes = split.observed.nonzero().flatten() if method.uses_all_nodes else data.train
    source = NodeSource(nodes, data.x, labels, batch_size=config.trainer.batch_size,
                        seed=config.seed)  # fmt: skip
    keep = KeepBest(
        lambda student: node_accuracy(student, data.x, split.train_edges, data.y, data.validation),
        network,
    )
    record = graph.record()

    def save(module: torch.nn.Module, resolved: dict[str, Any]) -> None:
        assert isinstance(module, GraphNetwork)
        save_graph_model(options.out_dir / "model.pt", module, graph=record, config=resolved)

    result = run_training(
        method,
        source,
        eval_set=None,
        trainer_config=config.trainer,
        config=config,
        options=options,
        device=device,
        dist=dist,
        description=f"graph {method_name}: {network.arch} on {data.name}",
        extras={"best_epoch": keep},
        extra_callbacks=(keep,),
        save=save,
    )
    network.cpu()
    return _Trained(result, keep.best_epoch, keep.best_accuracy)


def _accuracies(network: GraphNetwork, graph: _Graph) -> dict[str, Any]:
    """Validation and test accuracy; inductive runs add the observed test nodes' accuracy.
    A GNN sees the whole graph at test time (new nodes arrive with their edges)."""
    data, split = graph.data, graph.split
    network = network.cpu().eval()
    entry = {
        "validation_accuracy": node_accuracy(
            network, data.x, split.train_edges, data.y, data.validation
        ),
        "test_accuracy": node_accuracy(network, data.x, data.edge_index, data.y, split.test),
    }
    if split.setting == "inductive":
        entry["observed_test_accuracy"] = node_accuracy(
            network, data.x, split.train_edges, data.y, split.observed_test
        )
    return entry


@locks_run_folder
def run_graph_distill(config: GraphDistillConfig, options: RunOptions) -> dict[str, Any]:
    """``freekd graph distill``: returns (and writes) ``report.json`` with ``teacher``,
    ``student`` and ``baseline`` accuracies and ``inference`` times."""
    method_class = GRAPH_METHODS.get(config.method.name)
    check_params(method_class, config.method.params, what=f"method {config.method.name}")
    _check_loop(config)
    teacher, graph = _teacher_and_graph(config)
    dist, device = setup_run(config.seed, config.trainer, options)
    targets = _targets(teacher, graph)
    student = _student(config, graph.data)
    trained = _fit(student, config.method.name, dict(config.method.params), graph, targets,
                   config, options, dist=dist, device=device)  # fmt: skip
    report: dict[str, Any] = {
        "command": "graph distill",
        "dataset": graph.data.name,
        "setting": graph.split.setting,
        "method": {"name": config.method.name, "params": dict(config.method.params)},
        "teacher": {"path": config.teacher, "arch": teacher.arch,
                    "parameters": count_parameters(teacher), **_accuracies(teacher, graph)},
        "student": {"arch": student.arch, "parameters": count_parameters(student),
                    "best_epoch": trained.best_epoch + 1, **_accuracies(student, graph)},
        "baseline": None,
    }  # fmt: skip
    report["test_accuracy"] = report["student"]["test_accuracy"]
    if config.baseline:
        report["baseline"] = _baseline(config, graph, options, dist=dist, device=device)
    elif options.overwrite and dist.is_main:  # the replaced run's baseline is not this run's
        stale = options.out_dir / BASELINE_DIR
        if stale.is_dir() and not stale.is_symlink():
            shutil.rmtree(stale)
    report["inference"] = _inference(teacher, student, graph, repeats=config.timing_repeats)
    report.update(common_report(config, trained.result))
    finish_run(report, options, dist)
    return report


def _teacher_and_graph(config: GraphDistillConfig) -> tuple[GraphNetwork, _Graph]:
    """The teacher, and the graph and split it was trained on (read from its checkpoint)."""
    path = Path(config.teacher)
    if not path.is_file():
        raise FreekdError(
            f"no teacher at {path}; train one with freekd graph teacher --dataset cora --out DIR"
        )
    data_record = read_graph_checkpoint(path)
    source = f"checkpoint {path}"
    record = data_record["graph"]
    if config.dataset is not None and config.dataset.lower() != record["dataset"]:
        raise FreekdError(
            f"{path} was trained on {record['dataset']}, not {config.dataset}; pass its data "
            "set or a teacher trained on yours"
        )
    data = load_planetoid(record["dataset"], config.data_root)
    if int(record["num_nodes"]) != data.num_nodes or data_record["in_features"] != (
        data.num_features
    ):
        raise FreekdError(
            f"{path} was trained on another graph than {data.name} ({record['num_nodes']} nodes, "
            f"{data_record['in_features']} features); use a teacher trained on this one"
        )
    if data_record["num_classes"] != data.num_classes:
        raise FreekdError(
            f"{path} predicts {data_record['num_classes']} classes, {data.name} has "
            f"{data.num_classes}; use a teacher trained on {data.name}"
        )
    held_out = check_held_out(data, record["held_out"], source=source)
    teacher = graph_model_from_checkpoint(data_record, source=source)
    return teacher, _Graph(data, make_split(data, held_out))


@torch.no_grad()
def _targets(teacher: GraphNetwork, graph: _Graph) -> GraphTargets:
    """The frozen teacher's logits and last hidden layer on the training graph, once."""
    data, split = graph.data, graph.split
    teacher.eval()
    features, logits = teacher.features(data.x, split.train_edges)
    return GraphTargets(data.x, split.train_edges, logits=logits, features=features)


def _student(config: GraphDistillConfig, data: GraphData) -> GraphNetwork:
    return build_graph_model(
        config.student,
        in_features=data.num_features,
        num_classes=data.num_classes,
        arch_kwargs=dict(config.student_kwargs),
    )


def _baseline(
    config: GraphDistillConfig,
    graph: _Graph,
    options: RunOptions,
    *,
    dist: DistInfo,
    device: torch.device,
) -> dict[str, Any]:
    """The same student trained alone (cross-entropy on the labelled nodes), same loop and seed,
    in ``OUT/baseline``."""
    folder = options.out_dir / BASELINE_DIR
    resume = options.resume and (folder / RESUME_FILE).exists()
    baseline_options = RunOptions(folder, overwrite=not resume, resume=resume, quiet=options.quiet)
    seed_everything(config.seed, deterministic=config.trainer.deterministic)
    student = _student(config, graph.data)  # the distilled student's initial weights
    alone = replace(config, method=ComponentConfig(name="supervised"))  # what its files record
    trained = _fit(student, "supervised", {}, graph, None, alone, baseline_options, dist=dist,
                   device=device)  # fmt: skip
    return {
        "arch": student.arch,
        "path": f"{BASELINE_DIR}/model.pt",
        "best_epoch": trained.best_epoch + 1,
        **_accuracies(student, graph),
        "wall_seconds": round(trained.result.wall_seconds, 3),
    }


def _inference(
    teacher: GraphNetwork, student: GraphNetwork, graph: _Graph, *, repeats: int
) -> dict[str, Any]:
    """Seconds per 1,000 test nodes of teacher and student, measured one after the other in
    this process: ``online``, one node per request (the latency setting GLNN is about: a GNN
    gathers each node's neighbourhood, an MLP reads one feature row), which gives ``speedup``;
    and ``batch``, all test nodes in one request (``batch_speedup``)."""
    data, nodes = graph.data, graph.split.test
    entry: dict[str, Any] = {"nodes": int(nodes.numel()), "repeats": repeats, "threads": 1}
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # one request per thread, as a server runs them; less noise
    try:
        _time_modes(teacher, student, data, nodes, entry, repeats)
    finally:
        torch.set_num_threads(threads)
    entry["speedup"] = entry["online"]["speedup"]
    entry["batch_speedup"] = entry["batch"]["speedup"]
    return entry


def _time_modes(
    teacher: GraphNetwork,
    student: GraphNetwork,
    data: GraphData,
    nodes: torch.Tensor,
    entry: dict[str, Any],
    repeats: int,
) -> None:
    for mode, request, passes in (("online", 1, max(1, repeats // 5)), ("batch", None, repeats)):
        size = request or int(nodes.numel())
        times = [
            time_per_thousand(net, data.x, data.edge_index, nodes, request=size, repeats=passes)
            for net in (teacher, student)
        ]
        entry[mode] = {
            "request_nodes": size,
            "teacher_seconds_per_1000": times[0],
            "student_seconds_per_1000": times[1],
            "speedup": times[0] / times[1],
        }
