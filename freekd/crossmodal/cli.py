"""``freekd crossmodal teacher`` and ``freekd crossmodal distill``."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any

import typer

from freekd.cli_options import (
    DataRootOption,
    Defaults,
    RunFlags,
    TrainerFlags,
    _yaml_mapping,
    run_command,
)
from freekd.cli_tables import maybe_percent, minutes, percent, print_table

LimitPairsOption = Annotated[
    int | None,
    typer.Option(
        "--limit-pairs",
        help="Train on this many of the pairs only (a seeded, class-balanced choice).",
    ),
]
EvalPairsOption = Annotated[
    str | None,
    typer.Option(
        "--eval-pairs",
        help="Held-out pairs of the same kind as --pairs: labelled images, or a pair folder "
        "(default: the test split; for your own pairs, a seeded tenth of them).",
    ),
]

crossmodal_app = typer.Typer(
    no_args_is_help=True,
    help="Cross-modal distillation: image ↔ text models on open_clip, templated pairs.",
)


@run_command(crossmodal_app, "teacher")
def crossmodal_teacher(
    *,
    pairs: Annotated[
        str | None,
        typer.Option(
            "--pairs",
            help="Labelled images whose classes become templated captions: fashion-mnist "
            "(default), mnist, animal-mnist, digits[:split], a .npz file.",
        ),
    ] = None,
    eval_pairs: EvalPairsOption = None,
    limit_pairs: LimitPairsOption = None,
    trainer: TrainerFlags,
    data_root: DataRootOption = None,
    run: Annotated[RunFlags, Defaults(out=Path("runs/clip-teacher"))],
) -> None:
    """Train a small open_clip CLIP (config in configs/crossmodal/) on templated image–caption
    pairs; report zero-shot accuracy and retrieval recall@1/5/10 on held-out pairs."""
    from freekd.crossmodal.config import CrossModalTeacherConfig

    values = {
        "pairs": pairs,
        "eval_pairs": eval_pairs,
        "limit_pairs": limit_pairs,
        **trainer.values(),
        "data_root": data_root,
    }
    cfg = run.load(CrossModalTeacherConfig, values)
    from freekd.crossmodal.pipeline import run_crossmodal_teacher

    report = run_crossmodal_teacher(cfg, run.options())
    out = run.out
    teacher = report["teacher"]
    print_table(
        "CLIP teacher",
        [
            (
                "zero-shot accuracy",
                f"{maybe_percent(teacher['zero_shot_accuracy'])} on {report['eval_pairs']}",
            ),
            (
                "recall@1 / 5 / 10",
                " / ".join(percent(teacher[f"recall_at_{k}"]) for k in (1, 5, 10))
                + f" ({teacher['retrieval_pairs']} pairs, {teacher['recall_counts']}, both ways)",
            ),
            (
                "parameters",
                f"{teacher['parameters']['total']:,} "
                f"(image tower {teacher['parameters']['image']:,})",
            ),
            ("captions", "templated from the class labels"),
            ("time", minutes(report)),
            ("files", f"{out / 'model.pt'}, {out / 'retrieval.png'}"),
        ],
    )


@run_command(crossmodal_app, "distill")
def crossmodal_distill(
    *,
    teacher: Annotated[
        str | None,
        typer.Option(
            "--teacher",
            help="A CLIP (model.pt of freekd crossmodal teacher), or one tower: an image "
            "classifier's model.pt (teaches a text student), clip-image:PATH, clip-text:PATH, "
            "or minilm (pretrained all-MiniLM-L6-v2; teaches an image student).",
        ),
    ] = None,
    student: Annotated[
        str | None,
        typer.Option(
            "--student",
            help="The student: a registry architecture for the image student of a text "
            "teacher (default lenet5), or a YAML/JSON file with the open_clip model config of a "
            "CLIP student (default: a quarter of the teacher) or the text_cfg of a text student.",
        ),
    ] = None,
    method: Annotated[
        str | None,
        typer.Option(
            "--method",
            help="auto (default: relational at weight 2 for a CLIP teacher, contrastive for one "
            "tower), "
            "relational (CLIP-KD CRD: the batch's image-text similarities), contrastive "
            "(InfoNCE with a MoCo queue, learnable temperature), feature (CLIP-KD FD) or icl "
            "(CLIP-KD ICL).",
        ),
    ] = None,
    pairs: Annotated[
        str | None,
        typer.Option(
            "--pairs", help="Labelled images for templated pairs (default fashion-mnist)."
        ),
    ] = None,
    eval_pairs: EvalPairsOption = None,
    limit_pairs: LimitPairsOption = None,
    no_baseline: Annotated[
        bool,
        typer.Option("--no-baseline", help="Skip the same student trained without the teacher."),
    ] = False,
    trainer: TrainerFlags,
    data_root: DataRootOption = None,
    run: Annotated[RunFlags, Defaults(out=Path("runs/clip-student"))],
) -> None:
    """Distill a small CLIP student (default: about a quarter of the teacher) from a CLIP
    teacher, or a one-modality student from a teacher of the other modality (image → text,
    text → image), on templated or your own pairs; by default also train the same student
    without the teacher."""
    from freekd.crossmodal.config import CrossModalDistillConfig

    student_config = None
    if student is not None and Path(student).is_file():
        student_config, student = _yaml_mapping(Path(student), what="--student"), None
    values = {
        "teacher": teacher,
        "student": student_config,
        "student_arch": student,
        "method.name": method,
        "pairs": pairs,
        "eval_pairs": eval_pairs,
        "limit_pairs": limit_pairs,
        "baseline": False if no_baseline else None,
        **trainer.values(),
        "data_root": data_root,
    }
    cfg = run.load(CrossModalDistillConfig, values)
    from freekd.crossmodal.pipeline import run_crossmodal_distill

    report = run_crossmodal_distill(cfg, run.options())
    _print_crossmodal_distill(report, run.out)


def _print_crossmodal_distill(report: dict[str, Any], out: Path) -> None:
    """Teacher, student and baseline side by side: parameters, zero-shot accuracy, recall@k."""
    from rich.console import Console
    from rich.table import Table

    direction = report.get("direction", "CLIP → CLIP")
    table = Table(title=f"cross-modal distillation, {direction} ({report['student']['method']})")
    for column in ("model", "parameters", "zero-shot", "recall@1", "recall@5", "recall@10"):
        table.add_column(column, justify="left" if column == "model" else "right")
    for name in ("teacher", "student", "baseline"):
        entry = report[name]
        if entry is None:
            continue
        table.add_row(
            name,
            f"{entry['parameters']['total']:,}",
            maybe_percent(entry["zero_shot_accuracy"]),
            *(maybe_percent(entry[f"recall_at_{k}"]) for k in (1, 5, 10)),
        )
    console = Console()
    console.print(table)
    console.print(
        f"captions: {report['captions']['note']}; "
        f"recall counts {report['student']['recall_counts']}"
    )
    typer.echo(f"files: {out}/model.pt, {out}/report.json, {out}/retrieval.png")
