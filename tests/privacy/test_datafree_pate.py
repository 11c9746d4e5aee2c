"""Data-free PATE: queries synthesized from a DP-SGD teacher, labelled by the ensemble, composed."""

from __future__ import annotations

import json
import shutil
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
import torch

from freekd.config import ComponentConfig, TeacherSourceConfig
from freekd.data import load_dataset
from freekd.datafree.config import DataFreeConfig
from freekd.datafree.pipeline import run_datafree
from freekd.errors import FreekdError
from freekd.pate.config import PateLabelConfig, PateStudentConfig
from freekd.pate.label import run_pate_label
from freekd.pate.student import run_pate_student
from freekd.privacy import DPSGDAccountant
from freekd.privacy.rdp import epsilon_from_rdp
from freekd.runs import RunOptions
from tests.conftest import tiny_trainer


def synthesize(teacher: Path, out: Path, count: int = 300, confidence: float = 0.0) -> Path:
    config = DataFreeConfig(
        teacher=TeacherSourceConfig(path=str(teacher)),
        synthesizer=ComponentConfig(name="dafl"),
        steps_per_epoch=5,
        save_queries=count,
        queries_confidence=confidence,
        trainer=tiny_trainer(epochs=1),
    )
    report = run_datafree(config, RunOptions(out, quiet=True))
    assert report["queries_file"]["images"] == count or confidence > 0
    return out / "queries.npz"


def test_confident_queries_are_kept_class_by_class(tiny_teacher_path: Path, tmp_path: Path) -> None:
    from freekd.checkpoint import load_model

    queries = synthesize(tiny_teacher_path, tmp_path / "synth", count=40, confidence=0.6)
    report = json.loads((tmp_path / "synth" / "report.json").read_text())["queries_file"]
    with np.load(queries) as data:
        images, labels = data["x"], data["y"]
    assert 0 < len(labels) <= 40
    assert report["drawn"] > len(labels)  # some draws fell short of the confidence
    assert np.bincount(labels, minlength=10).max() <= 4  # at most ceil(40 / 10) per class
    teacher = load_model(str(tiny_teacher_path))
    with torch.no_grad():
        probabilities = torch.softmax(teacher(torch.as_tensor(images).float() / 255), dim=1)
    top, label = probabilities.max(dim=1)
    assert (label.numpy() == labels).mean() > 0.9  # 8-bit rounding may move a few
    assert float(top.median()) >= 0.6


def label(teachers: Path, pool: Path, out: Path, **changes: object) -> dict:
    values: dict[str, object] = {
        "teachers": str(teachers / "teachers.pt"),
        "query_dataset": str(pool),
        "eval_dataset": "digits:test",
        "queries": 300,
        "holdout": 0,
        "aggregator": "confident-gnmax",
        "sigma": 0.5,
        "sigma_threshold": 1.0,
        "threshold": 4.0,
        "epsilon": 1e4,
        "budget_on": "data-dependent-unsanitized",
    }
    values.update(changes)
    resume = bool(values.pop("resume", False))
    return run_pate_label(PateLabelConfig(**values), RunOptions(out, quiet=True, resume=resume))  # type: ignore[arg-type]


def test_queries_from_a_dp_teacher_compose_with_the_answers(
    dp_teacher: Path, teachers: Path, tiny_teacher_path: Path, tmp_path: Path
) -> None:
    queries = synthesize(dp_teacher / "model.pt", tmp_path / "synth")
    pool = load_dataset(str(queries))
    assert pool.images.dtype.is_floating_point is False
    assert len(pool) == 300
    report = label(teachers, queries, tmp_path / "labels")
    assert "data-free PATE" in report["queries"]["source"]
    assert report["queries"]["query_model_private"] is True
    assert report["label_accuracy"] is None  # synthetic queries have no ground truth
    privacy = report["privacy"]
    teacher_privacy = json.loads((dp_teacher / "report.json").read_text())["privacy"]
    mechanism = teacher_privacy["mechanisms"][0]
    dpsgd = DPSGDAccountant(
        sample_rate=mechanism["sample_rate"],
        noise_multiplier=mechanism["noise_multiplier"],
        steps=mechanism["steps"],
    ).rdp()
    np.testing.assert_allclose(privacy["prior_rdp"], dpsgd)
    # The composed curve is the DP-SGD curve plus the answers' own: its ε exceeds either part.
    orders = np.asarray(privacy["orders"])
    independent = np.asarray(privacy["data_independent_rdp"])
    assert np.all(independent > dpsgd)
    assert privacy["data_independent_epsilon"] == pytest.approx(
        epsilon_from_rdp(independent, orders, delta=1e-5)[0]
    )
    assert privacy["data_independent_epsilon"] > teacher_privacy["epsilon"]
    assert privacy["sanitized"]["prior_rdp"] > 0
    assert privacy["composed_with"]["epsilon"] == teacher_privacy["epsilon"]
    assert 0 < report["answered"] < 300, report["answered"]
    # A path read from the label report is never opened: the user names the pool file.
    unnamed = PateStudentConfig(labels=str(tmp_path / "labels"), student="tiny-cnn")
    with pytest.raises(FreekdError, match="opens no path read from a report; pass --queries-from"):
        run_pate_student(unnamed, RunOptions(tmp_path / "unnamed", quiet=True))
    other_pool = synthesize(tiny_teacher_path, tmp_path / "other-synth")
    with pytest.raises(FreekdError, match="is not the pool these labels were made on"):
        run_pate_student(
            replace(unnamed, queries_from=str(other_pool)),
            RunOptions(tmp_path / "other-pool", quiet=True),
        )
    assert not (tmp_path / "unnamed" / "report.json").exists()
    student = run_pate_student(
        PateStudentConfig(
            labels=str(tmp_path / "labels"),
            queries_from=str(queries),
            student="tiny-cnn",
            semi_supervised_kwargs={"epsilon": 0.5},
            labelled_batch_size=16,
            trainer=tiny_trainer(epochs=2, batch_size=32),
        ),
        RunOptions(tmp_path / "student", quiet=True),
    )
    assert student["eval_dataset"] == "digits:test"
    assert student["privacy"]["data_independent_epsilon"] == privacy["data_independent_epsilon"]

    # The query model's soft targets on the whole pool: its cost is in the labels' ε already.
    def distilled(path: Path, out: str, **changes: object) -> dict:
        values: dict[str, object] = {
            "labels": str(tmp_path / "labels"),
            "queries_from": str(queries),
            "student": "tiny-cnn",
            "semi_supervised": "teacher",
            "semi_supervised_kwargs": {"kd_weight": 2.0},
            "distill_teacher": TeacherSourceConfig(path=str(path)),
            "labelled_batch_size": 16,
            "trainer": tiny_trainer(epochs=2, batch_size=32),
        }
        values.update(changes)
        config = PateStudentConfig(**values)  # type: ignore[arg-type]
        return run_pate_student(config, RunOptions(tmp_path / out, quiet=True))

    taught = distilled(dp_teacher / "model.pt", "taught")
    assert taught["semi_supervised"]["teacher"] == str(dp_teacher / "model.pt")
    assert taught["semi_supervised"]["params"]["kd_weight"] == 2.0
    assert taught["semi_supervised"]["unlabelled_images"] == 300
    assert taught["privacy"]["data_independent_epsilon"] == privacy["data_independent_epsilon"]
    with pytest.raises(FreekdError, match="is not the model these queries were synthesized"):
        distilled(tiny_teacher_path, "other-teacher")
    # Starting from the DP teacher's own data-free student is free; from another model, not.
    start = queries.parent / "model.pt"
    started = distilled(
        dp_teacher / "model.pt", "started", init_student=str(start),
        trainer=tiny_trainer(epochs=1, batch_size=32, lr=1e-12),
    )  # fmt: skip
    assert started["init_student"] == str(start)
    assert started["privacy"]["data_independent_epsilon"] == privacy["data_independent_epsilon"]
    assert "started from a model made from it alone" in started["privacy"]["note"]
    # At a learning rate of 1e-12 the student's weights are still the starting model's.
    before = torch.load(start, weights_only=True)["state_dict"]
    after = torch.load(tmp_path / "started" / "model.pt", weights_only=True)["state_dict"]
    for key, value in before.items():
        if value.is_floating_point() and "running" not in key:
            torch.testing.assert_close(after[key], value, rtol=0, atol=1e-6, msg=key)
    # A private model with the same figures that is not the composed one (the DP teacher
    # itself names no weights it was made from) and a model without a record are refused.
    for other in (dp_teacher / "model.pt", tiny_teacher_path):
        with pytest.raises(FreekdError, match="is not post-processing of the DP model"):
            distilled(dp_teacher / "model.pt", "started-elsewhere", init_student=str(other))
    assert not (tmp_path / "started-elsewhere" / "report.json").exists()
    # A label report edited to name other weights no longer matches the pool's datafree report.
    forged = tmp_path / "forged"
    shutil.copytree(tmp_path / "labels", forged)
    record = json.loads((forged / "report.json").read_text())
    record["queries"]["query_model_weights_sha256"] = "0" * 64
    (forged / "report.json").write_text(json.dumps(record))
    with pytest.raises(FreekdError, match="does not match"):
        distilled(dp_teacher / "model.pt", "forged-run", labels=str(forged))
    # Nor does one that drops what the query model had spent (and the ε it adds), or the
    # ledger would pass on a smaller ε that agrees with itself.
    shrunk = tmp_path / "shrunk"
    shutil.copytree(tmp_path / "labels", shrunk)
    record = json.loads((shrunk / "report.json").read_text())
    forged_privacy = record["privacy"]
    prior_rdp = np.asarray(forged_privacy.pop("prior_rdp"))
    del forged_privacy["composed_with"]
    for kind in ("data_independent", "data_dependent"):
        curve = np.asarray(forged_privacy[f"{kind}_rdp"]) - prior_rdp
        forged_privacy[f"{kind}_epsilon"] = epsilon_from_rdp(curve, orders, delta=1e-5)[0]
    forged_privacy["epsilon"] = forged_privacy["data_dependent_epsilon"]  # as budget_on
    (shrunk / "report.json").write_text(json.dumps(record))
    assert "prior_rdp" in json.loads((shrunk / "ledger.jsonl").read_text().splitlines()[0])
    with pytest.raises(
        FreekdError,
        match="prior_rdp .the RDP its query model had spent before any answer. is not its ledger",
    ):
        distilled(dp_teacher / "model.pt", "shrunk-run", labels=str(shrunk))
    with pytest.raises(FreekdError, match="go together"):
        distilled(dp_teacher / "model.pt", "no-mode", semi_supervised="vat",
                  semi_supervised_kwargs={})  # fmt: skip


def test_a_label_folder_resumes_with_the_prior_its_ledger_recorded(
    dp_teacher: Path, teachers: Path, tmp_path: Path
) -> None:
    """A ledger written before its header held the prior, or whose recorded prior differs from
    the recomputed one in the last bits, still resumes; the report keeps the prior either way."""
    queries = synthesize(dp_teacher / "model.pt", tmp_path / "synth", count=60)
    out = tmp_path / "labels"
    first = label(teachers, queries, out, queries=30)
    ledger = out / "ledger.jsonl"
    lines = ledger.read_text().splitlines()
    header = json.loads(lines[0])
    assert header["prior_rdp"] == first["privacy"]["prior_rdp"]

    def rewrite_header(**changes: object) -> None:
        # Simulates a folder from another version: ledgers are never edited otherwise.
        record = {key: value for key, value in header.items() if key != "prior_rdp"} | changes
        text = "\n".join([json.dumps(record, separators=(",", ":")), *lines[1:]]) + "\n"
        ledger.write_text(text)

    # A recorded prior that is not one number per order is refused in one line, not a traceback.
    for hostile in (["x"] * len(header["prior_rdp"]), header["prior_rdp"][:1]):
        rewrite_header(prior_rdp=hostile)
        with pytest.raises(FreekdError, match="prior_rdp differ"):
            label(teachers, queries, out, queries=40, resume=True)
    nudged = [value * (1 + 1e-12) for value in header["prior_rdp"]]
    rewrite_header(prior_rdp=nudged)
    resumed = label(teachers, queries, out, queries=40, resume=True)
    assert json.loads(ledger.read_text().splitlines()[0])["prior_rdp"] == nudged
    assert resumed["queries"]["asked"] == 40
    lines = ledger.read_text().splitlines()
    rewrite_header()  # before session 41: no prior in the header
    older = label(teachers, queries, out, queries=50, resume=True)
    assert "prior_rdp" not in json.loads(ledger.read_text().splitlines()[0])
    assert older["privacy"]["prior_rdp"] == first["privacy"]["prior_rdp"]
    assert (
        older["privacy"]["data_independent_epsilon"] > first["privacy"]["data_independent_epsilon"]
    )


def test_queries_from_a_non_dp_teacher_need_a_public_model(
    tiny_teacher_path: Path, teachers: Path, tmp_path: Path
) -> None:
    queries = synthesize(tiny_teacher_path, tmp_path / "synth", count=50)
    with pytest.raises(FreekdError, match="queries_public=true"):
        label(teachers, queries, tmp_path / "refused", queries=50)
    report = label(teachers, queries, tmp_path / "public", queries=50, queries_public=True)
    assert report["queries"]["query_model_private"] is False
    # A model declared public is not accounted: its soft targets are refused to the student.
    with pytest.raises(FreekdError, match="not synthesized from a DP teacher|from a DP teacher"):
        run_pate_student(
            PateStudentConfig(
                labels=str(tmp_path / "public"),
                queries_from=str(queries),
                student="tiny-cnn",
                semi_supervised="teacher",
                distill_teacher=TeacherSourceConfig(path=str(tiny_teacher_path)),
                trainer=tiny_trainer(epochs=1, batch_size=32),
            ),
            RunOptions(tmp_path / "public-student", quiet=True),
        )
    assert not (tmp_path / "public-student" / "report.json").exists()
    # Labels that compose no model cannot pay for a starting model either.
    with pytest.raises(FreekdError, match="compose no model"):
        run_pate_student(
            PateStudentConfig(
                labels=str(tmp_path / "public"),
                queries_from=str(queries),
                student="tiny-cnn",
                init_student=str(queries.parent / "model.pt"),
                trainer=tiny_trainer(epochs=1, batch_size=32),
            ),
            RunOptions(tmp_path / "public-started", quiet=True),
        )
    assert "composed_with" not in report["privacy"]
    with pytest.raises(FreekdError, match="holdout must leave"):
        label(teachers, queries, tmp_path / "no-eval", queries=50, queries_public=True,
              eval_dataset=None)  # fmt: skip


@pytest.mark.parametrize(
    ("report", "message"),
    [
        ({"command": "datafree"}, "is not a complete datafree report"),
        (
            {"command": "datafree", "method": {"name": "zskt"}, "teacher": {"path": "t.pt"},
             "privacy": {"private": True, "mechanisms": [{"name": "dpsgd", "steps": 3}]}},
            "damaged DP-SGD record",
        ),
        (
            {"command": "datafree", "method": {"name": "zskt"}, "teacher": {"path": "t.pt"},
             "privacy": {"private": True, "mechanisms": [
                 {"name": "dpsgd", "sample_rate": "nan", "noise_multiplier": 1.0, "steps": 3}]}},
            "damaged DP-SGD record",
        ),
    ],
    ids=["no method", "no sample rate", "nan sample rate"],
)  # fmt: skip
def test_a_damaged_datafree_report_beside_queries_is_one_line(
    tmp_path: Path, report: dict[str, object], message: str
) -> None:
    # KeyError / ValueError tracebacks, the last after the ledger was created (folder locked).
    from freekd.pate.label import _prior_accountant, _query_provenance

    queries = tmp_path / "queries.npz"
    queries.write_bytes(b"")
    (tmp_path / "report.json").write_text(json.dumps(report))
    config = PateLabelConfig(teachers="t.pt", query_dataset=str(queries))
    with pytest.raises(FreekdError, match=message):
        _prior_accountant(_query_provenance(config, None))  # type: ignore[arg-type]
