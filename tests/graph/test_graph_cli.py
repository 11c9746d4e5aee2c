"""``freekd graph teacher|distill`` end to end on Cora: files, reports, the loaded models, the
baseline, inductive runs, exact resume and one-line errors."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
import torch

import freekd
from freekd.graph import pipeline
from freekd.graph.data import GraphData, make_split
from freekd.graph.training import node_accuracy
from tests.graph.conftest import needs_planetoid
from tests.test_cli import assert_user_error, invoke, succeeded

pytestmark = needs_planetoid
QUICK = ["--device", "cpu", "--quiet"]


def teacher(out: Path, *extra: object) -> Any:
    return invoke("graph", "teacher", "--epochs", "30", *QUICK, "--out", out, *extra)


def distill(teacher_path: Path, out: Path, *extra: object) -> Any:
    return invoke(
        "graph", "distill", "--teacher", teacher_path, "--epochs", "40", *QUICK,
        "--set", "timing_repeats=2", "--out", out, *extra,
    )  # fmt: skip


@pytest.fixture(scope="module")
def gcn_teacher(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("graph") / "teacher"
    succeeded(teacher(out, "--dataset", "cora", "--arch", "gcn"))
    return out


def test_the_teacher_run_writes_a_loadable_graph_checkpoint(
    gcn_teacher: Path, cora: GraphData
) -> None:
    report = json.loads((gcn_teacher / "report.json").read_text())
    assert report["dataset"] == "cora"
    assert report["setting"] == "transductive"
    model = freekd.load_model(str(gcn_teacher / "model.pt"))
    assert model.needs_graph
    assert not model.training
    accuracy = node_accuracy(model, cora.x, cora.edge_index, cora.y, cora.test)
    assert accuracy == pytest.approx(report["test_accuracy"])
    assert report["test_accuracy"] > 0.7  # 30 epochs of GCN on Cora: far above chance (1/7)
    # The kept weights are those of the best validation epoch, logged per epoch.
    logged = [json.loads(line) for line in (gcn_teacher / "metrics.jsonl").read_text().splitlines()]
    best = max(line["eval_accuracy"] for line in logged if "eval_accuracy" in line)
    assert report["validation_accuracy"] == pytest.approx(best)
    assert (gcn_teacher / "curves.png").is_file()
    assert (gcn_teacher / "config.yaml").is_file()


def test_info_describes_a_graph_checkpoint_and_eval_refuses_it(gcn_teacher: Path) -> None:
    model = gcn_teacher / "model.pt"
    shown = succeeded(invoke("info", model)).output
    assert "freekd-graph/1" in shown
    assert "cora, transductive" in shown
    assert "checksum verified" in shown
    details = json.loads(succeeded(invoke("info", model, "--json")).output)
    assert details["model"]["arch"] == "gcn"
    assert_user_error(invoke("eval", "--model", model, "--dataset", "digits"), "graph checkpoint")


def test_glnn_distills_into_an_mlp_with_a_baseline_and_timing(
    gcn_teacher: Path, tmp_path: Path, cora: GraphData
) -> None:
    out = tmp_path / "glnn"
    succeeded(distill(gcn_teacher / "model.pt", out))
    report = json.loads((out / "report.json").read_text())
    for part in ("teacher", "student", "baseline"):
        assert 0 <= report[part]["test_accuracy"] <= 1
    assert report["student"]["arch"] == report["baseline"]["arch"] == "mlp"
    student = freekd.load_model(str(out / "model.pt"))
    assert not student.needs_graph
    assert node_accuracy(student, cora.x, cora.edge_index, cora.y, cora.test) == pytest.approx(
        report["student"]["test_accuracy"]
    )
    baseline = freekd.load_model(str(out / "baseline" / "model.pt"))
    assert node_accuracy(baseline, cora.x, cora.edge_index, cora.y, cora.test) == pytest.approx(
        report["baseline"]["test_accuracy"]
    )
    speed = report["inference"]
    assert speed["online"]["request_nodes"] == 1
    assert speed["batch"]["request_nodes"] == 1000
    assert speed["speedup"] == speed["online"]["speedup"] > 1  # no neighbours to gather
    assert '"loss/soft_labels"' in (out / "metrics.jsonl").read_text()
    # The replaced run's baseline/ stayed beside a report whose baseline is null.
    succeeded(distill(gcn_teacher / "model.pt", out, "--overwrite", "--no-baseline"))
    assert json.loads((out / "report.json").read_text())["baseline"] is None
    assert not (out / "baseline").exists()


def test_kd_and_lsp_run_from_python(gcn_teacher: Path, tmp_path: Path) -> None:
    kd = freekd.graph_distill(
        teacher=gcn_teacher / "model.pt", method="kd", epochs=5, device="cpu", quiet=True,
        baseline=False, timing_repeats=1, out=tmp_path / "kd",
    )  # fmt: skip
    assert kd.report["method"]["name"] == "kd"
    assert kd.report["baseline"] is None
    assert '"loss/kd"' in (tmp_path / "kd" / "metrics.jsonl").read_text()
    lsp = freekd.graph_distill(
        teacher=gcn_teacher / "model.pt", method="lsp", student="gcn-small", epochs=5,
        device="cpu", quiet=True, baseline=False, timing_repeats=1, out=tmp_path / "lsp",
    )  # fmt: skip
    assert lsp.model.needs_graph
    assert lsp.report["student"]["arch"] == "gcn-small"
    assert '"loss/lsp"' in (tmp_path / "lsp" / "metrics.jsonl").read_text()


def test_the_inductive_student_never_trains_on_held_out_nodes(
    tmp_path: Path, cora: GraphData, monkeypatch: pytest.MonkeyPatch
) -> None:
    out = tmp_path / "ind-teacher"
    succeeded(teacher(out, "--setting", "inductive", "--epochs", "5"))
    held_out = torch.load(out / "model.pt", weights_only=True)["graph"]["held_out"]
    assert held_out.numel() == 200
    seen: list[torch.Tensor] = []
    original = pipeline.NodeSource

    def recording(nodes: torch.Tensor, *args: Any, **kwargs: Any) -> Any:
        seen.append(nodes)
        return original(nodes, *args, **kwargs)

    targets: list[Any] = []
    build = pipeline.build_graph_method

    def spying(name: str, student: Any, target: Any, params: Any) -> Any:
        targets.append(target)
        return build(name, student, target, params)

    monkeypatch.setattr(pipeline, "NodeSource", recording)
    monkeypatch.setattr(pipeline, "build_graph_method", spying)
    student = tmp_path / "ind-student"
    succeeded(distill(out / "model.pt", student, "--epochs", "3"))
    report = json.loads((student / "report.json").read_text())
    assert report["setting"] == "inductive"
    assert "observed_test_accuracy" in report["student"]
    assert len(seen) == 2
    assert seen[0].numel() == cora.num_nodes - 200
    assert not any(torch.isin(nodes, held_out).any() for nodes in seen)
    # Neither the student's graph nor the teacher's targets saw an edge of a held-out node.
    assert len(targets) == 2
    assert not any(torch.isin(t.edge_index, held_out).any() for t in targets)
    assert targets[0].edge_index.shape[1] < cora.edge_index.shape[1]
    split = make_split(cora, held_out)
    model = freekd.load_model(str(student / "model.pt"))
    assert node_accuracy(model, cora.x, cora.edge_index, cora.y, split.test) == pytest.approx(
        report["student"]["test_accuracy"]
    )


def test_resume_gives_the_weights_of_one_uninterrupted_run(tmp_path: Path) -> None:
    straight, resumed = tmp_path / "straight", tmp_path / "resumed"
    succeeded(teacher(straight, "--epochs", "6"))
    succeeded(teacher(resumed, "--epochs", "3"))
    succeeded(teacher(resumed, "--epochs", "6", "--resume"))
    a = torch.load(straight / "model.pt", weights_only=True)
    b = torch.load(resumed / "model.pt", weights_only=True)
    assert a["weights_sha256"] == b["weights_sha256"]


def test_bad_input_fails_in_one_line(gcn_teacher: Path, tmp_path: Path) -> None:
    out = tmp_path / "bad"
    assert_user_error(teacher(out, "--dataset", "pubmed"), "unknown graph data set 'pubmed'")
    assert_user_error(teacher(out, "--data-root", tmp_path), "--data-root")
    assert_user_error(teacher(out, "--arch", "gat"), "unknown graph architecture 'gat'")
    assert_user_error(teacher(out, "--setting", "semi"), "setting")
    model = gcn_teacher / "model.pt"
    assert_user_error(distill(model, out, "--dataset", "citeseer"), "trained on cora")
    assert_user_error(distill(model, out, "--method", "lsp"), "graph-free")
    assert_user_error(distill(model, out, "--method", "dkd"), "unknown graph method 'dkd'")
    assert_user_error(distill(model, out, "--set", "method.params.tau=2"), "no parameter 'tau'")
    assert_user_error(distill(tmp_path / "none.pt", out), "no teacher at")
    assert_user_error(distill(model, out, "--set", "method.params.lam=2"), "lam must be")
    assert_user_error(
        distill(model, out, "--set", "method.params.lam=x"),
        "method glnn: lam: expected a number, got 'x'",
    )
    assert_user_error(distill(model, out, "--set", "trainer.ema_decay=0.9"), "ema_decay")
    assert_user_error(distill(model, out, "--set", "trainer.swa_start=0.5"), "swa_start")
    assert_user_error(teacher(out, "--arch-kwargs", '{"dropout": "x"}'), "dropout must be")
    assert_user_error(teacher(out, "--arch-kwargs", '{"hidden": 1000000}'), "hidden must be")
    assert_user_error(
        teacher(out, "--setting", "inductive", "--set", "held_out_fraction=0.0001"),
        "holds out none",
    )
    hostile = tmp_path / "hostile.pt"
    data = torch.load(model, weights_only=True)
    torch.save({**data, "arch": "os:system"}, hostile)
    assert_user_error(distill(hostile, out), "arch")
    image = tmp_path / "image.pt"
    torch.save({"format": "freekd/1"}, image)
    assert_user_error(distill(image, out), "not a freekd graph checkpoint")
    assert not (out / "report.json").exists()


def test_a_speed_ratio_below_one_reads_as_slower() -> None:
    # LSP's "0.9× with all test nodes at once" sat in a "faster than the teacher" sentence.
    from freekd.graph.cli import _times

    assert _times(20.7) == "20.7× faster than"
    assert _times(0.5) == "2.0× slower than"
