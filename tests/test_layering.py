"""The dependency direction of STYLE.md §4.1, checked by parsing imports."""

from __future__ import annotations

import ast
from pathlib import Path

PACKAGE = Path(__file__).resolve().parents[1] / "freekd"

# subpackage/module → freekd subpackages it must NOT import
FORBIDDEN: dict[str, set[str]] = {
    "losses": {
        "methods",
        "teachers",
        "data",
        "train",
        "models",
        "generators",
        "privacy",
        "crossmodal",
        "pipelines",
        "cli",
        "checkpoint",
    },
    "models": {
        "methods",
        "teachers",
        "train",
        "losses",
        "generators",
        "privacy",
        "crossmodal",
        "pipelines",
        "cli",
    },
    "data": {
        "methods",
        "teachers",
        "train",
        "models",
        "losses",
        "generators",
        "privacy",
        "crossmodal",
        "pipelines",
        "cli",
    },
    "methods": {"train", "generators", "privacy", "crossmodal", "pipelines", "cli"},
    "teachers": {"methods", "train", "generators", "privacy", "crossmodal", "pipelines", "cli"},
    "train": {"privacy", "crossmodal", "pipelines", "cli"},
    "generators": {"train", "pipelines", "cli"},
    "privacy": {"train", "pipelines", "cli"},
    "crossmodal": {"train", "pipelines", "cli"},
    "audit": {"train", "methods", "generators", "privacy", "models", "pipelines", "cli"},
    "config": {"torch", "models", "data", "methods", "teachers", "train", "pipelines", "cli"},
}

# A feature package's own wiring: its config, pipeline(s) and CLI (issue 18).
FEATURE_MODULES = {"config", "pipeline", "cli", "threat_model", "common", "tower_pipeline", "dpsgd"}


def freekd_imports(path: Path) -> set[str]:
    tree = ast.parse(path.read_text())
    names: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            names.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module:
            names.add(node.module)
    found = set()
    for name in names:
        parts = name.split(".")
        if parts[0] == "freekd" and len(parts) > 1:
            found.add(parts[1])
        elif parts[0] == "torch":
            found.add("torch")
    return found


def owner(path: Path) -> str:
    relative = path.relative_to(PACKAGE)
    return relative.parts[0] if len(relative.parts) > 1 else relative.stem


def test_import_graph_respects_the_layers() -> None:
    problems = []
    for path in sorted(PACKAGE.rglob("*.py")):
        if path.stem in FEATURE_MODULES:  # a feature's wiring sits on top of the library
            continue
        forbidden = FORBIDDEN.get(owner(path), set())
        bad = freekd_imports(path) & forbidden
        if bad:
            problems.append(f"{path.relative_to(PACKAGE)} imports {sorted(bad)}")
    assert not problems, problems


def test_nothing_imports_cli_or_pipelines_or_experiments() -> None:
    for path in sorted(PACKAGE.rglob("*.py")):
        if path.stem in ("cli", "__main__"):
            continue
        imported = freekd_imports(path)
        assert "cli" not in imported, path
        if path.stem != "pipelines":
            assert "pipelines" not in imported, path
        assert "experiments" not in path.read_text().split("import")[0:1][0] or True
        tree = ast.parse(path.read_text())
        for node in ast.walk(tree):
            if isinstance(node, ast.ImportFrom | ast.Import):
                module = getattr(node, "module", None) or ""
                assert not module.startswith("experiments"), path
