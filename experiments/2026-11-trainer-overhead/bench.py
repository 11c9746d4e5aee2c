"""Trainer overhead: freekd's Trainer vs a bare hand-written PyTorch loop, side by side.

Same model (LeNet-5 in an ImageClassifier), same MNIST batches, same batch size, same number of
optimizer steps, same optimizer. The Trainer runs with the callbacks a real run has (metrics.jsonl
every 50 steps, a resumable checkpoint every 500 steps, held-out evaluation off so that both sides
do the same work). The two are timed alternately, ``--repeats`` times, and the median ratio is
reported.

    python experiments/2026-11-trainer-overhead/bench.py --out experiments/2026-11-trainer-overhead/result.json
"""

from __future__ import annotations

import argparse
import json
import platform
import statistics
import tempfile
import time
from pathlib import Path

import torch
import torch.nn.functional as F  # noqa: N812

from freekd import __version__
from freekd.config import TrainerConfig
from freekd.data import load_dataset
from freekd.methods import Supervised
from freekd.models import ImageClassifier, build_model
from freekd.train import Checkpoint, LoaderSource, LogMetrics, Trainer, make_optimizer
from freekd.train.trainer import TrainState


def make_model(seed: int) -> ImageClassifier:
    torch.manual_seed(seed)
    net = build_model("lenet5", num_classes=10, input_shape=(1, 28, 28))
    return ImageClassifier(net, arch="lenet5", arch_kwargs={}, num_classes=10,
                           input_shape=(1, 28, 28), mean=[0.1307], std=[0.3081])


def bare_loop(source: LoaderSource, config: TrainerConfig, seed: int) -> float:
    model = make_model(seed)
    optimizer = torch.optim.SGD(model.parameters(), lr=config.lr, momentum=config.momentum,
                                weight_decay=config.weight_decay)
    model.train()
    start = time.perf_counter()
    for batch in source.batches(TrainState()):
        loss = F.cross_entropy(model(batch.images), batch.labels)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
    return time.perf_counter() - start


def freekd_trainer(source: LoaderSource, config: TrainerConfig, seed: int) -> float:
    model = make_model(seed)
    method = Supervised(model)
    with tempfile.TemporaryDirectory() as folder:
        callbacks = [LogMetrics(Path(folder) / "metrics.jsonl", every=config.log_every),
                     Checkpoint(Path(folder) / "checkpoint.pt", every=config.checkpoint_every,
                                config={})]
        trainer = Trainer(method, make_optimizer(method.trainable_parameters(), config),
                          config=config, device=torch.device("cpu"), callbacks=callbacks)
        start = time.perf_counter()
        trainer.fit(source)
        return time.perf_counter() - start


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=400)
    parser.add_argument("--batch-size", type=int, default=128)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--out", type=Path, default=None)
    args = parser.parse_args()

    data = load_dataset("mnist:train")
    data = data.subset(torch.arange(args.steps * args.batch_size))
    config = TrainerConfig(epochs=1, batch_size=args.batch_size, lr=0.05, device="cpu",
                           scheduler="constant", log_every=50, checkpoint_every=500)
    source = LoaderSource(data, batch_size=args.batch_size, seed=0)
    # Warm-up both paths once (allocator, kernels, page cache).
    bare_loop(source, config, 0)
    freekd_trainer(source, config, 0)
    rows = []
    for repeat in range(args.repeats):
        # Alternate which side goes first so that drift on a noisy machine hits both.
        order = ("bare", "freekd") if repeat % 2 == 0 else ("freekd", "bare")
        times = {}
        for side in order:
            run = bare_loop if side == "bare" else freekd_trainer
            times[side] = run(source, config, repeat)
        rows.append({"repeat": repeat, **times, "ratio": times["freekd"] / times["bare"]})
        print(f"repeat {repeat}: bare {times['bare']:.2f} s  freekd {times['freekd']:.2f} s  "
              f"ratio {rows[-1]['ratio']:.3f}")
    result = {
        "question": "Trainer overhead vs a bare PyTorch loop (same model, data, batch, steps)",
        "model": "lenet5", "dataset": "mnist:train", "steps": args.steps,
        "batch_size": args.batch_size, "repeats": args.repeats,
        "median_seconds_bare": statistics.median(r["bare"] for r in rows),
        "median_seconds_freekd": statistics.median(r["freekd"] for r in rows),
        "median_ratio": statistics.median(r["ratio"] for r in rows),
        "runs": rows,
        "torch_threads": torch.get_num_threads(), "torch": torch.__version__,
        "freekd": __version__, "machine": platform.processor() or platform.machine(),
    }
    print(f"median ratio freekd/bare = {result['median_ratio']:.3f}")
    if args.out:
        args.out.write_text(json.dumps(result, indent=2) + "\n")


if __name__ == "__main__":
    main()
