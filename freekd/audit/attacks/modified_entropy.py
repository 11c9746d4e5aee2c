"""The modified-entropy threshold attack (Song & Mittal 2021, Eq. 6): label-aware entropy."""

from __future__ import annotations

from typing import ClassVar

import numpy as np

from freekd.audit import scores as statistics
from freekd.audit.attacks.base import ATTACKS, AuditData


@ATTACKS.register("modified-entropy")
class ModifiedEntropyThreshold:
    """Song & Mittal 2021, §3.2, Eq. 6: the label-aware modified entropy, lower for members.

    Score: −Mentr(p, y).
    """

    needs_shadows: ClassVar[bool] = False
    paper: ClassVar[str] = "Song & Mittal 2021 (arXiv:2003.10595) §3.2, Eq. 6"

    def scores(self, data: AuditData) -> np.ndarray:
        return -statistics.modified_entropy(data.target_logits, data.labels)
