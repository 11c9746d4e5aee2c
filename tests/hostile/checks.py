"""The check every row of the hostile-input tables makes."""

from __future__ import annotations

from pathlib import Path

from typer.testing import Result


def assert_one_line_error(result: Result, out: Path | None, *needles: str) -> str:
    """Exit 2, exactly one non-empty stderr line starting ``error:``, no run files in ``out``."""
    assert result.exit_code == 2, (result.exit_code, result.output, result.exception)
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    assert len(lines) == 1, result.stderr
    assert lines[0].startswith("error: "), lines
    assert "Traceback" not in result.output
    for needle in needles:
        assert needle in lines[0], (needle, lines[0])
    if out is not None:
        assert not out.exists() or not any(out.iterdir()), sorted(out.iterdir())
    return lines[0]
