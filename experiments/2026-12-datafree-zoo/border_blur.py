"""Three diagnoses of session 28 (they choose nothing), written to ``border-blur-session28.json``.

- **Edges.** Each named teacher's accuracy on the validation digits as they are, binarized at
  0.5, and binarized then smoothed by a 3×3 Gaussian of std 0.5, 0.7 and 1 pixel
  (``datafree.nets.antialias``): how much a teacher's answer depends on the grey rims of
  anti-aliased strokes, which ``generator_output=matched`` lacks and ``matched-blur`` adds.
- **Borders.** For each finished ``bench_zoo.py`` run named (``TAG/TEACHER-seedK-EVAL``), the
  run's last generator (from its ``checkpoint.pt``) draws 512 images: the share of their
  intensity in the outer 2 and 4 pixels (27 % and 49 % of a 28×28 image's area; real digits:
  0.2 % and 3.3 %), and how often the teacher's label changes, and its KL, when those borders
  are set to black (no control: blackening as large an area inside would change them too).
- **Fresh generators.** The mean, std and share of black pixels of a new generator's images
  with MNIST's statistics, for the ``batchnorm``, ``matched`` and ``matched-blur`` outputs and
  a 4-pixel ``frame``.

    PYTHONPATH=. python experiments/2026-12-datafree-zoo/border_blur.py \\
        --teachers shallow-maxpool shallow-avgpool dropout-cnn smoothed-cnn mlp-std \\
        --runs default-s27/shallow-maxpool-seed0-validation \\
        default-s25/shallow-avgpool-seed0-validation default-s23/smoothed-cnn-seed0-validation \\
        default-s25/mlp-std-seed0-validation
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F

from freekd.data import load_dataset
from freekd.datafree.nets import Generator, antialias, build_generator
from freekd.io import atomic_write_json
from freekd.teachers import Teacher

HERE = Path(__file__).parent
ROOT = HERE.parent.parent
OUT = HERE / "border-blur-session28.json"


def validation() -> tuple[torch.Tensor, torch.Tensor]:
    data = load_dataset(str(ROOT / "runs/zoo/mnist-validation.npz"))
    images = data.images.float() / 255 if data.images.dtype == torch.uint8 else data.images
    return images, data.labels


def zoo_teacher(name: str) -> Teacher:
    sys.path.insert(0, str(HERE))
    from class_bias import zoo_flags
    from diagnose import teacher_of  # the zoo's own loader (user classes with trust_code)

    return teacher_of(zoo_flags(name))


@torch.no_grad()
def fresh_statistics() -> dict[str, dict[str, float]]:
    """Mean, std and share of black pixels of 512 images of a freshly built generator with
    MNIST's statistics, per output layer and border: what ``matched-blur`` and ``frame`` do to
    the statistics the output layer was meant to keep."""
    codes = torch.randn(512, 100, generator=torch.Generator().manual_seed(0))
    out = {}
    for output, frame in (("batchnorm", 0), ("batchnorm", 4), ("matched", 0), ("matched-blur", 0)):
        torch.manual_seed(1)
        generator = Generator(image_shape=(1, 28, 28), width=32, output=output, frame=frame)
        generator.set_pixel_statistics([0.1307], [0.3081])
        drawn = generator(codes)
        out[f"{output}_frame{frame}"] = {
            "mean": round(float(drawn.mean()), 4),
            "std": round(float(drawn.std()), 4),
            "black": round(float((drawn == 0).float().mean()), 4),
        }
    return out


def black_border(images: torch.Tensor, width: int) -> torch.Tensor:
    inside = torch.zeros_like(images[:1])
    inside[..., width : images.shape[-2] - width, width : images.shape[-1] - width] = 1.0
    return images * inside


def ink_outside(images: torch.Tensor, width: int) -> float:
    return round(float((images - black_border(images, width)).sum() / images.sum()), 4)


@torch.no_grad()
def edges(name: str, images: torch.Tensor, labels: torch.Tensor) -> dict[str, float]:
    teacher = zoo_teacher(name)
    binary = (images > 0.5).float()
    variants = {"real": images, "binarized": binary}
    for sigma in (0.5, 0.7, 1.0):
        variants[f"binarized_blur_{sigma}"] = antialias(binary, sigma)
    return {
        key: round(float((teacher(value).argmax(1) == labels).float().mean()) * 100, 2)
        for key, value in variants.items()
    }


def last_generator(folder: Path) -> Any:
    """The generator a ``bench_zoo.py`` run (folder) ended with, from its ``checkpoint.pt``, in
    training mode (batch statistics, as the synthesizer draws); with ``generators`` > 1, the
    ensemble."""
    checkpoint = torch.load(folder / "checkpoint.pt", weights_only=True, map_location="cpu")
    synthesizer = checkpoint["extras"]["source"]["synthesizer"]
    params = checkpoint["config"]["synthesizer"].get("params") or {}
    if float(params.get("class_weight", 0)) > 0:
        raise ValueError(f"{folder}: a conditional generator (class_weight) is not read here")
    generator = build_generator(
        kind=params.get("generator_kind", "dcgan"),
        count=int(params.get("generators", 1)),
        latent_dim=int(params.get("latent_dim", 100)),
        image_shape=(1, 28, 28),
        width=int(params.get("generator_width", 32)),
        output=params.get("generator_output", "batchnorm"),
        frame=int(params.get("generator_frame", 0)),
    )
    generator.load_state_dict(synthesizer["generator"])
    return generator.train()


@torch.no_grad()
def borders(run: str, images: torch.Tensor) -> dict[str, float]:
    generator = last_generator(ROOT / "runs/zoo-bench" / run)
    latent_dim = generator.latent_dim
    codes = torch.randn(512, latent_dim, generator=torch.Generator().manual_seed(0))
    drawn = generator(codes)
    teacher = zoo_teacher(run.split("/")[1].rsplit("-seed", 1)[0])
    logits = teacher(drawn)
    out: dict[str, float] = {}
    for width in (2, 4):
        blacked = teacher(black_border(drawn, width))
        out[f"ink_outside_{width}px"] = ink_outside(drawn, width)
        out[f"label_change_{width}px"] = round(
            float((logits.argmax(1) != blacked.argmax(1)).float().mean()), 4
        )
        out[f"kl_{width}px"] = round(
            float(
                F.kl_div(
                    blacked.log_softmax(1),
                    logits.log_softmax(1),
                    log_target=True,
                    reduction="batchmean",
                )
            ),
            4,
        )
    real_logits, real_blacked = teacher(images), teacher(black_border(images, 4))
    out["real_label_change_4px"] = round(
        float((real_logits.argmax(1) != real_blacked.argmax(1)).float().mean()), 4
    )
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--teachers", nargs="*", default=[])
    parser.add_argument("--runs", nargs="*", default=[], help="TAG/TEACHER-seedK-EVAL")
    args = parser.parse_args()
    torch.manual_seed(0)
    images, labels = validation()
    result: dict[str, Any] = {
        "validation_ink_outside_2px": ink_outside(images, 2),
        "validation_ink_outside_4px": ink_outside(images, 4),
        "fresh_generator": fresh_statistics(),
        "edges": {},
        "borders": {},
    }
    for name in args.teachers:
        result["edges"][name] = edges(name, images, labels)
        print(name, result["edges"][name], flush=True)
    for run in args.runs:
        result["borders"][run] = borders(run, images)
        print(run, result["borders"][run], flush=True)
    atomic_write_json(OUT, result)
    print(f"wrote {OUT}")


if __name__ == "__main__":
    main()
