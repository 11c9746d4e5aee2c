"""Method: a student (+ extra heads) and a frozen teacher → named, weighted loss terms.

Also the one registry of distillation methods, ``METHODS``: each method registers itself in
its own file with ``@METHODS.register(name)``, and a command accepts only the entries that
distill between the models it trains (``Method.distills``, ``METHODS.fitting``).
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, ClassVar, TypeVar, cast

import torch
from torch import Tensor, nn

from freekd.data.batch import Batch
from freekd.errors import UnknownNameError
from freekd.registry import Registry

if TYPE_CHECKING:
    from freekd.methods.context import MethodContext

M = TypeVar("M", bound="Method")

CLASSIFIER = "classifier"
"""``Method.distills`` of methods between image classifiers: a ``teachers.Teacher`` into a
student classifier, on image batches (``freekd distill``, ``freekd datafree``)."""

ONLINE = "online"
"""``Method.distills`` of online KD (``freekd online``): networks trained together from scratch,
teaching each other (DML's peers, ONE's branches), with no pre-trained teacher."""


@dataclass
class StepOutput:
    """What one training step produced.

    Attributes:
        losses: weighted loss terms by name (the loss function names, e.g. ``"kd"``, ``"ce"``);
            the Trainer back-propagates their sum and logs each one.
        logits: (B, K) student logits, for metrics.
    """

    losses: dict[str, Tensor]
    logits: Tensor | None = None

    @property
    def loss(self) -> Tensor:
        """The sum of the weighted terms."""
        return torch.stack(list(self.losses.values())).sum()


class Method(nn.Module):
    """Base class of every training rule run by the Trainer.

    A method holds the ``student`` (the module the run produces) and any extra trainable heads.
    A teacher, when there is one, is a frozen ``Teacher`` attribute; its parameters never require
    gradients, so ``trainable_parameters`` never yields them.

    A registered method is built by ``methods.build_method`` through :meth:`from_context`.
    Its hyperparameters are its constructor's keyword-only arguments, checked against the
    config before a run starts (``runs.check_params``).
    """

    #: What the method distills between: ``CLASSIFIER`` (image classifiers) or, for the
    #: cross-modal methods, ``crossmodal.methods.CLIP`` (a CLIP into a CLIP, on paired batches).
    distills: ClassVar[str] = CLASSIFIER

    student: nn.Module

    @classmethod
    def from_context(cls: type[M], context: MethodContext, **params: Any) -> M:
        """The method for a run, from what the run knows and the config's ``params``.

        The default is ``cls(context.student, context.teacher, **params)``. A method that needs
        more overrides this and reads it from the context: a CRD-style method passes
        ``context.train_size`` (its memory bank's size) and ``context.feature_shapes`` (its
        embedding heads' widths) to its constructor as the keyword arguments ``train_size`` and
        ``feature_shapes``, which ``runs.check_params`` never lets a config set.
        """
        return cast(M, cast(Any, cls)(context.student, context.teacher, **params))

    def training_step(self, batch: Batch) -> StepOutput:
        """Loss terms for one batch."""
        raise NotImplementedError

    def trainable_parameters(self) -> Iterator[nn.Parameter]:
        """The parameters the optimizer updates."""
        return (p for p in self.parameters() if p.requires_grad)

    def distributed_modules(self) -> list[str]:
        """Names of the attributes the Trainer wraps in DistributedDataParallel."""
        return ["student"]


class MethodView:
    """The registered methods that distill between one kind of model, as a command sees them.

    A live, read-only view of ``METHODS``: ``get``, ``names`` and ``in`` see only the methods
    whose ``distills`` is ``distills``, and an unknown name is reported as an unknown ``kind``
    (e.g. "unknown cross-modal method 'x'; known: contrastive, feature, icl").
    """

    def __init__(self, registry: Registry[type[Method]], distills: str, *, kind: str) -> None:
        self.registry = registry
        self.distills = distills
        self.kind = kind

    def get(self, name: str) -> type[Method]:
        """The method registered as ``name``, if it fits.

        Raises:
            UnknownNameError: ``name`` is not a registered method of this kind; the message lists
                the known names.
        """
        if "+" in name:  # a combination: the registry's own error says what is wrong with it
            method = self.registry.get(name)
            if method.distills == self.distills:
                return method
        if name not in self:
            raise UnknownNameError(
                f"unknown {self.kind} {name!r}; known: {', '.join(self.names())}"
            )
        return self.registry.get(name)

    def __contains__(self, name: object) -> bool:
        return name in self.registry and self.registry.get(str(name)).distills == self.distills

    def names(self) -> list[str]:
        """Names of the methods of this kind, sorted."""
        return [name for name in self.registry.names() if name in self]


class MethodRegistry(Registry[type[Method]]):
    """The registry of methods; :meth:`fitting` gives the ones a command may use.

    A name joining registered methods with ``+`` (``"kd+at"``) is their combination, made by
    ``combiner`` (``methods.combine.combined``, set when ``freekd.methods`` is imported).
    """

    combiner: Callable[[str], type[Method]] | None = None

    def get(self, name: str) -> type[Method]:
        if "+" in name and self.combiner is not None:
            return self.combiner(name)
        return super().get(name)

    def __contains__(self, name: object) -> bool:
        if isinstance(name, str) and "+" in name:
            try:
                self.get(name)
            except UnknownNameError:
                return False
            return True
        return super().__contains__(name)

    def fitting(self, distills: str, *, kind: str = "method") -> MethodView:
        """The methods whose ``distills`` is ``distills``, named ``kind`` in errors."""
        return MethodView(self, distills, kind=kind)


METHODS = MethodRegistry("method")
"""Every distillation method, by the name ``--method`` takes."""

CLASSIFIER_METHODS = METHODS.fitting(CLASSIFIER)
"""The methods between image classifiers: what ``freekd distill`` and ``freekd datafree`` take."""

ONLINE_METHODS = METHODS.fitting(ONLINE, kind="online method")
"""The online methods: what ``freekd online`` takes (``dml``, ``one``)."""
