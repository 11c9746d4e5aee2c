"""What every online method offers its run: the single networks it trains and their ensemble.

Online KD (``freekd online``) has no pre-trained teacher: several networks learn together and
teach each other. After the fit the run saves each single network (a peer, or a branch with the
trunk exported as an ordinary network), the ensemble, and the best single network on held-out
data as ``model.pt``; an :class:`OnlineMethod` says what those are.
"""

from __future__ import annotations

from typing import ClassVar

from torch import nn

from freekd.methods.base import ONLINE, Method
from freekd.models import ImageClassifier


def unwrapped(module: nn.Module) -> nn.Module:
    """``module`` without a DistributedDataParallel wrapper."""
    inner = getattr(module, "module", module)
    return inner if isinstance(inner, nn.Module) else module


class OnlineMethod(Method):
    """Base class of the online methods (``distills = ONLINE``)."""

    distills: ClassVar[str] = ONLINE

    #: What one of the single networks is called in reports and file names ("peer", "branch").
    kind: ClassVar[str] = "network"

    #: How many networks of one ``--arch`` the run builds for the method by default (DML: two
    #: peers; ONE: the one network it branches).
    default_peers: ClassVar[int] = 1

    #: The smallest batch a step can take on one process (ONE's gate has a BatchNorm).
    min_batch: ClassVar[int] = 1

    def networks(self) -> dict[str, ImageClassifier]:
        """The single networks by name (``peer0``, ``branch1``, ...), each an ordinary
        classifier that saves and loads alone."""
        raise NotImplementedError

    def ensemble(self) -> ImageClassifier:
        """The ensemble of the single networks, as one classifier."""
        raise NotImplementedError
