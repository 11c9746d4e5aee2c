"""Loss functions: pure, tensors in and scalar out, hyperparameters keyword-only."""

from freekd.losses.kd import cross_entropy, kd_kl

__all__ = ["cross_entropy", "kd_kl"]
