"""On-the-fly Native Ensemble (online KD between the branches of one network)."""

from __future__ import annotations

import math
from typing import Any

import torch
from torch import Tensor

from freekd.data.batch import Batch
from freekd.errors import FreekdError
from freekd.losses import cross_entropy, kd_kl
from freekd.methods.base import METHODS, StepOutput
from freekd.methods.context import MethodContext
from freekd.methods.online import OnlineMethod, unwrapped
from freekd.models import ImageClassifier
from freekd.models.branching import AUTO, BranchedNetwork
from freekd.models.composite import branch_classifier, export_branch

#: Most branches ONE builds (the paper's M is 3; more is memory, not accuracy).
MAX_BRANCHES = 64


def sigmoid_rampup(progress: float) -> float:
    """exp(−5 (1 − t)²) for t = ``progress`` clipped to [0, 1]: the ramp-up of Laine & Aila 2017
    (ICLR, "Temporal Ensembling", arXiv:1610.02242, Appendix A) that ONE's distillation weight
    follows."""
    t = min(1.0, max(0.0, progress))
    return math.exp(-5.0 * (1.0 - t) ** 2)


@METHODS.register("one")
class OnTheFlyNativeEnsemble(OnlineMethod):
    """Lan, Zhu & Gong 2018 (NeurIPS, "Knowledge Distillation by On-the-Fly Native Ensemble",
    arXiv:1806.04606) §3, Eq. 1-5: one network whose last stage and classifier are repeated in
    M branches on a shared trunk (``models.branching.BranchedNetwork``), a gate weighing the
    branches' logits into a teacher z_e = Σ_m g_m z_m, and

        L = Σ_m CE(z_m, y) + CE(z_e, y) + w(t) · T² Σ_m KL(p_T(z_e) ‖ p_T(z_m))   (Eq. 5)

    with the teacher's p_T(z_e) detached in the KL term, T = 3 and w(t) the sigmoid ramp-up
    (:func:`sigmoid_rampup`) over the first ``rampup_fraction`` of the run's steps: the
    authors' 80 of 300 epochs. Every branch exported with the trunk is an ordinary network of
    the base architecture; the gated network itself is the ensemble.

    Args:
        base: a classifier of the architecture to branch (its weights are not used: each branch
            is built anew, so the branches start from independent initializations).
        branches: M, the number of branches (the paper's is 3).
        branch_at: module path of the stage where the branches start, ``"auto"`` for the last
            resolution stage (``stages.2`` of a freekd ResNet, ``groups.2`` of a WRN).
        temperature: T of the distillation term.
        kl_weight: weight of the distillation term at the end of the ramp-up (the paper's is 1).
        rampup_fraction: share of the planned steps over which the weight ramps up (0: none).
        total_steps: the run's planned steps (wired from the run); without them, no ramp-up.
    """

    kind = "branch"
    min_batch = 2
    steps: Tensor

    def __init__(
        self,
        base: ImageClassifier,
        *,
        branches: int = 3,
        branch_at: str = AUTO,
        temperature: float = 3.0,
        kl_weight: float = 1.0,
        rampup_fraction: float = 80 / 300,
        total_steps: int | None = None,
    ) -> None:
        super().__init__()
        if temperature <= 0 or kl_weight < 0 or not 0 <= rampup_fraction <= 1:
            raise ValueError(
                "temperature must be positive, kl_weight non-negative and rampup_fraction in [0, 1]"
            )
        if not 1 <= branches <= MAX_BRANCHES:
            raise ValueError(f"branches must lie in [1, {MAX_BRANCHES}]")
        if not isinstance(branch_at, str) or not branch_at:
            raise ValueError("branch_at must be a module path or 'auto'")
        self.student = branch_classifier(base, branches=branches, branch_at=branch_at)
        self.temperature, self.kl_weight = temperature, kl_weight
        self.rampup_steps = rampup_fraction * (total_steps or 0)
        # Steps taken, saved with the method so a resumed run continues the ramp-up.
        self.register_buffer("steps", torch.zeros((), dtype=torch.long))

    @classmethod
    def from_context(cls, context: MethodContext, **params: Any) -> OnTheFlyNativeEnsemble:
        if len(context.peers) != 1:
            raise FreekdError(
                f"ONE branches one network, got {len(context.peers)} architectures; pass one "
                "--arch (and no --peers)"
            )
        base = context.peers[0]
        if not isinstance(base, ImageClassifier):
            raise FreekdError("ONE branches a freekd classifier")
        return cls(base, total_steps=context.total_steps, **params)

    def _network(self) -> BranchedNetwork:
        classifier = unwrapped(self.student)
        assert isinstance(classifier, ImageClassifier)
        network = classifier.net
        assert isinstance(network, BranchedNetwork)
        return network

    def training_step(self, batch: Batch) -> StepOutput:
        if batch.labels is None:
            raise FreekdError("ONE trains on labelled batches")
        ensemble = self.student(batch.images)  # one pass (through DDP) fills the branches' logits
        network = self._network()
        branches = network.branch_logits
        assert branches is not None
        labels = batch.labels
        if self.training:
            self.steps += 1
        ramp = sigmoid_rampup(float(self.steps) / self.rampup_steps) if self.rampup_steps else 1.0
        target = ensemble.detach()
        kl = sum(
            (kd_kl(logits, target, temperature=self.temperature) for logits in branches),
            start=ensemble.new_zeros(()),
        )
        ce = sum(
            (cross_entropy(logits, labels) for logits in branches), start=ensemble.new_zeros(())
        )
        losses = {
            "ce": ce,
            "ce_ensemble": cross_entropy(ensemble, labels),
            "kl": ramp * self.kl_weight * kl,
        }
        return StepOutput(losses=losses, logits=ensemble)

    def networks(self) -> dict[str, ImageClassifier]:
        classifier = unwrapped(self.student)
        assert isinstance(classifier, ImageClassifier)
        return {
            f"branch{index}": export_branch(classifier, index)
            for index in range(self._network().branches)
        }

    def ensemble(self) -> ImageClassifier:
        classifier = unwrapped(self.student)
        assert isinstance(classifier, ImageClassifier)
        return classifier
