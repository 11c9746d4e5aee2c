"""The dependency direction of STYLE.md §4.1, checked by parsing imports with ``ast``.

Every module of ``freekd/`` is one of:

* a **cli**: the root ``freekd.cli`` (and ``__main__``), or a feature's ``cli`` (its typer
  sub-app); ``freekd.cli_options`` holds the option groups they share, ``freekd.cli_tables`` how
  they print results;
* a **config**: ``freekd.config`` or a feature's ``config`` (dataclasses, no torch);
* a **pipeline**: a feature's composition root (``pipeline``, ``*_pipeline``, ``threat_model``,
  the stages listed in :data:`PIPELINES`), the root commands' ``demo`` and ``evaluation``, and the
  Python API (``freekd`` itself and ``freekd.api``); ``freekd.runs`` is what pipelines share;
* the package ``freekd`` itself (``__version__`` and the lazy exports of the Python API) is
  outside the layers;
* **library**: everything else (losses, models, data, methods, teachers, train, the synthesizers,
  the library modules of privacy, audit and crossmodal, registry, hooks, checkpoint, io, ...).

The rules: the library never imports a cli, ``cli_options``, ``runs`` or a pipeline; a pipeline
imports ``runs`` and the library but no cli and no other feature's pipeline (the audit
threat-model pipeline, which runs the other paths, the demo and the Python API are the named
exceptions); a feature's cli imports its own pipeline and config and ``cli_options``, never another
feature's cli or pipeline; a config imports only configs, errors and the YAML reader ``yamldata``
(so no torch), and importing a config or the CLI imports no torch; nothing imports ``experiments``.
Function-level imports count.
``test_the_checks_catch_planted_violations`` plants one violation of each rule in a throw-away
tree and checks that each is reported.
"""

from __future__ import annotations

import ast
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parents[1] / "freekd"

#: A feature's pipeline modules whose names do not say so: the PATE stages and the cross-modal
#: pipelines' shared steps.
PIPELINES = {"freekd.pate.teachers", "freekd.pate.label", "freekd.pate.student"}
PIPELINES |= {"freekd.crossmodal.common"}

#: The root composition modules: each is its own "feature" (``freekd eval``/``info``, ``demo``,
#: the Python API ``freekd/api.py``).
ROOT_PIPELINES = {"freekd.api", "freekd.demo", "freekd.evaluation"}

#: Pipelines that may run other features' pipelines.
RUNS_OTHER_PIPELINES = {"freekd.audit.threat_model", "freekd.demo", "freekd.api"}

#: The torch-free library modules a config may import: errors, and the YAML reader every file
#: read goes through.
CONFIG_MAY_IMPORT = {"freekd.errors", "freekd.yamldata"}

#: What a feature's cli may import besides its own feature's config and pipelines.
CLI_MAY_IMPORT = {"freekd.cli_options", "freekd.cli_tables", "freekd.config", "freekd.errors"}
CLI_MAY_IMPORT |= {"freekd.runlock"}
CLI_MAY_IMPORT |= {"freekd.runs"}

#: The library layers among themselves: package → freekd packages it must NOT import.
LIBRARY_FORBIDDEN: dict[str, set[str]] = {
    "losses": {"methods", "teachers", "data", "train", "models", "datafree", "privacy"}
    | {"crossmodal", "checkpoint"},
    "models": {"methods", "teachers", "train", "losses", "datafree", "privacy", "crossmodal"},
    "data": {"methods", "teachers", "train", "models", "losses", "datafree", "privacy"}
    | {"crossmodal"},
    "methods": {"train", "datafree", "privacy", "crossmodal"},
    "teachers": {"methods", "train", "datafree", "privacy", "crossmodal"},
    "train": {"privacy", "crossmodal", "datafree"},
    "hooks": {"methods", "teachers", "train", "datafree", "privacy", "crossmodal", "audit"},
    "datafree": {"train", "privacy", "crossmodal", "audit"},
    "privacy": {"train"},
    "crossmodal": {"train"},
    "audit": {"train", "methods", "datafree", "privacy", "models"},
}

#: Library modules allowed one exception to LIBRARY_FORBIDDEN: the DP-SGD set-up wires Opacus
#: into the Trainer (it is the privacy feature's part of teacher training).
LIBRARY_EXCEPTIONS = {"freekd.privacy.dpsgd": {"train"}}
#: The data-free batch source is a ``train`` BatchSource over a synthesizer (it reads TrainState).
LIBRARY_EXCEPTIONS["freekd.datafree.source"] = {"train"}
#: The confident probe is a ``train`` Callback measuring the evaluated (averaged) student.
LIBRARY_EXCEPTIONS["freekd.datafree.probe"] = {"train"}


@dataclass
class Module:
    name: str  # dotted, e.g. freekd.distill.pipeline
    path: Path
    imports: set[str] = field(default_factory=set)  # every import, function-level included
    import_time: set[str] = field(default_factory=set)  # the imports that run on import


def _imported_names(node: ast.Import | ast.ImportFrom, module: str, is_package: bool) -> set[str]:
    if isinstance(node, ast.Import):
        return {alias.name for alias in node.names}
    base = node.module or ""
    if node.level:  # a relative import
        parts = module.split(".")[: len(module.split(".")) - node.level + is_package]
        base = ".".join([*parts, *([node.module] if node.module else [])])
    return {base} | {f"{base}.{alias.name}" for alias in node.names}


def _walk_import_time(node: ast.AST) -> Iterator[ast.AST]:
    """The nodes that run when the module is imported: not function bodies, not TYPE_CHECKING."""
    for child in ast.iter_child_nodes(node):
        if isinstance(child, ast.FunctionDef | ast.AsyncFunctionDef | ast.Lambda):
            continue
        if isinstance(child, ast.If) and "TYPE_CHECKING" in ast.unparse(child.test):
            yield from (n for item in child.orelse for n in [item, *_walk_import_time(item)])
            continue
        yield child
        yield from _walk_import_time(child)


def read_package(package: Path) -> dict[str, Module]:
    """Every module below ``package`` with what it imports."""
    modules = {}
    for path in sorted(package.rglob("*.py")):
        parts = path.relative_to(package.parent).with_suffix("").parts
        is_package = parts[-1] == "__init__"
        name = ".".join(parts[:-1] if is_package else parts)
        tree = ast.parse(path.read_text())
        module = Module(name, path)
        for node in ast.walk(tree):
            if isinstance(node, ast.Import | ast.ImportFrom):
                module.imports |= _imported_names(node, name, is_package)
        for node in _walk_import_time(tree):
            if isinstance(node, ast.Import | ast.ImportFrom):
                module.import_time |= _imported_names(node, name, is_package)
        modules[name] = module
    return modules


def resolve(name: str, modules: dict[str, Module]) -> str | None:
    """The freekd module an imported name lands in (``freekd.x.y.function`` → ``freekd.x.y``)."""
    parts = name.split(".")
    for end in range(len(parts), 0, -1):
        candidate = ".".join(parts[:end])
        if candidate in modules:
            return candidate
    return None


def features(modules: dict[str, Module]) -> set[str]:
    """The feature packages: those with a typer sub-app (``freekd.<feature>.cli``)."""
    return {
        name.split(".")[1] for name in modules if name.count(".") == 2 and name.endswith(".cli")
    }


def kind(name: str, feature_names: set[str]) -> str:
    parts = name.split(".")
    stem = parts[-1]
    if name == "freekd":
        return "root"
    feature_module = len(parts) == 3 and parts[1] in feature_names
    if name in ("freekd.cli", "freekd.__main__") or (feature_module and stem == "cli"):
        return "cli"
    if name in ("freekd.cli_options", "freekd.cli_tables"):
        return "cli_options"
    if stem == "config" and len(parts) <= 3:
        return "config"
    if name == "freekd.runs":
        return "runs"
    if name in ROOT_PIPELINES or name in PIPELINES:
        return "pipeline"
    named_pipeline = stem in ("pipeline", "threat_model") or stem.endswith("_pipeline")
    if len(parts) >= 3 and parts[1] in feature_names and named_pipeline:
        return "pipeline"
    return "library"


def feature_of(name: str, feature_names: set[str]) -> str:
    """The feature a module belongs to; a root pipeline is a feature of its own."""
    parts = name.split(".")
    return parts[1] if len(parts) >= 2 and parts[1] in feature_names else name


def closure(start: str, modules: dict[str, Module]) -> set[str]:
    """Every name imported when ``start`` is imported: its parent packages and theirs too."""
    seen: set[str] = set()
    names: set[str] = set()
    todo = [start]
    while todo:
        current = todo.pop()
        if current in seen:
            continue
        seen.add(current)
        parts = current.split(".")
        parents = (".".join(parts[:end]) for end in range(1, len(parts)))
        todo += [parent for parent in parents if parent in modules]
        for imported in modules[current].import_time:
            names.add(imported)
            target = resolve(imported, modules)
            if target is not None:
                todo.append(target)
    return names


def problems(package: Path) -> list[str]:
    """Every import against the dependency direction in ``package``, one line each."""
    modules = read_package(package)
    feature_names = features(modules)
    found = []
    for name, module in sorted(modules.items()):
        own_kind, own_feature = kind(name, feature_names), feature_of(name, feature_names)
        for imported in sorted(module.imports):
            if imported.split(".")[0] == "experiments":
                found.append(f"{name} imports {imported}: nothing in freekd/ imports experiments")
            if imported.split(".")[0] == "torch" and own_kind == "config":
                found.append(f"{name} imports torch: a config module stays torch-free")
            target = resolve(imported, modules)
            if target is None or target == name:
                continue
            rule = _broken_rule(name, own_kind, own_feature, target, feature_names)
            if rule:
                found.append(f"{name} imports {target}: {rule}")
    for name in sorted(modules):
        if kind(name, feature_names) in ("config", "cli") and any(
            imported.split(".")[0] == "torch" for imported in closure(name, modules)
        ):
            found.append(f"importing {name} imports torch (freekd --help and configs stay light)")
    return sorted(set(found))


def _broken_rule(
    name: str, own_kind: str, own_feature: str, target: str, feature_names: set[str]
) -> str | None:
    target_kind = kind(target, feature_names)
    target_feature = feature_of(target, feature_names)
    if "root" in (own_kind, target_kind):
        return None
    if target == "freekd.cli" and name != "freekd.__main__":
        return "only __main__ imports the root cli"
    if own_kind == "library" and target_kind in ("cli", "cli_options", "runs", "pipeline"):
        return f"the library never imports a {target_kind.replace('_', ' ')} module"
    if own_kind in ("runs", "cli_options") and target_kind in ("cli", "pipeline"):
        return f"{name} is shared by every feature and imports none of them"
    if own_kind == "library":
        return _library_rule(name, target)
    if own_kind == "pipeline" and target_kind in ("cli", "cli_options"):
        return "a pipeline never imports the command line"
    if (
        own_kind == "pipeline"
        and target_kind == "pipeline"
        and target_feature != own_feature
        and name not in RUNS_OTHER_PIPELINES
    ):
        return "a feature's pipeline never imports another feature's pipeline"
    if own_kind == "config" and target_kind != "config" and target not in CONFIG_MAY_IMPORT:
        return "a config module imports only config modules, errors and yamldata"
    feature_cli = own_kind == "cli" and name not in ("freekd.cli", "freekd.__main__")
    if feature_cli and target_feature != own_feature and target not in CLI_MAY_IMPORT:
        return "a feature's cli imports its own pipeline and config and cli_options only"
    return None


def _library_rule(name: str, target: str) -> str | None:
    layer, target_layer = name.split(".")[1:2], target.split(".")[1:2]
    if not layer or not target_layer:
        return None
    forbidden = LIBRARY_FORBIDDEN.get(layer[0], set()) - LIBRARY_EXCEPTIONS.get(name, set())
    if target_layer[0] in forbidden:
        return f"the {layer[0]} layer never imports {target_layer[0]} (layers import downward)"
    return None


def test_import_graph_respects_the_dependency_direction() -> None:
    found = problems(PACKAGE)

    assert not found, "\n".join(found)


def test_every_module_has_a_layer() -> None:
    modules = read_package(PACKAGE)
    feature_names = features(modules)
    kinds = {name: kind(name, feature_names) for name in modules}

    assert {"supervised", "distill", "datafree", "pate", "privacy", "audit", "crossmodal"} <= (
        feature_names
    )
    assert kinds["freekd.cli"] == "cli"
    assert kinds["freekd.distill.cli"] == "cli"
    assert kinds["freekd.distill.pipeline"] == "pipeline"
    assert kinds["freekd.audit.threat_model"] == "pipeline"
    assert kinds["freekd.datafree.config"] == "config"
    assert kinds["freekd.losses.kd"] == "library"
    assert kinds["freekd.audit.bounds"] == "library"
    assert all(name in modules for name in PIPELINES), "rename PIPELINES with the modules"


def _plant(root: Path, files: dict[str, str]) -> Path:
    for relative, text in files.items():
        path = root / relative
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text)
    return root / "freekd"


CLEAN = {
    "freekd/__init__.py": "",
    "freekd/cli.py": "from freekd.distill import cli\n",
    "freekd/cli_options.py": "from freekd.config import load_config\n",
    "freekd/config.py": "from freekd.errors import FreekdError\n",
    "freekd/errors.py": "",
    "freekd/runs.py": "import torch\nfrom freekd.losses import kd\n",
    "freekd/losses/__init__.py": "",
    "freekd/losses/kd.py": "import torch\n",
    "freekd/models/__init__.py": "",
    "freekd/models/small.py": "import torch\n",
    "freekd/distill/__init__.py": "",
    "freekd/distill/config.py": "from freekd.config import TrainerConfig\n",
    "freekd/distill/pipeline.py": "from freekd.runs import run\nfrom freekd.losses import kd\n",
    "freekd/distill/cli.py": "from freekd.cli_options import RunFlags\n"
    "def distill():\n    from freekd.distill.pipeline import run_distill\n",
    "freekd/datafree/__init__.py": "",
    "freekd/datafree/config.py": "from freekd.distill.config import DistillConfig\n",
    "freekd/datafree/pipeline.py": "from freekd.runs import run_training\n",
    "freekd/datafree/cli.py": "from freekd.datafree import config\n",
    "freekd/audit/__init__.py": "",
    "freekd/audit/cli.py": "",
    "freekd/audit/threat_model.py": "from freekd.distill.pipeline import run_distill\n",
}


@pytest.mark.parametrize(
    ("relative", "text", "needle"),
    [
        ("freekd/losses/kd.py", "def f():\n    from freekd.runs import x\n", "the library never"),
        ("freekd/models/small.py", "from freekd.distill import cli\n", "the library never"),
        ("freekd/models/small.py", "from freekd import cli_options\n", "the library never"),
        ("freekd/losses/kd.py", "from freekd.models import small\n", "layer never imports"),
        ("freekd/models/small.py", "import experiments.study\n", "imports experiments"),
        ("freekd/distill/pipeline.py", "from freekd.datafree.pipeline import x\n", "another"),
        ("freekd/distill/pipeline.py", "from freekd.distill.cli import x\n", "command line"),
        ("freekd/distill/cli.py", "from freekd.datafree.cli import x\n", "cli imports its own"),
        ("freekd/distill/cli.py", "from freekd.datafree.pipeline import x\n", "its own"),
        ("freekd/distill/config.py", "def f():\n    import torch\n", "torch-free"),
        ("freekd/datafree/config.py", "from freekd.losses import kd\n", "only config"),
        ("freekd/distill/__init__.py", "import torch\n", "importing freekd.distill.cli"),
        ("freekd/runs.py", "from freekd.cli import app\n", "only __main__"),
        ("freekd/runs.py", "from freekd.distill.pipeline import x\n", "shared by every"),
    ],
)
def test_the_checks_catch_planted_violations(
    tmp_path: Path, relative: str, text: str, needle: str
) -> None:
    assert problems(_plant(tmp_path / "clean", CLEAN)) == []

    found = problems(_plant(tmp_path / "planted", {**CLEAN, relative: text}))

    assert any(needle in line for line in found), found
