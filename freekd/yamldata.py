"""YAML read as data and nothing else: the one reader of every YAML (and JSON) file freekd opens.

``yaml.safe_load`` already refuses tags that name code; this reader also refuses

* **aliases** (``*name``): nested ones expand a nine-line file into billions of values;
* **a key written twice** in one mapping: PyYAML keeps the last silently, so a config that sets
  ``trainer.epochs`` twice would run with whichever came second;
* **a file larger than** :data:`MAX_YAML_BYTES`: a config, a saved run config or an
  ``--arch-kwargs`` file is a few kilobytes, and a (sparse) multi-gigabyte file would be read
  whole before the parser could refuse it.

It imports no torch: the config modules use it (STYLE.md §4.1).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import yaml

from freekd.errors import FreekdError, check_regular_file

#: The largest YAML file freekd reads (1 MiB); configs are a few kilobytes.
MAX_YAML_BYTES = 1 << 20


class _DataOnlyLoader(yaml.SafeLoader):
    """``SafeLoader`` refusing aliases and repeated keys."""

    def compose_node(self, parent: Any, index: Any) -> Any:
        if self.check_event(yaml.AliasEvent):
            event = self.peek_event()
            problem = f"found the alias *{event.anchor}; freekd reads no YAML aliases, write it out"
            raise yaml.composer.ComposerError(None, None, problem, event.start_mark)
        return super().compose_node(parent, index)

    def construct_mapping(self, node: Any, deep: bool = False) -> Any:
        seen: set[Any] = set()
        for key_node, _ in node.value:
            if not isinstance(key_node, yaml.ScalarNode):
                continue  # an unhashable key: SafeLoader's own error names it
            key = self.construct_object(key_node, deep=True)
            if key in seen:
                line = key_node.start_mark.line + 1
                problem = f"the key {key!r} is written twice in one mapping (line {line}); keep one"
                raise yaml.constructor.ConstructorError(None, None, problem, key_node.start_mark)
            seen.add(key)
        return super().construct_mapping(node, deep=deep)


def safe_yaml(text: str) -> Any:
    """YAML text as plain data: ``safe_load`` (no tags, no code) without aliases or repeated
    keys."""
    return yaml.load(text, Loader=_DataOnlyLoader)  # noqa: S506  (a SafeLoader subclass)


def read_mapping(path: Path, what: str = "config", fix: str = "check --config") -> dict[str, Any]:
    """The mapping a YAML (or JSON) file holds, read with :func:`safe_yaml`; an empty file is
    ``{}``. Refused in one line: not a regular file, too large to be a config, unreadable, not
    UTF-8, not YAML, nested too deeply, or not a mapping.

    Args:
        path: the file.
        what: what the file is, for messages (``"config"``).
        fix: the flag or action that mends it (``"check --config"``).
    """
    text = _read_text(path, what, fix)
    try:
        data = safe_yaml(text)
    except RecursionError:
        raise FreekdError(f"{what} {path} nests too deeply to be a {what}; fix the file") from None
    except yaml.YAMLError as error:
        first = next((line for line in str(error).splitlines() if line.strip()), "")
        raise FreekdError(f"{what} {path} is not valid YAML ({first}); fix the file") from None
    if data is None:
        return {}
    if not isinstance(data, dict):
        raise FreekdError(
            f"{what} {path} must be a mapping of fields, got {type(data).__name__}; fix the file"
        )
    return data


def _read_text(path: Path, what: str, fix: str) -> str:
    check_regular_file(path, what)
    try:
        size = Path(path).stat().st_size
    except OSError:
        size = 0  # missing: the read below names it
    if size > MAX_YAML_BYTES:
        raise FreekdError(
            f"{what} {path} is {size / 2**20:.1f} MiB, larger than any {what} "
            f"({MAX_YAML_BYTES // 2**20} MiB at most); {fix}"
        )
    try:
        return Path(path).read_text()
    except OSError as error:
        raise FreekdError(f"cannot read {what} {path}: {error.strerror}; {fix}") from None
    except UnicodeDecodeError as error:
        raise FreekdError(
            f"{what} {path} is not UTF-8 text (byte {error.start}); save it as UTF-8 YAML"
        ) from None
