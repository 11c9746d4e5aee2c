"""Cross-modal distillation: image ↔ text models on open_clip, paired data, retrieval metrics.

``data`` builds paired (image, caption) sets from labelled images and caption templates,
``clip`` wraps an open_clip CLIP built from a config (images in [0, 1], any size and channel
count), ``methods`` holds the training rules and ``evaluate`` the retrieval recall and zero-shot
accuracy. The wiring (``freekd crossmodal``) is in ``freekd.crossmodal.pipeline``
and ``freekd.crossmodal.cli``.
"""

from freekd.lazy import lazy_exports

_EXPORTS = {
    "ClipModel": "clip",
    "load_clip": "clip",
    "save_clip": "clip",
    "PairedDataset": "data",
    "class_prompts": "data",
    "templated_pairs": "data",
}
__all__ = sorted(_EXPORTS)
__getattr__, __dir__ = lazy_exports(__name__, _EXPORTS)
