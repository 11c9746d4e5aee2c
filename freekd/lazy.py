"""Lazy package exports (PEP 562): a package names what it offers without importing torch.

A feature package holds both its library code (torch) and its config and CLI (no torch). Its
``__init__`` lists its public names with the submodule that defines each; the submodule is
imported on first attribute access, so ``freekd --help`` and the config loader stay fast.
"""

from __future__ import annotations

import importlib
from collections.abc import Callable, Mapping
from typing import Any


def lazy_exports(
    package: str, exports: Mapping[str, str]
) -> tuple[Callable[[str], Any], Callable[[], list[str]]]:
    """``__getattr__`` and ``__dir__`` for ``package``; ``exports`` maps a name to its submodule."""

    def get(name: str) -> Any:
        try:
            module = exports[name]
        except KeyError:
            raise AttributeError(f"module {package!r} has no attribute {name!r}") from None
        return getattr(importlib.import_module(f"{package}.{module}"), name)

    def names() -> list[str]:
        return sorted(exports)

    return get, names


#: The format of the root handler ``import opacus`` installs (``logging.basicConfig`` in
#: ``opacus.utils.module_utils``), which would take over the logging of a program using freekd.
OPACUS_ROOT_FORMAT = "%(asctime)s:%(levelname)s:%(message)s"


def drop_opacus_root_handler() -> None:
    """Remove the root logging handler Opacus installs on import; call it after importing it."""
    import logging

    root = logging.getLogger()
    for handler in list(root.handlers):
        if handler.formatter is not None and handler.formatter._fmt == OPACUS_ROOT_FORMAT:
            root.removeHandler(handler)
