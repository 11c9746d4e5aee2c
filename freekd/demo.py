"""``freekd demo``: the embedded default job (MNIST teacher → KD student → data-free student)."""

from __future__ import annotations

import dataclasses
from typing import Any

from freekd.config import TeacherSourceConfig, TrainerConfig
from freekd.datafree.config import DataFreeConfig
from freekd.datafree.pipeline import run_datafree
from freekd.distill.config import DistillConfig
from freekd.distill.pipeline import run_distill
from freekd.errors import FreekdError
from freekd.runlock import has_run_content, locks_run_folder
from freekd.runs import RunOptions
from freekd.supervised.config import TeacherTrainConfig
from freekd.supervised.pipeline import run_teacher_train


@locks_run_folder
def run_demo(
    options: RunOptions,
    *,
    teacher_epochs: int = 4,
    student_epochs: int = 10,
    datafree_epochs: int = 10,
) -> dict[str, Any]:
    """``freekd demo``: an MNIST LeNet-5 teacher, then LeNet-5-half by KD and without data.

    The embedded default job of ``make demo``: no arguments, no data to fetch. Writes
    ``teacher/``, ``student/`` (KD on the real training set) and ``datafree/`` (the default
    synthesizer, the teacher file only; MNIST's test split is used only to report accuracy)
    run folders under ``options.out_dir`` and returns the three reports.
    """
    out = options.out_dir
    if out.exists() and has_run_content(out) and not options.overwrite:
        raise FreekdError(f"output folder {out} already exists; pass --overwrite or another --out")
    quiet = options.quiet
    teacher_config = TeacherTrainConfig(
        dataset="mnist", arch="lenet5", trainer=TrainerConfig(epochs=teacher_epochs)
    )
    teacher_report = run_teacher_train(
        teacher_config, RunOptions(out / "teacher", overwrite=options.overwrite, quiet=quiet)
    )
    distill_config = DistillConfig(
        teacher=TeacherSourceConfig(path=str(out / "teacher" / "model.pt")),
        student="lenet5-half",
        dataset="mnist",
        trainer=TrainerConfig(epochs=student_epochs),
    )
    student_report = run_distill(
        distill_config, RunOptions(out / "student", overwrite=options.overwrite, quiet=quiet)
    )
    datafree_config = DataFreeConfig(
        teacher=TeacherSourceConfig(path=str(out / "teacher" / "model.pt")),
        eval_dataset="mnist:test",
        trainer=dataclasses.replace(DataFreeConfig().trainer, epochs=datafree_epochs),
    )
    datafree_report = run_datafree(
        datafree_config, RunOptions(out / "datafree", overwrite=options.overwrite, quiet=quiet)
    )
    return {"teacher": teacher_report, "student": student_report, "datafree": datafree_report}
