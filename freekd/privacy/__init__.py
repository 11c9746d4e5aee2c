"""Differential privacy: PATE's noisy aggregation and the accounting of everything released.

``rdp`` holds the pure numerics (RDP curves, data-dependent bounds, the (ε, δ) conversion through
Opacus), ``accounting`` the accountants that add those curves up, ``aggregation`` the mechanisms
that turn teacher votes into noisy labels, and ``budget`` the guard that is checked before a
query is answered, never after.
"""

from freekd.lazy import lazy_exports

_EXPORTS = {
    "Accountant": "accounting",
    "Composition": "accounting",
    "ConfidentGNMaxAccountant": "accounting",
    "DPSGDAccountant": "accounting",
    "GNMaxAccountant": "accounting",
    "LNMaxAccountant": "accounting",
    "compose": "accounting",
    "PrivacyBudget": "budget",
    "max_queries": "budget",
    "DEFAULT_ORDERS": "rdp",
    "epsilon_from_rdp": "rdp",
}
__all__ = sorted(_EXPORTS)
__getattr__, __dir__ = lazy_exports(__name__, _EXPORTS)
