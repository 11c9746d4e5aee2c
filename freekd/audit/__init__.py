"""Privacy audits: membership-inference attacks and empirical ε lower bounds of any model.

``attacks`` (one module per attack, each registering itself) scores every audit example
(higher = member), ``metrics`` turns scores into ROC curves, AUC and TPR at low FPR, ``bounds``
gives the one-run ε lower bound of Steinke, Nasr & Jagielski (2023), and ``shadows`` designs the
shadow models' training halves. The wiring (``freekd audit``, ``freekd audit pipeline``) is in
``freekd.audit.pipeline`` and ``freekd.audit.cli``; ``summary`` writes a report's few lines.
"""

from freekd.lazy import lazy_exports

_EXPORTS = {
    "ATTACKS": "attacks",
    "DEFAULT_ATTACKS": "attacks",
    "Attack": "attacks",
    "AuditData": "attacks",
    "epsilon_lower_bound": "bounds",
    "one_run_audit": "bounds",
    "attack_metrics": "metrics",
    "auc": "metrics",
    "roc_curve": "metrics",
    "tpr_at_fpr": "metrics",
}
__all__ = sorted(_EXPORTS)
__getattr__, __dir__ = lazy_exports(__name__, _EXPORTS)
