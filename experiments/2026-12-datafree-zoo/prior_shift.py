"""Does a data-free student inherit the class prior of its synthetic images? A diagnosis.

A student trained on generator images whose teacher labels favour a few classes may carry that
prior to real digits: session 28 found a third to four fifths of the students' disagreements
with their teachers on real digits going to the class 8. Post-hoc logit adjustment (Menon et
al. 2021, ICLR, "Long-tail learning via logit adjustment", §4, Eq. 6) removes a known training
prior from a classifier's scores: predict argmax_y f_y(x) − τ · log π_y. Here π is measured
without data: the mean of the teacher's softmax outputs (and, for comparison, the histogram of
its argmax labels) on 4,096 images of the run's *last* generator (from its ``checkpoint.pt``;
its batches are the student's last, not a record of every batch it trained on) and, for runs
that record it, the run's own ``report.json["collapse"]["synthetic_prior"]`` (the teacher's
mean probabilities over every collapse probe of the run: every generator, not only the last).

For each finished ``bench_zoo.py`` run named on the command line (``TAG/TEACHER-seedK-EVAL``,
a folder under ``runs/zoo-bench/``), the JSON records π (soft and argmax), the student's and the
teacher's mean probability per class on the real images the run reported on, and the student's
accuracy there with τ = 0 (as saved), 0.5 and 1, and, for scale, corrected by the prior shift
measured on the real images (``real_prior_correction``, not data-free: the student's scores
minus the log of its mean probability per class there over the teacher's). A diagnosis only:
it chooses nothing. Written to ``prior_shift.json`` (merged by run name):

    PYTHONPATH=. python experiments/2026-12-datafree-zoo/prior_shift.py \\
        default-s29/mlp-std-seed0-validation default-s29/pixel-groupnorm-seed0-validation
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any

import torch

HERE = Path(__file__).parent
ROOT = HERE.parent.parent
RUNS = ROOT / "runs/zoo-bench"
OUT = HERE / "prior_shift.json"
TAUS = (0.0, 0.5, 1.0)
DRAWN = 4096


def rounded(values: torch.Tensor, digits: int = 4) -> list[float]:
    return [round(float(v), digits) for v in values]


@torch.no_grad()
def last_generator_prior(folder: Path, teacher: Any) -> tuple[torch.Tensor, torch.Tensor]:
    """π from the run's last generator: (mean teacher softmax, argmax histogram share)."""
    from border_blur import last_generator

    generator = last_generator(folder)
    rng = torch.Generator().manual_seed(0)
    logits = torch.cat(
        [
            teacher(generator(torch.randn(256, generator.latent_dim, generator=rng)))
            for _ in range(DRAWN // 256)
        ]
    )
    soft = logits.softmax(1).mean(0)
    hard = torch.bincount(logits.argmax(1), minlength=logits.shape[1]).double() / len(logits)
    return soft, hard.float()


@torch.no_grad()
def measure(run: str) -> dict[str, Any]:
    from class_bias import run_logits

    scored = run_logits(run)
    labels, teacher_logits, student_logits = (
        scored.labels,
        scored.teacher_logits,
        scored.student_logits,
    )
    soft, hard = last_generator_prior(RUNS / run, scored.teacher)
    priors = {"soft": soft, "argmax": hard}
    report = json.loads((RUNS / run / "report.json").read_text())
    recorded = (report.get("collapse") or {}).get("synthetic_prior")
    if recorded:  # the run's own record: the teacher's mean probabilities over every probe
        priors["run"] = torch.tensor(recorded)
    accuracy: dict[str, float] = {}
    for prior_name, prior in priors.items():
        for tau in TAUS:
            adjusted = student_logits - tau * prior.clamp_min(1e-4).log()
            key = f"{prior_name}_tau{tau:g}"
            accuracy[key] = round(float((adjusted.argmax(1) == labels).float().mean()), 4)
    # Not data-free, for scale: the student's class prior on the real images over the teacher's
    # there (mean probabilities, no labels), removed from its scores.
    shift = student_logits.softmax(1).mean(0) / teacher_logits.softmax(1).mean(0)
    oracle = (student_logits - shift.log()).argmax(1)
    accuracy["real_prior_correction"] = round(float((oracle == labels).float().mean()), 4)
    return {
        "teacher": scored.name,
        "eval": scored.evaluation,
        "images": len(labels),
        "teacher_accuracy": round(float((teacher_logits.argmax(1) == labels).float().mean()), 4),
        "student_accuracy": accuracy,
        "prior_soft": rounded(soft),
        "prior_argmax": rounded(hard),
        "prior_run": rounded(priors["run"]) if "run" in priors else None,
        "teacher_mean_probability": rounded(teacher_logits.softmax(1).mean(0)),
        "student_mean_probability": rounded(student_logits.softmax(1).mean(0)),
    }


if __name__ == "__main__":
    sys.path.insert(0, str(HERE))  # class_bias.py, border_blur.py, diagnose.py and zoo_models
    from class_bias import diagnose_runs

    diagnose_runs(__doc__, OUT, measure)
