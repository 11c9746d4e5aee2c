"""Methods: the rules that turn a batch into named loss terms. Importing registers them all.

``METHODS`` is the one registry of distillation methods. Each method lives in its own module and
registers itself there (``@METHODS.register("kd")``); every module of this package is imported
below, so adding a method is adding one file. A run builds its method with
``build_method(name, MethodContext(...), params)`` (``methods.context``), which calls the
method's ``from_context``. ``CLASSIFIER_METHODS`` are the methods between image classifiers;
the cross-modal ones (``crossmodal.methods``) register in ``METHODS`` too, with another
``Method.distills``.
"""

from __future__ import annotations

from freekd.methods.attention import AttentionKD
from freekd.methods.base import (
    CLASSIFIER,
    CLASSIFIER_METHODS,
    METHODS,
    ONLINE,
    ONLINE_METHODS,
    Method,
    MethodRegistry,
    MethodView,
    StepOutput,
)
from freekd.methods.context import (
    FeatureShapes,
    MethodContext,
    NetworkShapes,
    build_method,
    probe_feature_shapes,
)
from freekd.methods.kd import LogitKD
from freekd.methods.logit_l1 import LogitL1
from freekd.methods.supervised import EnsembleSupervised, Supervised
from freekd.registry import import_plugins

import_plugins(
    __name__, __path__, skip=("base", "context", "distiller", "online", "taps", "relations")
)

__all__ = [
    "CLASSIFIER",
    "CLASSIFIER_METHODS",
    "METHODS",
    "ONLINE",
    "ONLINE_METHODS",
    "AttentionKD",
    "EnsembleSupervised",
    "FeatureShapes",
    "LogitKD",
    "LogitL1",
    "Method",
    "MethodContext",
    "MethodRegistry",
    "MethodView",
    "NetworkShapes",
    "StepOutput",
    "Supervised",
    "build_method",
    "probe_feature_shapes",
]
