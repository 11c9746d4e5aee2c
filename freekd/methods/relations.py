"""What the relation-based methods share: a pair of features per term, the embeddings by default."""

from __future__ import annotations

from collections.abc import Callable, Sequence

from torch import Tensor, nn

from freekd.data.batch import Batch
from freekd.methods.distiller import FeatureDistiller, Views


class RelationDistiller(FeatureDistiller):
    """A feature distiller whose term compares the two batches' relations, pair by pair.

    Relations are (B, B) or (B, B, B) matrices over the batch (``losses.relations``), so the two
    networks' features may differ in width and in shape. Without named layers the pair is the
    two networks' embeddings (the flattened input of the last ``nn.Linear``), the penultimate
    features the comparison tables use for these methods.

    Args:
        student: the network being trained.
        teacher: frozen teacher.
        weight: weight of the method's term.
        ce_weight: weight of the hard-label cross-entropy.
        student_layers: layer paths to relate, in order with ``teacher_layers``.
        teacher_layers: the teacher's layer paths.
    """

    #: The name of the loss term in ``metrics.jsonl``.
    term: str = "relation"

    def __init__(
        self,
        student: nn.Module,
        teacher: nn.Module,
        *,
        weight: float,
        ce_weight: float = 1.0,
        student_layers: Sequence[str] | None = None,
        teacher_layers: Sequence[str] | None = None,
    ) -> None:
        super().__init__(
            student,
            teacher,
            ce_weight=ce_weight,
            student_layers=student_layers,
            teacher_layers=teacher_layers,
        )
        if weight < 0:
            raise ValueError(f"weight must be non-negative, got {weight}")
        self.weight = weight

    def relation_loss(self, student: Tensor, teacher: Tensor) -> Tensor:
        """The loss between one pair of features."""
        raise NotImplementedError

    def summed(
        self, loss: Callable[[Tensor, Tensor], Tensor], student: Views, teacher: Views
    ) -> Tensor:
        """``loss`` summed over every pair."""
        pairs = zip(student.pick(self.student_taps), teacher.pick(self.teacher_taps), strict=True)
        values = [loss(s, t) for s, t in pairs]
        return sum(values[1:], values[0])

    def distill_losses(self, student: Views, teacher: Views, batch: Batch) -> dict[str, Tensor]:
        return {self.term: self.weight * self.summed(self.relation_loss, student, teacher)}
