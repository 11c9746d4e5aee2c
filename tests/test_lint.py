"""The library stays lint-clean and typed (ruff, mypy), checked as part of the test suite."""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
BIN = Path(sys.executable).parent


def tool(name: str) -> str:
    path = BIN / name
    found = str(path) if path.exists() else shutil.which(name)
    if found is None:
        pytest.skip(f"{name} is not installed (pip install -e '.[test]')")
    return found


def run(*command: str) -> None:
    result = subprocess.run(command, cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stdout[-4000:] + result.stderr[-2000:]


def test_ruff_check() -> None:
    run(tool("ruff"), "check", "freekd", "tests", "experiments")


def test_ruff_format() -> None:
    run(tool("ruff"), "format", "--check", "freekd", "tests", "experiments")


@pytest.mark.slow
def test_mypy() -> None:
    run(tool("mypy"))
