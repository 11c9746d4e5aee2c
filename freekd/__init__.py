"""freekd: knowledge distillation without data, with private data, or across modalities.

The Python API (``freekd.api``) runs what each command runs, in a few lines::

    import freekd

    teacher = freekd.train_teacher(data="digits", arch="tiny-cnn", epochs=5, out="runs/t")
    student = freekd.datafree(teacher=teacher.out / "model.pt", epochs=1, out="runs/s")
    student.report["student"]["test_accuracy"], student.model

``freekd.graph_teacher`` and ``freekd.graph_distill`` run ``freekd graph``.
``freekd.distill``, ``freekd.online``, ``freekd.datafree``, ``freekd.audit``, ``freekd.pate``
and ``freekd.crossmodal`` are the feature packages, and calling one runs its command
(``freekd.api.distill`` ...); their modules stay importable as before
(``freekd.distill.pipeline``). Everything is imported on first use, so
``import freekd`` loads no torch.
"""

from __future__ import annotations

import importlib
import types
from typing import Any

__version__ = "0.1.0"

#: The API functions by name; the six that share a feature package's name are its ``__call__``.
_API = (
    "Run",
    "audit_pipeline",
    "evaluate",
    "graph_distill",
    "graph_teacher",
    "train_clip",
    "train_teacher",
)
_CALLABLE_PACKAGES = ("audit", "crossmodal", "datafree", "distill", "online", "pate")

__all__ = ["__version__", "load_model", *_API, *_CALLABLE_PACKAGES]


class _CommandPackage(types.ModuleType):
    """A feature package that is also its command: ``freekd.distill(...)`` is ``api.distill``."""

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        from freekd import api

        return getattr(api, self.__name__.rsplit(".", 1)[-1])(*args, **kwargs)


def _make_callable(names: tuple[str, ...]) -> None:
    for name in names:  # their __init__ modules import nothing heavy
        importlib.import_module(f"{__name__}.{name}").__class__ = _CommandPackage


_make_callable(_CALLABLE_PACKAGES)


def __getattr__(name: str) -> Any:
    if name == "api":
        return importlib.import_module(f"{__name__}.api")
    if name in _API:
        return getattr(importlib.import_module(f"{__name__}.api"), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def load_model(path: str, *, device: str = "cpu", trust_code: bool = False) -> object:
    """Load a freekd checkpoint as an eval-mode ``nn.Module`` that takes [0, 1] images (or,
    for a ``freekd graph`` checkpoint, node features and, for a GNN, the graph).

    A checkpoint whose ``arch`` is an import path (a user class) is built only with
    ``trust_code=True``: building it imports and runs that code. Imports torch lazily so that
    ``import freekd`` stays cheap.
    """
    from freekd.checkpoint import load_any_model

    return load_any_model(path, device=device, trust_code=trust_code)
