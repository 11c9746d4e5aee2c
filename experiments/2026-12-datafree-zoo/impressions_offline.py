"""Data Impressions as the paper schedules them: craft every impression first, then distill.

    python experiments/2026-12-datafree-zoo/impressions_offline.py --teacher reference-lenet5 \\
        --count 2560 --iterations 50 --lr 0.2 --epochs 8

Nayak et al. 2019 (arXiv:1905.08114, §4) craft their 24,000 MNIST impressions before the student
trains, then distill at temperature 20; ``freekd datafree --method impressions`` crafts them
while the student trains (one batch every ``synthesize_every`` steps). This script checks the
paper's schedule on a zoo teacher (``runs/zoo``, built by ``build_zoo.py``) with freekd's own
synthesizer (``freekd.datafree.synthesizers.impressions``): the student is ``lenet5-half``
trained by SGD (momentum 0.9, cosine from 0.01, batch 256) on the fixed set, scored on the 5,000
validation images (``runs/zoo/mnist-validation.npz``) after every epoch. One thread, seeded.
Writes ``results/impressions-offline/<teacher>-<settings>.json``.
"""

from __future__ import annotations

import argparse
import json
import shlex
import sys
import time
from pathlib import Path

import torch
from torch.nn import functional as F

HERE = Path(__file__).resolve().parent
ROOT = HERE.parents[1]
sys.path.insert(0, str(HERE))
sys.path.insert(0, str(ROOT))

from freekd.config import TeacherSourceConfig  # noqa: E402
from freekd.data.datasets import load_npz  # noqa: E402
from freekd.datafree.nets import teacher_pixel_statistics  # noqa: E402
from freekd.datafree.synthesizers.impressions import DataImpressions  # noqa: E402
from freekd.io import atomic_write_json  # noqa: E402
from freekd.models import ImageClassifier, build_model  # noqa: E402
from freekd.teachers import load_teacher  # noqa: E402


def teacher_source(name: str) -> TeacherSourceConfig:
    """The zoo teacher ``name`` as ``freekd datafree`` loads it (its manifest flags)."""
    entry = {t["name"]: t for t in json.loads((HERE / "zoo.json").read_text())["teachers"]}[name]
    flags = entry["datafree_flags"]
    value = {flag: flags[i + 1] for i, flag in enumerate(flags) if flag.startswith("--")}
    numbers = lambda text: [float(v) for v in text.split(",")]  # noqa: E731
    return TeacherSourceConfig(
        path=str(ROOT / value["--teacher"]),
        arch=value.get("--arch"),
        arch_kwargs=json.loads(value.get("--arch-kwargs", "{}")),
        input_shape=[int(v) for v in value["--input-shape"].split(",")]
        if "--input-shape" in value
        else None,
        mean=numbers(value["--mean"]) if "--mean" in value else None,
        std=numbers(value["--std"]) if "--std" in value else None,
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--teacher", required=True, help="zoo name")
    parser.add_argument("--count", type=int, default=2560, help="impressions crafted")
    parser.add_argument("--iterations", type=int, default=50)
    parser.add_argument("--lr", type=float, default=0.2)
    parser.add_argument("--tv", type=float, default=0.0, help="total_variation_weight")
    parser.add_argument("--l2", type=float, default=0.0, help="l2_weight")
    parser.add_argument("--epochs", type=int, default=8)
    parser.add_argument("--parametrization", default="sigmoid", choices=["sigmoid", "direct"])
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    torch.set_num_threads(1)
    torch.manual_seed(args.seed)
    teacher = load_teacher(teacher_source(args.teacher))
    shape = tuple(teacher.input_shape)
    batch = 256
    synthesizer = DataImpressions(
        image_shape=shape,  # type: ignore[arg-type]
        num_classes=teacher.num_classes,
        rng=torch.Generator().manual_seed(args.seed),
        device=torch.device("cpu"),
        batch_size=batch,
        iterations=args.iterations,
        lr=args.lr,
        total_variation_weight=args.tv,
        l2_weight=args.l2,
        memory_size=args.count,
        parametrization=args.parametrization,
    )
    start = time.process_time()
    while synthesizer.images_synthesized < args.count:
        synthesizer.synthesize(teacher, None)  # type: ignore[arg-type]
    craft_seconds = time.process_time() - start
    images = synthesizer.memory.images
    assert images is not None
    with torch.no_grad():
        soft = torch.cat([teacher(chunk) for chunk in images.split(512)])
    mean, std = teacher_pixel_statistics(teacher)
    student = ImageClassifier(
        build_model("lenet5-half", num_classes=teacher.num_classes, input_shape=shape),
        arch="lenet5-half",
        arch_kwargs={},
        num_classes=teacher.num_classes,
        input_shape=shape,
        mean=list(mean),
        std=list(std),
    )
    validation = load_npz(ROOT / "runs/zoo/mnist-validation.npz")
    pixels = validation.images.float()
    pixels = pixels / 255 if pixels.max() > 1 else pixels
    steps_per_epoch = max(1, len(images) // batch)
    total = steps_per_epoch * args.epochs
    optimizer = torch.optim.SGD(student.parameters(), lr=0.01, momentum=0.9, weight_decay=5e-4)
    schedule = torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, total)
    order = torch.Generator().manual_seed(args.seed)
    curve = []
    temperature = 20.0
    for epoch in range(1, args.epochs + 1):
        student.train()
        permutation = torch.randperm(len(images), generator=order)
        for step in range(steps_per_epoch):
            index = permutation[step * batch : (step + 1) * batch]
            log_q = F.log_softmax(student(images[index]) / temperature, dim=1)
            p = F.softmax(soft[index] / temperature, dim=1)
            loss = temperature**2 * F.kl_div(log_q, p, reduction="batchmean")
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
            schedule.step()
        student.eval()
        with torch.no_grad():
            correct = sum(
                int((student(x).argmax(1) == y).sum())
                for x, y in zip(pixels.split(1000), validation.labels.split(1000), strict=True)
            )
        curve.append({"epoch": epoch, "accuracy": correct / len(validation.labels)})
        print(f"epoch {epoch}: {curve[-1]['accuracy']:.4f}", flush=True)
    with torch.no_grad():
        confidence = float(F.softmax(soft, dim=1).max(1).values.mean())
    settings = f"n{args.count}-i{args.iterations}-lr{args.lr:g}-tv{args.tv:g}-l2{args.l2:g}"
    if args.parametrization != "sigmoid":
        settings += f"-{args.parametrization}"
    out = HERE / "results/impressions-offline" / f"{args.teacher}-{settings}-seed{args.seed}.json"
    out.parent.mkdir(parents=True, exist_ok=True)
    atomic_write_json(
        out,
        {
            "command": "python "
            + shlex.join(
                ["experiments/2026-12-datafree-zoo/impressions_offline.py", *sys.argv[1:]]
            ),
            "teacher": args.teacher,
            "eval": "validation",
            "impressions": len(images),
            "pixel_mean": float(images.mean()),
            "teacher_confidence": confidence,
            "similarity": synthesizer.report_entries()["similarity"],
            "craft_cpu_seconds": round(craft_seconds, 1),
            "student_accuracy": curve[-1]["accuracy"],
            "curve": curve,
        },
    )
    print(out)


if __name__ == "__main__":
    main()
