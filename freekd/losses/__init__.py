"""Loss functions: pure, tensors in and scalar out, hyperparameters keyword-only."""

from freekd.losses.kd import attention_map, attention_transfer, cross_entropy, kd_kl

__all__ = ["attention_map", "attention_transfer", "cross_entropy", "kd_kl"]
