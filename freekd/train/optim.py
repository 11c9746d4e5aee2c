"""Optimizers and learning-rate schedules, chosen by name at the config boundary."""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable

import torch
from torch import nn

from freekd.config import TrainerConfig
from freekd.registry import Registry

OptimizerFactory = Callable[[list[nn.Parameter], TrainerConfig], torch.optim.Optimizer]
OPTIMIZERS: Registry[OptimizerFactory] = Registry("optimizer")
SCHEDULES: Registry[Callable[[float], float]] = Registry("scheduler")


@OPTIMIZERS.register("sgd")
def _sgd(parameters: list[nn.Parameter], config: TrainerConfig) -> torch.optim.Optimizer:
    return torch.optim.SGD(
        parameters, lr=config.lr, momentum=config.momentum, weight_decay=config.weight_decay
    )


@OPTIMIZERS.register("adam")
def _adam(parameters: list[nn.Parameter], config: TrainerConfig) -> torch.optim.Optimizer:
    return torch.optim.Adam(parameters, lr=config.lr, weight_decay=config.weight_decay)


@OPTIMIZERS.register("adamw")
def _adamw(parameters: list[nn.Parameter], config: TrainerConfig) -> torch.optim.Optimizer:
    return torch.optim.AdamW(parameters, lr=config.lr, weight_decay=config.weight_decay)


@SCHEDULES.register("cosine")
def _cosine(progress: float) -> float:
    """Loshchilov & Hutter 2017 (arXiv:1608.03983) cosine annealing to zero, no restarts."""
    return 0.5 * (1.0 + math.cos(math.pi * progress))


@SCHEDULES.register("step")
def _step(progress: float) -> float:
    """×0.1 at 50 % and again at 75 % of training (the CIFAR ResNet recipe, He et al. 2016)."""
    return 0.1 ** ((progress >= 0.5) + (progress >= 0.75))


@SCHEDULES.register("constant")
def _constant(progress: float) -> float:
    return 1.0


def make_optimizer(
    parameters: Iterable[nn.Parameter], config: TrainerConfig
) -> torch.optim.Optimizer:
    """The optimizer ``config.optimizer`` names, over ``parameters``."""
    return OPTIMIZERS.get(config.optimizer)(list(parameters), config)


def learning_rate_at(step: int, *, total_steps: int, config: TrainerConfig) -> float:
    """Learning-rate multiplier for optimizer step ``step`` (0-based): warm-up, then schedule."""
    if config.warmup_steps > 0 and step < config.warmup_steps:
        return (step + 1) / config.warmup_steps
    remaining = max(1, total_steps - config.warmup_steps)
    progress = min(1.0, (step - config.warmup_steps) / remaining)
    return SCHEDULES.get(config.scheduler)(progress)
