"""Diversity and label balance of probe batches: real, proxy, noise, fresh, trained and collapsed.

    python experiments/2026-11-collapse-thresholds/measure.py --real digits:test \
        --teacher TEACHER.pt --rounds 30 --out experiments/2026-11-collapse-thresholds/digits.json
    python experiments/2026-11-collapse-thresholds/measure.py --real mnist:test \
        --out experiments/2026-11-collapse-thresholds/mnist-diversity.json

Writes one JSON entry per probe (128 images). Without ``--teacher`` only the teacher-free probes
are measured (real and proxy images, noise, a constant image) and only their diversity: the
label balance needs a teacher. With one, each synthesizer that can run on it trains for
ROUNDS generator rounds against an untrained student (no student steps), is measured after the
first and the last round, and then its generator's last convolution is zeroed (a collapse).
"""

from __future__ import annotations

import argparse
import json
import platform
from pathlib import Path
from typing import Any

import torch

from freekd.config import TeacherSourceConfig
from freekd.data import load_dataset
from freekd.datafree.collapse import image_diversity, label_balance
from freekd.datafree.synthesizers import SYNTHESIZERS
from freekd.io import atomic_write_text
from freekd.models import SMALLER_STUDENT, ImageClassifier, build_model
from freekd.teachers import Teacher, load_teacher

PROBE = 128


def measure(teacher: Teacher | None, name: str, images: torch.Tensor) -> dict[str, Any]:
    balance = None
    if teacher is not None:
        with torch.no_grad():
            balance = label_balance(teacher(images))
    row = {"probe": name, "diversity": round(image_diversity(images), 4)}
    row["balance"] = None if balance is None else round(balance, 4) + 0.0  # no -0.0
    print(f"{name:36s} diversity {row['diversity']}  balance {row['balance']}")
    return row


def synthesizer_probes(teacher: Teacher, rounds: int) -> list[dict[str, Any]]:
    shape, classes = teacher.input_shape, teacher.num_classes
    arch = str(teacher.metadata["arch"])
    student_arch = SMALLER_STUDENT.get(arch, arch)
    rows = []
    for name in SYNTHESIZERS.names():
        cls = SYNTHESIZERS.get(name)
        if name == "noise" or (cls.needs_batchnorm and not teacher.has_batchnorm):
            continue
        params = {"batch_size": 64, **({"iterations": 50} if name == "deepinversion" else {})}
        synthesizer = cls(
            image_shape=shape,
            num_classes=classes,
            rng=torch.Generator().manual_seed(0),
            device=torch.device("cpu"),
            **params,
        )
        torch.manual_seed(0)  # the untrained student's initial weights
        net = build_model(student_arch, num_classes=classes, input_shape=shape)
        student = ImageClassifier(
            net,
            arch=student_arch,
            arch_kwargs={},
            num_classes=classes,
            input_shape=shape,
            mean=[0.5] * shape[0],
            std=[0.5] * shape[0],
        )
        for round_index in range(rounds):
            synthesizer.synthesize(teacher, student)
            if round_index in (0, rounds - 1):
                label = f"{name} after {round_index + 1} rounds"
                rows.append(measure(teacher, label, synthesizer.sample(PROBE)))
        generator = getattr(synthesizer, "generator", None)
        if generator is not None and not hasattr(synthesizer, "memory"):
            with torch.no_grad():
                generator.head.weight.zero_()
            rows.append(measure(teacher, f"{name} last conv zeroed", synthesizer.sample(PROBE)))
    return rows


def describe(teacher: Teacher, path: Path) -> dict[str, Any]:
    report = path.with_name("report.json")
    accuracy = json.loads(report.read_text()).get("test_accuracy") if report.exists() else None
    return {
        "arch": teacher.metadata.get("arch"),
        "batchnorm": teacher.has_batchnorm,
        "test_accuracy": accuracy,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--real", required=True, help="real images, e.g. mnist:test")
    parser.add_argument("--teacher", help="teacher checkpoint (needed for balance, synthesizers)")
    parser.add_argument("--rounds", type=int, default=30)
    parser.add_argument("--out", type=Path, required=True)
    args = parser.parse_args()
    torch.set_num_threads(1)
    teacher = None if args.teacher is None else load_teacher(TeacherSourceConfig(path=args.teacher))
    real = load_dataset(args.real)
    shape = real.input_shape if teacher is None else teacher.input_shape
    rows = []
    for spec in (args.real, "animal-mnist:test"):
        data = real if spec == args.real else load_dataset(spec)
        if tuple(data.input_shape) != tuple(shape):
            continue
        for seed in range(3):
            order = torch.randperm(len(data), generator=torch.Generator().manual_seed(seed))
            rows.append(measure(teacher, f"{spec} seed {seed}", data.batch(order[:PROBE]).images))
    noise = torch.rand((PROBE, *shape), generator=torch.Generator().manual_seed(0))
    rows.append(measure(teacher, "uniform noise", noise))
    rows.append(measure(teacher, "constant gray", torch.full((PROBE, *shape), 0.5)))
    if teacher is not None:
        rows.extend(synthesizer_probes(teacher, args.rounds))
    result = {
        "command": "python experiments/2026-11-collapse-thresholds/measure.py "
        + " ".join(f"--{k} {v}" for k, v in vars(args).items() if v is not None),
        "real": args.real,
        "teacher": None if teacher is None else describe(teacher, Path(args.teacher)),
        "probe_size": PROBE,
        "rounds": args.rounds if teacher is not None else None,
        "probes": rows,
        "torch": torch.__version__,
        "machine": platform.machine(),
    }
    atomic_write_text(args.out, json.dumps(result, indent=2, default=str) + "\n")


if __name__ == "__main__":
    main()
