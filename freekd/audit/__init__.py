"""Privacy audits: membership-inference attacks and empirical ε lower bounds of any model.

``attacks`` scores every audit example (higher = member), ``metrics`` turns scores into ROC
curves, AUC and TPR at low FPR, ``bounds`` gives the one-run ε lower bound of Steinke, Nasr &
Jagielski (2023), and ``shadows`` designs the shadow models' training halves. The wiring
(``freekd audit``, ``freekd audit pipeline``) is in ``freekd.pipelines``.
"""

from freekd.audit.attacks import ATTACKS, DEFAULT_ATTACKS, Attack, AuditData
from freekd.audit.bounds import epsilon_lower_bound, one_run_audit
from freekd.audit.metrics import attack_metrics, auc, roc_curve, tpr_at_fpr

__all__ = [
    "ATTACKS",
    "DEFAULT_ATTACKS",
    "Attack",
    "AuditData",
    "attack_metrics",
    "auc",
    "epsilon_lower_bound",
    "one_run_audit",
    "roc_curve",
    "tpr_at_fpr",
]
