"""Deep Mutual Learning (online KD between peers)."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from torch import Tensor, nn

from freekd.data.batch import Batch
from freekd.errors import FreekdError
from freekd.losses import cross_entropy
from freekd.losses.kd import mutual_kl
from freekd.methods.base import METHODS, StepOutput
from freekd.methods.context import MethodContext
from freekd.methods.online import OnlineMethod, unwrapped
from freekd.models import ImageClassifier
from freekd.models.composite import ensemble_classifier


@METHODS.register("dml")
class DeepMutualLearning(OnlineMethod):
    """Zhang et al. 2018 (CVPR, "Deep Mutual Learning", arXiv:1706.00384) §3.1-3.2, Eq. 5:
    K peers, each trained with

        L_k = CE(p_k, y) + kl_weight · 1/(K−1) Σ_{l≠k} KL(p_l ‖ p_k),

    the other peers' predictions p_l detached (``losses.kd.mutual_kl``). The paper updates the
    peers one after the other within a step; here all K are updated in the same step from the
    same batch, which the paper's §3.2 notes for K > 2 and most re-implementations use. The
    peers may differ in architecture. Their ensemble averages the peers' probabilities.

    Args:
        peers: K ≥ 2 freshly built classifiers (``peer0`` is ``student``).
        kl_weight: weight of the mimicry term (the paper's is 1).
        temperature: softmax temperature of the mimicry term (the paper's is 1).
    """

    kind = "peer"
    default_peers = 2

    def __init__(
        self, peers: Sequence[nn.Module], *, kl_weight: float = 1.0, temperature: float = 1.0
    ) -> None:
        super().__init__()
        if len(peers) < 2:
            raise FreekdError(
                f"DML trains at least two peers, got {len(peers)}; pass --peers K (K ≥ 2) or "
                "--arch twice"
            )
        if kl_weight < 0 or temperature <= 0:
            raise ValueError("kl_weight must be non-negative and temperature positive")
        self.kl_weight, self.temperature = kl_weight, temperature
        self.student = peers[0]
        self.names = ["student", *(f"peer{index}" for index in range(1, len(peers)))]
        for name, peer in zip(self.names[1:], peers[1:], strict=True):
            setattr(self, name, peer)

    @classmethod
    def from_context(cls, context: MethodContext, **params: Any) -> DeepMutualLearning:
        return cls(context.peers, **params)

    def distributed_modules(self) -> list[str]:
        return list(self.names)

    def training_step(self, batch: Batch) -> StepOutput:
        if batch.labels is None:
            raise FreekdError("DML trains on labelled batches")
        logits = [getattr(self, name)(batch.images) for name in self.names]
        ce = sum(
            (cross_entropy(peer, batch.labels) for peer in logits), start=logits[0].new_zeros(())
        )
        mimicry = mutual_kl(logits, temperature=self.temperature).sum()
        losses: dict[str, Tensor] = {"ce": ce, "kl": self.kl_weight * mimicry}
        return StepOutput(losses=losses, logits=logits[0])

    def networks(self) -> dict[str, ImageClassifier]:
        found = {}
        for index, name in enumerate(self.names):
            network = unwrapped(getattr(self, name))
            assert isinstance(network, ImageClassifier)
            found[f"peer{index}"] = network
        return found

    def ensemble(self) -> ImageClassifier:
        return ensemble_classifier(list(self.networks().values()))
