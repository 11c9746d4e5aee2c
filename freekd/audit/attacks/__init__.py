"""Membership-inference attacks: one score per audit example, higher meaning "member".

One module per attack (or family of variants), each registering itself in :data:`ATTACKS`
(``base``); importing this package imports them all, so adding an attack is adding one file.

Threshold attacks need no shadow models: the loss (Yeom et al. 2018), the confidence, the
prediction entropy and the modified entropy (Song & Mittal 2021). LiRA (Carlini et al. 2022)
fits Gaussians to the shadow models' logit-scaled confidences per example; RMIA (Zarifzadeh et al.
2024) compares the target's likelihood of an example with the reference models' and with a
population of other examples. Scores are only ever compared with each other (ROC curves), so any
strictly increasing transform of a paper's statistic is the same attack.
"""

from __future__ import annotations

from freekd.audit.attacks.base import ATTACKS, DEFAULT_ATTACKS, Attack, AuditData
from freekd.registry import import_plugins

import_plugins(__name__, __path__, skip=("base",))

# Each attack class is importable from here too, as from the one module it used to be.
globals().update({ATTACKS.get(name).__name__: ATTACKS.get(name) for name in ATTACKS.names()})

__all__ = ["ATTACKS", "DEFAULT_ATTACKS", "Attack", "AuditData"]
