"""FitNets: hint-based feature distillation with a learned regressor (feature-based)."""

from __future__ import annotations

from typing import Any

import torch.nn.functional as F
from torch import Tensor, nn

from freekd.data.batch import Batch
from freekd.errors import FreekdError
from freekd.methods.base import METHODS
from freekd.methods.distiller import FeatureDistiller, Views


def regressor(student: tuple[int, ...], teacher: tuple[int, ...]) -> nn.Module:
    """The FitNets regressor r from the guided layer's shape to the hint layer's (Romero et al.
    2015, §2.2): a convolution whose kernel makes the sizes meet, k = H_s − H_t + 1 when the
    student's maps are larger (the paper's choice, fewer parameters than a fully connected one),
    a 1×1 convolution after resizing when they are smaller, a linear layer for vectors.

    The convolution is followed by BatchNorm, as in the comparison tables' regressor
    (RepDistiller's ``ConvReg``). Without it the one-stage hint loss is cheapest to lower by
    silencing the guided layer and letting the regressor's bias give the hint's mean: measured on
    Fashion-MNIST (ResNet-8 → LeNet-5-half, 1 % of the images, lr 0.02), the student's guided
    features fell from 0.29 to 0.001 in 15 steps and its cross-entropy stayed at ln 10; with
    BatchNorm the cross-entropy fell from 2.32 to 1.75 in 30 steps."""
    if len(student) == 1 and len(teacher) == 1:
        return nn.Linear(student[0], teacher[0])
    if len(student) != 3 or len(teacher) != 3:
        raise FreekdError(
            f"fitnet pairs two feature maps or two vectors, got shapes {list(student)} and "
            f"{list(teacher)}; name layers of one kind with method.params.student_layers/"
            "teacher_layers"
        )
    (c_s, h_s, w_s), (c_t, h_t, w_t) = student, teacher
    if h_s >= h_t and w_s >= w_t:
        conv = nn.Conv2d(c_s, c_t, kernel_size=(h_s - h_t + 1, w_s - w_t + 1))
        return nn.Sequential(conv, nn.BatchNorm2d(c_t))
    return nn.Sequential(
        nn.Upsample(size=(h_t, w_t), mode="bilinear"), nn.Conv2d(c_s, c_t, 1), nn.BatchNorm2d(c_t)
    )


@METHODS.register("fitnet")
class FitNet(FeatureDistiller):
    """FitNets, Romero et al. 2015 (ICLR, arXiv:1412.6550) §2.2, Eq. 3, in the one-stage form of
    the comparison tables (Tian et al. 2020's RepDistiller, mdistiller): the hint loss is added
    to the cross-entropy from the first step instead of pre-training the guided layers alone.

        loss = ce_weight · CE + weight · ‖u_h(x) − r(v_g(x))‖²   (averaged over elements)

    u_h is the teacher's hint layer, v_g the student's guided layer and r the regressor
    (:func:`regressor`), which trains with the student and is not part of the saved model.
    Without named layers the hint is the middle of the two networks' paired stages (§2.2: "we
    choose the hint to be the middle layer of the teacher"). Default weight 100 on the mean squared
    error, the tables' (Eq. 3's ½ is folded into the weight, as there).

    Args:
        student: the network being trained.
        teacher: frozen teacher.
        weight: weight of the hint term.
        ce_weight: weight of the hard-label cross-entropy.
        student_layers: guided layer path(s); several pairs sum their hint terms.
        teacher_layers: hint layer path(s).
    """

    title = "fitnet"

    def __init__(
        self,
        student: nn.Module,
        teacher: nn.Module,
        *,
        weight: float = 100.0,
        **shared: Any,
    ) -> None:
        super().__init__(student, teacher, **shared)
        self.weight = weight
        self.regressors = nn.ModuleList(
            regressor(s, t) for s, t in zip(self.student_shapes, self.teacher_shapes, strict=True)
        )

    def default_pairs(self, stages: list[tuple[str, str]]) -> list[tuple[str, str]]:
        return [stages[len(stages) // 2]] if stages else []

    def distill_losses(self, student: Views, teacher: Views, batch: Batch) -> dict[str, Tensor]:
        guided = student.pick(self.student_taps)
        hints = teacher.pick(self.teacher_taps)
        total = guided[0].new_zeros(())
        for r, g, h in zip(self.regressors, guided, hints, strict=True):
            if isinstance(r, nn.Linear):
                g, h = g.flatten(1), h.flatten(1)
            total = total + F.mse_loss(r(g), h)
        return {"hint": self.weight * total}
