"""Where a data-free student's errors on real digits go: per class, against its teacher.

For each finished run of ``bench_zoo.py`` named on the command line (``TAG/TEACHER-seedK-EVAL``,
a folder under ``runs/zoo-bench/``), the run's saved student and its zoo teacher are evaluated
on the images the run reported on (``validation``: ``runs/zoo/mnist-validation.npz``; ``test``:
``mnist:test``), and the JSON records

- both accuracies, overall and per true class;
- the images where the student's top class is not the teacher's: how many, the student's class
  on them (a histogram), and where that class ranks in the teacher's order (1 = the teacher's
  second choice);
- the mean probability each network gives each class over all images (a student whose mean
  probability for one class is far above its teacher's has a shifted class prior on real data);
- the student's KL to the teacher on the real images (mean and median, nats).

A diagnosis only: it chooses nothing. Written to ``class_bias.json`` (merged by run name, so runs
can be added later):

    PYTHONPATH=. python experiments/2026-12-datafree-zoo/class_bias.py \\
        earlier-noreplay/wide-shallow-seed0-validation earlier-noreplay/mlp-std-seed0-validation
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

import freekd
from freekd.data import load_dataset
from freekd.io import atomic_write_json
from freekd.teachers import Teacher

HERE = Path(__file__).parent
ROOT = HERE.parent.parent
RUNS = ROOT / "runs/zoo-bench"
OUT = HERE / "class_bias.json"


def zoo_flags(name: str) -> list[str]:
    teachers = {t["name"]: t for t in json.loads((HERE / "zoo.json").read_text())["teachers"]}
    if name not in teachers:
        raise SystemExit(f"error: no zoo teacher {name!r}; known: {', '.join(teachers)}")
    return list(teachers[name]["datafree_flags"])


def rounded(values: torch.Tensor, digits: int = 4) -> list[float]:
    return [round(float(v), digits) for v in values]


@dataclass
class RunOnRealImages:
    """A finished run's teacher and student on the real images it reported on."""

    name: str
    evaluation: str
    teacher: Teacher
    labels: torch.Tensor
    teacher_logits: torch.Tensor
    student_logits: torch.Tensor


@torch.no_grad()
def run_logits(run: str) -> RunOnRealImages:
    """Load ``TAG/TEACHER-seedK-EVAL``'s zoo teacher and saved student and score the images it
    reported on (``validation``: ``runs/zoo/mnist-validation.npz``; ``test``: ``mnist:test``)."""
    from diagnose import teacher_of  # the zoo's own loader (user classes with trust_code)

    tag, folder = run.split("/")
    name, rest = folder.rsplit("-seed", 1)
    evaluation = rest.split("-", 1)[1]
    data = load_dataset(
        str(ROOT / "runs/zoo/mnist-validation.npz") if evaluation == "validation" else "mnist:test"
    )
    images = data.images.float() / 255 if data.images.dtype == torch.uint8 else data.images
    teacher = teacher_of(zoo_flags(name))
    student = freekd.load_model(RUNS / tag / folder / "model.pt").eval()
    chunks = range(0, len(images), 1000)
    return RunOnRealImages(
        name=name,
        evaluation=evaluation,
        teacher=teacher,
        labels=data.labels,
        teacher_logits=torch.cat([teacher(images[i : i + 1000]) for i in chunks]),
        student_logits=torch.cat([student(images[i : i + 1000]) for i in chunks]),
    )


@torch.no_grad()
def compare(run: str) -> dict[str, Any]:
    scored = run_logits(run)
    name, evaluation, labels = scored.name, scored.evaluation, scored.labels
    teacher_logits, student_logits = scored.teacher_logits, scored.student_logits
    classes = teacher_logits.shape[1]
    p_teacher, p_student = teacher_logits.softmax(1), student_logits.softmax(1)
    top_teacher, top_student = p_teacher.argmax(1), p_student.argmax(1)
    differ = top_teacher != top_student
    chosen = top_student[differ]
    teacher_p_chosen = p_teacher[differ].gather(1, chosen[:, None])
    rank = (p_teacher[differ] > teacher_p_chosen).sum(1)
    kl = (p_teacher * (p_teacher.clamp_min(1e-12).log() - p_student.clamp_min(1e-12).log())).sum(1)

    def per_class(top: torch.Tensor) -> list[float | None]:
        """Accuracy on each true class (None for a class with no images)."""
        hits = [top[labels == k] == k for k in range(classes)]
        return [round(float(h.float().mean()), 4) if h.numel() else None for h in hits]

    return {
        "teacher": name,
        "eval": evaluation,
        "images": len(labels),
        "teacher_accuracy": round(float((top_teacher == labels).float().mean()), 4),
        "student_accuracy": round(float((top_student == labels).float().mean()), 4),
        "teacher_accuracy_per_class": per_class(top_teacher),
        "student_accuracy_per_class": per_class(top_student),
        "disagreements": int(differ.sum()),
        "student_class_on_disagreements": torch.bincount(chosen, minlength=classes).tolist(),
        "rank_in_teacher_of_student_class": torch.bincount(rank, minlength=classes).tolist(),
        "teacher_mean_probability": rounded(p_teacher.mean(0)),
        "student_mean_probability": rounded(p_student.mean(0)),
        "kl_real_mean": round(float(kl.mean()), 4),
        "kl_real_median": round(float(kl.median()), 4),
    }


def diagnose_runs(
    doc: str, out: Path, measure: Callable[[str], dict[str, Any]], argv: list[str] | None = None
) -> None:
    """The command line of a per-run diagnosis: ``measure`` every run named, merged by run name
    into ``out`` (written after each run, atomically)."""
    parser = argparse.ArgumentParser(description=doc.split("\n\n")[0])
    parser.add_argument("runs", nargs="+", help="TAG/TEACHER-seedK-EVAL under runs/zoo-bench/")
    args = parser.parse_args(argv)
    torch.set_num_threads(1)
    sys.path.insert(0, str(HERE))  # diagnose.py and zoo_models, as bench_zoo runs them
    result = json.loads(out.read_text()) if out.exists() else {}
    for run in args.runs:
        result[run] = measure(run)
        print(run, json.dumps(result[run]), flush=True)
        atomic_write_json(out, dict(sorted(result.items())))


if __name__ == "__main__":
    diagnose_runs(__doc__, OUT, compare)
