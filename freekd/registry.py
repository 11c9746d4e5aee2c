"""A generic name → implementation registry, consulted only at the config/CLI boundary."""

from __future__ import annotations

import importlib
import inspect
import pkgutil
from collections.abc import Callable, Collection, Iterable
from typing import Any, Generic, TypeVar

from freekd.errors import UnknownNameError

T = TypeVar("T")


class Registry(Generic[T]):
    """Maps names to implementations (model factories, methods, synthesizers, datasets ...).

    Registries are filled when their subpackage is imported and never mutated afterwards; they are
    the only module-level mutable state in freekd.

    Args:
        kind: what the registry holds, used in error messages ("model", "method", ...).
    """

    def __init__(self, kind: str) -> None:
        self.kind = kind
        self._entries: dict[str, T] = {}

    def register(self, name: str) -> Callable[[T], T]:
        """Decorator adding ``obj`` under ``name``; a duplicate name is an error."""

        def add(obj: T) -> T:
            if name in self._entries:
                raise KeyError(f"{self.kind} {name!r} is already registered")
            self._entries[name] = obj
            return obj

        return add

    def get(self, name: str) -> T:
        """The implementation registered as ``name``.

        Raises:
            UnknownNameError: ``name`` is not registered; the message lists the known names.
        """
        try:
            return self._entries[name]
        except KeyError:
            raise UnknownNameError(
                f"unknown {self.kind} {name!r}; known: {', '.join(self.names())}"
            ) from None

    def __contains__(self, name: object) -> bool:
        return name in self._entries

    def names(self) -> list[str]:
        """Registered names, sorted."""
        return sorted(self._entries)


def import_plugins(package: str, path: Iterable[str], *, skip: Collection[str] = ()) -> None:
    """Import every module of a plug-in package, so each registers itself on import.

    Called at the end of a plug-in package's ``__init__`` (``methods``, ``generators``, ...):
    adding a plug-in is adding one file, with no central list to edit. Modules whose name starts
    with ``_`` and the names in ``skip`` (the package's own infrastructure) are not imported here.
    """
    for module in pkgutil.iter_modules(path):
        if not module.name.startswith("_") and module.name not in skip:
            importlib.import_module(f"{package}.{module.name}")


# The shared constructor arguments are wired by the pipeline, never set from a config (a
# method's train_size and feature_shapes come from its MethodContext, see Method.from_context).
WIRED = {
    "image_shape",
    "num_classes",
    "rng",
    "device",
    "train_size",
    "feature_shapes",
    "total_steps",
}


def hyperparameters(cls: type) -> dict[str, Any]:
    """``cls``'s keyword-only hyperparameters with their defaults.

    A subclass whose ``__init__`` only changes some defaults and passes ``**kwargs`` on (e.g.
    ``ZSKT``) adds its base class's parameters, with its own defaults taking precedence.
    """

    found: dict[str, Any] = {}
    for klass in cls.__mro__:
        init = vars(klass).get("__init__")
        if init is None:
            continue
        parameters = inspect.signature(init).parameters.values()
        for p in parameters:
            if p.kind is inspect.Parameter.KEYWORD_ONLY and p.name not in WIRED:
                found.setdefault(p.name, p.default)
        if not any(p.kind is inspect.Parameter.VAR_KEYWORD for p in parameters):
            break
    return found
