"""Training rules for image–text models, run by the one Trainer."""

from __future__ import annotations

from freekd.crossmodal.clip import ClipModel
from freekd.data.batch import Batch
from freekd.errors import FreekdError
from freekd.losses.contrastive import clip_contrastive
from freekd.methods.base import Method, StepOutput


class ClipContrastive(Method):
    """Train a CLIP from paired batches with CLIP's own loss (Radford et al. 2021, §2.3).

    Batches carry images and their captions' token ids (``Batch.texts``). This trains the tiny
    open_clip teachers of the cross-modal benchmark and, on a student, the baseline without a
    teacher.

    Args:
        student: the CLIP being trained.
    """

    student: ClipModel

    def __init__(self, student: ClipModel) -> None:
        super().__init__()
        self.student = student

    def training_step(self, batch: Batch) -> StepOutput:
        if batch.texts is None:
            raise FreekdError("CLIP training needs paired batches (images with caption tokens)")
        images = self.student.encode_image(batch.images)
        texts = self.student.encode_text(batch.texts)
        loss = clip_contrastive(images, texts, logit_scale=self.student.logit_scale())
        return StepOutput(losses={"clip": loss}, logits=None)
