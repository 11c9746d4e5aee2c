"""One writer per run folder: an exclusive lock held for the whole run.

Two runs writing one ``--out`` interleave their ``metrics.jsonl`` and, for ``pate label``, spend
the same privacy budget twice on paper. Every command that writes a run folder therefore holds
:func:`run_lock` on it from before its first check of the folder until it returns or raises; a
second run on the folder fails at once, names the holder's pid, and touches nothing in it.

The lock is ``fcntl.flock`` on ``.freekd.lock`` inside the folder. The operating system drops
it when the holder's process ends however it ends, so a run killed with ``kill -9`` never
leaves the folder locked: its lock file is still there (with its pid, host and start time),
the next run takes the lock over and says so in one warning. A run that ends normally deletes
the lock file (while still holding the lock), so a lock file without a holder always means a
run died in the folder. Taking the lock also removes the leftover temporaries of
:func:`freekd.io.atomic_write` (``.checkpoint.pt.*.tmp`` and the like) that such a run left:
with the lock held, no live writer can own them.

The lock is taken once per process and folder (nested uses in one process share it), and under
``torchrun`` only by rank 0. On platforms without ``fcntl`` (Windows) runs are not locked.
"""

from __future__ import annotations

import contextlib
import functools
import inspect
import json
import logging
import os
import re
import socket
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any, TypeVar

from freekd.errors import FreekdError

try:
    import fcntl
except ImportError:  # pragma: no cover - Windows
    fcntl = None  # type: ignore[assignment]

logger = logging.getLogger(__name__)

LOCK_FILE = ".freekd.lock"
# atomic_write's temporaries: "." + target name + "." + mkstemp's random part + ".tmp".
_TEMPORARY = re.compile(r"^\..+\.[A-Za-z0-9_]+\.tmp$")
# How deep below the run folder leftover temporaries are looked for (``shadows/``, stages).
_TEMPORARY_DEPTH = 2

F = TypeVar("F", bound=Callable[..., Any])


class _Held:
    def __init__(self, descriptor: int, created: list[Path]) -> None:
        self.descriptor = descriptor
        self.created = created  # folders this lock created, deepest first
        self.depth = 1


# Locks this process holds, by resolved folder: a nested run on the same folder shares it
# (flock would otherwise refuse the second open() of one file, even in one process).
_HELD: dict[Path, _Held] = {}


def is_lock_holder() -> bool:
    """Whether this process takes run-folder locks: not a ``torchrun`` rank other than 0."""
    return os.environ.get("RANK", "0") in ("", "0")


def has_run_content(folder: Path) -> bool:
    """Whether ``folder`` holds anything besides its lock file (a run's files, anything)."""
    return any(entry.name != LOCK_FILE for entry in folder.iterdir())


@contextlib.contextmanager
def run_lock(folder: Path) -> Iterator[None]:
    """Hold the exclusive lock on run folder ``folder`` (created if missing) for the block.

    On leaving the block (normally or by an exception) the lock file is deleted, the lock
    released, and the folders it had to create are removed again if nothing was written in
    them (a refused run leaves no empty ``--out`` behind).

    Raises:
        FreekdError: another live process holds the lock (the message names its pid), the
            path is a file, or the lock file is a symbolic link.
    """
    if fcntl is None or not is_lock_holder():
        yield
        return
    folder = Path(folder)
    if folder.exists() and not folder.is_dir():
        raise FreekdError(f"output path {folder} is a file; pass a folder to --out")
    key = folder.resolve()
    held = _HELD.get(key)
    if held is not None:
        held.depth += 1
        try:
            yield
        finally:
            held.depth -= 1
        return
    held = _acquire(folder)
    _HELD[key] = held
    try:
        yield
    finally:
        del _HELD[key]
        _release(folder, held)


def locks_run_folder(run: F) -> F:
    """Run ``run`` under :func:`run_lock` on its ``options.out_dir`` (a ``RunOptions``)."""
    signature = inspect.signature(run)

    @functools.wraps(run)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        options = signature.bind_partial(*args, **kwargs).arguments["options"]
        with run_lock(options.out_dir):
            return run(*args, **kwargs)

    return wrapper  # type: ignore[return-value]


def locks_folder_argument(name: str) -> Callable[[F], F]:
    """Run the decorated function under :func:`run_lock` on its folder argument ``name``."""

    def decorate(run: F) -> F:
        signature = inspect.signature(run)

        @functools.wraps(run)
        def wrapper(*args: Any, **kwargs: Any) -> Any:
            bound = signature.bind(*args, **kwargs)
            bound.apply_defaults()
            with run_lock(Path(bound.arguments[name])):
                return run(*args, **kwargs)

        return wrapper  # type: ignore[return-value]

    return decorate


def _acquire(folder: Path) -> _Held:
    assert fcntl is not None
    created = _missing_folders(folder)
    path = folder / LOCK_FILE
    for _ in range(100):  # retried only when a releasing holder deletes the file under us
        folder.mkdir(parents=True, exist_ok=True)
        try:
            descriptor = os.open(path, os.O_RDWR | os.O_CREAT | os.O_NOFOLLOW | os.O_CLOEXEC, 0o644)
        except FileNotFoundError:  # the folder was removed by a releasing run: make it again
            continue
        except OSError as error:
            if path.is_symlink():
                raise FreekdError(
                    f"{path} is a symbolic link, not a freekd lock file; remove it and run again"
                ) from None
            raise error
        try:
            fcntl.flock(descriptor, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = _holder(descriptor)
            os.close(descriptor)
            raise FreekdError(
                f"run folder {folder} is in use by {holder}; wait for it to finish or choose "
                "another --out"
            ) from None
        except BaseException:
            os.close(descriptor)
            raise
        if _same_file(descriptor, path):
            break
        os.close(descriptor)  # we locked a file its holder had just deleted: try again
    else:  # pragma: no cover - a hundred holders in a row
        raise FreekdError(f"could not lock run folder {folder}; try again")
    try:
        previous = _read(descriptor)
        if previous:
            logger.warning(
                "taking over run folder %s from %s, which ended without releasing it",
                folder,
                _describe(previous),
            )
        _write(descriptor)
        _remove_temporaries(folder)
    except BaseException:
        os.close(descriptor)
        raise
    return _Held(descriptor, created)


def _release(folder: Path, held: _Held) -> None:
    try:
        (folder / LOCK_FILE).unlink(missing_ok=True)  # still locked: nobody reads a half state
    finally:
        os.close(held.descriptor)
    for created in held.created:
        try:
            created.rmdir()  # only if empty: a run that wrote nothing leaves nothing
        except OSError:
            break


def _missing_folders(folder: Path) -> list[Path]:
    missing = []
    for candidate in (folder, *folder.parents):
        if candidate.exists():
            break
        missing.append(candidate)
    return missing


def _same_file(descriptor: int, path: Path) -> bool:
    try:
        on_disk = os.stat(path, follow_symlinks=False)
    except FileNotFoundError:
        return False
    opened = os.fstat(descriptor)
    return (on_disk.st_dev, on_disk.st_ino) == (opened.st_dev, opened.st_ino)


def _read(descriptor: int) -> dict[str, Any] | None:
    os.lseek(descriptor, 0, os.SEEK_SET)
    raw = os.read(descriptor, 65536)
    if not raw.strip():
        return None
    try:
        record = json.loads(raw)
    except (json.JSONDecodeError, UnicodeDecodeError):
        return {}
    return record if isinstance(record, dict) else {}


def _write(descriptor: int) -> None:
    record = {
        "pid": os.getpid(),
        "host": socket.gethostname(),
        "started": time.strftime("%Y-%m-%d %H:%M:%S"),
        "command": " ".join(["freekd", *sys.argv[1:]]),
    }
    data = (json.dumps(record) + "\n").encode()
    os.ftruncate(descriptor, 0)
    os.lseek(descriptor, 0, os.SEEK_SET)
    os.write(descriptor, data)


def _holder(descriptor: int) -> str:
    """Who holds the lock, from its lock file (written right after it was taken)."""
    for _ in range(20):
        record = _read(descriptor)
        if record:
            return _describe(record)
        time.sleep(0.05)  # the holder has the lock but has not written its name yet
    return "another freekd process"


def _describe(record: dict[str, Any]) -> str:
    if "pid" not in record:
        return "a freekd process"
    where = ""
    host = record.get("host")
    if host and host != socket.gethostname():
        where = f" on {host}"
    started = f" (started {record['started']})" if record.get("started") else ""
    return f"freekd process {record['pid']}{where}{started}"


def _remove_temporaries(folder: Path) -> None:
    """Delete the temporaries of writes that died with their process, in ``folder`` and below.

    Only called with the folder's lock held. Subfolders with their own lock file are another
    run's folder (or a killed one's, cleaned when that folder is locked) and are left alone.
    """
    removed = []
    pending = [(folder, 0)]
    while pending:
        current, depth = pending.pop()
        if depth > 0 and (current / LOCK_FILE).exists():
            continue
        try:
            entries = list(os.scandir(current))
        except OSError:
            continue
        for entry in entries:
            if entry.is_dir(follow_symlinks=False):
                if depth < _TEMPORARY_DEPTH:
                    pending.append((Path(entry.path), depth + 1))
            elif entry.is_file(follow_symlinks=False) and _TEMPORARY.match(entry.name):
                Path(entry.path).unlink(missing_ok=True)
                removed.append(entry.path)
    if removed:
        logger.info(
            "removed %d temporary file(s) left by an interrupted write in %s: %s",
            len(removed),
            folder,
            ", ".join(sorted(removed)),
        )
