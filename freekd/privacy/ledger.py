"""The privacy ledger: an append-only record of every released answer, on disk before release.

One JSON object per line. The first line is the header: the mechanism, its parameters and the
budget, which a resumed run must match exactly (a ledger continues only the mechanism it
started with). Every later line is one answered-or-declined query with its label and its
data-dependent RDP cost; :meth:`PrivacyLedger.append` writes it, flushes it and ``fsync``\\ s it
before returning, and callers release the label only after that. So:

* a crash after the ``fsync`` loses no spent query: the resumed run reads the line and hands out
  the recorded label again instead of drawing new noise (nothing is spent twice);
* a crash during the write leaves at most a torn last line, whose label was never released:
  it is dropped on reopening, and that query is answered afresh;
* nothing ever rewrites or shortens a complete line (the file is only opened for appending);
* a query id (the entry's ``"query"``) is recorded at most once: :meth:`PrivacyLedger.append`
  refuses one already in the ledger before writing anything, so one query is never paid (and
  counted) twice;
* one writer at a time: each append checks, under an ``flock`` of the file, that nobody else
  has appended since this object read it, and refuses otherwise (its privacy figures would
  miss the other writer's spending). Two runs on one ledger are kept apart by the run folder's
  lock (:mod:`freekd.runlock`); these checks are the ledger's own guard behind it.
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

from freekd.errors import FreekdError

try:
    import fcntl
except ImportError:  # pragma: no cover - Windows: appends are not locked
    fcntl = None  # type: ignore[assignment]

FORMAT = "freekd-privacy-ledger/1"


class PrivacyLedger:
    """Append-only JSON-lines ledger at ``path`` (created with ``header`` when missing).

    Args:
        path: the ledger file.
        header: mechanism, parameters and budget; written as the first line of a new ledger and
            compared with the first line of an existing one.

    Raises:
        FreekdError: the file is not a ledger, or it belongs to another mechanism.
    """

    def __init__(self, path: Path, *, header: Mapping[str, Any]) -> None:
        self.path = Path(path)
        self.header = {"format": FORMAT, **header}
        self.entries: list[dict[str, Any]] = []
        self._queries: set[Any] = set()
        self._size = 0  # bytes of the file this object has read or written
        if self.path.exists():
            self._read()
        else:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            self._write_line(self.header, mode="x")

    def _read(self) -> None:
        raw = self.path.read_bytes()
        header, entries, torn = parse_ledger(self.path, raw)
        if header != self.header:
            changed = sorted(
                key
                for key in set(header) | set(self.header)
                if header.get(key) != self.header.get(key)
            )
            raise FreekdError(
                f"{self.path} was written by another mechanism or budget ({', '.join(changed)} "
                "differ); resume with the original settings or start a new --out"
            )
        if torn:
            # Written but never fsynced, so never released: drop it, answer that query again.
            with self.path.open("r+b") as handle:
                handle.truncate(len(raw) - len(torn))
                handle.flush()
                os.fsync(handle.fileno())
        self._size = len(raw) - len(torn)
        self.entries = entries
        # Kept as written: entries on disk are spent privacy, never dropped, even duplicates
        # that a ledger written before the check could hold.
        self._queries = {entry["query"] for entry in entries if "query" in entry}

    def _write_line(self, record: Mapping[str, Any], *, mode: str = "a") -> None:
        line = (json.dumps(record, separators=(",", ":")) + "\n").encode()
        with self.path.open(mode + "b") as handle:
            if fcntl is not None:
                fcntl.flock(handle.fileno(), fcntl.LOCK_EX)  # released when the file closes
            if os.fstat(handle.fileno()).st_size != self._size:
                raise FreekdError(
                    f"{self.path} was appended to by another run since this one opened it; run "
                    "one labelling run at a time on a folder, then continue with --resume"
                )
            handle.write(line)
            handle.flush()
            os.fsync(handle.fileno())
        self._size += len(line)
        if mode == "x":  # the new file's directory entry must survive a crash too
            directory = os.open(self.path.parent, os.O_RDONLY)
            try:
                os.fsync(directory)
            finally:
                os.close(directory)

    def append(self, entry: Mapping[str, Any]) -> None:
        """Record one query durably; only after this returns may its label be released.

        Raises:
            FreekdError: the entry's ``"query"`` id is already in the ledger, or another run
                has appended to the file since this object read it (nothing is written).
        """
        record = dict(entry)
        query = record.get("query")
        if query is not None and query in self._queries:
            raise FreekdError(
                f"query {query} is already in {self.path}; a query is answered and paid for "
                "once: continue with --resume (one run at a time) to reuse its recorded label"
            )
        self._write_line(record)
        self.entries.append(record)
        if query is not None:
            self._queries.add(query)

    def __len__(self) -> int:
        return len(self.entries)

    def __iter__(self) -> Iterator[dict[str, Any]]:
        return iter(self.entries)


def read_ledger(path: Path) -> tuple[dict[str, Any], list[dict[str, Any]]]:
    """The header and complete entries of the ledger at ``path``, read without changing it (a
    torn last line, never released, is left out), for readers that only account: a student
    checking the privacy record of the labels it trains on.

    Raises:
        FreekdError: the file is missing, unreadable, or not a well-formed ledger.
    """
    try:
        raw = Path(path).read_bytes()
    except OSError as error:
        raise FreekdError(
            f"cannot read the privacy ledger {path} ({error.strerror}); give the --out folder of "
            "`freekd pate label` as it was written"
        ) from None
    header, entries, _ = parse_ledger(Path(path), raw)
    return header, entries


def parse_ledger(path: Path, raw: bytes) -> tuple[dict[str, Any], list[dict[str, Any]], bytes]:
    """The header, the checked complete entries and the torn last line of ledger bytes ``raw``."""
    lines = raw.split(b"\n")
    complete, torn = lines[:-1], lines[-1]  # a complete line ends with "\n"
    if not complete:
        raise FreekdError(
            f"{path} is not a freekd privacy ledger (no header line); never delete or edit a "
            "ledger, and give a fresh --out for a new run"
        )
    try:
        header = json.loads(complete[0])
        entries = [json.loads(line) for line in complete[1:]]
    except (ValueError, RecursionError) as error:  # not JSON, nested or huge numbers
        detail = "nested too deeply" if isinstance(error, RecursionError) else str(error)
        raise FreekdError(
            f"{path} has a corrupt line ({detail[:120]}); a ledger is never edited by hand, "
            "restore it from a backup"
        ) from None
    if not isinstance(header, dict) or header.get("format") != FORMAT:
        raise FreekdError(
            f"{path} has a corrupt header line (not a {FORMAT} object); a ledger is never "
            "edited by hand, restore it from a backup"
        )
    for number, entry in enumerate(entries, 2):
        problem = _entry_problem(entry)
        if problem is not None:
            raise FreekdError(
                f"{path}:{number} is a corrupt entry ({problem}); a ledger is never edited by "
                "hand, restore it from a backup"
            )
    return header, entries, torn


def _entry_problem(entry: Any) -> str | None:
    """What is wrong with one ledger entry (a query, its label, who answered, its RDP cost)."""
    if not isinstance(entry, dict):
        return "not a JSON object"
    for key in ("query", "label"):
        value = entry.get(key)
        if not isinstance(value, int) or isinstance(value, bool):
            return f"{key} is {value!r}, not an integer"
    if entry["query"] < 0:
        return f"query is {entry['query']}, not an index"
    if entry.get("by") not in ("teachers", "student", None):
        return f"by is {entry.get('by')!r}"
    cost = entry.get("rdp")
    if (
        not isinstance(cost, list)
        or not cost
        or not all(isinstance(v, int | float) and not isinstance(v, bool) and v >= 0 for v in cost)
    ):
        return "rdp is not a list of non-negative numbers"
    return None
