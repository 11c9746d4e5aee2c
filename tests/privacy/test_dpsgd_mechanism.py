"""The DP-SGD mechanism itself, on the Opacus path ``freekd teacher train --dp`` sets up.

Abadi et al. 2016 (arXiv:1607.00133, Alg. 1): every example's gradient is clipped to norm C,
the clipped gradients are summed, and Gaussian noise of standard deviation σ·C is added to the
sum. The accountant's ε is only true if all three happen; these tests look at the gradients
the optimizer actually holds (``DPSetup``: the model ``prepare`` returns, the optimizer
``wrap_optimizer`` returns, the run's seeded noise generator) rather than recomputing ε.
"""

from __future__ import annotations

import json
import math
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from freekd.audit.config import AuditConfig, ShadowConfig
from freekd.audit.pipeline import run_audit
from freekd.config import TeacherSourceConfig
from freekd.data import load_dataset
from freekd.data.batch import Batch
from freekd.methods import Supervised
from freekd.privacy.config import DPConfig
from freekd.privacy.dpsgd import DPSetup
from freekd.runs import RunOptions, build_student
from freekd.supervised.config import TeacherTrainConfig
from freekd.supervised.pipeline import run_teacher_train
from freekd.train import PoissonSource, TrainState
from freekd.train.optim import make_optimizer
from tests.conftest import tiny_trainer

CLIP = 0.05  # far below the per-example gradient norms of a fresh model (about 2.5): all clip


def dp_training(
    max_grad_norm: float = CLIP,
) -> tuple[DPSetup, Supervised, torch.optim.Optimizer, Batch]:
    """freekd's DP-SGD wiring for tiny-cnn on digits (target ε 4), and its first Poisson batch."""
    torch.manual_seed(0)
    train = load_dataset("digits:train")
    config = TeacherTrainConfig(
        dataset="digits",
        arch="tiny-cnn",
        seed=0,
        trainer=tiny_trainer(epochs=1, batch_size=64, lr=0.1),
        dp=DPConfig(enabled=True, epsilon=4.0, delta=1e-5, max_grad_norm=max_grad_norm),
    )
    dp = DPSetup.plan(config, len(train))
    model = build_student("tiny-cnn", {}, train_set=train, num_classes=10, mean=[0.5], std=[0.5])
    method = Supervised(dp.prepare(model))
    optimizer = dp.wrap_optimizer(make_optimizer(method.trainable_parameters(), config.trainer))
    source = PoissonSource(train, sample_rate=dp.sample_rate, seed=0)
    return dp, method, optimizer, next(iter(source.batches(TrainState())))


def backward(method: Supervised, optimizer: torch.optim.Optimizer, batch: Batch) -> None:
    optimizer.zero_grad(set_to_none=True)  # DPOptimizer: clears the per-sample grads too
    sum(method.training_step(batch).losses.values()).backward()  # type: ignore[union-attr]


def flat(tensors: list[torch.Tensor]) -> torch.Tensor:
    return torch.cat([t.reshape(-1) for t in tensors])


def per_sample(optimizer: torch.optim.Optimizer) -> torch.Tensor:
    """(B, P): each example's gradient as Opacus recorded it, over every parameter."""
    samples = [p.grad_sample for p in optimizer.params]  # type: ignore[attr-defined]
    return torch.cat([g.reshape(len(g), -1) for g in samples], dim=1)


def summed(optimizer: torch.optim.Optimizer) -> torch.Tensor:
    """The optimizer's sum of clipped per-example gradients, before noise."""
    return flat([p.summed_grad for p in optimizer.params])  # type: ignore[attr-defined]


def test_every_example_gradient_is_clipped_to_c_before_the_sum() -> None:
    dp, method, optimizer, batch = dp_training()
    params = list(optimizer.params)  # type: ignore[attr-defined]
    # Each example alone: plain autograd gives its gradient; the optimizer's clipped sum of a
    # one-example batch is that gradient scaled to norm C.
    assert batch.labels is not None
    alone = []
    for i in range(4):
        backward(method, optimizer, Batch(batch.images[i : i + 1], batch.labels[i : i + 1]))
        gradient = flat([p.grad for p in params]).clone()
        assert gradient.norm() > 10 * CLIP  # the clipping has work to do
        alone.append(gradient)
        optimizer.pre_step()  # type: ignore[attr-defined]
        clipped = summed(optimizer)
        assert clipped.norm() <= CLIP * (1 + 1e-4)
        torch.testing.assert_close(
            clipped, gradient * (CLIP / gradient.norm()), rtol=1e-4, atol=1e-7
        )
    # The whole batch: Opacus' per-example gradients are those same gradients …
    backward(method, optimizer, batch)
    samples = per_sample(optimizer)
    for i, gradient in enumerate(alone):
        torch.testing.assert_close(samples[i], gradient, rtol=1e-4, atol=1e-6)
    torch.testing.assert_close(
        samples.sum(dim=0), len(batch) * flat([p.grad for p in params]), rtol=1e-4, atol=1e-5
    )
    # … and the optimizer sums them clipped: each contributes at most C.
    optimizer.pre_step()  # type: ignore[attr-defined]
    norms = samples.norm(dim=1)
    assert bool((norms > CLIP).all())
    factors = (CLIP / norms).clamp(max=1.0)
    torch.testing.assert_close(summed(optimizer), (factors[:, None] * samples).sum(dim=0))
    assert summed(optimizer).norm() <= len(batch) * CLIP * (1 + 1e-4)
    assert bool(((factors[:, None] * samples).norm(dim=1) <= CLIP * (1 + 1e-4)).all())


def test_the_noise_added_has_standard_deviation_sigma_c() -> None:
    dp, method, optimizer, batch = dp_training()
    params = list(optimizer.params)  # type: ignore[attr-defined]
    expected = dp.noise_multiplier * dp.max_grad_norm
    draws = []
    for _ in range(2):  # the same data twice: the noise must be fresh each step
        backward(method, optimizer, batch)
        optimizer.pre_step()  # type: ignore[attr-defined]
        # DPOptimizer with loss_reduction "mean": grad = (clipped sum + noise) / expected B.
        noise = flat([p.grad for p in params]) * dp.expected_batch_size - summed(optimizer)
        draws.append(noise.double())
    n = draws[0].numel()
    assert n > 4000
    # For n i.i.d. N(0, s²) draws the sample standard deviation has relative standard error
    # 1/√(2n) and the mean standard error s/√n; 6 standard errors: a false alarm ~1e-9.
    for noise in draws:
        assert abs(float(noise.std()) / expected - 1) < 6 / math.sqrt(2 * n), noise.std()
        assert abs(float(noise.mean())) < 6 * expected / math.sqrt(n)
    correlation = float(torch.corrcoef(torch.stack(draws))[0, 1])
    assert abs(correlation) < 6 / math.sqrt(n)  # independent draws, not the same noise reused


# ---- an audit of real DP-SGD runs ------------------------------------------------------------

CANARIES = 300


@pytest.fixture(scope="module")
def canaries(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """300 digits, each a member with probability ½ (the one-run audit's canaries)."""
    folder = tmp_path_factory.mktemp("canaries")
    pool = load_dataset("digits:train")
    x, y = pool.images[:CANARIES].numpy(), pool.labels[:CANARIES].numpy()
    member = np.random.default_rng(0).random(CANARIES) < 0.5
    np.savez(folder / "members.npz", x=x[member], y=y[member])
    np.savez(folder / "non_members.npz", x=x[~member], y=y[~member])
    return folder


def audited_dp_run(canaries: Path, out: Path, **dp: float) -> dict:
    """An MLP trained with DP-SGD on the members (20 steps), then freekd's audit of it."""
    config = TeacherTrainConfig(
        dataset=str(canaries / "members.npz"),
        eval_dataset="digits:test",
        arch="mlp",
        arch_kwargs={"hidden": [128]},
        seed=0,
        trainer=tiny_trainer(epochs=10, batch_size=75, lr=1.0, momentum=0.9, eval_every=0),
        dp=DPConfig(enabled=True, delta=1e-5, max_grad_norm=10.0, **dp),  # type: ignore[arg-type]
    )
    run_teacher_train(config, RunOptions(out / "model", quiet=True))
    audit = AuditConfig(
        model=TeacherSourceConfig(path=str(out / "model" / "model.pt")),
        members=str(canaries / "members.npz"),
        non_members=str(canaries / "non_members.npz"),
        shadow=ShadowConfig(models=0),
        attacks=["loss"],
        random_split=True,
    )
    report = run_audit(audit, RunOptions(out / "audit", quiet=True))
    return report["epsilon_lower_bound"]


def test_audits_of_a_leaky_and_a_private_dp_run_stay_below_their_epsilon(
    canaries: Path, tmp_path: Path
) -> None:
    # Leaky: σ = 0.2 on 150 members memorizes them (ε in the hundreds), and the one-run audit
    # (Steinke, Nasr & Jagielski 2023) sees it, while staying below the accountant's ε.
    leaky = audited_dp_run(canaries, tmp_path / "leaky", noise_multiplier=0.2)
    assert leaky["accountant_kind"] == "data-independent"
    assert 1.0 < leaky["epsilon"] <= leaky["accountant_epsilon"]
    assert leaky["consistent"] is True
    # Private: the same recipe at ε = 1. Had the clipping or the noise not been applied, this
    # run would leak like the one above (bound > 1) and the audit would flag it.
    private = audited_dp_run(canaries, tmp_path / "private", epsilon=1.0)
    assert private["accountant_epsilon"] <= 1.0
    assert private["epsilon"] <= private["accountant_epsilon"]
    assert private["consistent"] is True
    saved = json.loads((tmp_path / "private" / "model" / "report.json").read_text())
    assert saved["privacy"]["epsilons"][0]["kind"] == "data-independent"


def test_importing_opacus_through_freekd_leaves_the_root_logger_alone() -> None:
    # import opacus calls logging.basicConfig, which took over the logging of any program that
    # used freekd's Python API (its warnings then came out as "12/06/2026 23:19:30:WARNING:...").
    code = (
        "import logging, torch.nn as nn\n"
        "import freekd.privacy.dpsgd, freekd.privacy.rdp\n"
        "from freekd.models.build import replace_batchnorm\n"
        "replace_batchnorm(nn.Sequential(nn.Conv2d(1, 4, 3), nn.BatchNorm2d(4)))\n"
        "print(len(logging.getLogger().handlers))\n"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert done.stdout.strip() == "0", done.stderr
