"""DP-SGD teachers through Opacus: the budget is met, the record travels, students inherit it."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from freekd.checkpoint import load_model
from freekd.config import TeacherSourceConfig
from freekd.data import load_dataset
from freekd.datafree.config import DataFreeConfig
from freekd.datafree.pipeline import run_datafree
from freekd.errors import FreekdError
from freekd.privacy import DPSGDAccountant
from freekd.privacy.config import DPConfig
from freekd.privacy.rdp import dpsgd_noise_multiplier, dpsgd_rdp, epsilon_from_rdp
from freekd.runs import RunOptions
from freekd.supervised.config import TeacherTrainConfig
from freekd.supervised.pipeline import run_teacher_train
from freekd.train import PoissonSource, TrainState
from tests.conftest import tiny_trainer


def test_dp_teacher_meets_its_budget_and_records_it(dp_teacher: Path) -> None:
    report = json.loads((dp_teacher / "report.json").read_text())
    privacy = report["privacy"]
    assert privacy["kind"] == "data-independent"
    assert privacy["epsilon"] <= 8.0
    mechanism = privacy["mechanisms"][0]
    assert mechanism["steps"] == report["steps"] > 0
    # The same ε from a second route: Opacus' RDP of the recorded parameters.
    again = DPSGDAccountant(
        sample_rate=mechanism["sample_rate"],
        noise_multiplier=mechanism["noise_multiplier"],
        steps=mechanism["steps"],
    )
    assert again.epsilon(delta=1e-5) == pytest.approx(privacy["epsilon"], rel=1e-12)
    assert report["test_accuracy"] > 0.2  # it learned something under DP noise (chance: 0.1)
    model = load_model(dp_teacher / "model.pt")  # weights_only load, GroupNorm rebuilt
    assert not any(isinstance(m, torch.nn.BatchNorm2d) for m in model.modules())
    assert any(isinstance(m, torch.nn.GroupNorm) for m in model.modules())
    saved = torch.load(dp_teacher / "model.pt", weights_only=True)
    assert saved["privacy"]["epsilon"] == privacy["epsilon"]
    # No statistic of the private data outside the accounting: fixed normalization.
    assert saved["input"]["mean"] == [0.5]
    assert saved["input"]["std"] == [0.5]
    assert not any(key.startswith("_module") for key in saved["state_dict"])


def test_datafree_student_of_a_dp_teacher_inherits_its_epsilon(
    dp_teacher: Path, tmp_path: Path
) -> None:
    teacher = TeacherSourceConfig(path=str(dp_teacher / "model.pt"))
    config = DataFreeConfig(
        teacher=teacher,
        synthesizer=DataFreeConfig().synthesizer.__class__(name="dfad"),
        eval_dataset="digits:test",
        steps_per_epoch=5,
        trainer=tiny_trainer(epochs=1),
    )
    report = run_datafree(config, RunOptions(tmp_path / "student", quiet=True))
    teacher_privacy = json.loads((dp_teacher / "report.json").read_text())["privacy"]
    assert report["privacy"]["private"] is True
    assert report["privacy"]["epsilon"] == teacher_privacy["epsilon"]
    assert "post-processing" in report["privacy"]["note"]
    refused = DataFreeConfig(
        teacher=teacher,
        synthesizer=DataFreeConfig().synthesizer.__class__(name="deepinversion"),
        trainer=tiny_trainer(epochs=1),
    )
    with pytest.raises(FreekdError, match="no BatchNorm"):
        run_datafree(refused, RunOptions(tmp_path / "refused", quiet=True))


def test_non_dp_student_claims_nothing(tiny_teacher_path: Path, tmp_path: Path) -> None:
    config = DataFreeConfig(
        teacher=TeacherSourceConfig(path=str(tiny_teacher_path)),
        # Any synthesizer will do; noise is the cheapest (auto's nayer warms up for 400 steps).
        synthesizer=DataFreeConfig().synthesizer.__class__(name="noise"),
        steps_per_epoch=3,
        trainer=tiny_trainer(epochs=1),
    )
    report = run_datafree(config, RunOptions(tmp_path / "s", quiet=True))
    assert report["privacy"]["private"] is False


def test_poisson_batches_vary_and_replay() -> None:
    data = load_dataset("digits:train")
    source = PoissonSource(data, sample_rate=0.05, seed=3)
    sizes = [len(batch) for batch in source.batches(TrainState())]
    assert len(sizes) == source.steps_per_epoch() == 20
    assert len(set(sizes)) > 1
    assert abs(sum(sizes) / len(sizes) - 0.05 * len(data)) < 0.3 * 0.05 * len(data)
    replay = [len(b) for b in source.batches(TrainState(step_in_epoch=5))]
    assert replay == sizes[5:]


def test_noise_multiplier_search_meets_the_target_tightly() -> None:
    sigma = dpsgd_noise_multiplier(epsilon=2.0, delta=1e-5, sample_rate=0.004, steps=3000)

    def spent(s: float) -> float:
        return epsilon_from_rdp(
            dpsgd_rdp(DPSGDAccountant(0.004, s).orders, sample_rate=0.004, noise_multiplier=s,
                      steps=3000),
            DPSGDAccountant(0.004, s).orders,
            delta=1e-5,
        )[0]  # fmt: skip

    assert spent(sigma) <= 2.0 < spent(sigma * 0.995)


def test_dp_refusals(tmp_path: Path) -> None:
    def run(**dp: object) -> None:
        config = TeacherTrainConfig(
            dataset="digits",
            arch="tiny-cnn",
            trainer=tiny_trainer(epochs=1),
            dp=DPConfig(enabled=True, **dp),  # type: ignore[arg-type]
        )
        run_teacher_train(config, RunOptions(tmp_path / "x", quiet=True, overwrite=True))

    with pytest.raises(FreekdError, match="needs a target --epsilon"):
        run()
    with pytest.raises(FreekdError, match="out of reach"):
        run(epsilon=1e-6)


def test_dp_run_resumes_only_with_its_planned_epochs(tmp_path: Path) -> None:
    def config(epochs: int) -> TeacherTrainConfig:
        return TeacherTrainConfig(
            dataset="digits",
            arch="tiny-cnn",
            trainer=tiny_trainer(epochs=epochs, batch_size=128, checkpoint_every=5),
            dp=DPConfig(enabled=True, epsilon=8.0),
        )

    out = tmp_path / "dp"
    run_teacher_train(config(1), RunOptions(out, quiet=True))
    with pytest.raises(FreekdError, match="noise was set for 1 epochs"):
        run_teacher_train(config(3), RunOptions(out, resume=True, quiet=True))
    report = run_teacher_train(config(1), RunOptions(out, resume=True, quiet=True))
    assert report["privacy"]["epsilon"] <= 8.0


def test_killed_dp_run_resumes_to_the_uninterrupted_weights(tmp_path: Path) -> None:
    import os
    import signal
    import subprocess
    import sys
    import time

    args = [
        "teacher", "train", "--dataset", "digits", "--arch", "tiny-cnn", "--epochs", "6",
        "--batch-size", "128", "--lr", "0.5", "--dp", "--epsilon", "8", "--device", "cpu",
        "--set", "trainer.checkpoint_every=2", "--quiet",
    ]  # fmt: skip
    env = {**os.environ, "OMP_NUM_THREADS": "1"}

    def run(out: Path, *extra: str) -> subprocess.Popen[bytes]:
        return subprocess.Popen(
            [sys.executable, "-m", "freekd", *args, "--out", str(out), *extra],
            env=env,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )

    straight = run(tmp_path / "straight")
    killed = run(tmp_path / "killed")
    deadline = time.monotonic() + 120
    while not (tmp_path / "killed" / "checkpoint.pt").exists():
        assert time.monotonic() < deadline, "no checkpoint was written"
        time.sleep(0.05)
    killed.send_signal(signal.SIGKILL)
    killed.wait()
    assert not (tmp_path / "killed" / "report.json").exists()  # it really stopped mid-run
    assert straight.wait() == 0
    assert run(tmp_path / "killed", "--resume").wait() == 0
    expected = torch.load(tmp_path / "straight" / "model.pt", weights_only=True)
    got = torch.load(tmp_path / "killed" / "model.pt", weights_only=True)
    for key, value in expected["state_dict"].items():
        assert torch.equal(got["state_dict"][key], value), key  # noise continued, not replayed
    assert got["privacy"] == expected["privacy"]
