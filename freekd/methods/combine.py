"""Several distillers at once: ``--method kd+at``, one forward pass of each network per step.

``METHODS.get("kd+at")`` gives a :class:`Combination` class made for those parts. Its
hyperparameters are one mapping per part (``--set method.params.at.weight=500``) and the
cross-entropy weight, which the combination adds once (each part's own is set to 0). The parts'
loss terms keep their names in ``metrics.jsonl`` (``kd``, ``attention``, ``ce``); a name two parts
share is prefixed with the part's method name.
"""

from __future__ import annotations

import inspect
from collections.abc import Mapping
from functools import cache
from typing import Any, cast

from torch import Tensor, nn

from freekd.config import check_plugin_params
from freekd.data.batch import Batch
from freekd.errors import FreekdError, UnknownNameError
from freekd.methods.base import CLASSIFIER, METHODS, Method
from freekd.methods.context import MethodContext
from freekd.methods.distiller import Distiller, Views
from freekd.registry import hyperparameters

SEPARATOR = "+"


def part_names(name: str) -> list[str]:
    """The methods a combined name lists (``"kd+at"`` → ``["kd", "at"]``)."""
    return [part.strip() for part in name.split(SEPARATOR)]


def _part_class(name: str) -> type[Distiller]:
    if name not in METHODS:
        combinable = ", ".join(n for n in METHODS.names() if _combinable(n))
        raise UnknownNameError(f"unknown method {name!r} to combine; combinable: {combinable}")
    method = METHODS.get(name)
    if not _combinable(name):
        raise UnknownNameError(
            f"method {name} cannot be combined with others (it runs the networks itself); "
            f"combinable: {', '.join(n for n in METHODS.names() if _combinable(n))}"
        )
    return cast(type[Distiller], method)


def _combinable(name: str) -> bool:
    """A distiller that leaves the forward passes to the base class (``kd-at`` runs its own)."""
    method = METHODS.get(name)
    return (
        isinstance(method, type)
        and issubclass(method, Distiller)
        and method.training_step is Distiller.training_step
    )


def _defaults(method: type) -> dict[str, Any]:
    return {k: v for k, v in hyperparameters(method).items() if k != "ce_weight"}


class Combination(Distiller):
    """The sum of several distillers' terms, each network run once per step.

    Args:
        context: the run's ``MethodContext`` (each part is built from it).
        names: the parts' method names, at least two, no repeats.
        parts: per part name, its parameters (``ce_weight`` excepted).
        ce_weight: weight of the hard-label cross-entropy, added once.
    """

    part_names: tuple[str, ...] = ()

    def __init__(
        self,
        context: MethodContext,
        names: list[str],
        parts: Mapping[str, Mapping[str, Any]],
        *,
        ce_weight: float,
    ) -> None:
        super().__init__(context.student, context.required_teacher, ce_weight=ce_weight)
        if len(names) < 2 or len(set(names)) != len(names):
            raise FreekdError(f"combine two or more different methods, got {'+'.join(names)}")
        self.parts = nn.ModuleDict()
        for name in names:
            given = parts.get(name) or {}
            if not isinstance(given, Mapping):
                raise FreekdError(
                    f"method.params.{name} must map {name}'s parameters to values, got {given!r}"
                )
            # Checked in place when it is the run's config: config.yaml saves what ran.
            params = given if isinstance(given, dict) else dict(given)
            if "ce_weight" in params:
                raise FreekdError(
                    f"set the cross-entropy weight once, as method.params.ce_weight, not in {name}"
                )
            known = hyperparameters(_part_class(name))
            known.pop("ce_weight", None)
            check_plugin_params(known, params, f"method {name}")
            part = _part_class(name).from_context(context, **params, ce_weight=0.0)
            # The parts read the combination's networks but do not own them: the student and the
            # teacher stay registered once, so they are saved and moved once.
            for network in ("student", "teacher"):
                module = part._modules.pop(network)
                object.__setattr__(part, network, module)
            self.parts[name] = part
            self.student_taps += [t for t in part.student_taps if t not in self.student_taps]
            self.teacher_taps += [t for t in part.teacher_taps if t not in self.teacher_taps]

    def distill_losses(self, student: Views, teacher: Views, batch: Batch) -> dict[str, Tensor]:
        losses: dict[str, Tensor] = {}
        for name, part in self.parts.items():
            for term, value in (
                cast(Distiller, part).distill_losses(student, teacher, batch).items()
            ):
                losses[f"{name}_{term}" if term in losses else term] = value
        return losses


@cache
def combined(name: str) -> type[Method]:
    """The ``Combination`` class for a name such as ``"kd+at"`` (made once per name)."""
    names = part_names(name)
    classes = [_part_class(part) for part in names]
    if len(set(names)) != len(names) or len(names) < 2 or any(not n for n in names):
        raise UnknownNameError(f"combine two or more different methods, as kd+at; got {name!r}")
    first_ce = inspect.signature(classes[0].__init__).parameters.get("ce_weight")
    ce_default = first_ce.default if first_ce is not None else 1.0

    def init(self: Combination, context: MethodContext, **params: Any) -> None:
        unknown = sorted(set(params) - {*names, "ce_weight"})
        if unknown:
            raise FreekdError(f"method {name} has no parameter {', '.join(unknown)}")
        ce_weight = params.pop("ce_weight", ce_default)
        Combination.__init__(self, context, names, params, ce_weight=ce_weight)

    keyword = inspect.Parameter.KEYWORD_ONLY
    init.__signature__ = inspect.Signature(  # type: ignore[attr-defined]
        [
            inspect.Parameter("self", inspect.Parameter.POSITIONAL_OR_KEYWORD),
            inspect.Parameter("context", inspect.Parameter.POSITIONAL_OR_KEYWORD),
            *[
                inspect.Parameter(n, keyword, default=_defaults(c))
                for n, c in zip(names, classes, strict=True)
            ],
            inspect.Parameter("ce_weight", keyword, default=ce_default),
        ]
    )

    @classmethod  # type: ignore[misc]
    def from_context(cls: type[Combination], context: MethodContext, **params: Any) -> Combination:
        return cls(context, **params)  # type: ignore[call-arg]

    return type(
        f"Combination[{name}]",
        (Combination,),
        {"__init__": init, "from_context": from_context, "part_names": tuple(names),
         "distills": CLASSIFIER, "__doc__": f"{name}: " + (Combination.__doc__ or "")},
    )  # fmt: skip


METHODS.combiner = combined
