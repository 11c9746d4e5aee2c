"""The noisy labeler and its ledger: budget before spending, durable answers, exact resume."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from freekd.errors import FreekdError
from freekd.privacy import DPSGDAccountant, GNMaxAccountant, PrivacyBudget, compose, max_queries
from freekd.privacy.aggregation import ABSTAIN
from freekd.privacy.labeler import (
    MECHANISMS,
    ConfidentGNMax,
    GNMax,
    NoisyLabeler,
    mechanism_from_name,
)
from freekd.privacy.ledger import PrivacyLedger

ROOT = Path(__file__).resolve().parents[2]
TEACHERS, CLASSES = 50, 10


def query_images(n: int) -> torch.Tensor:
    return torch.rand((n, 1, 4, 4), generator=torch.Generator().manual_seed(7))


def votes_of(images: torch.Tensor) -> torch.Tensor:
    """A deterministic stand-in for an ensemble's votes: strong agreement on most images."""
    flat = images.flatten(1)
    favourite = (flat[:, 0] * CLASSES).long().clamp(max=CLASSES - 1)
    agreeing = (flat[:, 1] * TEACHERS).long()
    counts = torch.zeros((len(images), CLASSES), dtype=torch.long)
    counts[torch.arange(len(images)), favourite] += agreeing
    counts[:, 0] += TEACHERS - agreeing
    return counts


def make_labeler(
    path: Path, *, epsilon: float = 50.0, mechanism: object = None, budget_on: str | None = None
) -> NoisyLabeler:
    mech = mechanism or ConfidentGNMax(sigma=4.0, sigma_threshold=8.0, threshold=30.0)
    budget = PrivacyBudget(epsilon=epsilon, delta=1e-5)
    on = budget_on or "data-independent"
    header = NoisyLabeler.ledger_header(mech, budget, seed=3, budget_on=on)  # type: ignore[arg-type]
    return NoisyLabeler(
        votes_of,
        mech,  # type: ignore[arg-type]
        budget=budget,
        ledger=PrivacyLedger(path, header=header),
        seed=3,
        num_classes=CLASSES,
        budget_on=on,
    )


def test_budget_is_checked_before_spending(tmp_path: Path) -> None:
    mechanism = GNMax(sigma=10.0)
    budget = PrivacyBudget(epsilon=2.0, delta=1e-5)
    allowed = max_queries(lambda q: GNMaxAccountant(sigma=10.0, queries=q), budget)
    labeler = make_labeler(tmp_path / "ledger.jsonl", epsilon=2.0, mechanism=mechanism)
    images = query_images(allowed + 20)
    result = labeler.label(list(range(len(images))), images)
    assert result.stopped_by_budget
    assert result.reached == allowed == labeler.answered
    assert (result.labels[allowed:] == ABSTAIN).all()
    report = labeler.privacy_report()
    assert report["epsilon"] <= 2.0
    assert report["queries_answered"] == allowed
    # Over budget now: the next call answers nothing.
    again = labeler.label([10_000], query_images(1))
    assert again.stopped_by_budget
    assert again.reached == 0


def test_data_dependent_budget_answers_more_for_confident_votes(tmp_path: Path) -> None:
    images = query_images(400)
    plain = make_labeler(tmp_path / "a.jsonl", epsilon=3.0, mechanism=GNMax(sigma=10.0))
    dependent = make_labeler(
        tmp_path / "b.jsonl",
        epsilon=3.0,
        mechanism=GNMax(sigma=10.0),
        budget_on="data-dependent-unsanitized",
    )
    indices = list(range(400))
    assert dependent.label(indices, images).reached > plain.label(indices, images).reached
    assert dependent.privacy_report()["data_dependent_epsilon"] <= 3.0


def test_ledger_resume_never_respends(tmp_path: Path) -> None:
    path = tmp_path / "ledger.jsonl"
    images = query_images(60)
    first = make_labeler(path)
    part = first.label(list(range(30)), images[:30]).labels
    epsilon_after_30 = first.privacy_report()["data_independent_epsilon"]
    resumed = make_labeler(path)
    assert resumed.queries == 30
    assert resumed.privacy_report()["data_independent_epsilon"] == epsilon_after_30
    # Re-asking answered queries costs nothing and returns the same labels.
    torch.testing.assert_close(resumed.label(list(range(30)), images[:30]).labels, part)
    assert resumed.privacy_report()["data_independent_epsilon"] == epsilon_after_30
    full = resumed.label(list(range(60)), images).labels
    straight = make_labeler(tmp_path / "straight.jsonl").label(list(range(60)), images).labels
    torch.testing.assert_close(full, straight)
    assert len(PrivacyLedger(path, header=resumed.ledger.header)) == 60


def test_ledger_refuses_another_mechanism_and_drops_a_torn_line(tmp_path: Path) -> None:
    path = tmp_path / "ledger.jsonl"
    make_labeler(path).label([0, 1], query_images(2))
    with pytest.raises(FreekdError, match="another mechanism"):
        make_labeler(path, mechanism=GNMax(sigma=4.0))
    with pytest.raises(FreekdError, match="another mechanism"):
        make_labeler(path, epsilon=10.0)
    complete = path.read_bytes()
    with path.open("ab") as handle:
        handle.write(b'{"query": 2, "lab')  # a crash mid-write: never fsynced, never released
    assert make_labeler(path).queries == 2
    assert path.read_bytes() == complete
    path.write_bytes(complete.replace(b'"label"', b'"label', 1))
    with pytest.raises(FreekdError, match="corrupt"):
        make_labeler(path)


def test_killed_labelling_run_loses_no_released_label(tmp_path: Path) -> None:
    path = tmp_path / "ledger.jsonl"
    env = {**os.environ, "PYTHONPATH": str(ROOT), "OMP_NUM_THREADS": "1"}
    child = subprocess.Popen(
        [sys.executable, "-m", "tests.privacy.label_worker", str(path), "200"],
        cwd=ROOT,
        env=env,
        stdout=subprocess.PIPE,
        text=True,
    )
    assert child.stdout is not None
    released = {}
    for line in child.stdout:
        index, label = map(int, line.split())
        released[index] = label
        if len(released) == 25:
            child.send_signal(signal.SIGKILL)
            break
    child.wait(timeout=60)
    assert child.returncode == -signal.SIGKILL
    resumed = make_labeler(path)
    recorded = {entry["query"]: entry["label"] for entry in resumed.ledger}
    assert released.items() <= recorded.items()  # every released label is in the ledger
    spent = resumed.privacy_report()["data_independent_rdp"]
    images = query_images(200)
    final = resumed.label(list(range(200)), images).labels
    straight = make_labeler(tmp_path / "straight.jsonl")
    torch.testing.assert_close(final, straight.label(list(range(200)), images).labels)
    assert np.all(np.asarray(resumed.privacy_report()["data_independent_rdp"]) >= spent)
    assert resumed.privacy_report() == straight.privacy_report()


def test_mechanism_from_name() -> None:
    assert mechanism_from_name("gnmax", sigma=40.0) == GNMax(sigma=40.0)
    assert set(MECHANISMS.names()) == {"confident-gnmax", "gnmax", "interactive-gnmax", "lnmax"}
    with pytest.raises(FreekdError, match="needs sigma_threshold, threshold"):
        mechanism_from_name("confident-gnmax", sigma=40.0)
    with pytest.raises(FreekdError, match="positive"):
        mechanism_from_name("gnmax", sigma=-1.0)


def test_interactive_gnmax_pays_only_the_check_for_student_labels(tmp_path: Path) -> None:
    from freekd.privacy import rdp as analysis
    from freekd.privacy.labeler import InteractiveGNMax

    mechanism = InteractiveGNMax(
        sigma=4.0, sigma_threshold=1e-3, threshold=30.0, confidence_scale=50.0,
        student_threshold=0.9,
    )  # fmt: skip
    # A near-noiseless check (σ₁ = 1e-3) costs a fortune: the budget is set out of the way.
    labeler = make_labeler(tmp_path / "ledger.jsonl", mechanism=mechanism, epsilon=1e15)
    images = query_images(40)
    votes = votes_of(images)
    # A student that agrees with the plurality, confidently: max(n − O·p) stays below T.
    agreeing = torch.nn.functional.one_hot(votes.argmax(dim=1), CLASSES).double()
    result = labeler.label(list(range(40)), images, student_probabilities=agreeing)
    strong = (votes.max(dim=1).values - 50.0 < 30.0).numpy()
    assert (~result.by_teachers[strong]).all()
    torch.testing.assert_close(result.labels[strong], votes.argmax(dim=1)[strong])
    entries = list(labeler.ledger)
    assert {entry["by"] for entry in entries} <= {"teachers", "student"}
    checks_only = sum(entry["by"] != "teachers" for entry in entries)
    orders = labeler.orders
    expected = 40 * analysis.threshold_rdp(orders, sigma=1e-3) + (
        40 - checks_only
    ) * analysis.gnmax_rdp(orders, sigma=4.0)
    np.testing.assert_allclose(labeler.privacy_report()["data_independent_rdp"], expected)
    assert labeler.answered == 40 - checks_only
    resumed = make_labeler(tmp_path / "ledger.jsonl", mechanism=mechanism, epsilon=1e15)
    assert resumed.privacy_report() == labeler.privacy_report()
    with pytest.raises(FreekdError, match="needs the student"):
        resumed.label([99], query_images(1))


def test_a_prior_spend_counts_against_the_budget(tmp_path: Path) -> None:
    # Data-free PATE: the DP-SGD teacher that made the queries already spent part of the budget.
    mechanism = GNMax(sigma=10.0)
    budget = PrivacyBudget(epsilon=2.0, delta=1e-5)
    prior = DPSGDAccountant(sample_rate=0.01, noise_multiplier=1.0, steps=300)
    prior_epsilon = prior.epsilon(delta=1e-5)
    assert 0 < prior_epsilon < 2.0
    allowed = max_queries(lambda q: compose(prior, GNMaxAccountant(sigma=10.0, queries=q)), budget)
    alone = max_queries(lambda q: GNMaxAccountant(sigma=10.0, queries=q), budget)
    assert allowed < alone
    header = NoisyLabeler.ledger_header(mechanism, budget, seed=3, budget_on="data-independent")
    labeler = NoisyLabeler(
        votes_of, mechanism, budget=budget,
        ledger=PrivacyLedger(tmp_path / "ledger.jsonl", header=header), seed=3,
        num_classes=CLASSES, prior=prior.rdp(), prior_record={"epsilon": prior_epsilon},
    )  # fmt: skip
    images = query_images(alone + 5)
    result = labeler.label(list(range(len(images))), images)
    assert result.stopped_by_budget
    assert result.reached == allowed
    report = labeler.privacy_report()
    assert report["composed_with"] == {"epsilon": prior_epsilon}
    assert prior_epsilon < report["epsilon"] <= 2.0
    # A prior larger than the budget leaves nothing to answer.
    spent = NoisyLabeler(
        votes_of, mechanism, budget=budget,
        ledger=PrivacyLedger(tmp_path / "spent.jsonl", header=header), seed=3,
        num_classes=CLASSES, prior=10 * prior.rdp(),
    )  # fmt: skip
    assert spent.label([0], query_images(1)).reached == 0


@pytest.mark.parametrize(
    "edit",
    [
        lambda entry: {**entry, "rdp": [0.0] * len(entry["rdp"])},  # spending rolled back
        lambda entry: {**entry, "label": 99},
        lambda entry: {**entry, "label": (entry["label"] + 1) % CLASSES},
        lambda entry: {**entry, "rdp": [2 * v for v in entry["rdp"]]},
    ],
    ids=["zeroed cost", "label out of range", "another label", "doubled cost"],
)
def test_a_resumed_ledger_is_re_derived_from_the_votes(tmp_path: Path, edit: object) -> None:
    # Hand-edited entries used to be accepted: labels 99 and -7 reached labels.npz, and zeroed
    # RDP costs gave a data-dependent epsilon of 0 (the budget then paid for more answers).
    import json

    path = tmp_path / "ledger.jsonl"
    images = query_images(12)
    make_labeler(path, mechanism=GNMax(sigma=4.0)).label(list(range(12)), images)
    resumed = make_labeler(path, mechanism=GNMax(sigma=4.0))
    assert resumed.unverified == list(range(12))
    resumed.verify(list(range(12)), images)  # the untouched ledger re-derives exactly
    assert resumed.unverified == []
    lines = path.read_text().splitlines()
    entry = json.loads(lines[5])
    lines[5] = json.dumps(edit(entry))  # type: ignore[operator]
    path.write_text("\n".join(lines) + "\n")
    tampered = make_labeler(path, mechanism=GNMax(sigma=4.0))
    with pytest.raises(FreekdError, match="the recorded answer to query 4 is not the one"):
        tampered.verify(list(range(12)), images)
