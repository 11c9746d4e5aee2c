"""The typer CLI through ``CliRunner``: help, tiny real runs, exact resume, and one-line errors.

Click ≥ 8.2 (installed here) keeps stderr apart: ``result.stdout`` and ``result.stderr`` are the
two streams, ``result.output`` is both interleaved as a terminal would show them.
"""

from __future__ import annotations

import json
import pathlib
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Annotated, Any

import pytest
import torch
import typer.main
import yaml
from click.testing import Result
from typer.testing import CliRunner

import freekd
from freekd.cli import app
from freekd.cli_options import Defaults, RunFlags, option_groups
from freekd.config import TrainerConfig, load_config, to_dict
from freekd.supervised.config import TeacherTrainConfig

runner = CliRunner()

TINY = ["--epochs", "1", "--batch-size", "64", "--device", "cpu", "--quiet"]
RUN_FILES = {"model.pt", "report.json", "config.yaml", "metrics.jsonl", "curves.png"}


@pytest.fixture(autouse=True)
def single_thread() -> Iterator[None]:
    """Tiny models on a shared 2-core box: intra-op threads only oversubscribe the cores."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def invoke(*args: object) -> Result:
    return runner.invoke(app, [str(arg) for arg in args])


def succeeded(result: Result) -> Result:
    assert result.exit_code == 0, (result.output, result.exception)
    return result


def teacher_train(out: Path, *extra: object) -> Result:
    return invoke(
        "teacher", "train", "--dataset", "digits", "--arch", "tiny-cnn", *TINY, "--out", out, *extra
    )


def distill(teacher: Path, out: Path, *extra: object, student: str = "mlp") -> Result:
    return invoke(
        "distill",
        "--teacher",
        teacher,
        "--student",
        student,
        "--dataset",
        "digits",
        "--method",
        "kd",
        *TINY,
        "--out",
        out,
        *extra,
    )


def assert_user_error(result: Result, *needles: str) -> str:
    """Exit status 2 and one ``error:`` line (on stderr) naming the problem; no traceback."""
    assert result.exit_code == 2, (result.exit_code, result.output, result.exception)
    assert isinstance(result.exception, SystemExit)
    lines = [line for line in result.output.splitlines() if line.startswith("error:")]
    assert len(lines) == 1, result.output
    assert lines[0] in result.stderr.splitlines()
    assert "Traceback" not in result.output
    for needle in needles:
        assert needle in lines[0], (needle, lines[0])
    return lines[0]


def read_jsonl(path: Path) -> list[dict[str, Any]]:
    return [json.loads(line) for line in path.read_text().splitlines()]


# help and version --------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "command",
    [[], ["teacher"], ["teacher", "train"], ["distill"], ["eval"], ["info"], ["demo"]],
    ids=lambda command: " ".join(command) or "freekd",
)
def test_help_of_every_command(command: list[str]) -> None:
    result = succeeded(invoke(*command, "--help"))

    assert "Usage:" in result.stdout
    assert "Traceback" not in result.output


def test_datafree_help_names_the_proxy_data_baselines() -> None:
    result = succeeded(invoke("datafree", "--help"))

    assert "--proxy-data" in result.stdout
    assert "animal-mnist" in result.stdout


def test_version() -> None:
    result = succeeded(invoke("--version"))

    assert result.stdout.strip() == f"freekd {freekd.__version__}"


# tiny real runs ----------------------------------------------------------------------------------


def test_teacher_train_writes_the_run_files(tmp_path: Path) -> None:
    out = tmp_path / "teacher"

    succeeded(teacher_train(out))

    assert {entry.name for entry in out.iterdir()} >= RUN_FILES
    report = json.loads((out / "report.json").read_text())
    assert 0.0 <= report["test_accuracy"] <= 1.0
    assert report["wall_seconds"] > 0
    assert report["seed"] == 0
    assert report["freekd_version"] == freekd.__version__
    expected = TeacherTrainConfig(
        dataset="digits",
        arch="tiny-cnn",
        trainer=TrainerConfig(epochs=1, batch_size=64, device="cpu"),
    )
    assert load_config(TeacherTrainConfig, out / "config.yaml") == expected
    checkpoint = torch.load(out / "model.pt", weights_only=True)
    assert checkpoint["config"] == to_dict(expected)
    lines = read_jsonl(out / "metrics.jsonl")
    assert lines[-1]["step"] == report["steps"] == 1500 // 64  # full batches only
    assert lines[-1]["eval_accuracy"] == report["test_accuracy"]
    assert (out / "curves.png").read_bytes().startswith(b"\x89PNG")


def test_set_and_config_file_take_effect(tmp_path: Path) -> None:
    overrides = tmp_path / "overrides.yaml"
    # PyYAML reads 1e-4 as a string; the loader coerces it by the field's type.
    overrides.write_text(
        "label_smoothing: 0.1\ntrainer:\n  lr: 0.2\n  weight_decay: 1e-4\n"
        "  scheduler: constant\n  epochs: 5\n"
    )
    out = tmp_path / "teacher"

    # Precedence: dataclass defaults < --config < --set < real flags (--epochs).
    succeeded(
        teacher_train(
            out, "--config", overrides, "--set", "trainer.lr=0.01", "--set", "trainer.epochs=3"
        )
    )

    saved = yaml.safe_load((out / "config.yaml").read_text())
    assert saved["label_smoothing"] == 0.1
    assert saved["trainer"]["weight_decay"] == 1e-4
    assert saved["trainer"]["lr"] == 0.01
    assert saved["trainer"]["scheduler"] == "constant"
    assert saved["trainer"]["epochs"] == 1
    # ... and they reached the training loop, not only the file.
    step_lines = [line for line in read_jsonl(out / "metrics.jsonl") if "lr" in line]
    assert step_lines
    assert all(line["lr"] == pytest.approx(0.01) for line in step_lines)


def test_distill_and_the_student_as_the_next_teacher(
    tiny_teacher_path: Path, tmp_path: Path
) -> None:
    first, second = tmp_path / "first", tmp_path / "second"

    succeeded(distill(tiny_teacher_path, first))
    succeeded(distill(first / "model.pt", second, student="tiny-cnn-nobn"))

    first_report = json.loads((first / "report.json").read_text())
    second_report = json.loads((second / "report.json").read_text())
    assert {entry.name for entry in first.iterdir()} >= RUN_FILES
    assert first_report["teacher"]["test_accuracy"] > 0.9  # the tiny digits teacher
    assert 0.0 <= first_report["student"]["test_accuracy"] <= 1.0
    assert second_report["teacher"]["test_accuracy"] == first_report["student"]["test_accuracy"]
    assert second_report["teacher"]["arch"] == "mlp"
    assert second_report["student"]["arch"] == "tiny-cnn-nobn"


def test_eval_json_matches_the_report(tiny_teacher_dir: Path) -> None:
    report = json.loads((tiny_teacher_dir / "report.json").read_text())

    result = succeeded(
        invoke(
            "eval",
            "--model",
            tiny_teacher_dir / "model.pt",
            "--dataset",
            "digits:test",
            "--device",
            "cpu",
            "--json",
        )
    )

    printed = json.loads(result.stdout)
    assert printed == {"accuracy": pytest.approx(report["test_accuracy"], abs=1e-12), "n": 297}
    assert set(printed) == {"accuracy", "n"}


def test_eval_text(tiny_teacher_path: Path) -> None:
    result = succeeded(
        invoke("eval", "--model", tiny_teacher_path, "--dataset", "digits:test", "--device", "cpu")
    )

    assert "297 images of digits:test" in result.stdout


def test_info(tiny_teacher_path: Path) -> None:
    table = succeeded(invoke("info", tiny_teacher_path)).stdout
    as_json = json.loads(succeeded(invoke("info", tiny_teacher_path, "--json")).stdout)

    for needle in ("freekd/1", "tiny-cnn", "1x8x8", "5,178", "digits"):
        assert needle in table
    assert as_json["format"] == "freekd/1"
    assert as_json["arch"] == "tiny-cnn"
    assert as_json["num_classes"] == 10
    assert as_json["input"]["shape"] == [1, 8, 8]
    assert as_json["parameters"] == 5178
    assert as_json["freekd_version"] == freekd.__version__
    assert as_json["config"]["dataset"] == "digits"


# errors: exit 2, one line, no traceback, no run folder -------------------------------------------


class Touch:
    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self) -> tuple[Any, ...]:
        return (pathlib.Path.touch, (self.marker,))


def missing_teacher(tmp: Path, teacher: Path) -> tuple[list[object], list[str]]:
    return (
        ["distill", "--teacher", tmp / "nope.pt", "--student", "mlp", "--dataset", "digits", *TINY],
        ["does not exist", "--teacher"],
    )


def teacher_not_a_checkpoint(tmp: Path, teacher: Path) -> tuple[list[object], list[str]]:
    path = tmp / "notes.pt"
    path.write_text("these are my notes, not a model\n" * 10)
    return (
        ["distill", "--teacher", path, "--student", "mlp", "--dataset", "digits", *TINY],
        ["not a readable torch file", "freekd checkpoint"],
    )


def hostile_teacher(tmp: Path, teacher: Path) -> tuple[list[object], list[str]]:
    path = tmp / "hostile.pt"
    torch.save({"model": Touch(tmp / "pwned")}, path)
    return (
        ["distill", "--teacher", path, "--student", "mlp", "--dataset", "digits", *TINY],
        ["pickled", "--trust-pickle"],
    )


def state_dict_without_arch(tmp: Path, teacher: Path) -> tuple[list[object], list[str]]:
    path = tmp / "weights.pt"
    torch.save(torch.load(teacher, weights_only=True)["state_dict"], path)
    return (
        [
            "distill",
            "--teacher",
            path,
            "--input-shape",
            "1,8,8",
            "--student",
            "mlp",
            "--dataset",
            "digits",
            *TINY,
        ],
        ["state_dict", "--arch"],
    )


def state_dict_not_fitting_arch(tmp: Path, teacher: Path) -> tuple[list[object], list[str]]:
    path = tmp / "weights.pt"
    torch.save(torch.load(teacher, weights_only=True)["state_dict"], path)
    return (
        [
            "distill",
            "--teacher",
            path,
            "--arch",
            "mlp",
            "--input-shape",
            "1,8,8",
            "--student",
            "mlp",
            "--dataset",
            "digits",
            *TINY,
        ],
        ["do not fit --arch mlp"],
    )


def unknown_dataset_teacher(tmp: Path, teacher: Path) -> tuple[list[object], list[str]]:
    return (
        ["teacher", "train", "--dataset", "digitz", "--arch", "tiny-cnn", *TINY],
        ["unknown dataset 'digitz'", "digits", "mnist", "fashion-mnist"],
    )


def unknown_dataset_distill(tmp: Path, teacher: Path) -> tuple[list[object], list[str]]:
    return (
        ["distill", "--teacher", teacher, "--student", "mlp", "--dataset", "digitz", *TINY],
        ["unknown dataset 'digitz'", "digits", "mnist", "fashion-mnist"],
    )


def unknown_arch(tmp: Path, teacher: Path) -> tuple[list[object], list[str]]:
    return (
        ["teacher", "train", "--dataset", "digits", "--arch", "tiny-cnnn", *TINY],
        ["unknown model 'tiny-cnnn'", "tiny-cnn", "mlp", "lenet5", "in --arch"],
    )


def unknown_student(tmp: Path, teacher: Path) -> tuple[list[object], list[str]]:
    return (
        ["distill", "--teacher", teacher, "--student", "mlpp", "--dataset", "digits", *TINY],
        ["unknown model 'mlpp'", "tiny-cnn", "mlp", "lenet5", "in --student"],
    )


def unknown_method(tmp: Path, teacher: Path) -> tuple[list[object], list[str]]:
    return (
        [
            "distill",
            "--teacher",
            teacher,
            "--student",
            "mlp",
            "--method",
            "kdd",
            "--dataset",
            "digits",
            *TINY,
        ],
        ["unknown method 'kdd'", "kd"],
    )


def misspelt_setting(tmp: Path, teacher: Path) -> tuple[list[object], list[str]]:
    return (
        [
            "teacher",
            "train",
            "--dataset",
            "digits",
            "--arch",
            "tiny-cnn",
            *TINY,
            "--set",
            "trainer.lrr=0.1",
        ],
        ["'lrr'", "did you mean 'lr'"],
    )


def setting_of_the_wrong_type(tmp: Path, teacher: Path) -> tuple[list[object], list[str]]:
    return (
        [
            "teacher",
            "train",
            "--dataset",
            "digits",
            "--arch",
            "tiny-cnn",
            "--quiet",
            "--device",
            "cpu",
            "--set",
            "trainer.epochs=abc",
        ],
        ["trainer.epochs", "integer", "'abc'"],
    )


def input_shape_mismatch(tmp: Path, teacher: Path) -> tuple[list[object], list[str]]:
    # The teacher was trained on 8×8 digits; Animal-MNIST (pip, every machine) has 28×28 images.
    return (
        ["distill", "--teacher", teacher, "--student", "mlp", "--dataset", "animal-mnist", *TINY],
        ["1x28x28", "1x8x8", "teacher"],
    )


def overwrite_and_resume(tmp: Path, teacher: Path) -> tuple[list[object], list[str]]:
    return (
        [
            "teacher",
            "train",
            "--dataset",
            "digits",
            "--arch",
            "tiny-cnn",
            *TINY,
            "--overwrite",
            "--resume",
        ],
        ["--overwrite", "--resume"],
    )


def resume_a_new_folder(tmp: Path, teacher: Path) -> tuple[list[object], list[str]]:
    return (
        ["teacher", "train", "--dataset", "digits", "--arch", "tiny-cnn", *TINY, "--resume"],
        ["nothing to resume"],
    )


def resume_distill_in_a_new_folder(tmp: Path, teacher: Path) -> tuple[list[object], list[str]]:
    return (
        [
            "distill",
            "--teacher",
            teacher,
            "--student",
            "mlp",
            "--dataset",
            "digits",
            *TINY,
            "--resume",
        ],
        ["nothing to resume"],
    )


ERROR_CASES = [
    missing_teacher,
    teacher_not_a_checkpoint,
    hostile_teacher,
    state_dict_without_arch,
    state_dict_not_fitting_arch,
    unknown_dataset_teacher,
    unknown_dataset_distill,
    unknown_arch,
    unknown_student,
    unknown_method,
    misspelt_setting,
    setting_of_the_wrong_type,
    input_shape_mismatch,
    overwrite_and_resume,
    resume_a_new_folder,
    resume_distill_in_a_new_folder,
]


@pytest.mark.parametrize("case", ERROR_CASES, ids=lambda case: case.__name__)
def test_user_error_before_training(
    tmp_path: Path,
    tiny_teacher_path: Path,
    case: Callable[[Path, Path], tuple[list[object], list[str]]],
) -> None:
    args, needles = case(tmp_path, tiny_teacher_path)
    out = tmp_path / "run"

    assert_user_error(invoke(*args, "--out", out), *needles)

    assert not out.exists()  # nothing is created before training can start
    assert not (tmp_path / "pwned").exists()  # the hostile pickle never ran


def eval_args(model: Path) -> list[object]:
    return ["eval", "--model", model, "--dataset", "digits:test", "--device", "cpu"]


def info_args(model: Path) -> list[object]:
    return ["info", model]


@pytest.mark.parametrize("command", [eval_args, info_args], ids=["eval", "info"])
def test_eval_and_info_refuse_what_is_no_checkpoint(
    tmp_path: Path, command: Callable[[Path], list[object]]
) -> None:
    notes = tmp_path / "notes.pt"
    notes.write_text("not a model\n")

    assert_user_error(invoke(*command(notes)), str(notes), "not a readable torch file")
    assert_user_error(invoke(*command(tmp_path / "nope.pt")), "does not exist")


def test_a_loss_that_overflows_before_any_update_blames_the_weights_not_the_rate(
    tmp_path: Path, tiny_teacher_path: Path
) -> None:
    out = tmp_path / "run"
    weights = ["--set", "method.params.kd_weight=1e308", "--set", "method.params.ce_weight=1e308"]
    result = distill(tiny_teacher_path, out, "--method", "kd", *weights)
    line = assert_user_error(result, "at the first step", "before any update", "method.params")
    assert "--lr" not in line
    assert not (out / "model.pt").exists()


@pytest.mark.parametrize("command", ["teacher", "distill"])
def test_diverged_loss_names_the_step_and_leaves_no_model(
    tmp_path: Path, tiny_teacher_path: Path, command: str
) -> None:
    out = tmp_path / "run"
    result = (
        teacher_train(out, "--lr", "1e9")
        if command == "teacher"
        else distill(tiny_teacher_path, out, "--lr", "1e9")
    )

    line = assert_user_error(result, "loss became nan", "--lr")
    assert " at step " in line
    assert not (out / "model.pt").exists()
    assert not (out / "report.json").exists()


def test_resume_in_an_empty_folder_is_refused(tmp_path: Path) -> None:
    out = tmp_path / "run"
    out.mkdir()

    assert_user_error(teacher_train(out, "--resume"), str(out), "nothing to resume")
    assert not any(out.iterdir())


def test_existing_output_folder_needs_overwrite_or_resume(tmp_path: Path) -> None:
    out = tmp_path / "run"
    out.mkdir()
    (out / "notes.txt").write_text("someone else's file\n")

    assert_user_error(teacher_train(out), str(out), "--overwrite", "--resume")
    assert sorted(entry.name for entry in out.iterdir()) == ["notes.txt"]
    assert_user_error(teacher_train(out, "--resume"), "nothing to resume")

    succeeded(teacher_train(out, "--overwrite"))
    assert {entry.name for entry in out.iterdir()} >= RUN_FILES
    assert (out / "notes.txt").exists()  # --overwrite replaces freekd's files only

    assert_user_error(teacher_train(out), "already exists")
    before = torch.load(out / "model.pt", weights_only=True)["state_dict"]
    succeeded(teacher_train(out, "--overwrite"))  # the same seed gives the same run
    after = torch.load(out / "model.pt", weights_only=True)["state_dict"]
    assert all(torch.equal(after[key], value) for key, value in before.items())


def test_overwrite_refuses_to_delete_the_teacher_it_reads(tmp_path: Path) -> None:
    """``--teacher run/model.pt --out run --overwrite`` replaced the teacher with its student."""
    out = tmp_path / "run"
    succeeded(teacher_train(out))
    before = (out / "model.pt").read_bytes()

    assert_user_error(distill(out / "model.pt", out, "--overwrite"), "would delete it", "--out")
    assert (out / "model.pt").read_bytes() == before
    (tmp_path / "link.pt").symlink_to(out / "model.pt")  # the same file by another name
    assert_user_error(distill(tmp_path / "link.pt", out, "--overwrite"), "would delete it")
    assert (out / "model.pt").read_bytes() == before


# resume ------------------------------------------------------------------------------------------


def test_resume_gives_the_run_of_one_uninterrupted_command(tmp_path: Path) -> None:
    constant = ["--set", "trainer.scheduler=constant"]
    resumed, straight = tmp_path / "resumed", tmp_path / "straight"

    succeeded(teacher_train(resumed, *constant))  # --epochs 1
    config_after_one_epoch = (resumed / "config.yaml").read_text()
    # A resume with another learning rate is refused and leaves the run as it was ...
    assert_user_error(
        teacher_train(resumed, *constant, "--resume", "--epochs", "2", "--lr", "0.1"),
        "--resume",
        "trainer.lr",
    )
    assert (resumed / "config.yaml").read_text() == config_after_one_epoch
    # ... so the right resume still works.
    succeeded(teacher_train(resumed, *constant, "--resume", "--epochs", "2"))
    succeeded(teacher_train(straight, *constant, "--epochs", "2"))

    resumed_weights = torch.load(resumed / "model.pt", weights_only=True)["state_dict"]
    straight_weights = torch.load(straight / "model.pt", weights_only=True)["state_dict"]
    assert list(resumed_weights) == list(straight_weights)
    for key, value in straight_weights.items():
        assert torch.equal(resumed_weights[key], value), key

    def without_timing(path: Path) -> list[dict[str, Any]]:
        return [
            {k: v for k, v in line.items() if k not in ("steps_per_second", "process_cpu_seconds")}
            for line in read_jsonl(path)
        ]

    resumed_lines = without_timing(resumed / "metrics.jsonl")
    assert resumed_lines == without_timing(straight / "metrics.jsonl")
    assert [line["step"] for line in resumed_lines] == [23, 23, 46, 46]
    assert (resumed / "config.yaml").read_text() == (straight / "config.yaml").read_text()
    resumed_report = json.loads((resumed / "report.json").read_text())
    straight_report = json.loads((straight / "report.json").read_text())
    assert resumed_report["steps"] == straight_report["steps"] == 46
    assert resumed_report["test_accuracy"] == straight_report["test_accuracy"]


# option groups (freekd/cli_options.py) ------------------------------------------------------------


def _params(*command: str) -> list[Any]:
    group: Any = typer.main.get_command(app)
    for name in command:
        group = group.commands[name]
    return list(group.params)


def _option_names(*command: str) -> list[str]:
    return [option for param in _params(*command) for option in param.opts]


RUN_FLAGS = ["--config", "--trust-code", "--set", "--out", "--overwrite", "--resume", "--quiet"]
TRAINER_FLAGS = ["--epochs", "--batch-size", "--lr", "--seed", "--device", "--deterministic"]


@pytest.mark.parametrize(
    "command",
    [
        ["teacher", "train"],
        ["distill"],
        ["datafree"],
        ["pate", "teachers"],
        ["pate", "student"],
        ["crossmodal", "teacher"],
        ["crossmodal", "distill"],
    ],
    ids=" ".join,
)
def test_training_commands_share_the_run_and_trainer_flags_in_one_order(
    command: list[str],
) -> None:
    names = _option_names(*command)

    start = names.index("--config")
    assert names[start : start + len(RUN_FLAGS)] == RUN_FLAGS
    start = names.index("--epochs")
    assert names[start : start + len(TRAINER_FLAGS)] == TRAINER_FLAGS


def test_a_command_gives_a_group_its_own_defaults_and_help() -> None:
    teachers = {param.name: param for param in _params("pate", "teachers")}
    label = {param.name: param for param in _params("pate", "label")}
    student = {param.name: param for param in _params("pate", "student")}

    assert label["resume"].help == "Continue the ledger in --out (nothing re-spent)."
    assert student["resume"].help == "Continue the interrupted run in --out."
    # Not runs/pate, the folder `pate run` writes its three stages into.
    assert teachers["out"].default == Path("runs/pate-teachers")
    assert label["out"].default == Path("runs/pate-labels")
    assert student["out"].default == Path("runs/pate-student")


def test_an_option_group_refuses_an_unknown_option_name() -> None:
    def command(*, run: Annotated[RunFlags, Defaults(output="x")]) -> None: ...

    with pytest.raises(TypeError, match="RunFlags has no options"):
        option_groups(command)


def test_without_a_terminal_progress_is_one_whole_line_per_epoch(tmp_path: Path) -> None:
    # A bar written to a log file used to end as one line cut to 80 columns ("11… 0:… 0:…").
    result = invoke("teacher", "train", "--dataset", "digits", "--arch", "tiny-cnn",
                    "--epochs", "2", "--batch-size", "64", "--device", "cpu",
                    "--out", tmp_path / "t")  # fmt: skip
    assert result.exit_code == 0, result.output
    lines = [line for line in result.stderr.splitlines() if "teacher tiny-cnn: epoch" in line]
    assert lines[0].endswith("starting")  # a line from the first second, then one per epoch
    assert [line.split(", ")[0] for line in lines] == [
        "teacher tiny-cnn: epoch 1/2",
        "teacher tiny-cnn: epoch 1/2",
        "teacher tiny-cnn: epoch 2/2",
    ]
    assert all("step" in line and "elapsed" in line and "…" not in line for line in lines)
    assert "eval acc" in lines[-1]
    resumed = invoke("teacher", "train", "--dataset", "digits", "--arch", "tiny-cnn",
                     "--epochs", "3", "--batch-size", "64", "--device", "cpu",
                     "--out", tmp_path / "t", "--resume")  # fmt: skip
    assert resumed.exit_code == 0, resumed.output
    first = next(line for line in resumed.stderr.splitlines() if "teacher tiny-cnn: epoch" in line)
    # It named epoch 2/3, the one finished before the stop, not the one the run goes on with.
    assert first.startswith("teacher tiny-cnn: epoch 3/3, ")
    assert first.endswith(", step 46/69, 0:00 elapsed, resuming")


@pytest.mark.parametrize(
    ("budget", "values"),
    [
        ("90s", {"budget_minutes": 1.5}),
        ("cpu:30s", {"budget_cpu_minutes": 0.5}),
        ("15m", {"budget_minutes": 15.0}),
        ("1.5h", {"budget_minutes": 90.0}),
        ("200000", {"budget_images": 200000}),
    ],
)
def test_budgets_in_seconds_minutes_hours_and_images(budget: str, values: dict[str, Any]) -> None:
    from freekd.cli_options import _budget_values

    assert _budget_values(budget) == values  # "20s" used to be refused


def test_plain_progress_prints_names_as_they_are() -> None:
    # A name holding rich markup ("[/x]") raised MarkupError and killed the run; "[b]" vanished.
    import io
    from types import SimpleNamespace

    from rich.console import Console

    from freekd.train.callbacks import Progress

    stream = io.StringIO()
    progress = Progress(description="distill kd → data[b] [/x]")
    progress._plain = Console(file=stream, force_terminal=False)
    trainer = SimpleNamespace(config=SimpleNamespace(epochs=2), total_steps=10)
    state = SimpleNamespace(epoch=0, step=5, metrics={})
    progress._plain_line(trainer, state)  # type: ignore[arg-type]
    assert stream.getvalue().startswith("distill kd → data[b] [/x]: epoch 1/2, step 5/10")


def test_progress_shows_the_mean_loss_since_it_last_drew() -> None:
    # One step's loss (the last) was shown, where metrics.jsonl logs the mean since its line.
    import io
    import time
    from types import SimpleNamespace

    import torch
    from rich.console import Console

    from freekd.train.callbacks import Progress

    stream = io.StringIO()
    progress = Progress(description="kd")
    progress._plain = Console(file=stream, force_terminal=False)
    progress._last_refresh = time.perf_counter()  # as on_fit_start: no line a minute is due
    trainer = SimpleNamespace(config=SimpleNamespace(epochs=1), total_steps=10)
    state = SimpleNamespace(epoch=0, step=0, metrics={}, epoch_finished=False)
    # bfloat16 losses (autocast, unlabelled batches) are summed in float32: in bfloat16 a sum
    # of 3,000 losses of 1 stalls at 256.
    bfloat16 = SimpleNamespace(loss=torch.tensor(1.0, dtype=torch.bfloat16))
    for _ in range(3000):
        progress.on_step_end(trainer, state, bfloat16)  # type: ignore[arg-type]
    progress._plain_line(trainer, state)  # type: ignore[arg-type]
    for loss in (1.0, 2.0, 6.0):
        state.step += 1
        progress.on_step_end(trainer, state, SimpleNamespace(loss=torch.tensor(loss)))  # type: ignore[arg-type]
    progress._plain_line(trainer, state)  # type: ignore[arg-type]
    progress._plain_line(trainer, state)  # type: ignore[arg-type]  # no step since: kept
    lines = stream.getvalue().splitlines()
    shown = [line.split(", ")[1] for line in lines]
    assert shown == ["loss 1.0000", "loss 3.0000", "loss 3.0000"]


def test_regnets_build_though_they_cannot_be_sized_on_the_meta_device() -> None:
    # torchvision's RegNets read tensor values while they build; the size check skips them.
    from freekd.models import build_model

    model = build_model("torchvision:regnet_x_400mf", num_classes=10, input_shape=(3, 32, 32))
    assert sum(p.numel() for p in model.parameters()) == 5_098_986
