"""Configs of ``freekd graph teacher`` and ``freekd graph distill`` (node classification)."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from freekd.config import Checks, ComponentConfig, TrainerConfig

SETTINGS = ("transductive", "inductive")


def _graph_loop(epochs: int, weight_decay: float) -> TrainerConfig:
    """Kipf & Welling's loop (§5.2): Adam, lr 0.01, full-graph steps (a batch larger than the
    graph), no schedule; the best epoch on the validation nodes is kept."""
    return TrainerConfig(
        epochs=epochs,
        batch_size=8192,
        lr=0.01,
        optimizer="adam",
        weight_decay=weight_decay,
        scheduler="constant",
        augment="none",
        log_every=10,
        checkpoint_every=100,
    )


@dataclass(frozen=True)
class GraphTeacherConfig:
    """``freekd graph teacher``: a GNN (or an MLP) trained on a Planetoid graph.

    Attributes:
        dataset: ``cora`` or ``citeseer`` (public Planetoid split).
        data_root: the folder holding ``Cora/`` and ``CiteSeer/``; default: the shared copy at
            ``../shared/data/planetoid`` beside the project.
        arch: ``gcn``, ``sage``, ``gcn-small`` or ``mlp``.
        arch_kwargs: ``hidden``, ``layers``, ``dropout``.
        setting: ``transductive`` (every node in the graph) or ``inductive`` (GLNN's production
            split: ``held_out_fraction`` of the test nodes removed from the graph for training,
            the test accuracy measured on them).
        held_out_fraction: the share of test nodes held out in the inductive setting.
        seed: seed of the weights, the dropout and the held-out nodes.
        trainer: the loop; the weights of the epoch with the best validation accuracy are kept.
    """

    dataset: str = "cora"
    data_root: str | None = None
    arch: str = "gcn"
    arch_kwargs: dict[str, Any] = field(default_factory=dict)
    setting: str = "transductive"
    held_out_fraction: float = 0.2
    seed: int = 0
    trainer: TrainerConfig = field(default_factory=lambda: _graph_loop(200, 5e-4))

    def __post_init__(self) -> None:
        check = Checks(self)
        if self.setting not in SETTINGS:
            check.fail("setting", "must be transductive or inductive")
        check.within("held_out_fraction", 0, 1, closed="()")


@dataclass(frozen=True)
class GraphDistillConfig:
    """``freekd graph distill``: a graph teacher distilled into an MLP or a smaller GNN.

    Attributes:
        teacher: the teacher's ``model.pt`` (from ``freekd graph teacher``); its data set,
            setting and held-out nodes are the student's.
        student: ``mlp`` (graph-free), ``gcn-small``, ``gcn`` or ``sage``.
        student_kwargs: ``hidden``, ``layers``, ``dropout``.
        method: ``glnn`` (soft labels on every observed node), ``kd`` (on the labelled nodes
            only) or ``lsp`` (GNN students), with their parameters.
        dataset: the teacher's data set, to check (a teacher of another one is refused).
        data_root: as for the teacher.
        baseline: also train the same student alone (``supervised``), same loop and seed, in
            the same run (``OUT/baseline``).
        timing_repeats: timed passes of teacher and student over the test nodes.
        seed: seed of the weights and the dropout.
        trainer: the loop; the best epoch on the validation nodes is kept. No weight decay by
            default (chosen on Cora's validation nodes for the MLP student).
    """

    teacher: str = ""
    student: str = "mlp"
    student_kwargs: dict[str, Any] = field(default_factory=dict)
    method: ComponentConfig = field(default_factory=lambda: ComponentConfig(name="glnn"))
    dataset: str | None = None
    data_root: str | None = None
    baseline: bool = True
    timing_repeats: int = 20
    seed: int = 0
    # No weight decay: chosen on Cora's validation nodes (experiments/2026-12-graph-kd, --tune:
    # 82.8 / 81.8 % at 0 against 79.2 / 75.2 % at 5e-4 and 32.6 / 31.6 % at GLNN's 5e-3).
    trainer: TrainerConfig = field(default_factory=lambda: _graph_loop(500, 0.0))

    def __post_init__(self) -> None:
        check = Checks(self)
        if not self.teacher:
            check.fail("teacher", "is required: pass --teacher PATH/model.pt")
        check.at_least("timing_repeats", 1)
