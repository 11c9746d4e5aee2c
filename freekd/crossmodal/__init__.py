"""Cross-modal distillation: image ↔ text models on open_clip, paired data, retrieval metrics.

``data`` builds paired (image, caption) sets from labelled images and caption templates,
``clip`` wraps an open_clip CLIP built from a config (images in [0, 1], any size and channel
count), ``methods`` holds the training rules and ``evaluate`` the retrieval recall and zero-shot
accuracy. The wiring (``freekd crossmodal``) is in ``freekd.pipelines``.
"""

from freekd.crossmodal.clip import ClipModel, load_clip, save_clip
from freekd.crossmodal.data import PairedDataset, class_prompts, templated_pairs

__all__ = [
    "ClipModel",
    "PairedDataset",
    "class_prompts",
    "load_clip",
    "save_clip",
    "templated_pairs",
]
