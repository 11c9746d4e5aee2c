"""How sure each teacher is of its run's synthetic images, against real digits (session 30; a
diagnosis, it chooses nothing), written to ``confidence.json``.

For each ``bench_zoo.py`` run named (``TAG/TEACHER-seedK-EVAL``), the run's last
generator (from its ``checkpoint.pt``, in training mode as the synthesizer draws) draws 1,024
images; the teacher's mean top softmax probability on them and on the first 2,000 validation
digits, the mean cross-entropy to its own argmax (DAFL's L_oh) on both, and the images' mean
pixel.

    PYTHONPATH=. python experiments/2026-12-datafree-zoo/confidence.py --runs \\
        prior-s29/smoothed-cnn-seed0-validation repeat-s29/wide-shallow-seed0-test \\
        default-s29/shallow-avgpool-seed0-validation default-s29/shallow-maxpool-seed0-validation \\
        prior-s29/dropout-cnn-seed0-validation default-s29/pixel-groupnorm-seed0-validation \\
        default-s29/mlp-std-seed0-validation
    PYTHONPATH=. python experiments/2026-12-datafree-zoo/confidence.py --runs \\
        conf1/shallow-avgpool-seed0-validation conf1/shallow-maxpool-seed0-validation \\
        --out experiments/2026-12-datafree-zoo/confidence-conf1.json

Each default run named finished its 4,000 steps (``prior-s29`` repeats ``default-s29``'s
curves epoch for epoch, and its smoothed-cnn and dropout-cnn runs finished where
``default-s29``'s were stopped); the two ``conf1`` runs were stopped by hand at steps 3,600
and 3,400 and are read at the checkpoint they left.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Any

import torch

sys.path.insert(0, str(Path(__file__).parent))
from border_blur import ROOT, last_generator, validation, zoo_teacher  # noqa: E402

from freekd.datafree.nets import teacher_pixel_statistics  # noqa: E402
from freekd.io import atomic_write_json  # noqa: E402

OUT = Path(__file__).parent / "confidence.json"
SYNTHETIC = 1024
REAL = 2000


@torch.no_grad()
def confidence(run: str, real: torch.Tensor) -> dict[str, Any]:
    name = run.split("/")[1].rpartition("-seed")[0]
    teacher = zoo_teacher(name)
    generator = last_generator(ROOT / "runs/zoo-bench" / run)
    generator.set_pixel_statistics(*teacher_pixel_statistics(teacher))
    images = generator(torch.randn(SYNTHETIC, generator.latent_dim))
    out: dict[str, Any] = {"teacher": name}
    for kind, batch in (("synthetic", images), ("real", real)):
        top = teacher(batch).softmax(1).max(1).values
        out[f"{kind}_top_probability"] = round(float(top.mean()), 4)
        out[f"{kind}_onehot_loss"] = round(float(-top.log().mean()), 4)
        out[f"{kind}_mean_pixel"] = round(float(batch.mean()), 4)
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", nargs="+", required=True, help="TAG/TEACHER-seedK-EVAL")
    parser.add_argument("--out", type=Path, default=OUT, help="the JSON to write")
    args = parser.parse_args()
    torch.manual_seed(0)
    real = validation()[0][:REAL]
    result = {}
    for run in args.runs:
        result[run] = confidence(run, real)
        print(run, result[run], flush=True)
    atomic_write_json(args.out, result)
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
