"""The loss threshold attack (Yeom et al. 2018): members have lower loss."""

from __future__ import annotations

from typing import ClassVar

import numpy as np

from freekd.audit import scores as statistics
from freekd.audit.attacks.base import ATTACKS, AuditData


@ATTACKS.register("loss")
class LossThreshold:
    """Yeom et al. 2018, "Privacy Risk in Machine Learning", §3.2: members have lower loss.

    Score: −cross-entropy of the true label.
    """

    needs_shadows: ClassVar[bool] = False
    paper: ClassVar[str] = "Yeom et al. 2018 (arXiv:1709.01604) §3.2"

    def scores(self, data: AuditData) -> np.ndarray:
        return -statistics.cross_entropy_loss(data.target_logits, data.labels)
