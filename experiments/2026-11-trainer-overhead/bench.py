"""Trainer overhead: freekd's Trainer vs a bare hand-written PyTorch loop, side by side.

Same model (LeNet-5 inside an ImageClassifier), same MNIST batches, same batch size, same number
of optimizer steps, same SGD optimizer. The Trainer runs with the callbacks a real run has
(metrics.jsonl every 50 steps, an atomic resumable checkpoint at the end of every fit);
held-out evaluation is off so that both sides do the same work.

This VM's speed drifts by ±30 % over seconds, so the two sides are interleaved finely: each
repeat runs ``--chunks`` rounds of ``--chunk-steps`` steps, bare then freekd (order alternating),
and compares the summed times. Each freekd chunk is a whole ``Trainer.fit`` (start-up and
end-of-fit callbacks included). Both wall time and process CPU time are reported; CPU time is
immune to the VM's stolen time. The headline is the median over repeats of the wall-time ratio.

    python experiments/2026-11-trainer-overhead/bench.py \
        --out experiments/2026-11-trainer-overhead/result.json
"""

from __future__ import annotations

import argparse
import platform
import statistics
import tempfile
import time
from pathlib import Path

import torch
import torch.nn.functional as F

from freekd import __version__
from freekd.config import TrainerConfig
from freekd.data import ImageDataset, load_dataset
from freekd.io import atomic_write_json
from freekd.methods import Supervised
from freekd.models import ImageClassifier, build_model
from freekd.train import Checkpoint, LoaderSource, LogMetrics, Trainer, make_optimizer
from freekd.train.trainer import TrainState


def make_model() -> ImageClassifier:
    net = build_model("lenet5", num_classes=10, input_shape=(1, 28, 28))
    return ImageClassifier(
        net,
        arch="lenet5",
        arch_kwargs={},
        num_classes=10,
        input_shape=(1, 28, 28),
        mean=[0.1307],
        std=[0.3081],
    )


class Bare:
    """The loop a user would write by hand."""

    def __init__(self, config: TrainerConfig) -> None:
        torch.manual_seed(0)
        self.model = make_model().train()
        self.optimizer = torch.optim.SGD(
            self.model.parameters(),
            lr=config.lr,
            momentum=config.momentum,
            weight_decay=config.weight_decay,
        )

    def run(self, source: LoaderSource) -> None:
        for batch in source.batches(TrainState()):
            loss = F.cross_entropy(self.model(batch.images), batch.labels)
            self.optimizer.zero_grad(set_to_none=True)
            loss.backward()
            self.optimizer.step()


class Freekd:
    """The same work through freekd's Trainer with a real run's callbacks."""

    def __init__(self, config: TrainerConfig, folder: Path) -> None:
        torch.manual_seed(0)
        self.config = config
        self.folder = folder
        self.method = Supervised(make_model())
        self.optimizer = make_optimizer(self.method.trainable_parameters(), config)

    def run(self, source: LoaderSource) -> None:
        callbacks = [
            LogMetrics(self.folder / "metrics.jsonl", every=self.config.log_every),
            Checkpoint(
                self.folder / "checkpoint.pt", every=self.config.checkpoint_every, config={}
            ),
        ]
        trainer = Trainer(
            self.method,
            self.optimizer,
            config=self.config,
            device=torch.device("cpu"),
            callbacks=callbacks,
        )
        trainer.fit(source)


def timed(run: object, source: LoaderSource) -> tuple[float, float]:
    wall, cpu = time.perf_counter(), time.process_time()
    run.run(source)  # type: ignore[attr-defined]
    return time.perf_counter() - wall, time.process_time() - cpu


def one_repeat(
    data: ImageDataset, config: TrainerConfig, args: argparse.Namespace, repeat: int
) -> dict[str, float]:
    source = LoaderSource(data, batch_size=args.batch_size, seed=repeat)
    totals = {"bare_wall": 0.0, "bare_cpu": 0.0, "freekd_wall": 0.0, "freekd_cpu": 0.0}
    with tempfile.TemporaryDirectory() as folder:
        sides = {"bare": Bare(config), "freekd": Freekd(config, Path(folder))}
        for chunk in range(args.chunks):
            order = ("bare", "freekd") if (chunk + repeat) % 2 == 0 else ("freekd", "bare")
            for side in order:
                wall, cpu = timed(sides[side], source)
                totals[f"{side}_wall"] += wall
                totals[f"{side}_cpu"] += cpu
    return {
        **totals,
        "wall_ratio": totals["freekd_wall"] / totals["bare_wall"],
        "cpu_ratio": totals["freekd_cpu"] / totals["bare_cpu"],
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--chunk-steps", type=int, default=50)
    parser.add_argument("--chunks", type=int, default=30)
    parser.add_argument("--batch-size", type=int, default=128)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument(
        "--threads", type=int, default=None, help="torch intra-op threads (default: torch's choice)"
    )
    parser.add_argument("--out", type=Path, default=None)
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)

    data = load_dataset("mnist:train").subset(torch.arange(args.chunk_steps * args.batch_size))
    config = TrainerConfig(
        epochs=1,
        batch_size=args.batch_size,
        lr=0.05,
        device="cpu",
        scheduler="constant",
        augment="none",
        log_every=50,
        checkpoint_every=0,
    )
    one_repeat(data, config, argparse.Namespace(**{**vars(args), "chunks": 2}), 0)  # warm-up
    rows = []
    for repeat in range(args.repeats):
        row = {"repeat": repeat, **one_repeat(data, config, args, repeat)}
        rows.append(row)
        print(
            f"repeat {repeat}: bare {row['bare_wall']:.2f} s  freekd {row['freekd_wall']:.2f} s"
            f"  wall ratio {row['wall_ratio']:.3f}  cpu ratio {row['cpu_ratio']:.3f}"
        )
    result = {
        "question": "Trainer overhead vs a bare PyTorch loop (same model, data, batch, steps)",
        "command": "python experiments/2026-11-trainer-overhead/bench.py",
        "model": "lenet5",
        "dataset": "mnist:train",
        "batch_size": args.batch_size,
        "steps_per_side_per_repeat": args.chunks * args.chunk_steps,
        "chunk_steps": args.chunk_steps,
        "repeats": args.repeats,
        "median_wall_ratio": statistics.median(r["wall_ratio"] for r in rows),
        "median_cpu_ratio": statistics.median(r["cpu_ratio"] for r in rows),
        "runs": rows,
        "torch_threads": torch.get_num_threads(),
        "torch": torch.__version__,
        "freekd": __version__,
        "machine": platform.machine(),
    }
    print(
        f"median wall ratio freekd/bare = {result['median_wall_ratio']:.3f}, "
        f"median cpu ratio = {result['median_cpu_ratio']:.3f}"
    )
    if args.out:
        atomic_write_json(args.out, result)


if __name__ == "__main__":
    main()
