"""``lsp``: local structure preservation, for GNN students of GNN teachers."""

from __future__ import annotations

from freekd.data.batch import Batch
from freekd.errors import FreekdError
from freekd.graph.methods.base import (
    GRAPH_METHODS,
    GraphMethod,
    GraphTargets,
    labelled_cross_entropy,
    number,
)
from freekd.graph.models import GraphNetwork
from freekd.losses.graph import KERNELS, local_structure_loss
from freekd.losses.kd import kd_kl
from freekd.methods.base import StepOutput


@GRAPH_METHODS.register("lsp")
class LSP(GraphMethod):
    """LSP, Yang et al. "Distilling Knowledge from Graph Convolutional Networks" (CVPR 2020)
    §3.2, eq. 3: L = CE(labelled) + λ L_LSP, where L_LSP matches each node's similarity
    distribution over its neighbours in the student's last hidden layer to the teacher's
    (:func:`freekd.losses.graph.local_structure_loss`; SIM is a kernel's value, by default the
    RBF kernel exp(-‖z_i − z_j‖² / 2σ²), the paper's best). The
    student must be a GNN: an MLP has no neighbourhood to preserve.

    ``kd_weight`` > 0 adds soft labels on the labelled nodes (the paper's table compares LSP
    with and without KD; off by default).

    Args:
        weight: λ, the weight of the LSP term.
        kernel: ``rbf``, ``linear`` or ``poly``.
        sigma: the RBF kernel's width σ.
        kd_weight: weight of Hinton KD (T = ``temperature``) on the labelled nodes.
        temperature: its temperature.
    """

    def __init__(
        self,
        student: GraphNetwork,
        targets: GraphTargets,
        *,
        weight: float = 100.0,
        kernel: str = "rbf",
        sigma: float = 1.0,
        kd_weight: float = 0.0,
        temperature: float = 4.0,
    ) -> None:
        super().__init__(student, targets)
        if not student.needs_graph:
            raise FreekdError(
                f"lsp preserves neighbourhoods in a GNN student; {student.arch} is graph-free: "
                "use --method glnn for an MLP student, or --student gcn-small"
            )
        if kernel not in KERNELS:
            raise FreekdError(f"unknown LSP kernel {kernel!r}; known: {', '.join(KERNELS)}")
        self.weight, self.kernel = number("weight", weight), kernel
        self.sigma = number("sigma", sigma, low=1e-6)
        self.kd_weight = number("kd_weight", kd_weight)
        self.temperature = number("temperature", temperature, low=1e-3)

    def training_step(self, batch: Batch) -> StepOutput:
        assert batch.labels is not None
        assert self.teacher_features is not None
        hidden, logits = self.student.features(self.x, self.edge_index)
        at_batch = logits[batch.indices]
        losses = {"ce": labelled_cross_entropy(at_batch, batch.labels)}
        losses["lsp"] = self.weight * local_structure_loss(
            hidden, self.teacher_features, self.edge_index, kernel=self.kernel, sigma=self.sigma
        )
        if self.kd_weight > 0 and self.teacher_logits is not None:
            labelled = batch.labels >= 0
            teacher = self.teacher_logits[batch.indices][labelled]
            losses["kd"] = self.kd_weight * kd_kl(
                at_batch[labelled], teacher, temperature=self.temperature
            )
        return StepOutput(losses, at_batch)
