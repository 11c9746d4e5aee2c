"""The one training loop, its batch sources and callbacks."""

from freekd.train.callbacks import Checkpoint, Evaluate, LogMetrics, Progress, SaveModel
from freekd.train.distributed import DistInfo, init_distributed, resolve_device
from freekd.train.evaluate import evaluate
from freekd.train.optim import make_optimizer
from freekd.train.private_sources import PoissonSource, ShardSource, SubsetSource
from freekd.train.sources import LoaderSource, PairedSource, SemiSupervisedSource
from freekd.train.trainer import BatchSource, Callback, Trainer, TrainState

__all__ = [
    "BatchSource",
    "Callback",
    "Checkpoint",
    "DistInfo",
    "Evaluate",
    "LoaderSource",
    "PairedSource",
    "PoissonSource",
    "SemiSupervisedSource",
    "ShardSource",
    "SubsetSource",
    "LogMetrics",
    "Progress",
    "SaveModel",
    "TrainState",
    "Trainer",
    "evaluate",
    "init_distributed",
    "make_optimizer",
    "resolve_device",
]
