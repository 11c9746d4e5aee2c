"""DP-SGD set-up (Abadi et al. 2016) through Opacus: the model, optimizer and accountant."""

from __future__ import annotations

import dataclasses
import logging
from dataclasses import dataclass
from typing import Any

import torch
from opacus import GradSampleModule
from opacus.optimizers import DPOptimizer

from freekd.errors import FreekdError
from freekd.lazy import drop_opacus_root_handler
from freekd.models import (
    ImageClassifier,
    replace_batchnorm,
)
from freekd.privacy.report import dpsgd_privacy
from freekd.supervised.config import TeacherTrainConfig
from freekd.train import (
    TrainState,
)

drop_opacus_root_handler()  # importing opacus configured the root logger

logger = logging.getLogger(__name__)


class GeneratorState:
    """A ``torch.Generator`` as a resumable extra: DP-SGD's noise stream.

    A resumed run must continue the noise stream, never replay it: noise drawn twice would
    cancel between two released updates and expose their gradient difference.
    """

    def __init__(self, seed: int) -> None:
        self.generator = torch.Generator().manual_seed(seed)

    def state_dict(self) -> dict[str, Any]:
        return {"state": self.generator.get_state()}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.generator.set_state(state["state"])


def check_dp_settings(config: TeacherTrainConfig) -> None:
    """The DP-SGD settings that need no data (``DPSetup.plan``, and ``audit pipeline`` before
    its first stage): a target ε or a noise multiplier, each positive, δ in (0, 1), a positive
    per-example clipping norm and no batch-gradient clipping."""
    dp, trainer = config.dp, config.trainer
    if dp.epsilon is None and dp.noise_multiplier is None:
        raise FreekdError(
            "--dp needs a target --epsilon (--set dp.epsilon=...) or --set dp.noise_multiplier=..."
        )
    if dp.epsilon is not None and not dp.epsilon > 0:
        raise FreekdError(f"--epsilon must be positive, got {dp.epsilon}")
    if dp.noise_multiplier is not None and not dp.noise_multiplier > 0:
        raise FreekdError(f"dp.noise_multiplier must be positive, got {dp.noise_multiplier}")
    if not 0 < dp.delta < 1:
        raise FreekdError(f"--delta must lie in (0, 1), got {dp.delta}")
    if not dp.max_grad_norm > 0:
        raise FreekdError(f"--max-grad-norm must be positive, got {dp.max_grad_norm}")
    if trainer.max_grad_norm is not None:
        raise FreekdError(
            "trainer.max_grad_norm clips the batch gradient; with --dp use --max-grad-norm "
            "(--set dp.max_grad_norm=...), which clips every example's gradient, and --set "
            "trainer.max_grad_norm=null"
        )


@dataclass
class DPSetup:
    """DP-SGD wiring for a teacher run: noise level, model preparation, optimizer, record."""

    sample_rate: float
    noise_multiplier: float
    max_grad_norm: float
    delta: float
    target_epsilon: float | None
    expected_batch_size: int
    seed: int
    noise: GeneratorState = dataclasses.field(default_factory=lambda: GeneratorState(0))

    @classmethod
    def plan(cls, config: TeacherTrainConfig, train_size: int) -> DPSetup:
        dp, trainer = config.dp, config.trainer
        check_dp_settings(config)
        if dp.delta >= 1 / train_size:
            logger.warning(
                "δ = %g is not below 1/N = %g: the guarantee allows leaking a whole record",
                dp.delta,
                1 / train_size,
            )
        if trainer.batch_size > train_size:
            raise FreekdError(
                f"--batch-size {trainer.batch_size} exceeds the {train_size} training images"
            )
        sample_rate = trainer.batch_size / train_size
        steps = trainer.epochs * max(1, round(1 / sample_rate))
        noise = dp.noise_multiplier
        if noise is None:
            from freekd.privacy.rdp import dpsgd_noise_multiplier

            assert dp.epsilon is not None
            try:
                noise = dpsgd_noise_multiplier(
                    epsilon=dp.epsilon, delta=dp.delta, sample_rate=sample_rate, steps=steps
                )
            except ValueError as error:
                raise FreekdError(f"{error}; raise --epsilon or train fewer epochs") from None
        return cls(
            sample_rate=sample_rate,
            noise_multiplier=noise,
            max_grad_norm=dp.max_grad_norm,
            delta=dp.delta,
            target_epsilon=dp.epsilon,
            expected_batch_size=trainer.batch_size,
            seed=config.seed,
            noise=GeneratorState(config.seed + 1),
        )

    def prepare(self, model: ImageClassifier) -> ImageClassifier:
        """Replace BatchNorm, then let Opacus record per-example gradients of the network."""

        private = ImageClassifier(
            replace_batchnorm(model.net),
            arch=model.arch,
            arch_kwargs=model.arch_kwargs,
            num_classes=model.num_classes,
            input_shape=model.input_shape,
            mean=model.mean_values,
            std=model.std_values,
            batchnorm_replacement="groupnorm",
        )
        private.net = GradSampleModule(private.net)  # type: ignore[assignment]
        return private

    def wrap_optimizer(self, optimizer: torch.optim.Optimizer) -> torch.optim.Optimizer:

        return DPOptimizer(  # type: ignore[no-any-return]
            optimizer,
            noise_multiplier=self.noise_multiplier,
            max_grad_norm=self.max_grad_norm,
            expected_batch_size=self.expected_batch_size,
            loss_reduction="mean",
            generator=self.noise.generator,
        )

    def record(self, state: TrainState) -> dict[str, Any]:
        """The privacy record of the steps taken so far (Opacus' RDP analysis)."""

        record = dpsgd_privacy(
            sample_rate=self.sample_rate,
            noise_multiplier=self.noise_multiplier,
            steps=state.step,
            delta=self.delta,
        )
        record["mechanisms"][0]["max_grad_norm"] = self.max_grad_norm
        record["target_epsilon"] = self.target_epsilon
        record["note"] = (
            "DP-SGD through Opacus; research-grade noise (torch.Generator, not secure_mode)"
        )
        return record
