"""What every membership-inference attack shares: the data it sees, its protocol, the registry.

Every attack sees the same :class:`AuditData` — the target model's logits on the audit examples
(members and non-members, shuffled together; the attack is never told which is which), their
labels and, for the attacks that need them, the logits of shadow (reference) models with the
record of which examples each shadow model trained on. Attacks are picked by name from
:data:`ATTACKS`; all honour the :class:`Attack` protocol. Each attack module of this package
registers its attacks with ``@ATTACKS.register(name)``.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar, Protocol

import numpy as np
from torch import Tensor

from freekd.audit import scores as statistics
from freekd.errors import FreekdError
from freekd.registry import Registry


@dataclass(frozen=True)
class AuditData:
    """What an attacker observes.

    Attributes:
        target_logits: (N, K) logits of the audited model on the N audit examples.
        labels: (N,) their labels.
        shadow_logits: (M, N, K) logits of M shadow models on the same examples, or ``None``.
        shadow_in: (M, N) bool, True where shadow model m trained on example n.
    """

    target_logits: Tensor
    labels: Tensor
    shadow_logits: Tensor | None = None
    shadow_in: Tensor | None = None

    @property
    def shadow_models(self) -> int:
        return 0 if self.shadow_logits is None else int(self.shadow_logits.shape[0])


class Attack(Protocol):
    """A membership-inference attack: ``scores(data)`` → (N,) float64, higher = member."""

    needs_shadows: ClassVar[bool]
    paper: ClassVar[str]

    def scores(self, data: AuditData) -> np.ndarray: ...


ATTACKS: Registry[type[Attack]] = Registry("attack")

#: What ``freekd audit`` runs without ``--attack``: every attack, the shadow-model ones when
#: shadow models are trained.
DEFAULT_ATTACKS = (
    "loss",
    "confidence",
    "entropy",
    "modified-entropy",
    "lira-online",
    "lira-online-fixed-variance",
    "lira-offline",
    "lira-offline-fixed-variance",
    "rmia",
    "rmia-offline",
)


def shadow_statistic(data: AuditData, attack: str) -> tuple[np.ndarray, np.ndarray]:
    """(M, N) shadow log-odds and the (M, N) inclusion mask, validated."""
    if data.shadow_logits is None or data.shadow_in is None:
        raise FreekdError(
            f"the {attack} attack needs shadow models; pass --shadow-models N (N ≥ 4)"
        )
    return (
        statistics.true_class_log_odds(data.shadow_logits, data.labels),
        data.shadow_in.cpu().numpy().astype(bool),
    )


def require_models(counts: np.ndarray, minimum: int, attack: str, which: str) -> None:
    """Refuse to score when some example has fewer than ``minimum`` ``which`` shadow models."""
    fewest = int(counts.min())
    if fewest < minimum:
        raise FreekdError(
            f"the {attack} attack needs at least {minimum} {which} shadow model(s) per example, "
            f"some example has {fewest}; train more shadow models (--shadow-models)"
        )
