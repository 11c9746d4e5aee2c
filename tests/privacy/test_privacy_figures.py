"""Every ε says what it is: data-independent, sanitized or unsanitized, the guarantee first.

DESIGN.md's privacy model: ``report.json["privacy"]`` gives each figure with its kind, and a
record copied into a student (PATE student, data-free student) keeps every figure and note.
"""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from freekd.audit.config import AuditConfig, ShadowConfig
from freekd.audit.pipeline import run_audit
from freekd.config import ComponentConfig, TeacherSourceConfig
from freekd.datafree.config import DataFreeConfig
from freekd.datafree.pipeline import run_datafree
from freekd.pate.config import PateLabelConfig, PateStudentConfig
from freekd.pate.label import run_pate_label
from freekd.pate.student import run_pate_student
from freekd.privacy import PrivacyBudget
from freekd.privacy.labeler import ConfidentGNMax, NoisyLabeler
from freekd.privacy.ledger import PrivacyLedger
from freekd.privacy.report import (
    DATA_DEPENDENT_SANITIZED,
    DATA_DEPENDENT_UNSANITIZED,
    DATA_INDEPENDENT,
    describe,
    dpsgd_privacy,
    epsilon_figures,
    guarantee,
    inherit,
)
from freekd.privacy.smooth import sanitized_release
from freekd.runs import RunOptions
from tests.conftest import tiny_trainer

KINDS = [DATA_INDEPENDENT, DATA_DEPENDENT_SANITIZED, DATA_DEPENDENT_UNSANITIZED]


def unanimous_votes(images: torch.Tensor) -> torch.Tensor:
    """40 of 50 teachers agree on class (first pixel · 10): a run whose dependent ε is small."""
    counts = torch.zeros((len(images), 10), dtype=torch.long)
    favourite = (images.flatten(1)[:, 0] * 10).long().clamp(max=9)
    counts[torch.arange(len(images)), favourite] += 40
    counts[:, 0] += 10
    return counts


def labelled_record(tmp_path: Path, budget_on: str, *, order: float | None) -> dict:
    """A Confident-GNMax labelling run's privacy record with its smooth-sensitivity release."""
    mechanism = ConfidentGNMax(sigma=4.0, sigma_threshold=8.0, threshold=30.0)
    budget = PrivacyBudget(epsilon=50.0, delta=1e-5)
    header = NoisyLabeler.ledger_header(mechanism, budget, seed=1, budget_on=budget_on)
    labeler = NoisyLabeler(
        unanimous_votes,
        mechanism,
        budget=budget,
        ledger=PrivacyLedger(tmp_path / f"{budget_on}-{order}.jsonl", header=header),
        seed=1,
        num_classes=10,
        budget_on=budget_on,
    )
    images = torch.rand((40, 1, 4, 4), generator=torch.Generator().manual_seed(0))
    result = labeler.label(list(range(40)), images)
    record = labeler.privacy_report()
    votes = unanimous_votes(images).numpy()
    record["sanitized"] = sanitized_release(
        votes, sigma=4.0, delta=1e-5, teachers=50, sigma_threshold=8.0, threshold=30.0,
        answered=result.by_teachers.numpy(), order=order,
    )  # fmt: skip
    return record


def test_the_guarantee_comes_first_and_a_data_dependent_budget_says_so(tmp_path: Path) -> None:
    record = labelled_record(tmp_path, DATA_DEPENDENT_UNSANITIZED, order=None)
    figures = epsilon_figures(record)
    assert [f["kind"] for f in figures] == KINDS
    independent, sanitized, unsanitized = figures
    assert independent["epsilon"] == record["data_independent_epsilon"]
    assert unsanitized["epsilon"] == record["data_dependent_epsilon"] == record["epsilon"]
    assert unsanitized["epsilon"] < independent["epsilon"]  # why the papers budget on it
    assert (independent["guarantee"], sanitized["guarantee"], unsanitized["guarantee"]) == (
        True, False, False,
    )  # fmt: skip
    assert (sanitized["publishable"], unsanitized["publishable"]) == (True, False)
    assert "not where labelling stopped" in independent["caveat"]
    assert "labelling stopped on the data-dependent ε" in sanitized["caveat"]
    assert "the data-independent ε is the only guarantee" in record["note"]
    assert describe(independent).endswith(
        "data-independent: the only guarantee; bounds the answers, not where labelling stopped "
        "(budget on the data-dependent ε)"
    )
    assert "data-dependent-unsanitized: NOT private to publish" in describe(unsanitized)
    assert guarantee(record) == independent


def test_a_sanitized_figure_is_a_guarantee_only_when_nothing_was_chosen_from_the_votes(
    tmp_path: Path,
) -> None:
    chosen = epsilon_figures(labelled_record(tmp_path, DATA_INDEPENDENT, order=None))
    assert [f["kind"] for f in chosen] == KINDS
    assert chosen[1]["guarantee"] is False
    assert chosen[1]["caveat"].startswith("Rényi order picked from the private votes")
    assert "caveat" not in chosen[0]  # a data-independent budget: no stopping caveat
    fixed = epsilon_figures(labelled_record(tmp_path, DATA_INDEPENDENT, order=16.0))
    assert [f["guarantee"] for f in fixed] == [True, True, False]
    assert "caveat" not in fixed[1]


def test_dpsgd_figure_and_records_without_a_guarantee() -> None:
    record = dpsgd_privacy(sample_rate=0.01, noise_multiplier=1.0, steps=1000, delta=1e-5)
    (figure,) = record["epsilons"]
    assert figure["kind"] == DATA_INDEPENDENT
    assert figure["guarantee"]
    assert describe(figure).endswith("data-independent (DP-SGD, Opacus RDP): a guarantee")
    # A record written before the figures had kinds, that kept only the unsanitized ε.
    old = {"private": True, "epsilon": 1.9, "delta": 1e-5, "kind": DATA_DEPENDENT_UNSANITIZED}
    assert guarantee(old) is None
    assert [f["kind"] for f in epsilon_figures(old)] == [DATA_DEPENDENT_UNSANITIZED]
    assert epsilon_figures({"private": False, "note": "no record"}) == []


def test_inherited_records_keep_every_note(tmp_path: Path) -> None:
    record = labelled_record(tmp_path, DATA_DEPENDENT_UNSANITIZED, order=None)
    student = inherit(record, "the student: post-processing")
    grandchild = inherit(student, "data-free: post-processing", private=True)
    assert grandchild["notes"] == [record["note"], "the student: post-processing",
                                   "data-free: post-processing"]  # fmt: skip
    assert "not private to publish" in grandchild["note"]
    assert grandchild["epsilons"] == epsilon_figures(record)
    assert record.get("notes") is None  # the labeler's record is not changed


@pytest.fixture(scope="module")
def pate_student(teachers: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A PATE student of the digits ensemble, labels budgeted on the data-dependent ε."""
    folder = tmp_path_factory.mktemp("pate-student")
    labels = PateLabelConfig(
        teachers=str(teachers / "teachers.pt"),
        query_dataset="digits:test",
        queries=150,
        holdout=97,
        aggregator="gnmax",
        sigma=0.5,
        epsilon=1e4,
        budget_on=DATA_DEPENDENT_UNSANITIZED,
    )
    run_pate_label(labels, RunOptions(folder / "labels", quiet=True))
    student = PateStudentConfig(
        labels=str(folder / "labels"),
        student="tiny-cnn",
        semi_supervised="none",
        trainer=tiny_trainer(epochs=5, batch_size=32),
    )
    run_pate_student(student, RunOptions(folder / "student", quiet=True))
    return folder


def test_a_datafree_student_of_a_pate_student_keeps_every_figure_and_is_audited_on_the_guarantee(
    pate_student: Path, tmp_path: Path
) -> None:
    teacher = torch.load(pate_student / "student" / "model.pt", weights_only=True)["privacy"]
    assert "not private to publish" in teacher["note"]  # the labeler's note survived
    config = DataFreeConfig(
        teacher=TeacherSourceConfig(path=str(pate_student / "student" / "model.pt")),
        synthesizer=ComponentConfig(name="dfad"),
        eval_dataset="digits:test",
        steps_per_epoch=3,
        trainer=tiny_trainer(epochs=1),
    )
    report = run_datafree(config, RunOptions(tmp_path / "datafree", quiet=True))
    privacy = report["privacy"]
    assert privacy["private"] is True
    assert privacy["data_independent_epsilon"] == teacher["data_independent_epsilon"]
    assert privacy["sanitized_epsilon"] == teacher["sanitized_epsilon"]
    assert privacy["epsilon"] == teacher["epsilon"]  # the old key, still the budgeted figure
    assert [f["kind"] for f in privacy["epsilons"]] == KINDS
    assert privacy["notes"][:-1] == teacher["notes"]
    assert "inherits the teacher's" in privacy["notes"][-1]
    saved = torch.load(tmp_path / "datafree" / "model.pt", weights_only=True)["privacy"]
    assert saved["data_independent_epsilon"] == teacher["data_independent_epsilon"]
    # Its audit compares with the guarantee, not with the smaller unsanitized ε.
    audit = AuditConfig(
        model=TeacherSourceConfig(path=str(tmp_path / "datafree" / "model.pt")),
        members="digits:train",
        non_members="digits:test",
        max_examples=200,
        shadow=ShadowConfig(models=0),
        attacks=["loss"],
    )
    bound = run_audit(audit, RunOptions(tmp_path / "audit", quiet=True))["epsilon_lower_bound"]
    assert bound["accountant_kind"] == DATA_INDEPENDENT
    assert bound["accountant_epsilon"] == pytest.approx(teacher["data_independent_epsilon"])
    assert bound["accountant_epsilon"] > teacher["data_dependent_epsilon"]
