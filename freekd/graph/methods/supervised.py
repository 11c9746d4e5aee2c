"""``supervised``: cross-entropy on the labelled nodes (teachers, and students trained alone)."""

from __future__ import annotations

from freekd.data.batch import Batch
from freekd.graph.methods.base import GRAPH_METHODS, GraphMethod, labelled_cross_entropy
from freekd.methods.base import StepOutput


@GRAPH_METHODS.register("supervised")
class GraphSupervised(GraphMethod):
    """Semi-supervised node classification as Kipf & Welling (ICLR 2017) eq. 10 trains it: the
    cross-entropy over the labelled nodes only; a GNN still sees every node through the graph."""

    needs_teacher = False

    def training_step(self, batch: Batch) -> StepOutput:
        assert batch.labels is not None
        _, logits = self.student_outputs(batch)
        return StepOutput({"ce": labelled_cross_entropy(logits, batch.labels)}, logits)
