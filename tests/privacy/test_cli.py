"""`freekd privacy pate|dpsgd`: closed-form values on stdout, one-line errors with exit status 2."""

from __future__ import annotations

import json
import re
from pathlib import Path

import numpy as np
import pytest
from click.testing import Result
from typer.testing import CliRunner

from freekd.cli import app
from freekd.privacy import rdp

runner = CliRunner()


def invoke(*args: object) -> Result:
    return runner.invoke(app, [str(arg) for arg in args])


@pytest.fixture
def votes(tmp_path: Path) -> Path:
    counts = np.array([[240, 5, 5], [130, 100, 20], [90, 80, 80], [200, 50, 0]])
    path = tmp_path / "votes.npy"
    np.save(path, counts)
    return path


def test_pate_json_gives_both_epsilons(votes: Path, tmp_path: Path) -> None:
    result = invoke("privacy", "pate", "--votes", votes, "--sigma2", 40, "--delta", 1e-5, "--json")
    assert result.exit_code == 0, result.output
    report = json.loads(result.output)
    orders = np.asarray(report["orders"])
    independent = 4 * orders / 40.0**2
    np.testing.assert_allclose(report["data_independent_rdp"], independent)
    expected = rdp.epsilon_from_rdp(independent, orders, delta=1e-5)[0]
    assert report["data_independent_epsilon"] == pytest.approx(expected)
    assert report["epsilon"] <= report["data_independent_epsilon"]
    assert report["kind"] == "data-dependent-unsanitized"
    assert (report["answered"], report["queries"]) == (4, 4)

    mask = tmp_path / "mask.npy"
    np.save(mask, np.array([True, True, False, True]))
    confident = invoke(
        "privacy", "pate", "--votes", votes, "--sigma2", 40, "--sigma1", 150, "--threshold", 200,
        "--answered", mask, "--orders", "2,4,8,16,32", "--delta", 1e-5, "--json",
    )  # fmt: skip
    assert confident.exit_code == 0, confident.output
    report = json.loads(confident.output)
    assert report["orders"] == [2.0, 4.0, 8.0, 16.0, 32.0]
    alphas = np.asarray(report["orders"])
    np.testing.assert_allclose(
        report["data_independent_rdp"], 4 * alphas / (2 * 150.0**2) + 3 * alphas / 40.0**2
    )
    assert report["answered"] == 3
    assert "sanitized" not in report

    sanitized = invoke(
        "privacy", "pate", "--votes", votes, "--sigma2", 40, "--sigma1", 150, "--threshold", 200,
        "--answered", mask, "--delta", 1e-5, "--sanitize", "--ss-order", 8, "--seed", 1, "--json",
    )  # fmt: skip
    assert sanitized.exit_code == 0, sanitized.output
    release = json.loads(sanitized.output)["sanitized"]
    assert release["kind"] == "data-dependent-sanitized"
    assert (release["order"], release["beta"], release["sigma"]) == (8.0, 1 / 32, 10.0)
    assert release["epsilon"] > 0


def test_dpsgd_matches_opacus(tmp_path: Path) -> None:
    from opacus.accountants import RDPAccountant

    result = invoke(
        "privacy", "dpsgd", "--sample-rate", 0.004, "--noise-multiplier", 1.1,
        "--steps", 2000, "--delta", 1e-5, "--json",
    )  # fmt: skip
    assert result.exit_code == 0, result.output
    accountant = RDPAccountant()
    accountant.history = [(1.1, 0.004, 2000)]
    theirs = accountant.get_epsilon(delta=1e-5, alphas=json.loads(result.output)["orders"])
    assert json.loads(result.output)["epsilon"] == pytest.approx(theirs, rel=1e-12)
    table = invoke(
        "privacy", "dpsgd", "--sample-rate", 0.004, "--noise-multiplier", 1.1,
        "--steps", 2000, "--delta", 1e-5,
    )  # fmt: skip
    assert table.exit_code == 0
    assert "data-independent" in table.output


@pytest.mark.parametrize("noise", [1e-300, 1e8])
def test_noise_multipliers_outside_the_accounted_range_are_one_line(noise: float) -> None:
    # Opacus' analysis died with ZeroDivisionError at 1e-300 and OverflowError at 1e8; a DP-SGD
    # teacher with 1e-300 trained a whole epoch before the same traceback.
    message = f"must lie in [0.001, 1e+06], got {noise:g}"
    calculator = invoke(
        "privacy", "dpsgd", "--sample-rate", 0.01, "--noise-multiplier", noise, "--steps", 10,
        "--delta", 1e-5,
    )  # fmt: skip
    assert calculator.exit_code == 2
    assert message in calculator.output
    teacher = invoke(
        "teacher", "train", "--dataset", "digits", "--dp", "--epsilon", 3, "--set",
        f"dp.noise_multiplier={noise}", "--out", "/nonexistent/never-written",
    )  # fmt: skip
    assert teacher.exit_code == 2
    assert f"dp.noise_multiplier {message}" in teacher.output


@pytest.mark.parametrize(
    ("content", "flags", "message"),
    [
        (None, [], "does not exist"),
        (np.array([1, 2, 3]), [], "expected (N queries"),
        (np.array([[1.5, 2.0]]), [], "whole counts"),
        (np.array([[-1, 2]]), [], "whole counts"),
        (np.array([[1, 2]], dtype=object), [], "not a numeric .npy"),
        (np.array([[5, 2]]), ["--sigma1", "100"], "both --sigma1 and --threshold"),
        (np.array([[5, 2]]), ["--orders", "0.5,2"], "greater than 1"),
        (np.array([[5, 2]]), ["--delta", "2"], "--delta"),
        (np.array([[5, 2], [3, 1]]), ["--sanitize"], "same number of teachers"),
        (np.array([[5, 2]]), ["--sanitize", "--ss-order", "30", "--ss-beta", "0.1"], "lower beta"),
    ],
)
def test_bad_input_is_one_line_and_exit_two(
    tmp_path: Path, content: np.ndarray | None, flags: list[str], message: str
) -> None:
    path = tmp_path / "votes.npy"
    if content is not None:
        np.save(path, content, allow_pickle=True)
    args = ["privacy", "pate", "--votes", path, "--sigma2", 40, *flags]
    if "--delta" not in flags:
        args += ["--delta", 1e-5]
    result = invoke(*args)
    assert result.exit_code == 2
    lines = [line for line in result.output.splitlines() if line.strip()]
    assert len(lines) == 1, result.output
    assert message in lines[0]
    assert "Traceback" not in result.output


def test_teacher_train_dp_flags(tmp_path: Path) -> None:
    out = tmp_path / "t"
    result = invoke(
        "teacher", "train", "--dataset", "digits", "--arch", "tiny-cnn", "--epochs", 1,
        "--batch-size", 128, "--dp", "--epsilon", 5, "--delta", 1e-5, "--max-grad-norm", 2,
        "--out", out, "--quiet",
    )  # fmt: skip
    assert result.exit_code == 0, result.output
    assert "privacy (DP-SGD)" in result.output
    privacy = json.loads((out / "report.json").read_text())["privacy"]
    assert privacy["epsilon"] <= 5
    assert privacy["mechanisms"][0]["max_grad_norm"] == 2
    info = invoke("info", out / "model.pt")
    assert "replaced by groupnorm" in info.output
    lonely = invoke("teacher", "train", "--dataset", "digits", "--epsilon", 5, "--out", out)
    assert lonely.exit_code == 2
    assert "go with --dp" in lonely.output


@pytest.mark.parametrize("command", ["teachers", "label", "student", "run"])
def test_pate_help(command: str) -> None:
    result = invoke("pate", command, "--help")
    assert result.exit_code == 0
    assert "Usage" in result.output


def test_pate_run_from_the_canonical_digits_config(tmp_path: Path) -> None:
    config = Path(__file__).resolve().parents[2] / "configs/pate/digits_k8_gnmax.yaml"
    arguments = ["pate", "run", "--config", str(config), "--out", str(tmp_path / "run"), "--quiet"]
    result = runner.invoke(app, arguments, env={"COLUMNS": "200"})
    assert result.exit_code == 0, result.output
    report = json.loads((tmp_path / "run/student/report.json").read_text())
    assert report["trained_on"] == 150
    assert report["privacy"]["queries_answered"] == 150
    # Every printed ε names its kind, the guarantee first (labels, then student); the config
    # budgets the data-dependent ε, so the data-independent one is the only guarantee.
    text = " ".join(result.output.replace("│", " ").split())
    printed = [re.match(r"\S+ at δ = \S+, ([a-z-]+): (.*)", line) for line in text.split("ε = ")]
    assert printed[0] is None  # the text before the first ε
    assert all(printed[1:]), text  # every other ε is followed by its δ and kind
    kinds = ["data-independent", "data-dependent-sanitized", "data-dependent-unsanitized"]
    assert [match.group(1) for match in printed[1:]] == kinds * 2, text  # type: ignore[union-attr]
    meanings = [match.group(2) for match in printed[1:]]  # type: ignore[union-attr]
    for table in (meanings[:3], meanings[3:]):  # the labels', then the student's
        assert table[0].startswith("the only guarantee; bounds the answers, not where labelling")
        assert table[1].startswith("smooth-sensitivity release, publishable, not a guarantee")
        assert table[2].startswith("NOT private to publish")
    # The student's record keeps the labeler's warning beside its own note.
    privacy = report["privacy"]
    assert "not private to publish" in privacy["note"]
    assert "post-processing" in privacy["note"]
    assert "the data-independent ε is the only guarantee" in privacy["note"]
    assert [figure["kind"] for figure in privacy["epsilons"]] == kinds
    again = invoke(
        "pate", "run", "--config", config, "--out", tmp_path / "run", "--resume", "--quiet"
    )
    assert again.exit_code == 0, again.output
    resumed = json.loads((tmp_path / "run/student/report.json").read_text())["privacy"]
    assert resumed["epsilon"] == report["privacy"]["epsilon"]  # the ledger was not re-spent


def test_votes_from_a_device_are_refused_by_name() -> None:
    # /dev/zero was reported as a file that "does not exist".
    result = CliRunner().invoke(
        app, ["privacy", "pate", "--votes", "/dev/zero", "--sigma2", "40", "--delta", "1e-5"]
    )
    assert result.exit_code == 2
    assert "/dev/zero is not a regular file" in result.output


def test_a_release_order_beyond_the_accounted_ones_is_named(tmp_path: Path) -> None:
    # --ss-order 1e308 exited 2 with only "math domain error".
    votes = tmp_path / "votes.npy"
    np.save(votes, np.array([[30, 2, 0], [25, 5, 2]]))
    result = invoke(
        "privacy", "pate", "--votes", votes, "--sigma2", 40, "--sigma1", 150, "--threshold", 20,
        "--delta", 1e-5, "--sanitize", "--ss-order", 1e308,
    )  # fmt: skip
    assert result.exit_code == 2
    assert "the smooth-sensitivity order must lie in (1, 1024], got 1e+308" in result.output
