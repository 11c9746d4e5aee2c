"""Diversity and label balance of probe batches: real, proxy, noise, fresh, trained and collapsed.

    python experiments/2026-11-collapse-thresholds/measure.py TEACHER.pt REAL_SPEC [ROUNDS]

Prints one line per probe (128 images). Synthesizers train for ROUNDS generator rounds against
an untrained student (no student steps), then their generator's last convolution is zeroed.
"""

from __future__ import annotations

import sys

import torch

from freekd.config import TeacherSourceConfig
from freekd.data import load_dataset
from freekd.generators import SYNTHESIZERS
from freekd.generators.collapse import image_diversity, label_balance
from freekd.models import SMALLER_STUDENT, ImageClassifier, build_model
from freekd.teachers import Teacher, load_teacher

PROBE = 128


def measure(teacher: Teacher, name: str, images: torch.Tensor) -> None:
    with torch.no_grad():
        logits = teacher(images)
    print(
        f"{name:36s} diversity {image_diversity(images):.3f}  balance {label_balance(logits):.3f}"
    )


def main(teacher_path: str, real_spec: str, rounds: int) -> None:
    torch.set_num_threads(1)
    teacher = load_teacher(TeacherSourceConfig(path=teacher_path))
    shape, classes = teacher.input_shape, teacher.num_classes
    for spec in (real_spec, "animal-mnist:test"):
        data = load_dataset(spec)
        if tuple(data.input_shape) != tuple(shape):
            continue
        for seed in range(3):
            order = torch.randperm(len(data), generator=torch.Generator().manual_seed(seed))
            measure(teacher, f"{spec} seed {seed}", data.batch(order[:PROBE]).images)
    noise = torch.rand((PROBE, *shape), generator=torch.Generator().manual_seed(0))
    measure(teacher, "uniform noise", noise)
    measure(teacher, "constant gray", torch.full((PROBE, *shape), 0.5))
    arch = str(teacher.metadata["arch"])
    student_arch = SMALLER_STUDENT.get(arch, arch)
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
                measure(
                    teacher, f"{name} after {round_index + 1} rounds", synthesizer.sample(PROBE)
                )
        generator = getattr(synthesizer, "generator", None)
        if generator is not None and not hasattr(synthesizer, "memory"):
            with torch.no_grad():
                generator.head.weight.zero_()
            measure(teacher, f"{name} last conv zeroed", synthesizer.sample(PROBE))


if __name__ == "__main__":
    main(sys.argv[1], sys.argv[2], int(sys.argv[3]) if len(sys.argv) > 3 else 30)
