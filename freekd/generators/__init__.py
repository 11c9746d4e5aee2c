"""Synthesizers: inputs made from what a teacher holds. Importing registers them all."""

from __future__ import annotations

from freekd.generators import adversarial, cmi, dafl, deepinversion, fast, noise  # noqa: F401  (register synthesizers)
from freekd.generators.base import Synthesizer
from freekd.generators.nets import Generator
from freekd.generators.registry import SYNTHESIZERS

__all__ = ["SYNTHESIZERS", "Generator", "Synthesizer"]
