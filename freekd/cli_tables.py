"""How the commands print their results: one table per run, percentages, times, privacy rows.

Kept apart from the option groups (``freekd.cli_options``); rich and the privacy report are
imported inside the functions so ``freekd --help`` stays fast.
"""

from __future__ import annotations

import json
from typing import Any

import typer


def print_table(title: str, rows: list[tuple[str, str]]) -> None:
    from rich.console import Console
    from rich.table import Table

    table = Table(title=title, show_header=False)
    table.add_column(style="bold")
    table.add_column()
    for key, value in rows:
        table.add_row(key, value)
    Console().print(table)


def percent(value: float) -> str:
    return f"{100 * value:.2f} %"


def privacy_rows(privacy: dict[str, Any] | None, label: str = "privacy") -> list[tuple[str, str]]:
    """One row per ε of a privacy record, each naming its kind, the guarantee first."""
    from freekd.privacy.report import describe, epsilon_figures

    figures = epsilon_figures(privacy)
    return [(label if i == 0 else "", describe(figure)) for i, figure in enumerate(figures)]


def maybe_percent(value: float | None) -> str:
    return "–" if value is None else percent(value)


def minutes(report: dict[str, Any]) -> str:
    return f"{report['wall_seconds'] / 60:.1f} min wall, {report['cpu_seconds'] / 60:.1f} CPU min"


def print_privacy(title: str, result: dict[str, Any], as_json: bool) -> None:
    if as_json:
        typer.echo(json.dumps(result))
        return
    rows = privacy_rows(result)
    if "data_independent_epsilon" in result:
        rows.append(("queries answered", f"{result['answered']:,} of {result['queries']:,}"))
    rows.append(("best Rényi order", f"{result['order']:g}"))
    if "sanitized" in result:
        sanitized = result["sanitized"]
        rows.append(
            (
                "sanitized release",
                f"smooth sensitivity, order {sanitized['order']:g}, β = {sanitized['beta']:.3g}, "
                f"σ_s = {sanitized['sigma']:g}",
            )
        )
    print_table(title, rows)
    if "note" in result:
        typer.echo(f"note: {result['note']}")
