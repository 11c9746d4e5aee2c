"""``freekd online`` end to end on real digits: files, report, the deployable choice, the
ensemble, the baseline, exact resume, DDP (tests/train/test_ddp.py) and one-line errors."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
import yaml

import freekd
from freekd.checkpoint import load_model
from freekd.data import ImageDataset
from freekd.train import evaluate
from tests.test_cli import assert_user_error, invoke, succeeded

TINY = ["--epochs", "1", "--batch-size", "64", "--device", "cpu", "--quiet"]


def online(out: Path, *extra: object) -> object:
    return invoke("online", "--dataset", "digits", *TINY, "--out", out, *extra)


def test_dml_writes_every_network_the_ensemble_and_the_baseline(
    tmp_path: Path, digits_test: ImageDataset
) -> None:
    out = tmp_path / "dml"
    succeeded(online(out, "--arch", "tiny-cnn", "--arch", "mlp"))
    report = json.loads((out / "report.json").read_text())
    assert set(report["networks"]) == {"peer0", "peer1"}
    assert [n["arch"] for n in report["networks"].values()] == ["tiny-cnn", "mlp"]
    assert report["ensemble"]["arch"] == "mean-ensemble"
    assert set(report["baseline"]) == {"tiny-cnn", "mlp"}
    assert report["validation_n"] == 150
    assert report["train_n"] == 1350
    # Every file loads alone and gives the accuracy the report quotes.
    for entry in [*report["networks"].values(), report["ensemble"], *report["baseline"].values()]:
        model = load_model(out / entry["path"])
        accuracy = evaluate(model, digits_test, device=torch.device("cpu"))["accuracy"]
        assert accuracy == pytest.approx(entry["test_accuracy"])
    # model.pt is the single network with the best validation accuracy.
    chosen = report["student"]["name"]
    best = max(n["validation_accuracy"] for n in report["networks"].values())
    assert report["networks"][chosen]["validation_accuracy"] == best
    deployable = torch.load(out / "model.pt", weights_only=True)
    saved = torch.load(out / "networks" / f"{chosen}.pt", weights_only=True)
    assert deployable["weights_sha256"] == saved["weights_sha256"]
    assert report["test_accuracy"] == report["networks"][chosen]["test_accuracy"]
    lines = (out / "metrics.jsonl").read_text()
    assert '"loss/kl"' in lines
    assert '"loss/ce"' in lines
    assert (out / "curves.png").is_file()


def test_one_from_python_exports_each_branch_as_the_base_network(tmp_path: Path) -> None:
    run = freekd.online(
        data="digits", method="one", archs="resnet8", epochs=1, batch_size=64, device="cpu",
        quiet=True, baseline=False, out=tmp_path / "one",
    )  # fmt: skip
    report = run.report
    assert set(report["networks"]) == {"branch0", "branch1", "branch2"}
    assert report["ensemble"]["arch"] == "branched"
    assert report["baseline"] is None
    for name in report["networks"]:
        data = torch.load(run.out / "networks" / f"{name}.pt", weights_only=True)
        assert data["arch"] == "resnet8"
        assert not any("branches" in key for key in data["state_dict"])
    ensemble = torch.load(run.out / "ensemble.pt", weights_only=True)
    assert ensemble["arch_kwargs"]["branch_at"] == "stages.2"
    assert run.model is not None
    assert run.model.arch == "resnet8"
    assert '"loss/ce_ensemble"' in (run.out / "metrics.jsonl").read_text()


def test_one_branches_a_user_network_at_a_named_module(tmp_path: Path) -> None:
    out = tmp_path / "user"
    succeeded(online(out, "--method", "one", "--arch", "tests.models.user_arch:UserNet",
                     "--arch-kwargs", '{"num_classes": 10}', "--no-baseline",
                     "--set", "method.params.branch_at=conv"))  # fmt: skip
    report = json.loads((out / "report.json").read_text())
    assert len(report["networks"]) == 3
    assert load_model(out / "model.pt", trust_code=True) is not None


def test_resume_gives_the_networks_of_one_uninterrupted_run(tmp_path: Path) -> None:
    constant = ["--set", "trainer.scheduler=constant", "--arch", "tiny-cnn"]
    straight, resumed = tmp_path / "straight", tmp_path / "resumed"
    succeeded(online(straight, *constant, "--epochs", "2"))
    succeeded(online(resumed, *constant))
    succeeded(online(resumed, *constant, "--epochs", "2", "--resume"))
    for name in ["networks/peer0.pt", "networks/peer1.pt", "ensemble.pt", "baseline/model.pt"]:
        a = torch.load(straight / name, weights_only=True)["state_dict"]
        b = torch.load(resumed / name, weights_only=True)["state_dict"]
        for key, value in a.items():
            assert torch.equal(value, b[key]), (name, key)
    a, b = (json.loads((run / "report.json").read_text()) for run in (straight, resumed))
    assert a["networks"] == b["networks"]
    assert a["baseline"]["tiny-cnn"]["test_accuracy"] == b["baseline"]["tiny-cnn"]["test_accuracy"]


def test_bad_input_fails_in_one_line(tmp_path: Path) -> None:
    out = tmp_path / "bad"
    assert_user_error(online(out, "--peers", "1"), "at least two peers")
    assert_user_error(online(out, "--method", "one", "--arch", "resnet8", "--arch", "mlp"),
                      "ONE branches one network")  # fmt: skip
    assert_user_error(online(out, "--method", "one", "--arch", "lenet5"), "branch_at")
    assert_user_error(  # the message lists what can be named
        online(out, "--method", "one", "--arch", "tiny-cnn"),
        "one of the modules with feature maps: features.0, features.1",
    )
    assert_user_error(
        online(out, "--method", "one", "--arch", "resnet8", "--set",
               "method.params.branch_at=layer9"),
        "no module 'layer9'",
    )  # fmt: skip
    assert_user_error(online(out, "--method", "kd"), "unknown online method 'kd'")
    # A million peers or branches used to build networks until the run was killed.
    assert_user_error(online(out, "--peers", "1000000"), "peers must lie in [1, 64]")
    assert_user_error(online(out, *["--arch", "mlp"] * 65), "must name 1 to 64 architectures")
    assert_user_error(
        online(out, "--method", "one", "--arch", "resnet8", "--set", "method.params.branches=99"),
        "branches must lie in [1, 64]",
    )
    assert_user_error(online(out, "--peers", "3", "--arch", "mlp", "--arch", "tiny-cnn"),
                      "--peers 3")  # fmt: skip
    assert_user_error(online(out, "--set", "trainer.ema_decay=0.99"), "ema_decay")
    assert_user_error(online(out, "--set", "trainer.swa_start=0.5"), "swa_start")
    assert_user_error(online(out, "--set", "validation_fraction=0.9"), "validation_fraction")
    assert_user_error(online(out, "--set", "method.params.warmup=1"), "no parameter 'warmup'")
    assert not (out / "report.json").exists()


def test_classes_that_do_not_match_are_refused(tmp_path: Path, digits_train: ImageDataset) -> None:
    three = tmp_path / "three.npz"
    keep = digits_train.labels < 3
    images = (digits_train.images[keep] * 255).round().to(torch.uint8).numpy()
    np.savez(three, x=images[:, 0], y=digits_train.labels[keep].numpy())
    result = invoke("online", "--dataset", three, "--eval-data", "digits:test", *TINY,
                    "--out", tmp_path / "x")  # fmt: skip
    assert_user_error(result, "classes")


def test_a_config_file_cannot_name_code_for_the_peers(tmp_path: Path) -> None:
    config = tmp_path / "online.yaml"
    config.write_text(yaml.safe_dump({"archs": ["tests.models.user_arch:UserNet", "mlp"]}))
    result = invoke("online", "--config", config, *TINY, "--out", tmp_path / "y")
    assert_user_error(result, "names code to import", "archs")


def test_one_refuses_a_batch_its_gate_cannot_normalize(tmp_path: Path) -> None:
    out = tmp_path / "b1"
    result = online(out, "--method", "one", "--arch", "resnet8", "--batch-size", "1")
    assert_user_error(result, "at least 2 images", "--batch-size")
    assert not (out / "config.yaml").exists()


def test_overwrite_removes_what_the_replaced_run_saved(tmp_path: Path) -> None:
    out = tmp_path / "o"
    succeeded(online(out, "--arch", "tiny-cnn", "--arch", "mlp"))
    assert (out / "baseline" / "1-mlp" / "model.pt").is_file()
    succeeded(online(out, "--arch", "mlp", "--no-baseline", "--peers", "3", "--overwrite"))
    assert not (out / "baseline").exists()
    assert sorted(p.name for p in (out / "networks").iterdir()) == [
        "peer0.pt",
        "peer1.pt",
        "peer2.pt",
    ]
    assert json.loads((out / "report.json").read_text())["ensemble"]["arch"] == "mean-ensemble"


def test_one_resumes_exactly_mid_ramp(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Killed at step 31 of 42 (its ramp-up and its step count mid-way), ONE resumes from the
    step-30 checkpoint to the weights of an uninterrupted run."""
    from freekd.methods.one import OnTheFlyNativeEnsemble

    common = {
        "data": "digits", "method": "one", "archs": "resnet8", "batch_size": 64, "epochs": 2,
        "device": "cpu", "quiet": True, "baseline": False,
        "overrides": ["trainer.checkpoint_every=10", "method.params.rampup_fraction=0.9"],
    }  # fmt: skip
    straight = freekd.online(**common, out=tmp_path / "a")
    step = OnTheFlyNativeEnsemble.training_step

    def interrupted(self: OnTheFlyNativeEnsemble, batch: object) -> object:
        if int(self.steps) == 30:
            raise KeyboardInterrupt
        return step(self, batch)  # type: ignore[arg-type]

    monkeypatch.setattr(OnTheFlyNativeEnsemble, "training_step", interrupted)
    with pytest.raises(KeyboardInterrupt):
        freekd.online(**common, out=tmp_path / "b")
    monkeypatch.setattr(OnTheFlyNativeEnsemble, "training_step", step)
    resumed = freekd.online(**common, out=tmp_path / "b", resume=True)
    a = torch.load(straight.out / "ensemble.pt", weights_only=True)["state_dict"]
    b = torch.load(resumed.out / "ensemble.pt", weights_only=True)["state_dict"]
    assert set(a) == set(b)
    for key, value in a.items():
        assert torch.equal(value, b[key]), key
    assert straight.report["networks"] == resumed.report["networks"]
