"""What differs between zoo teachers, measured before any distillation.

For every built teacher: the spread of its logits and its confidence on the real validation
images (``runs/zoo/mnist-validation.npz``, never the test set), on uniform noise, and on the
images of a freshly initialized zskt generator (as built, then with the teacher's pixel
statistics through DAFL's ``batchnorm`` output and through the ``matched`` one); the class
balance of its labels on those generator images; and its accuracy on the validation images
binarized at 0.5 (how much a teacher relies on grey levels that near-binary synthetic images
lack; session 27). Written to ``--out``: ``diagnose.json`` holds
the session-14 measurements of the teachers built then (before the binarized and teacher-
statistics figures), ``diagnose-session27.json`` those of the current builds.

    cd experiments/2026-12-datafree-zoo && PYTHONPATH=../..:. python diagnose.py \
        --out diagnose-session27.json
"""

from __future__ import annotations

import argparse
import json
import math
from pathlib import Path
from typing import Any

import torch

from freekd.config import TeacherSourceConfig
from freekd.data import load_dataset
from freekd.datafree.nets import teacher_pixel_statistics
from freekd.datafree.synthesizers import SYNTHESIZERS
from freekd.io import atomic_write_json
from freekd.teachers import Teacher, load_teacher

HERE = Path(__file__).parent
ROOT = HERE.parent.parent


def teacher_of(flags: list[str]) -> Teacher:
    options = dict(zip(flags[::2], flags[1::2], strict=True))
    numbers = lambda text: [float(x) for x in text.split(",")]  # noqa: E731
    return load_teacher(
        TeacherSourceConfig(
            path=str(ROOT / options["--teacher"]),
            arch=options.get("--arch"),
            input_shape=[int(x) for x in options["--input-shape"].split(",")]
            if "--input-shape" in options
            else None,
            mean=numbers(options["--mean"]) if "--mean" in options else None,
            std=numbers(options["--std"]) if "--std" in options else None,
            arch_kwargs=json.loads(options.get("--arch-kwargs", "{}")),
        ),
        trust_code=True,
    )


def describe(logits: torch.Tensor) -> dict[str, float]:
    probabilities = logits.softmax(1)
    labels = probabilities.argmax(1)
    histogram = torch.bincount(labels, minlength=logits.shape[1]).float()
    share = histogram / histogram.sum()
    entropy = -(share[share > 0] * share[share > 0].log()).sum().item()
    return {
        "logit_std": round(logits.std(1).mean().item(), 3),
        "logit_range": round((logits.max(1).values - logits.min(1).values).mean().item(), 3),
        "max_probability": round(probabilities.max(1).values.mean().item(), 4),
        "label_balance": round(entropy / math.log(logits.shape[1]), 3),
    }


@torch.no_grad()
def measure(teacher: Teacher, images: torch.Tensor, labels: torch.Tensor) -> dict[str, Any]:
    fresh = {}
    # "untouched": the generator as built (pixel statistics 0.5 and 0.5, the figures of session
    # 14); the other two with the teacher's statistics, as a run draws them.
    for key, output in (
        ("untouched", "batchnorm"),
        ("batchnorm", "batchnorm"),
        ("matched", "matched"),
    ):
        synth = SYNTHESIZERS.get("zskt")(
            image_shape=teacher.input_shape, num_classes=teacher.num_classes,
            rng=torch.Generator().manual_seed(0), device=torch.device("cpu"),
            generator_output=output,
        )  # fmt: skip
        if key != "untouched":
            synth.generator.set_pixel_statistics(*teacher_pixel_statistics(teacher))
        fresh[key] = synth.sample(512)
    noise = torch.rand((512, *teacher.input_shape), generator=torch.Generator().manual_seed(1))
    real = teacher(images)
    binarized = teacher((images > 0.5).float())
    return {
        "validation_accuracy": round((real.argmax(1) == labels).float().mean().item(), 4),
        "binarized_accuracy": round((binarized.argmax(1) == labels).float().mean().item(), 4),
        "real": describe(real),
        "uniform_noise": describe(teacher(noise)),
        "fresh_generator": describe(teacher(fresh["untouched"])),
        "fresh_generator_teacher_statistics": describe(teacher(fresh["batchnorm"])),
        "fresh_generator_matched": describe(teacher(fresh["matched"])),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--out", required=True, help="a file name, written next to this script (no folder)"
    )
    args = parser.parse_args()
    if Path(args.out).name != args.out or not args.out.endswith(".json"):
        parser.error(f"--out takes a .json file name without a folder, got {args.out!r}")
    torch.set_num_threads(1)
    data = load_dataset(str(ROOT / "runs/zoo/mnist-validation.npz"))
    images = data.images.float() / 255
    result = {}
    for entry in json.loads((HERE / "zoo.json").read_text())["teachers"]:
        if not (ROOT / entry["datafree_flags"][1]).exists():
            continue
        teacher = teacher_of(entry["datafree_flags"])
        result[entry["name"]] = {"split": entry["split"], **measure(teacher, images, data.labels)}
        print(entry["name"], json.dumps(result[entry["name"]]), flush=True)
    atomic_write_json(HERE / args.out, result)


if __name__ == "__main__":
    main()
