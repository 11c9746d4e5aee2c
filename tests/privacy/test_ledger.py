"""The privacy ledger keeps one entry per query and one writer at a time (issue 17, §2).

Two ``pate label --resume`` runs on one ledger once recorded 6,800 entries for 3,900 queries:
the budget spent twice on paper. The ledger now refuses a query id it already holds, and an
append after another writer's, before writing anything; what is on disk is never lost.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from freekd.errors import FreekdError
from freekd.privacy.ledger import PrivacyLedger

HEADER = {"mechanism": "gnmax", "parameters": {"sigma": 1.0}, "seed": 0}


def entry(query: int, label: int = 1) -> dict[str, object]:
    return {"query": query, "label": label, "by": "teachers", "rdp": [0.1, 0.2]}


def test_a_query_already_in_the_ledger_is_refused_before_anything_is_written(
    tmp_path: Path,
) -> None:
    path = tmp_path / "ledger.jsonl"
    ledger = PrivacyLedger(path, header=HEADER)
    ledger.append(entry(0))
    ledger.append(entry(1))
    before = path.read_bytes()
    with pytest.raises(FreekdError, match=r"query 1 is already in .*ledger\.jsonl"):
        ledger.append(entry(1, label=5))
    assert path.read_bytes() == before
    assert [e["query"] for e in ledger] == [0, 1]
    ledger.append(entry(2))  # the refusal leaves the ledger usable
    assert [e["query"] for e in PrivacyLedger(path, header=HEADER)] == [0, 1, 2]


def test_a_reopened_ledger_refuses_the_queries_on_disk(tmp_path: Path) -> None:
    path = tmp_path / "ledger.jsonl"
    first = PrivacyLedger(path, header=HEADER)
    for query in range(3):
        first.append(entry(query))
    resumed = PrivacyLedger(path, header=HEADER)
    before = path.read_bytes()
    with pytest.raises(FreekdError, match="query 0 is already in"):
        resumed.append(entry(0))
    assert path.read_bytes() == before
    assert len(PrivacyLedger(path, header=HEADER)) == 3


def test_an_append_after_another_writers_is_refused(tmp_path: Path) -> None:
    """Two writers on one file: the one whose view is stale is refused, nothing is lost."""
    path = tmp_path / "ledger.jsonl"
    PrivacyLedger(path, header=HEADER)
    one, two = PrivacyLedger(path, header=HEADER), PrivacyLedger(path, header=HEADER)
    one.append(entry(0))
    before = path.read_bytes()
    with pytest.raises(FreekdError, match="appended to by another run"):
        two.append(entry(7))  # a different query, but `two` never counted query 0's cost
    with pytest.raises(FreekdError, match="appended to by another run"):
        two.append(entry(0))
    assert path.read_bytes() == before
    one.append(entry(1))  # the writer that is up to date goes on
    assert [e["query"] for e in PrivacyLedger(path, header=HEADER)] == [0, 1]


def test_duplicates_already_on_disk_are_read_not_dropped(tmp_path: Path) -> None:
    """A ledger written before the check may hold a query twice: both were spent, both stay."""
    path = tmp_path / "ledger.jsonl"
    PrivacyLedger(path, header=HEADER)
    with path.open("a") as handle:
        for record in (entry(0), entry(0, label=2), entry(1)):
            handle.write(json.dumps(record) + "\n")
    before = path.read_bytes()
    ledger = PrivacyLedger(path, header=HEADER)
    assert [e["query"] for e in ledger] == [0, 0, 1]
    assert path.read_bytes() == before
    with pytest.raises(FreekdError, match="query 1 is already in"):
        ledger.append(entry(1))
