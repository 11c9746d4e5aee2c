"""Atomic file output: a reader sees the old file or the complete new one, never a partial one."""

from __future__ import annotations

import json
import os
import tempfile
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import Any, BinaryIO


def atomic_write(path: Path, write: Callable[[BinaryIO], object]) -> None:
    """Write ``path`` through a temporary file in the same folder, fsync, then rename over it."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    handle, temporary = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(handle, "wb") as stream:
            write(stream)
            stream.flush()
            os.fsync(stream.fileno())
        # mkstemp creates 0600 files; give the result the permissions a plain open() would.
        os.chmod(temporary, 0o666 & ~_current_umask())
        os.replace(temporary, path)
    except BaseException as error:
        Path(temporary).unlink(missing_ok=True)
        cause = _os_error_in(error)
        if cause is not None and cause is not error:
            # torch.save's zip writer turns a failed write (a full disk, ``ulimit -f``) into a
            # RuntimeError about stream positions; the OSError under it says what happened.
            raise OSError(cause.errno, cause.strerror, str(path)) from None
        raise


def _os_error_in(error: BaseException) -> OSError | None:
    """The first OSError in ``error``'s chain of causes and contexts, if any."""
    seen: set[int] = set()
    current: BaseException | None = error
    while current is not None and id(current) not in seen:
        if isinstance(current, OSError):
            return current
        seen.add(id(current))
        current = current.__cause__ or current.__context__
    return None


def _current_umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def atomic_write_text(path: Path, text: str) -> None:
    """Atomically write UTF-8 text."""
    atomic_write(path, lambda stream: stream.write(text.encode()))


def atomic_write_json(path: Path, data: Any) -> None:
    """Atomically write pretty-printed JSON."""
    atomic_write_text(path, json.dumps(data, indent=2, sort_keys=False) + "\n")


def check_not_inputs(out: Path, names: Sequence[str], *, inputs: Any) -> None:
    """Refuse to replace the files ``names`` of folder ``out`` when a string anywhere in
    ``inputs`` (a run's config) names one of them, through a symlink too: ``--teacher
    run/model.pt --out run --overwrite`` would otherwise delete the teacher it reads.

    Raises:
        FreekdError: an input is one of the files; the message names it.
    """
    from freekd.errors import FreekdError

    folder = out.resolve()
    for text in _strings(inputs):
        try:
            target = Path(text).resolve()
            inside = target.name in names and target.parent == folder and target.is_file()
        except OSError:  # no file by that name can be read either
            inside = False
        if inside:
            raise FreekdError(
                f"{text} is an input of this run and --overwrite would delete it from {out}; "
                "choose another --out"
            )


def _strings(value: Any) -> Iterator[str]:
    """Every non-empty string in nested mappings and lists."""
    if isinstance(value, dict):
        for item in value.values():
            yield from _strings(item)
    elif isinstance(value, list | tuple):
        for item in value:
            yield from _strings(item)
    elif isinstance(value, str) and value and "\0" not in value:
        yield value
