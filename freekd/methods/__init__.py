"""Methods: the rules that turn a batch into named loss terms. Importing registers them all.

``METHODS`` holds distillation methods, each constructed as ``cls(student, teacher, **params)``.
"""

from __future__ import annotations

from freekd.methods.attention import AttentionKD
from freekd.methods.base import Method, StepOutput
from freekd.methods.kd import LogitKD
from freekd.methods.logit_l1 import LogitL1
from freekd.methods.supervised import EnsembleSupervised, Supervised
from freekd.registry import Registry

METHODS: Registry[type[Method]] = Registry("method")
METHODS.register("kd")(LogitKD)
METHODS.register("kd-at")(AttentionKD)
METHODS.register("logit-l1")(LogitL1)

__all__ = [
    "METHODS",
    "AttentionKD",
    "EnsembleSupervised",
    "LogitKD",
    "LogitL1",
    "Method",
    "StepOutput",
    "Supervised",
]
