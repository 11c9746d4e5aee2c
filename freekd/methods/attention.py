"""Response- plus feature-based distillation: Hinton KD with attention transfer."""

from __future__ import annotations

from typing import ClassVar

import torch
from torch import nn

from freekd.data.batch import Batch
from freekd.errors import FreekdError
from freekd.hooks import spatial_blocks
from freekd.losses import attention_transfer
from freekd.methods.base import METHODS, StepOutput
from freekd.methods.context import probe_feature_shapes
from freekd.methods.distiller import input_shape_of
from freekd.methods.kd import LogitKD
from freekd.teachers import Teacher


@METHODS.register("kd-at")
class AttentionKD(LogitKD):
    """Hinton KD plus attention transfer on every stage both networks share, the student loss
    of Zero-shot Knowledge Transfer (Micaelli & Storkey 2019, arXiv:1905.09768, Eq. 2):

        loss = kd_weight · (T² · KL(p_T(teacher) ‖ p_T(student)) + β · Σ_j AT_j)

    where AT_j is Zagoruyko & Komodakis's attention-transfer distance (arXiv:1612.03928, Eq. 2;
    ``losses.kd.attention_transfer``) between the teacher's and the student's j-th block. ZSKT
    pairs the WRN groups; here blocks pair up by spatial size (``spatial_blocks``): the last
    activation of each resolution both networks produce, so any teacher/student pair with the
    same down-sampling schedule (LeNet-5 and LeNet-5-half, WRN-40-2 and WRN-16-1) works
    without naming layers. Channel counts may differ: attention maps average over channels.
    Hard-label cross-entropy is added when the batch is labelled (ce_weight).

    Args:
        student: the network being trained (takes [0, 1] images).
        teacher: frozen teacher.
        temperature: softmax temperature T of the KD term; 4 as in ``kd`` (ZSKT uses 1).
        kd_weight: overall weight of the distillation loss (scales both terms).
        beta: weight β of the attention term relative to the KL. ZSKT's 250 is for Adam, which
            ignores the loss scale; with freekd's SGD it swamps the KL: zskt on LeNet-5 →
            LeNet-5-half with kd_weight 10 stayed at 10 % accuracy after 600 steps, while β = 25
            and 2.5 gave 97.54 % and 97.62 % (seed 0; plain KD 97.66 %).
        ce_weight: weight of the hard-label term on labelled batches.

    Raises:
        FreekdError: when the two networks share no feature-map size (checked on construction
            with one forward pass of blank images of the teacher's input shape).
    """

    #: Needs (B, C, H, W) activations at matching resolutions in student and teacher.
    needs_feature_maps: ClassVar[bool] = True

    def __init__(
        self,
        student: nn.Module,
        teacher: Teacher,
        *,
        temperature: float = 4.0,
        kd_weight: float = 1.0,
        beta: float = 2.5,
        ce_weight: float = 0.0,
    ) -> None:
        if beta < 0:
            raise ValueError(f"beta must be non-negative, got {beta}")
        super().__init__(
            student, teacher, temperature=temperature, kd_weight=kd_weight, ce_weight=ce_weight
        )
        self.beta = beta
        self._check_shared_blocks()

    def _check_shared_blocks(self) -> None:
        """Refuse, before any training, a pair without a feature-map size in common.

        One forward pass of two blank images of the teacher's input shape through each network,
        under no_grad and in eval mode (BatchNorm statistics do not move; modes restored):
        ``methods.context.probe_feature_shapes``.
        """
        shapes = probe_feature_shapes(self.student, self.teacher, input_shape_of(self.teacher))
        if not shapes.shared_sizes():
            raise FreekdError(
                f"attention transfer needs feature maps of the same size in student and teacher; "
                f"the student has {sorted(shapes.student.sizes)}, the teacher "
                f"{sorted(shapes.teacher.sizes)}: use --method kd, or a student with the "
                f"teacher's down-sampling"
            )

    def training_step(self, batch: Batch) -> StepOutput:
        with torch.no_grad(), spatial_blocks(self.teacher, who="teacher") as teacher_blocks:
            teacher_logits = self.teacher(batch.images)
        with spatial_blocks(self.student, who="student") as student_blocks:
            student_logits = self.student(batch.images)
        shared = [size for size in student_blocks if size in teacher_blocks]
        attention = attention_transfer(
            [student_blocks[s] for s in shared], [teacher_blocks[s] for s in shared]
        )
        losses = self.response_losses(student_logits, teacher_logits, batch.labels)
        losses["attention"] = self.kd_weight * self.beta * attention
        return StepOutput(losses=losses, logits=student_logits)
