"""The confidence threshold attack (Song & Mittal 2021): members get a likelier true class."""

from __future__ import annotations

from typing import ClassVar

import numpy as np

from freekd.audit import scores as statistics
from freekd.audit.attacks.base import ATTACKS, AuditData


@ATTACKS.register("confidence")
class ConfidenceThreshold:
    """Song & Mittal 2021, "Systematic Evaluation of Privacy Risks of Machine Learning Models",
    §3.1: the probability of the true class, higher for members.

    The paper also sets per-class thresholds from shadow training; the ROC here sweeps one global
    threshold, the attack's threshold-free form. The score is log p_y (the same ranking as p_y,
    which rounds to 1.0 for every well-fitted member); on its own it ranks like the loss.
    """

    needs_shadows: ClassVar[bool] = False
    paper: ClassVar[str] = "Song & Mittal 2021 (arXiv:2003.10595) §3.1"

    def scores(self, data: AuditData) -> np.ndarray:
        return statistics.true_class_log_probability(data.target_logits, data.labels)
