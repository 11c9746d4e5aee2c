"""The prediction-entropy threshold attack (Song & Mittal 2021): members get surer predictions."""

from __future__ import annotations

from typing import ClassVar

import numpy as np

from freekd.audit import scores as statistics
from freekd.audit.attacks.base import ATTACKS, AuditData


@ATTACKS.register("entropy")
class EntropyThreshold:
    """Song & Mittal 2021, §3.1: members get more certain (lower-entropy) predictions.

    Score: −H(p).
    """

    needs_shadows: ClassVar[bool] = False
    paper: ClassVar[str] = "Song & Mittal 2021 (arXiv:2003.10595) §3.1"

    def scores(self, data: AuditData) -> np.ndarray:
        return -statistics.prediction_entropy(data.target_logits)
