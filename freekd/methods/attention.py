"""Response- plus feature-based distillation: Hinton KD with attention transfer."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any, ClassVar

import torch
from torch import Tensor, nn

from freekd.data.batch import Batch
from freekd.errors import FreekdError
from freekd.losses import attention_transfer
from freekd.methods.base import StepOutput
from freekd.methods.kd import LogitKD
from freekd.teachers import Teacher


@contextmanager
def spatial_blocks(model: nn.Module) -> Iterator[dict[tuple[int, int], Tensor]]:
    """Record, per spatial size, the output of the last leaf module that produced that size.

    Inside the block every forward pass of ``model`` fills the dict {(H, W): (B, C, H, W)
    activations}, in forward order, so each entry is the end of one resolution stage: the
    output of a WRN group, or of a LeNet's ReLU/pool at 28×28, 14×14, 10×10 and 5×5.
    1×1 maps (after global pooling) carry no spatial attention and are left out.
    """
    blocks: dict[tuple[int, int], Tensor] = {}

    def record(module: nn.Module, inputs: tuple[Any, ...], output: Any) -> None:
        if isinstance(output, Tensor) and output.dim() == 4 and output.shape[-2:] != (1, 1):
            size = (int(output.shape[-2]), int(output.shape[-1]))
            blocks.pop(size, None)  # re-insert: dict order stays forward order of stage ends
            blocks[size] = output

    leaves = [m for m in model.modules() if not list(m.children())]
    handles = [leaf.register_forward_hook(record) for leaf in leaves]
    try:
        yield blocks
    finally:
        for handle in handles:
            handle.remove()


def _device(module: nn.Module) -> torch.device:
    parameter = next(module.parameters(), None)
    return parameter.device if parameter is not None else torch.device("cpu")


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

        One forward pass of two blank images of the teacher's input shape, under no_grad and
        with the student in eval mode (its BatchNorm statistics do not move; modes restored).
        """
        probe = torch.zeros((2, *self.teacher.input_shape))
        modes = [(m, m.training) for m in self.student.modules()]
        self.student.eval()
        try:
            with torch.no_grad(), spatial_blocks(self.teacher) as teacher_blocks:
                self.teacher(probe.to(_device(self.teacher)))
            with torch.no_grad(), spatial_blocks(self.student) as student_blocks:
                self.student(probe.to(_device(self.student)))
        finally:
            for module, training in modes:
                module.training = training
        if not any(size in teacher_blocks for size in student_blocks):
            raise FreekdError(
                f"attention transfer needs feature maps of the same size in student and teacher; "
                f"the student has {sorted(student_blocks)}, the teacher {sorted(teacher_blocks)}: "
                f"use --method kd, or a student with the teacher's down-sampling"
            )

    def training_step(self, batch: Batch) -> StepOutput:
        with torch.no_grad(), spatial_blocks(self.teacher) as teacher_blocks:
            teacher_logits = self.teacher(batch.images)
        with spatial_blocks(self.student) as student_blocks:
            student_logits = self.student(batch.images)
        shared = [size for size in student_blocks if size in teacher_blocks]
        attention = attention_transfer(
            [student_blocks[s] for s in shared], [teacher_blocks[s] for s in shared]
        )
        losses = self.response_losses(student_logits, teacher_logits, batch.labels)
        losses["attention"] = self.kd_weight * self.beta * attention
        return StepOutput(losses=losses, logits=student_logits)
