"""Contrastive representation distillation with a queue of negatives (contrastive)."""

from __future__ import annotations

from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from freekd.data.batch import Batch
from freekd.errors import FreekdError
from freekd.hostmemory import check_fits
from freekd.losses.contrastive import queue_contrastive
from freekd.methods.base import METHODS
from freekd.methods.distiller import FeatureDistiller, Views


class EmbeddingQueue(nn.Module):
    """A FIFO queue of the last ``size`` embeddings, their labels (−1: unlabelled, −2: empty) and
    their examples' dataset indices (−1: unknown).

    Its tensors are buffers, so a resumed run continues with the same queue. Memory is
    ``size × dim`` floats whatever the size of the training set.
    """

    embeddings: Tensor
    labels: Tensor
    indices: Tensor
    position: Tensor

    def __init__(self, size: int, dim: int) -> None:
        super().__init__()
        self.register_buffer("embeddings", torch.zeros(size, dim))
        self.register_buffer("labels", torch.full((size,), -2, dtype=torch.long))
        self.register_buffer("indices", torch.full((size,), -1, dtype=torch.long))
        self.register_buffer("position", torch.zeros((), dtype=torch.long))

    @torch.no_grad()
    def push(self, embeddings: Tensor, labels: Tensor | None, indices: Tensor | None) -> None:
        """Add a batch (detached), overwriting the oldest entries."""
        size = len(self.embeddings)
        embeddings = embeddings.detach()[-size:]
        count = len(embeddings)
        where = (self.position + torch.arange(count, device=embeddings.device)) % size
        self.embeddings[where] = embeddings.to(self.embeddings.dtype)  # bfloat16 under autocast
        if labels is None:
            labels = torch.full((count,), -1, dtype=torch.long, device=embeddings.device)
        self.labels[where] = labels[-size:]
        # (K, B) indices (one set per model of a SubsetSource) do not name this batch's rows.
        known = indices is not None and indices.dim() == 1
        self.indices[where] = indices[-size:] if known else -1  # type: ignore[index]
        self.position.copy_((self.position + count) % size)


def negatives_mask(queue: EmbeddingQueue, batch: Batch, *, label_aware: bool) -> Tensor:
    """(B, N + B) which candidates are negatives of each anchor: the filled queue entries of other
    examples than the anchor's own (by dataset index, when known) and the other examples of the
    batch; with labels and ``label_aware``, none of the anchor's class."""
    batch_size, device = len(batch), queue.labels.device
    filled = (queue.labels != -2).unsqueeze(0).expand(batch_size, -1)
    if batch.indices is not None and batch.indices.dim() == 1:
        filled = filled & (queue.indices.unsqueeze(0) != batch.indices.unsqueeze(1))
    others = ~torch.eye(batch_size, dtype=torch.bool, device=device)
    mask = torch.cat([filled, others], dim=1)
    anchor_labels, queue_labels = batch.labels, queue.labels
    if label_aware and anchor_labels is not None:
        candidates = torch.cat([queue_labels, anchor_labels])
        mask = mask & (candidates.unsqueeze(0) != anchor_labels.unsqueeze(1))
    return mask


@METHODS.register("crd")
class ContrastiveRepresentation(FeatureDistiller):
    """Contrastive representation distillation, Tian, Krishnan & Isola 2020 (ICLR,
    arXiv:1910.10699) §3: maximize a lower bound on the mutual information between the teacher's
    and the student's representations by telling, for each input, the other network's embedding
    of the same input (the positive) from its embeddings of other inputs (the negatives).

    Each network's embedding (penultimate features by default) goes through its own linear head
    to ``dim`` units and is L2-normalized (§3.1, g_S and g_T). The critic is e^{⟨g_S, g_T⟩/τ}, the
    loss its softmax (InfoNCE) form in both directions (``losses.contrastive.queue_contrastive``):
    student anchors against the teacher's embeddings, and teacher anchors against the student's.

    **Negatives from a queue.** The paper keeps a memory bank of N × d embeddings, one per training
    example, updated with momentum; its memory grows with the training set. Here the negatives are
    the last ``queue_size`` embeddings of each network (a FIFO queue, as MoCo keeps them, He et al.
    2020 §3.2) plus the other examples of the batch, so memory does not depend on the data size.
    With labels, ``label_aware`` drops negatives of the anchor's own class (the paper samples
    negatives from other classes on CIFAR-100, §4.1). Defaults: τ = 0.07, 128 dimensions, 16,384
    negatives (the paper's), weight 0.8 with cross-entropy 1 (the comparison tables' CRD row).

    Args:
        student: the network being trained.
        teacher: frozen teacher.
        weight: weight of the contrastive term.
        temperature: τ.
        dim: width of the embedding heads.
        queue_size: embeddings kept per network as negatives.
        label_aware: drop same-class negatives when the batch is labelled.
        ce_weight: weight of the hard-label cross-entropy.
        student_layers: the student's representation (default: its embedding).
        teacher_layers: the teacher's representation.
    """

    title = "crd"

    def __init__(
        self,
        student: nn.Module,
        teacher: nn.Module,
        *,
        weight: float = 0.8,
        temperature: float = 0.07,
        dim: int = 128,
        queue_size: int = 16384,
        label_aware: bool = True,
        **shared: Any,
    ) -> None:
        super().__init__(student, teacher, **shared)
        if temperature <= 0 or dim < 1 or queue_size < 1:
            raise ValueError("temperature must be positive, dim and queue_size at least 1")
        check_fits(  # two queues of queue_size embeddings, labels and indices
            2 * queue_size * (dim * 4 + 16),
            f"crd's queues ({queue_size:,} × {dim})",
            "lower method.params.queue_size or dim (the paper's: 16,384 × 128)",
        )
        if len(self.pairs) != 1:
            raise FreekdError(
                f"crd contrasts one pair of representations, got {len(self.pairs)}; name one "
                "layer in student_layers and one in teacher_layers"
            )
        self.weight, self.temperature, self.label_aware = weight, temperature, label_aware
        width = [
            int(torch.tensor(shape).prod())
            for shape in (*self.student_shapes, *self.teacher_shapes)
        ]
        self.student_head = nn.Linear(width[0], dim)
        self.teacher_head = nn.Linear(width[1], dim)
        self.student_queue = EmbeddingQueue(queue_size, dim)
        self.teacher_queue = EmbeddingQueue(queue_size, dim)

    def distill_losses(self, student: Views, teacher: Views, batch: Batch) -> dict[str, Tensor]:
        (s_features,) = student.pick(self.student_taps)
        (t_features,) = teacher.pick(self.teacher_taps)
        s = F.normalize(self.student_head(s_features.flatten(1)), dim=1)
        t = F.normalize(self.teacher_head(t_features.flatten(1)), dim=1)
        labels = batch.labels
        loss = s.new_zeros(())
        for anchors, keys, queue in ((s, t, self.teacher_queue), (t, s, self.student_queue)):
            mask = negatives_mask(queue, batch, label_aware=self.label_aware)
            negatives = torch.cat([queue.embeddings, keys.detach()])
            loss = loss + queue_contrastive(
                anchors, keys, negatives, temperature=self.temperature, negative_mask=mask
            )
        if self.training:
            self.student_queue.push(s, labels, batch.indices)
            self.teacher_queue.push(t, labels, batch.indices)
        return {"crd": self.weight * loss}
