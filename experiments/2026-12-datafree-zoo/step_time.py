"""Where a default zskt run's time goes, per student step (session 34; a diagnosis, it chooses
nothing), written to ``step-time.json``.

For each zoo teacher named, on one thread, CPU time (``time.process_time``) of the parts of a
default run at its sizes (256 images, freekd's own ``zskt`` synthesizer with its defaults, the
default student ``lenet5-half``), each timed ``--repeats`` times after one warm-up call, median
over repeats:

- ``generator_draw``: ``ZSKT.sample`` (a batch for the student), once per student step;
- ``teacher_labels``: the teacher's forward on it (no gradient), once per student step;
- ``student_step``: the student's forward, KL to the teacher at T = 1, backward and SGD step
  (what ``kd`` does, without the trainer's bookkeeping);
- ``generator_round``: ``ZSKT.synthesize`` (one generator step with the smoothness prior), once
  per ``synthesize_every`` = 10 student steps.

``per_student_step`` adds the first three and a tenth of the round, and ``student_share`` is
the student step's share of it. The weights are freshly initialized, which costs the same
arithmetic as trained ones.

    PYTHONPATH=. python experiments/2026-12-datafree-zoo/step_time.py \\
        --teachers shallow-maxpool shallow-avgpool wide-shallow wide-maxpool
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from collections.abc import Callable
from pathlib import Path

import torch
import torch.nn.functional as F

HERE = Path(__file__).parent
sys.path.insert(0, str(HERE))
from border_blur import zoo_teacher  # noqa: E402

from freekd.datafree.synthesizers import SYNTHESIZERS  # noqa: E402
from freekd.io import atomic_write_json  # noqa: E402
from freekd.models import build_model  # noqa: E402

OUT = HERE / "step-time.json"
BATCH = 256
EVERY = 10


def cpu_ms(call: Callable[[], object], repeats: int) -> float:
    call()  # warm-up
    times = []
    for _ in range(repeats):
        start = time.process_time()
        call()
        times.append((time.process_time() - start) * 1000)
    return statistics.median(times)


def measure(name: str, repeats: int) -> dict[str, float]:
    torch.manual_seed(0)
    teacher = zoo_teacher(name).eval()
    synthesizer = SYNTHESIZERS.get("zskt")(
        image_shape=teacher.input_shape,
        num_classes=teacher.num_classes,
        rng=torch.Generator().manual_seed(0),
        device=torch.device("cpu"),
        batch_size=BATCH,
    )
    student = build_model("lenet5-half", num_classes=10, input_shape=teacher.input_shape)
    optimizer = torch.optim.SGD(student.parameters(), lr=0.01, momentum=0.9)
    synthesizer.synthesize(teacher, student)  # sets the teacher's pixel statistics
    images = synthesizer.sample(BATCH)
    with torch.no_grad():
        targets = teacher(images)

    def draw() -> None:
        synthesizer.sample(BATCH)

    def label() -> None:
        with torch.no_grad():
            teacher(images)

    def student_step() -> None:
        optimizer.zero_grad()
        loss = F.kl_div(F.log_softmax(student(images), 1), F.log_softmax(targets, 1),
                        log_target=True, reduction="batchmean")  # fmt: skip
        loss.backward()
        optimizer.step()

    def generator_round() -> None:
        synthesizer.synthesize(teacher, student)

    row = {
        "generator_draw": cpu_ms(draw, repeats),
        "teacher_labels": cpu_ms(label, repeats),
        "student_step": cpu_ms(student_step, repeats),
        "generator_round": cpu_ms(generator_round, repeats),
    }
    per_step = (
        row["generator_draw"]
        + row["teacher_labels"]
        + row["student_step"]
        + row["generator_round"] / EVERY
    )
    row["per_student_step"] = per_step
    row["student_share"] = row["student_step"] / per_step
    return {k: round(v, 3) for k, v in row.items()}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--teachers", nargs="+", required=True)
    parser.add_argument("--repeats", type=int, default=7)
    parser.add_argument("--out", type=Path, default=OUT)
    args = parser.parse_args()
    torch.set_num_threads(1)
    result = {
        "what": "CPU milliseconds per part of a default zskt run (256 images, one thread)",
        "command": "python experiments/2026-12-datafree-zoo/step_time.py " + " ".join(sys.argv[1:]),
        "torch": torch.__version__,
        "teachers": {name: measure(name, args.repeats) for name in args.teachers},
    }
    atomic_write_json(args.out, result)
    for name, row in result["teachers"].items():
        print(name, row)


if __name__ == "__main__":
    main()
