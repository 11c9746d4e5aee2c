"""DFAD: Data-Free Adversarial Distillation (Fang et al. 2019, arXiv:1912.11006)."""

from __future__ import annotations

from typing import Any, ClassVar

from torch import Tensor

from freekd.datafree.synthesizers.adversarial import AdversarialSynthesizer
from freekd.datafree.synthesizers.base import SYNTHESIZERS
from freekd.losses.inversion import logit_discrepancy


@SYNTHESIZERS.register("dfad")
class DFAD(AdversarialSynthesizer):
    """Data-Free Adversarial Distillation, Fang et al. 2019 (arXiv:1912.11006) §3.

    The generator maximizes the mean absolute error between teacher and student logits, the
    model discrepancy's optimizable upper bound (Eq. 2–4; ``losses.inversion.logit_discrepancy``);
    the student minimizes the same MAE in the imitation stage, which is the ``logit-l1`` method.
    The paper alternates k = 5 student steps with one generator step, so run

        freekd datafree --method dfad --set method.name=logit-l1 --set synthesize_every=5

    (``recommended_method`` and ``recommended_synthesize_every`` name these defaults).

    Deviations from the paper: the generator is freekd's DCGAN ``Generator`` at width 32 (CPU
    budgets); its BatchNorm output layer is mapped through the teacher's normalization into
    [0, 1] pixels; the student is in eval mode while the generator steps (see
    ``AdversarialSynthesizer``).

    Args: see ``AdversarialSynthesizer``.
    """

    has_temperature = False
    recommended_method = "logit-l1"
    recommended_method_params: ClassVar[dict[str, Any]] = {}
    recommended_synthesize_every = 5

    def discrepancy(self, student_logits: Tensor, teacher_logits: Tensor) -> Tensor:
        return logit_discrepancy(student_logits, teacher_logits)
