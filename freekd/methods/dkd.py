"""Decoupled knowledge distillation (response-based)."""

from __future__ import annotations

from typing import Any

import torch
from torch import Tensor, nn

from freekd.data.batch import Batch
from freekd.losses.kd import decoupled_kd
from freekd.methods.base import METHODS
from freekd.methods.context import MethodContext
from freekd.methods.distiller import Distiller, Views


@METHODS.register("dkd")
class DecoupledKD(Distiller):
    """Zhao et al. 2022 (CVPR, "Decoupled Knowledge Distillation", arXiv:2203.08679) Eq. 7:

        loss = ce_weight · CE + w · (α · TCKD + β · NCKD),   w = min(1, step / warm-up steps)

    with TCKD and NCKD of ``losses.kd.decoupled_kd``. The warm-up (§4, implementation details)
    ramps the distillation weight linearly so the large β does not swamp the cross-entropy at the
    start: the paper's 20 of 240 epochs, here the same share of the run, ``warmup_fraction`` of
    its planned steps. The target class t is the label; on an unlabelled batch (synthetic
    images, queries) it is the teacher's prediction.

    Defaults are the paper's CIFAR-100 setting: α = 1, β = 8, T = 4 (its ImageNet setting is
    α = 0.5, β = 0.5).

    Args:
        student: the network being trained.
        teacher: frozen teacher.
        alpha: weight α of the target-class term TCKD.
        beta: weight β of the non-target term NCKD.
        temperature: T.
        ce_weight: weight of the hard-label cross-entropy.
        warmup_fraction: share of the run's steps over which the distillation weight ramps
            from 0 to 1 (0: none).
        total_steps: the run's planned steps, wired from the run (``MethodContext``); without
            them there is no warm-up.
    """

    steps: Tensor

    def __init__(
        self,
        student: nn.Module,
        teacher: nn.Module,
        *,
        alpha: float = 1.0,
        beta: float = 8.0,
        temperature: float = 4.0,
        ce_weight: float = 1.0,
        warmup_fraction: float = 20 / 240,
        total_steps: int | None = None,
    ) -> None:
        super().__init__(student, teacher, ce_weight=ce_weight)
        if alpha < 0 or beta < 0 or temperature <= 0 or not 0 <= warmup_fraction <= 1:
            raise ValueError(
                "alpha and beta must be non-negative, temperature positive and warmup_fraction "
                "in [0, 1]"
            )
        self.alpha, self.beta, self.temperature = alpha, beta, temperature
        self.warmup_steps = warmup_fraction * (total_steps or 0)
        # Steps taken, saved with the method so a resumed run continues the warm-up.
        self.register_buffer("steps", torch.zeros((), dtype=torch.long))

    @classmethod
    def from_context(cls, context: MethodContext, **params: Any) -> DecoupledKD:
        return cls(
            context.student, context.required_teacher, total_steps=context.total_steps, **params
        )

    def distill_losses(self, student: Views, teacher: Views, batch: Batch) -> dict[str, Tensor]:
        target = batch.labels if batch.labels is not None else teacher.logits.argmax(1)
        if self.training:
            self.steps += 1
        ramp = min(1.0, float(self.steps) / self.warmup_steps) if self.warmup_steps else 1.0
        loss = decoupled_kd(
            student.logits,
            teacher.logits,
            target,
            alpha=self.alpha,
            beta=self.beta,
            temperature=self.temperature,
        )
        return {"dkd": ramp * loss}
