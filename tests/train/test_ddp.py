"""Two CPU processes under torchrun (DDP, gloo) match one process with the same global batch."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

WORKER = Path(__file__).with_name("ddp_worker.py")
ROOT = Path(__file__).resolve().parents[2]


def run(out: Path, processes: int, *extra: str) -> dict[str, torch.Tensor]:
    env = {**os.environ, "PYTHONPATH": str(ROOT), "OMP_NUM_THREADS": "1"}
    command = [
        sys.executable,
        "-m",
        "torch.distributed.run",
        "--standalone",
        f"--nproc_per_node={processes}",
        str(WORKER),
        str(out),
        *extra,
    ]
    result = subprocess.run(command, env=env, capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr[-3000:]
    data = torch.load(out / "model.pt", weights_only=True)
    return data["state_dict"]


@pytest.mark.slow
def test_two_process_ddp_matches_one_process(tmp_path: Path) -> None:
    single = run(tmp_path / "one", 1)
    double = run(tmp_path / "two", 2)
    assert single.keys() == double.keys()
    for key in single:
        # Gradient all-reduce sums in another order: equal up to float rounding.
        torch.testing.assert_close(double[key], single[key], rtol=1e-4, atol=1e-5, msg=key)
    assert (tmp_path / "two" / "report.json").exists()
    assert not (tmp_path / "two" / "report.json.tmp").exists()


@pytest.mark.slow
def test_ddp_feature_distillation_finds_named_layers_and_keeps_adapters_in_step(
    tmp_path: Path, tiny_teacher_path: Path
) -> None:
    """Named layers are found through the DDP wrapper, and FitNets' regressor, which no DDP
    wrapper syncs, gets the averaged gradient: two processes train the student one does."""
    single = run(tmp_path / "one", 1, str(tiny_teacher_path))
    double = run(tmp_path / "two", 2, str(tiny_teacher_path))
    for key in single:
        torch.testing.assert_close(double[key], single[key], rtol=1e-4, atol=1e-5, msg=key)


@pytest.mark.slow
def test_ddp_online_peers_match_one_process(tmp_path: Path) -> None:
    """DML's peers are each wrapped in DDP: two processes train the peers one process does."""
    run(tmp_path / "one", 1, "online")
    run(tmp_path / "two", 2, "online")
    for name in ("peer0", "peer1"):
        single = torch.load(tmp_path / "one" / "networks" / f"{name}.pt", weights_only=True)
        double = torch.load(tmp_path / "two" / "networks" / f"{name}.pt", weights_only=True)
        for key, value in single["state_dict"].items():
            torch.testing.assert_close(
                double["state_dict"][key], value, rtol=1e-4, atol=1e-5, msg=f"{name} {key}"
            )
