"""freekd: knowledge distillation without data, with private data, or across modalities."""

from __future__ import annotations

__version__ = "0.1.0"

__all__ = ["__version__", "load_model"]


def load_model(path: str, *, device: str = "cpu", trust_code: bool = False) -> object:
    """Load a freekd checkpoint as an eval-mode ``nn.Module`` that takes [0, 1] images.

    A checkpoint whose ``arch`` is an import path (a user class) is built only with
    ``trust_code=True``: building it imports and runs that code. Imports torch lazily so that
    ``import freekd`` stays cheap.
    """
    from freekd.checkpoint import load_model as _load_model

    return _load_model(path, device=device, trust_code=trust_code)
