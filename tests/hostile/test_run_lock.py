"""One writer per run folder (issue 17, §2 and the stale temporaries of §4).

Two runs on one ``--out`` used to both exit 0 with an interleaved ``metrics.jsonl``, and two
``pate label --resume`` runs double-spent one ledger. Every command that writes a run folder now
holds ``.freekd.lock`` (:mod:`freekd.runlock`) for the whole run. A holder is a real process
here: a tiny ``python -c`` that takes the lock and waits for its stdin to close (deterministic,
no timing), or a real ``freekd teacher train``; the refused run is this process, via CliRunner.
"""

from __future__ import annotations

import fcntl
import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
import torch
from typer.testing import CliRunner, Result

from freekd.cli import app
from freekd.errors import FreekdError
from freekd.pate.config import PateTeachersConfig
from freekd.pate.teachers import run_pate_teachers
from freekd.runlock import LOCK_FILE, run_lock
from freekd.runs import RunOptions
from tests.conftest import tiny_trainer

ROOT = Path(__file__).resolve().parents[2]
runner = CliRunner()
TINY = ["--epochs", "1", "--batch-size", "64", "--device", "cpu", "--quiet"]
HOLD = (
    "import sys\n"
    "from pathlib import Path\n"
    "from freekd.runlock import run_lock\n"
    "with run_lock(Path(sys.argv[1])):\n"
    "    print('locked', flush=True)\n"
    "    sys.stdin.read()\n"
)


@pytest.fixture(autouse=True)
def single_thread() -> Iterator[None]:
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def child_env() -> dict[str, str]:
    return {**os.environ, "PYTHONPATH": str(ROOT), "OMP_NUM_THREADS": "1", "RANK": "0"}


def hold(folder: Path) -> subprocess.Popen[str]:
    """A live process holding ``folder``'s lock until its stdin is closed."""
    holder = subprocess.Popen(
        [sys.executable, "-c", HOLD, str(folder)],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        env=child_env(),
        text=True,
    )
    assert holder.stdout is not None
    assert holder.stdout.readline().strip() == "locked"
    return holder


def release(holder: subprocess.Popen[str]) -> None:
    assert holder.stdin is not None
    holder.stdin.close()
    assert holder.wait(timeout=60) == 0


def invoke(*args: object) -> Result:
    return runner.invoke(app, [str(arg) for arg in args])


def teacher_train(out: Path, *extra: object) -> Result:
    return invoke(
        "teacher", "train", "--dataset", "digits", "--arch", "tiny-cnn", *TINY, "--out", out, *extra
    )


def refused_line(result: Result) -> str:
    """Exit 2, exactly one non-empty stderr line, starting with ``error:``; no traceback."""
    assert result.exit_code == 2, (result.exit_code, result.output, result.exception)
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    assert len(lines) == 1, result.stderr
    assert lines[0].startswith("error:"), result.stderr
    assert "Traceback" not in result.output
    return lines[0]


def snapshot(folder: Path) -> dict[str, tuple[bytes, int]]:
    return {
        str(path.relative_to(folder)): (path.read_bytes(), path.stat().st_mtime_ns)
        for path in sorted(folder.rglob("*"))
        if path.is_file()
    }


def holds_lock(folder: Path) -> bool:
    """Whether someone holds ``folder``'s lock (a second open() conflicts even in-process)."""
    try:
        descriptor = os.open(folder / LOCK_FILE, os.O_RDWR)
    except FileNotFoundError:
        return False
    try:
        fcntl.flock(descriptor, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        return True
    finally:
        os.close(descriptor)
    return False


# Every command that writes a run folder is refused on a locked one, before it reads its inputs
# (the paths below need not exist: the lock comes first).
MISSING = "no-such-model.pt"
COMMANDS = {
    "teacher train": ["teacher", "train", "--dataset", "digits", "--arch", "tiny-cnn"],
    "distill": ["distill", "--teacher", MISSING, "--student", "mlp", "--dataset", "digits"],
    "datafree": ["datafree", "--teacher", MISSING],
    "pate teachers": ["pate", "teachers", "--dataset", "digits", "--arch", "tiny-cnn"],
    "pate label": ["pate", "label", "--teachers", MISSING],
    "pate student": ["pate", "student", "--labels", "no-such-labels"],
    "pate run": ["pate", "run", "--config", str(ROOT / "configs/pate/digits_k8_gnmax.yaml")],
    "audit": ["audit", "--model", MISSING],
    "audit pipeline": ["audit", "pipeline"],
    "crossmodal teacher": ["crossmodal", "teacher", "--pairs", "no-such-pairs"],
    "crossmodal distill": ["crossmodal", "distill", "--teacher", MISSING],
    "demo": ["demo"],
}


@pytest.fixture(scope="module")
def locked_folder(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    folder = tmp_path_factory.mktemp("locked") / "run"
    holder = hold(folder)
    yield folder
    release(holder)


@pytest.mark.parametrize("command", COMMANDS.values(), ids=COMMANDS.keys())
def test_every_run_command_is_refused_on_a_locked_folder(
    locked_folder: Path, command: list[str]
) -> None:
    before = snapshot(locked_folder)
    holder = json.loads((locked_folder / LOCK_FILE).read_text())
    line = refused_line(invoke(*command, "--out", locked_folder))
    assert line == (
        f"error: run folder {locked_folder} is in use by freekd process {holder['pid']} "
        f"(started {holder['started']}); wait for it to finish or choose another --out"
    )
    assert snapshot(locked_folder) == before  # touched nothing, the lock file included


def test_a_refused_run_touches_nothing_and_the_holder_finishes(tmp_path: Path) -> None:
    out = tmp_path / "run"
    holder = hold(out)
    refused_line(teacher_train(out))
    assert [p.name for p in out.iterdir()] == [LOCK_FILE]
    release(holder)
    assert not out.exists()  # the holder made the folder, wrote nothing: it is gone again
    assert teacher_train(out).exit_code == 0
    assert LOCK_FILE not in {p.name for p in out.iterdir()}  # a finished run leaves no lock


def test_two_concurrent_teacher_runs_on_one_folder(tmp_path: Path) -> None:
    """A real `freekd teacher train` holds the folder; a second one is refused at once."""
    out = tmp_path / "run"
    first = subprocess.Popen(
        [sys.executable, "-m", "freekd", "teacher", "train", "--dataset", "digits", "--arch",
         "tiny-cnn", "--epochs", "1", "--batch-size", "64", "--device", "cpu", "--quiet",
         "--out", str(out)],
        env=child_env(), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )  # fmt: skip
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline and first.poll() is None:
        try:
            if json.loads((out / LOCK_FILE).read_text())["pid"] == first.pid:
                break
        except (FileNotFoundError, json.JSONDecodeError, KeyError):
            pass
        time.sleep(0.01)
    assert first.poll() is None, "the first run ended before the second could start"
    line = refused_line(teacher_train(out))
    assert f"is in use by freekd process {first.pid} " in line
    stdout, stderr = first.communicate(timeout=300)
    assert first.returncode == 0, stderr
    rows = [json.loads(row) for row in (out / "metrics.jsonl").read_text().splitlines()]
    for kind in ("loss", "eval_accuracy"):  # step lines, epoch lines: one writer, in order
        steps = [row["step"] for row in rows if kind in row]
        assert steps, kind
        assert steps == sorted(set(steps)), (kind, steps)
    assert [row["epoch"] for row in rows if "eval_accuracy" in row] == [1]
    assert not (out / LOCK_FILE).exists()


def test_a_killed_runs_lock_and_temporaries_are_taken_over(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    out = tmp_path / "run"
    holder = hold(out)
    holder.send_signal(signal.SIGKILL)
    holder.wait(timeout=60)
    assert json.loads((out / LOCK_FILE).read_text())["pid"] == holder.pid  # left behind
    # What a writer killed inside atomic_write leaves (checkpoint.pt's, a shadow folder's).
    (out / ".checkpoint.pt.a1b2c3d4.tmp").write_bytes(b"partial")
    (out / "shadows").mkdir()
    (out / "shadows" / ".shadows.pt.k2j_9x0a.tmp").write_bytes(b"partial")
    (out / "notes.tmp").write_text("a user's file: kept")
    result = teacher_train(out, "--overwrite")
    assert result.exit_code == 0, (result.output, result.exception)
    names = {p.name for p in out.rglob("*")}
    assert ".checkpoint.pt.a1b2c3d4.tmp" not in names
    assert ".shadows.pt.k2j_9x0a.tmp" not in names
    assert {"notes.tmp", "model.pt"} <= names
    assert LOCK_FILE not in names
    taken = [r.getMessage() for r in caplog.records if "taking over" in r.getMessage()]
    assert len(taken) == 1, taken
    assert f"freekd process {holder.pid} " in taken[0], taken


def test_leftover_temporaries_are_removed_on_resume(tmp_path: Path) -> None:
    out = tmp_path / "run"
    assert teacher_train(out).exit_code == 0
    # what a run killed inside atomic_write leaves: its lock file and a temporary
    (out / LOCK_FILE).write_text(json.dumps({"pid": 999999999, "started": "earlier"}))
    (out / ".checkpoint.pt.a1b2c3d4.tmp").write_bytes(b"partial")
    result = teacher_train(out, "--resume", "--epochs", "2")
    assert result.exit_code == 0, (result.output, result.exception)
    assert not (out / ".checkpoint.pt.a1b2c3d4.tmp").exists()
    assert not (out / LOCK_FILE).exists()


def test_other_programs_temporaries_are_never_removed(tmp_path: Path) -> None:
    """A folder without a killed run's lock file may not be freekd's (``--out .``): untouched."""
    out = tmp_path / "home"
    (out / "project" / "sub").mkdir(parents=True)
    others = [
        out / ".notes.draft.tmp",
        out / ".report.json.abcd1234.tmp",
        out / "project" / ".model.pt.abcd1234.tmp",
        out / "project" / "sub" / ".deep.a.tmp",
    ]
    for path in others:
        path.write_text("someone else's")
    refused = teacher_train(out)  # not empty: refused
    assert refused.exit_code == 2
    assert all(path.exists() for path in others)
    assert teacher_train(out, "--overwrite").exit_code == 0
    assert all(path.exists() for path in others)


def test_concurrent_pate_label_resumes_run_one_at_a_time(tmp_path: Path) -> None:
    """The second `pate label --resume` is refused by the lock; the ledger has no duplicate."""
    teachers = tmp_path / "teachers"
    config = PateTeachersConfig(
        dataset="digits", arch="tiny-cnn", teachers=2, trainer=tiny_trainer(epochs=1)
    )
    run_pate_teachers(config, RunOptions(teachers, quiet=True))
    labels = tmp_path / "labels"
    label = [
        "pate", "label", "--teachers", teachers / "teachers.pt", "--queries-from", "digits:test",
        "--aggregator", "gnmax",
        "--sigma", "1", "--epsilon", "10000", "--set", "holdout=97", "--quiet", "--out", labels,
    ]  # fmt: skip
    assert invoke(*label, "--queries", "20").exit_code == 0
    ledger = labels / "ledger.jsonl"
    before = ledger.read_bytes()
    holder = hold(labels)  # a first resumed run, still labelling
    line = refused_line(invoke(*label, "--queries", "40", "--resume"))
    assert "is in use by freekd process" in line
    assert ledger.read_bytes() == before
    release(holder)
    result = invoke(*label, "--queries", "40", "--resume")
    assert result.exit_code == 0, (result.output, result.exception)
    queries = [json.loads(row)["query"] for row in ledger.read_text().splitlines()[1:]]
    assert sorted(queries) == list(range(40))


def test_the_lock_is_shared_by_nested_uses_and_released_on_error(tmp_path: Path) -> None:
    out = tmp_path / "a" / "b"

    def failing_run() -> None:
        with run_lock(out):
            with run_lock(out):  # a nested run on the same folder, in this process
                assert holds_lock(out)
            assert holds_lock(out)  # the outer use still holds it
            raise RuntimeError("the run failed")

    with pytest.raises(RuntimeError, match="the run failed"):
        failing_run()
    assert not (tmp_path / "a").exists()  # created for the lock, nothing written: removed
    with run_lock(out):
        (out / "model.pt").write_bytes(b"x")
    assert [p.name for p in out.iterdir()] == ["model.pt"]


def test_a_torchrun_rank_other_than_0_takes_no_lock(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("RANK", "1")
    with run_lock(tmp_path / "run"):
        assert not (tmp_path / "run").exists()


def test_a_symlinked_lock_file_is_refused(tmp_path: Path) -> None:
    out = tmp_path / "run"
    out.mkdir()
    target = tmp_path / "precious.txt"
    target.write_text("keep")
    (out / LOCK_FILE).symlink_to(target)
    with pytest.raises(FreekdError, match="is a symbolic link"), run_lock(out):
        pass
    assert target.read_text() == "keep"


def test_a_file_is_not_a_run_folder(tmp_path: Path) -> None:
    path = tmp_path / "file"
    path.write_text("x")
    line = refused_line(teacher_train(path))
    assert "is a file" in line
    assert path.read_text() == "x"
