"""Fashion-MNIST, one-tower teachers: image → text and text → image students, per seed.

Four directions, each a student tower distilled by the contrastive module from a frozen teacher
tower of the other modality, next to the same student tower trained from scratch together with
a fresh partner tower (CLIP's loss, same budget):

* image → text from a freekd image classifier (the ResNet-8 of configs/teacher/, 92.5 %);
* image → text from the image tower of the tiny open_clip teacher (configs/crossmodal/);
* text → image from the pretrained all-MiniLM-L6-v2 sentence encoder;
* text → image from the text tower of the tiny open_clip teacher.

    python experiments/crossmodal/one_tower.py --seeds 0 1 2 --set trainer.epochs=1

Every run goes through the public CLI; results land in experiments/crossmodal/one-tower.json
(medians over seeds). Captions are templated from the class labels.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from bench import freekd, times, write_result  # experiments/crossmodal/bench.py

HERE = Path(__file__).resolve().parent
ROOT = HERE.parents[1]
CLIP_CONFIG = ROOT / "configs" / "crossmodal" / "tinyclip_fmnist.yaml"
CLASSIFIER_CONFIG = ROOT / "configs" / "teacher" / "fashion_mnist_resnet8.yaml"


def teachers(out: Path, seed: int) -> dict[str, str]:
    """Direction name → ``--teacher`` spec, training the teachers that are missing."""
    classifier = out / "classifier"
    if not (classifier / "report.json").exists():
        freekd("teacher", "train", "--config", str(CLASSIFIER_CONFIG), "--out", str(classifier),
               "--overwrite")  # fmt: skip
    clip = out / f"clip-{seed}"
    if not (clip / "report.json").exists():
        freekd("crossmodal", "teacher", "--config", str(CLIP_CONFIG), "--seed", str(seed),
               "--out", str(clip), "--overwrite")  # fmt: skip
    return {
        "image → text (ResNet-8 classifier)": str(classifier / "model.pt"),
        "image → text (CLIP image tower)": f"clip-image:{clip / 'model.pt'}",
        "text → image (MiniLM)": "minilm",
        "text → image (CLIP text tower)": f"clip-text:{clip / 'model.pt'}",
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--out", type=Path, default=Path("runs/crossmodal-one-tower"))
    parser.add_argument("--set", dest="overrides", action="append", default=[])
    parser.add_argument("--result", default="one-tower.json", help="JSON file name in here")
    arguments = parser.parse_args()
    extra = [item for override in arguments.overrides for item in ("--set", override)]
    rows: dict[str, list[dict]] = {}
    for seed in arguments.seeds:
        for index, (direction, spec) in enumerate(teachers(arguments.out, seed).items()):
            folder = arguments.out / f"direction{index}-{seed}"
            if not (folder / "report.json").exists():
                freekd("crossmodal", "distill", "--teacher", spec, "--seed", str(seed),
                       "--out", str(folder), "--overwrite", "--set", "min_steps=0",
                       *extra)  # fmt: skip
            report = json.loads((folder / "report.json").read_text())
            for role in ("student", "baseline"):
                entry = report[role] | {"seed": seed} | times(report)
                rows.setdefault(f"{direction}: {role}", []).append(entry)
    write_result(HERE / arguments.result, rows, seeds=arguments.seeds,
                 overrides=arguments.overrides)  # fmt: skip


if __name__ == "__main__":
    main()
