"""Differential privacy: PATE's noisy aggregation and the accounting of everything released.

``rdp`` holds the pure numerics (RDP curves, data-dependent bounds, the (ε, δ) conversion through
Opacus), ``accounting`` the accountants that add those curves up, ``aggregation`` the mechanisms
that turn teacher votes into noisy labels, and ``budget`` the guard that is checked before a
query is answered, never after.
"""

from freekd.privacy.accounting import (
    Accountant,
    Composition,
    ConfidentGNMaxAccountant,
    DPSGDAccountant,
    GNMaxAccountant,
    LNMaxAccountant,
    compose,
)
from freekd.privacy.budget import PrivacyBudget, max_queries
from freekd.privacy.rdp import DEFAULT_ORDERS, epsilon_from_rdp

__all__ = [
    "DEFAULT_ORDERS",
    "Accountant",
    "Composition",
    "ConfidentGNMaxAccountant",
    "DPSGDAccountant",
    "GNMaxAccountant",
    "LNMaxAccountant",
    "PrivacyBudget",
    "compose",
    "epsilon_from_rdp",
    "max_queries",
]
