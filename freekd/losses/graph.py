"""Distillation losses on graph data (node classification).

Pure functions: tensors in, scalars out, hyperparameters keyword-only. A graph is a (2, E)
``edge_index`` of directed edges (source row 0, target row 1), both directions of an undirected
edge present, as PyTorch Geometric stores it.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor

KERNELS = ("rbf", "linear", "poly")


def soft_label_kd(
    student_logits: Tensor, teacher_logits: Tensor, labels: Tensor, *, lam: float = 0.0
) -> tuple[Tensor, Tensor]:
    """GLNN's objective, Zhang et al. (ICLR 2022) eq. 1:
    L = λ Σ_{v∈V_L} CE(ŷ_v, y_v) + (1 − λ) Σ_{v∈V} KL(z_v ‖ ŷ_v).

    Args:
        student_logits: (B, K) the student's logits on a batch of nodes.
        teacher_logits: (B, K) the teacher GNN's logits on the same nodes (soft labels z_v).
        labels: (B,) int64 labels, -1 for nodes without one (V \\ V_L).
        lam: λ, the share of the hard-label term.

    Returns:
        (λ·CE over the labelled nodes, (1 − λ)·KL over all nodes), each a mean; the CE term is 0
        when the batch has no labelled node.
    """
    labelled = labels >= 0
    ce = (
        F.cross_entropy(student_logits[labelled], labels[labelled])
        if labelled.any()
        else student_logits.sum() * 0.0
    )
    kl = F.kl_div(
        F.log_softmax(student_logits, -1),
        F.log_softmax(teacher_logits, -1),
        log_target=True,
        reduction="batchmean",
    )
    return lam * ce, (1.0 - lam) * kl


def _similarity(features: Tensor, edge_index: Tensor, kernel: str, sigma: float) -> Tensor:
    """(E,) SIM(z_i, z_j) of every edge i → j, the kernel's value (LSP §3.2)."""
    source, target = features[edge_index[0]], features[edge_index[1]]
    if kernel == "rbf":  # exp(-‖z_i − z_j‖² / 2σ²)
        return (-(source - target).pow(2).sum(-1) / (2 * sigma**2)).exp()
    if kernel == "linear":
        return (source * target).sum(-1)
    if kernel == "poly":  # (z_iᵀ z_j + 1)², a polynomial kernel of degree 2
        return ((source * target).sum(-1) + 1.0).pow(2)
    raise ValueError(f"unknown kernel {kernel!r}; known: {', '.join(KERNELS)}")


def neighbour_softmax(scores: Tensor, index: Tensor, num_nodes: int) -> Tensor:
    """Softmax of (E,) ``scores`` within each group of edges that share ``index`` (the node
    whose neighbourhood they describe); numerically stable (the group's maximum is removed)."""
    maximum = torch.full((num_nodes,), float("-inf"), dtype=scores.dtype, device=scores.device)
    maximum = maximum.scatter_reduce(0, index, scores, reduce="amax", include_self=True)
    exp = (scores - maximum[index]).exp()
    total = torch.zeros(num_nodes, dtype=scores.dtype, device=scores.device).index_add(
        0, index, exp
    )
    return exp / total[index]


def local_structure_loss(
    student_features: Tensor,
    teacher_features: Tensor,
    edge_index: Tensor,
    *,
    kernel: str = "rbf",
    sigma: float = 1.0,
) -> Tensor:
    """Local structure preservation, Yang et al. "Distilling Knowledge from Graph Convolutional
    Networks" (CVPR 2020) §3.2, eqs. 1-2: for each node i, the distribution of its similarity
    over its neighbours, LS_ij = exp(SIM(z_i, z_j)) / Σ_{k∈N(i)} exp(SIM(z_i, z_k)), is matched
    by L_LSP = (1/N) Σ_i KL(LS_i^S ‖ LS_i^T).

    Teacher and student features may have different widths: each network's distributions are
    computed from its own features, only the graph is shared.

    Args:
        student_features: (N, Hs) the student's node embeddings.
        teacher_features: (N, Ht) the teacher's, on the same nodes (detached by the caller).
        edge_index: (2, E) the edges; neighbourhoods are grouped by the source row.
        kernel: SIM, a kernel: ``rbf`` exp(-‖z_i − z_j‖² / 2σ²) (the paper's best), ``linear``
            z_iᵀz_j or ``poly`` (z_iᵀz_j + 1)².
        sigma: the RBF kernel's width σ.

    Returns:
        Scalar mean over the nodes that have at least one neighbour (0 with no edge).
    """
    if edge_index.numel() == 0:
        return student_features.sum() * 0.0
    num_nodes = student_features.shape[0]
    index = edge_index[0]
    p_student, p_teacher = (
        neighbour_softmax(_similarity(features, edge_index, kernel, sigma), index, num_nodes)
        for features in (student_features, teacher_features)
    )
    eps = torch.finfo(p_student.dtype).tiny
    terms = p_student * ((p_student + eps).log() - (p_teacher + eps).log())
    per_node = torch.zeros(num_nodes, dtype=terms.dtype, device=terms.device).index_add(
        0, index, terms
    )
    has_neighbours = torch.zeros(num_nodes, dtype=torch.bool, device=terms.device)
    has_neighbours[index] = True
    return per_node[has_neighbours].mean()
