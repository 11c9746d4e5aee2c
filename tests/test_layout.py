"""The house rules of issue 18 that a reviewer would otherwise count by hand.

No module in ``freekd/`` over 600 lines; no function body over 60 lines. A body is counted from
its first statement after the docstring to its last line, so a typer signature (the options of a
command) and the docstring do not count; nested functions count inside their parent too.
"""

from __future__ import annotations

import ast
from pathlib import Path

PACKAGE = Path(__file__).resolve().parents[1] / "freekd"
MAX_MODULE_LINES = 600
MAX_BODY_LINES = 60


def module_lines() -> dict[str, int]:
    return {
        str(path.relative_to(PACKAGE.parent)): len(path.read_text().splitlines())
        for path in sorted(PACKAGE.rglob("*.py"))
    }


def body_lines(node: ast.FunctionDef | ast.AsyncFunctionDef) -> int:
    body = node.body
    if (
        len(body) > 1
        and isinstance(body[0], ast.Expr)
        and isinstance(body[0].value, ast.Constant)
        and isinstance(body[0].value.value, str)
    ):
        body = body[1:]
    return (node.end_lineno or body[-1].lineno) - body[0].lineno + 1


def function_lines() -> dict[str, int]:
    sizes = {}
    for path in sorted(PACKAGE.rglob("*.py")):
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
                where = f"{path.relative_to(PACKAGE.parent)}:{node.lineno} {node.name}"
                sizes[where] = body_lines(node)
    return sizes


def largest(sizes: dict[str, int], n: int = 5) -> list[tuple[str, int]]:
    return sorted(sizes.items(), key=lambda item: -item[1])[:n]


def test_no_module_over_the_limit() -> None:
    over = {name: n for name, n in module_lines().items() if n > MAX_MODULE_LINES}
    assert not over, f"modules over {MAX_MODULE_LINES} lines: {over}"


def test_no_function_body_over_the_limit() -> None:
    over = {name: n for name, n in function_lines().items() if n > MAX_BODY_LINES}
    assert not over, f"function bodies over {MAX_BODY_LINES} lines: {over}"


if __name__ == "__main__":  # the figures the closing note quotes
    print("largest modules:", largest(module_lines()))
    print("largest function bodies:", largest(function_lines()))
