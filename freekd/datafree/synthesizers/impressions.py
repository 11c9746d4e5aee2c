"""Data Impressions: Zero-Shot Knowledge Distillation in Deep Networks (Nayak et al. 2019, ICML,
arXiv:1905.08114)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, ClassVar

import torch
from torch import Tensor, nn

from freekd.datafree.batches import (
    MemoryBank,
    balanced_targets,
    class_similarity,
    classifier_weights,
    dirichlet_targets,
)
from freekd.datafree.synthesizers.base import (
    SYNTHESIZERS,
    BatchSynthesizer,
    Pixels,
    draw_normal_,
    logged,
    optimizer_step,
    restart_optimizer,
)
from freekd.errors import FreekdError
from freekd.losses.inversion import soft_cross_entropy
from freekd.teachers import Teacher


@SYNTHESIZERS.register("impressions")
@dataclass(kw_only=True, eq=False)
class DataImpressions(BatchSynthesizer):
    """Optimize pixels until the teacher's softened outputs match vectors sampled from a
    Dirichlet modelled on the teacher's own classifier (ZSKD, Nayak et al. 2019 §3).

    Every ``synthesize`` call makes one batch of Data Impressions:

    1. the class similarity matrix C is read from the teacher's classifier weights
       (``batches.class_similarity``, §3.1: the cosine between the classes' weight vectors, each
       row min–max normalized);
    2. every image gets a class k (balanced over the batch, ``batches.balanced_targets``) and a
       softmax vector y ~ Dir(β · C(k, :)) (§3.1, Eq. 1), with β = 1 for half of the images and
       β = 0.1 for the other half (§4: the paper's two scaling factors);
    3. the pixels start from noise and take ``iterations`` Adam steps on the cross-entropy
       between y and the teacher's softmax at temperature τ = 20 (§3.2, Eq. 2;
       ``losses.inversion.soft_cross_entropy``);
    4. the batch joins a FIFO memory bank, which ``sample`` draws from (the paper distills on
       the whole set of impressions it made).

    Unlike DeepInversion it needs no BatchNorm statistics, so it runs on any classifier whose
    last (K, d) parameter is its classifier; a model without one gets the uniform similarity
    (every class equally similar), reported as ``class_similarity: "uniform"``. The student side
    the paper uses is KD at the same temperature, 20 (§3.3), so that is ``recommended_method``.

    Deviations from the paper: pixels are sigmoid(logits) (images stay in [0, 1], freekd's
    range; models normalize themselves) instead of normalized pixels, with a larger step on the
    logits; 100 iterations per batch instead of 1,500, and one batch per 20 student steps, so a
    4,000-step run makes 200 batches (51,200 impressions, of which the newest ``memory_size``
    are kept; the paper makes 24,000 for MNIST) — chosen by CPU arithmetic, like
    ``deepinversion``'s, not tuned; class targets are balanced rather than 24,000 / K per class
    made one class at a time.

    Args:
        batch_size: impressions optimized together.
        iterations: Adam steps per batch.
        lr: Adam learning rate on the pixel logits.
        temperature: τ of the teacher's softmax that is matched to the sampled vectors.
        scale_high: the Dirichlet scaling factor β of half of every batch (§4: 1.0).
        scale_low: β of the other half (§4: 0.1).
        memory_size: impressions kept in the memory bank.
    """

    needs_batchnorm: ClassVar[bool] = False
    recommended_method: ClassVar[str] = "kd"
    recommended_method_params: ClassVar[dict[str, Any]] = {"temperature": 20.0}
    # One batch per 20 student steps: 200 batches of 100 iterations in a 4,000-step run (see
    # the deviations above).
    recommended_synthesize_every: ClassVar[int] = 20

    iterations: int = 100
    lr: float = 0.1
    temperature: float = 20.0
    scale_high: float = 1.0
    scale_low: float = 0.1
    memory_size: int = 24_000

    def __post_init__(self) -> None:
        if self.iterations < 1 or self.batch_size < 1:
            raise FreekdError("impressions needs iterations ≥ 1 and batch_size ≥ 1")
        if self.temperature <= 0:
            raise FreekdError(f"impressions needs a positive temperature, got {self.temperature}")
        if min(self.scale_high, self.scale_low) <= 0:
            raise FreekdError(
                f"impressions needs positive scales, got {self.scale_high} and {self.scale_low}"
            )
        self.pixels = Pixels((self.batch_size, *self.image_shape)).to(self.device)
        # One optimizer for the run, its state reset for every batch (as deepinversion's).
        self.optimizer = torch.optim.Adam(self.pixels.parameters(), lr=self.lr)
        self.memory = MemoryBank(self.memory_size)
        self.similarity_source = "uniform"

    def _similarity(self, teacher: Teacher) -> Tensor:
        found = classifier_weights(teacher, self.num_classes)
        if found is None or self.num_classes < 2:
            self.similarity_source = "uniform"
            return torch.ones((self.num_classes, self.num_classes), device=self.device)
        self.similarity_source, weights = found
        return class_similarity(weights.float()).to(self.device)

    def synthesize(self, teacher: Teacher, student: nn.Module) -> dict[str, float]:
        similarity = self._similarity(teacher)
        draw_normal_(self.pixels.logits, self.rng)
        self.optimizer.state.clear()  # a fresh Adam for a fresh batch
        classes = balanced_targets(self.batch_size, self.num_classes, self.rng)
        targets = dirichlet_targets(
            classes, similarity, [self.scale_high, self.scale_low], self.rng
        )
        terms: dict[str, Tensor] = {}
        for iteration in range(self.iterations):
            self._iterated(iteration + 1, self.iterations)
            logits = teacher(self.pixels())
            terms = {
                "impression": soft_cross_entropy(logits, targets, temperature=self.temperature)
            }
            optimizer_step(self.optimizer, terms["impression"])
            self.teacher_queries += self.batch_size
        with torch.no_grad():
            self.memory.add(self.pixels())
        self.images_synthesized += self.batch_size
        return logged(terms)

    def sample(self, n: int) -> Tensor:
        return self.memory.sample(n, self.rng)

    def reinitialize(self, *, lr_scale: float) -> None:
        # Every batch already starts from fresh noise; a restart lowers the learning rate and
        # empties the memory bank of the collapsed impressions.
        with torch.no_grad():
            self.pixels.logits.zero_()
        restart_optimizer(self.optimizer, lr_scale=lr_scale)
        self.memory.clear()

    def report_entries(self) -> dict[str, Any]:
        return {"class_similarity": self.similarity_source}

    STATE: ClassVar[tuple[str, ...]] = (
        "pixels",
        "optimizer",
        "memory",
        "rng",
        "images_synthesized",
        "teacher_queries",
    )
