"""Synthesizers: inputs made from what a teacher holds. Importing registers them all."""

from __future__ import annotations

from freekd.datafree.nets import Generator
from freekd.datafree.synthesizers import adversarial, cmi, dafl, deepinversion, fast, noise  # noqa: F401  (register synthesizers)
from freekd.datafree.synthesizers.base import Synthesizer
from freekd.datafree.synthesizers.registry import SYNTHESIZERS

__all__ = ["SYNTHESIZERS", "Generator", "Synthesizer"]
