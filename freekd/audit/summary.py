"""What an audit report says in a few lines: the strongest attack and the ε lower bound."""

from __future__ import annotations

from typing import Any


def strongest_attack(results: dict[str, Any]) -> dict[str, Any]:
    """``strongest_attack`` (by AUC) with its ``auc`` and ``tpr_at_fpr``."""
    if not results:
        return {"strongest_attack": None, "auc": None, "tpr_at_fpr": None}
    name = max(results, key=lambda attack: results[attack]["auc"])
    return {
        "strongest_attack": name,
        "auc": results[name]["auc"],
        "tpr_at_fpr": results[name]["tpr_at_fpr"],
    }


def audit_summary(report: dict[str, Any]) -> str:
    """The few lines of an audit a reviewer reads: leakage of the strongest attack, the bound."""
    attacks = report["attacks"]
    lines = [
        f"Audit of {report['model']['path']} ({report['model']['kind']}): "
        f"{report['members']['n']} members ({report['members']['dataset']}), "
        f"{report['non_members']['n']} non-members ({report['non_members']['dataset']}).",
        f"Accuracy on members {100 * report['model']['member_accuracy']:.2f} %, on non-members "
        f"{100 * report['model']['non_member_accuracy']:.2f} %.",
    ]
    if attacks:
        best_auc = max(attacks, key=lambda name: attacks[name]["auc"])
        best_low = max(attacks, key=lambda name: attacks[name]["tpr_at_fpr"]["0.001"])
        lines.append(
            f"Strongest attack by AUC: {best_auc}, AUC {attacks[best_auc]['auc']:.3f} "
            f"(0.5 = no leakage), advantage {attacks[best_auc]['advantage']:.3f}."
        )
        lines.append(
            f"At 0.1 % false positives: {best_low} finds "
            f"{100 * attacks[best_low]['tpr_at_fpr']['0.001']:.2f} % of members "
            "(0.1 % = chance)."
        )
    bound = report["epsilon_lower_bound"]
    text = (
        f"Empirical ε lower bound {bound['epsilon']:.3f} at {100 * bound['confidence']:g} % "
        f"confidence (δ = {bound['delta']:g}, {bound['attack']} scores, "
        f"{bound['canaries']} canaries)"
    )
    if bound.get("accountant_epsilon") is not None:
        verdict = "consistent" if bound.get("consistent") else "EXCEEDS IT: a privacy bug"
        kind = bound.get("accountant_kind") or "kind unknown"
        text += f"; the accountant's ε is {bound['accountant_epsilon']:.3f}, {kind} ({verdict})"
    else:
        text += "; the model claims no differential privacy"
    if not bound.get("assumption_holds"):
        text += " [valid only if the members were chosen at random from the pool]"
    lines.append(text + ".")
    return "\n".join(lines)
