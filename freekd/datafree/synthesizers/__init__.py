"""Synthesizers: inputs made from what a teacher holds, one file each.

Every module here except the shared infrastructure registers its synthesizer on import
(``@SYNTHESIZERS.register``), and importing this package imports them all: adding a synthesizer
is adding one file. ``base`` holds the contract and the registry, ``adversarial`` the game that
``dfad`` and ``zskt`` play with different discrepancies.
"""

from __future__ import annotations

from freekd.datafree.synthesizers.base import SYNTHESIZERS, Synthesizer, SynthesizerBase
from freekd.registry import import_plugins

#: Modules that register no synthesizer of their own.
INFRASTRUCTURE = ("base", "adversarial")

import_plugins(__name__, __path__, skip=INFRASTRUCTURE)

__all__ = ["INFRASTRUCTURE", "SYNTHESIZERS", "Synthesizer", "SynthesizerBase"]
