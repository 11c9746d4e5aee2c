"""Bad files: one ``error:`` line, exit status 2, nothing written (issue 17, §4, the files half).

Every file freekd reads is made hostile here: ``model.pt`` metadata of the wrong type, weights
with bytes flipped (caught by the stored SHA-256), ``teachers.pt``, CLIP and tower files, vote
arrays, captions files (rows without a caption, paths that leave the pairs folder), resume
checkpoints of another run, datasets, YAML configs and the privacy ledger. The files are small
and made in ``tmp_path`` from the shared fixtures; no row trains anything, so the table runs in
seconds once the fixtures exist.
"""

from __future__ import annotations

import copy
import json
import os
import random
import shutil
import struct
import zipfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
from PIL import Image
from typer.testing import CliRunner, Result

from freekd.checkpoint import CHECKSUM_KEY, load_model, weights_checksum
from freekd.cli import app
from freekd.crossmodal import ClipModel, save_clip
from freekd.data import load_dataset
from freekd.errors import FreekdError
from freekd.pate.config import PateTeachersConfig
from freekd.pate.teachers import run_pate_teachers
from freekd.runs import RunOptions
from freekd.supervised.config import TeacherTrainConfig
from freekd.supervised.pipeline import run_teacher_train
from tests.conftest import tiny_trainer
from tests.hostile.checks import assert_one_line_error

TINY_CLIP: dict[str, Any] = {
    "embed_dim": 16,
    "vision_cfg": {"image_size": 8, "layers": 1, "width": 16, "patch_size": 4, "head_width": 8},
    "text_cfg": {"context_length": 8, "vocab_size": 49408, "width": 16, "heads": 2, "layers": 1},
}


def invoke(*arguments: object) -> Result:
    return CliRunner().invoke(app, [str(a) for a in arguments])


def flip_tensor_bytes(path: Path, count: int = 2000, seed: int = 0) -> None:
    """XOR ``count`` bytes inside the tensor storages of a torch zip file (``archive/data/*``),
    as disk or transfer corruption would; the pickled metadata stays readable."""
    with zipfile.ZipFile(path) as archive:
        entries = [i for i in archive.infolist() if "/data/" in i.filename and i.file_size]
    raw = bytearray(path.read_bytes())
    offsets: list[int] = []
    for entry in entries:
        start = entry.header_offset
        name_length, extra_length = struct.unpack("<HH", raw[start + 26 : start + 30])
        data = start + 30 + name_length + extra_length
        offsets += range(data, data + entry.file_size)
    for offset in random.Random(seed).sample(offsets, min(count, len(offsets))):
        raw[offset] ^= 0xFF
    path.write_bytes(bytes(raw))


def edited(source: Path, target: Path, edit: Callable[[dict[str, Any]], object]) -> Path:
    """A copy of the torch file ``source`` with ``edit`` applied to its mapping."""
    data = torch.load(source, map_location="cpu", weights_only=True)
    edit(data)
    torch.save(data, target)
    return target


# model.pt -------------------------------------------------------------------------------------


def _first_weight(data: dict[str, Any]) -> str:
    return next(iter(data["state_dict"]))


def _nan_without_checksum(data: dict[str, Any]) -> None:
    data.pop(CHECKSUM_KEY)
    data["state_dict"][_first_weight(data)].fill_(float("nan"))


MODEL_EDITS: dict[str, tuple[Callable[[dict[str, Any]], object], str]] = {
    "num_classes text": (
        lambda d: d.update(num_classes="ten"),
        "num_classes is 'ten', expected a positive integer",
    ),
    "num_classes float": (lambda d: d.update(num_classes=10.5), "num_classes is 10.5"),
    "num_classes bool": (lambda d: d.update(num_classes=True), "num_classes is True"),
    "input shape text": (
        lambda d: d["input"].update(shape="abc"),
        "input.shape is 'abc', expected [C, H, W] of positive integers",
    ),
    "input not a mapping": (lambda d: d.update(input=[1, 2]), "input is [1, 2]"),
    "input without mean": (lambda d: d["input"].pop("mean"), "input.mean is missing"),
    "mean of wrong length": (lambda d: d["input"].update(mean=[0.1, 0.2]), "input.mean is"),
    "mean not numbers": (lambda d: d["input"].update(mean=["a"]), "input.mean is ['a']"),
    "std zero": (lambda d: d["input"].update(std=[0.0]), "input.std is [0.0]"),
    "arch not a name": (lambda d: d.update(arch=5), "arch is 5"),
    "arch_kwargs a list": (lambda d: d.update(arch_kwargs=[1]), "arch_kwargs is [1]"),
    "state_dict value not a tensor": (
        lambda d: d["state_dict"].update({_first_weight(d): "x"}),
        "is 'x', expected a tensor",
    ),
    "state_dict a list": (lambda d: d.update(state_dict=[1]), "state_dict is [1]"),
    "config a list": (lambda d: d.update(config=[1]), "config is [1]"),
    "privacy text": (lambda d: d.update(privacy="x"), "privacy is 'x'"),
    "privacy epsilon text": (
        lambda d: d.update(privacy={"epsilon": "1", "delta": 1e-5}),
        "privacy.epsilon is '1'",
    ),
    "batchnorm_replacement number": (
        lambda d: d.update(batchnorm_replacement=3),
        "batchnorm_replacement is 3",
    ),
    "checksum malformed": (lambda d: d.update({CHECKSUM_KEY: 7}), "weights_sha256 is 7"),
    "weights changed after saving": (
        lambda d: d["state_dict"][_first_weight(d)].add_(1.0),
        "do not match their checksum: the file is corrupt; re-download or retrain it",
    ),
    "NaN weights, no checksum": (_nan_without_checksum, "hold NaN"),
    "missing state_dict": (lambda d: d.pop("state_dict"), "missing state_dict"),
}


@pytest.mark.parametrize("command", ["eval", "info", "distill"])
@pytest.mark.parametrize("case", list(MODEL_EDITS))
def test_damaged_model_file_fails_in_one_line(
    tiny_teacher_path: Path, tmp_path: Path, case: str, command: str
) -> None:
    edit, needle = MODEL_EDITS[case]
    model = edited(tiny_teacher_path, tmp_path / "model.pt", edit)
    out = tmp_path / "run"
    arguments = {
        "eval": ["eval", "--model", model, "--dataset", "digits:test", "--device", "cpu"],
        "info": ["info", model],
        "distill": [
            "distill",
            "--teacher",
            model,
            "--dataset",
            "digits",
            "--epochs",
            "1",
            "--device",
            "cpu",
            "--quiet",
            "--out",
            out,
        ],  # fmt: skip
    }[command]
    assert_one_line_error(invoke(*arguments), out, needle)


def test_flipped_weight_bytes_are_caught_by_the_checksum(
    tiny_teacher_path: Path, tmp_path: Path
) -> None:
    """2,000 bytes flipped inside the tensors: the file still unpickles, the checksum refuses it."""
    corrupt = tmp_path / "model.pt"
    shutil.copy(tiny_teacher_path, corrupt)
    flip_tensor_bytes(corrupt)
    assert isinstance(torch.load(corrupt, weights_only=True)["state_dict"], dict)  # loads
    message = "the weights in {} do not match their checksum: the file is corrupt"
    for arguments in (
        ["eval", "--model", corrupt, "--dataset", "digits:test", "--device", "cpu"],
        ["info", corrupt],
        ["audit", "--model", corrupt, "--members", "digits:train", "--non-members",
         "digits:test", "--quiet", "--out", tmp_path / "audit"],
    ):  # fmt: skip
        result = invoke(*arguments)
        line = assert_one_line_error(result, tmp_path / "audit", "do not match their checksum")
        assert message.format(corrupt) in line or "corrupt" in line


def test_info_says_whether_the_checksum_verified(tiny_teacher_path: Path, tmp_path: Path) -> None:
    result = invoke("info", tiny_teacher_path, "--json")
    assert result.exit_code == 0, result.output
    assert json.loads(result.stdout)["weights_checksum"] == "verified"
    # A checkpoint written before checksums existed still loads and evaluates; info says so.
    older = edited(tiny_teacher_path, tmp_path / "old.pt", lambda d: d.pop(CHECKSUM_KEY))
    result = invoke("info", older)
    assert result.exit_code == 0, result.output
    assert "no checksum" in result.stdout
    model = load_model(older)
    reference = load_model(tiny_teacher_path)
    images = load_dataset("digits:test").batch(range(8)).images
    assert torch.equal(model(images), reference(images))


@pytest.mark.parametrize(
    ("edit", "message"),
    [
        (lambda d: d.update(num_classes=10**12), "weights would hold"),
        (lambda d: d["input"].update(shape=[1, 10**5, 10**5]), "values per image"),
        (lambda d: d.update(arch_kwargs={"width": float("nan")}), "does not accept arch kwargs"),
        (lambda d: d.update(batchnorm_replacement="os:system"), "unknown BatchNorm replacement"),
        (lambda d: d.update(arch="mlp"), "its weights do not fit mlp"),
    ],
    ids=["huge class count", "huge input", "unknown kwargs", "replacement", "another arch"],
)
def test_info_refuses_what_loading_would_refuse(
    tiny_teacher_path: Path, tmp_path: Path, edit: Callable[[dict[str, Any]], object], message: str
) -> None:
    # info used to report these files as fine ("SHA-256 checksum verified", exit 0) while eval
    # refused them or ran out of memory.
    path = edited(tiny_teacher_path, tmp_path / "odd.pt", edit)
    assert_one_line_error(invoke("info", path), None, message)


def test_info_describes_an_ensemble_whose_member_names_code(
    tiny_teacher_path: Path, tmp_path: Path
) -> None:
    member = {"arch": "mynet37:Net", "arch_kwargs": {}}

    def ensemble(data: dict[str, Any]) -> None:
        data.update(arch="mean-ensemble", arch_kwargs={"members": [member]})

    path = edited(tiny_teacher_path, tmp_path / "ensemble.pt", ensemble)
    result = invoke("info", path, "--json")  # it is shown, not built (building runs the code)
    assert result.exit_code == 0, result.output
    assert json.loads(result.stdout)["arch_names_code"] is True


def test_checksum_covers_every_byte_key_dtype_and_shape() -> None:
    weights = {"a": torch.arange(6, dtype=torch.float32), "b": torch.ones(2, dtype=torch.int64)}
    digest = weights_checksum(weights)
    assert digest == weights_checksum(copy.deepcopy(weights))
    changed = [
        {**weights, "a": weights["a"].clone().index_fill_(0, torch.tensor([5]), 5.000001)},
        {**weights, "a": weights["a"].reshape(2, 3)},
        {**weights, "a": weights["a"].to(torch.float64)},
        {"b": weights["b"], "a": weights["a"]},
        {"A": weights["a"], "b": weights["b"]},
    ]
    assert all(weights_checksum(other) != digest for other in changed)


# teachers.pt, CLIP and tower files --------------------------------------------------------------


@pytest.fixture(scope="module")
def small_ensemble(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("ensemble") / "teachers"
    config = PateTeachersConfig(
        dataset="digits", arch="tiny-cnn", teachers=2, trainer=tiny_trainer(epochs=1)
    )
    run_pate_teachers(config, RunOptions(out, quiet=True))
    return out / "teachers.pt"


ENSEMBLE_EDITS: dict[str, tuple[Callable[[dict[str, Any]], object], str]] = {
    "member num_classes text": (
        lambda d: d["member"].update(num_classes="ten"),
        "member.num_classes is 'ten'",
    ),
    "member input missing": (lambda d: d["member"].pop("input"), "member.input is missing"),
    "teachers text": (lambda d: d.update(teachers="2"), "teachers is '2'"),
    "weights not stacked over the teachers": (
        lambda d: d.update(teachers=3),
        "expected a stack of 3 teachers' weights",
    ),
    "state_dict value not a tensor": (
        lambda d: d["state_dict"].update({next(iter(d["state_dict"])): [1.0]}),
        "expected a tensor",
    ),
    "weights changed after saving": (
        lambda d: d["state_dict"][next(iter(d["state_dict"]))].mul_(2.0),
        "do not match their checksum",
    ),
    "shards a list": (lambda d: d.update(shards=[1]), "shards is [1]"),
}


@pytest.mark.parametrize("case", list(ENSEMBLE_EDITS) + ["flipped bytes"])
def test_damaged_teachers_file_fails_in_one_line(
    small_ensemble: Path, tmp_path: Path, case: str
) -> None:
    bad = tmp_path / "teachers.pt"
    if case == "flipped bytes":
        shutil.copy(small_ensemble, bad)
        flip_tensor_bytes(bad)
        needle = "do not match their checksum"
    else:
        edit, needle = ENSEMBLE_EDITS[case]
        edited(small_ensemble, bad, edit)
    out = tmp_path / "labels"
    result = invoke(
        "pate", "label", "--teachers", bad, "--queries-from", "digits:test", "--queries", "5",
        "--aggregator", "gnmax", "--sigma", "1", "--epsilon", "100", "--quiet", "--out", out,
    )  # fmt: skip
    assert_one_line_error(result, out, needle)


@pytest.fixture(scope="module")
def tiny_clip(tmp_path_factory: pytest.TempPathFactory) -> Path:
    torch.manual_seed(0)
    path = tmp_path_factory.mktemp("clip") / "clip.pt"
    save_clip(path, ClipModel(TINY_CLIP, mean=[0.5] * 3, std=[0.25] * 3), config={})
    return path


CLIP_EDITS: dict[str, tuple[Callable[[dict[str, Any]], object], str]] = {
    "model_config a list": (lambda d: d.update(model_config=[1]), "model_config is [1]"),
    "embed_dim text": (
        lambda d: d["model_config"].update(embed_dim="16"),
        "model_config.embed_dim is '16'",
    ),
    "vision_cfg missing": (
        lambda d: d["model_config"].pop("vision_cfg"),
        "model_config.vision_cfg is None",
    ),
    "text_cfg value of the wrong type": (
        lambda d: d["model_config"]["text_cfg"].update(layers="one"),
        "text_cfg.layers must be an integer in [1, 1,000], got 'one'",
    ),
    "normalization extra key": (
        lambda d: d["normalization"].update(scale=2),
        "normalization is",
    ),
    "mean of wrong length": (
        lambda d: d["normalization"].update(mean=[0.5, 0.5]),
        "normalization.mean is [0.5, 0.5]",
    ),
    "weights changed after saving": (
        lambda d: d["state_dict"]["logit_scale"].add_(1.0),
        "do not match their checksum",
    ),
}


@pytest.mark.parametrize("case", list(CLIP_EDITS))
def test_damaged_clip_file_fails_in_one_line(tiny_clip: Path, tmp_path: Path, case: str) -> None:
    edit, needle = CLIP_EDITS[case]
    bad = edited(tiny_clip, tmp_path / "clip.pt", edit)
    if case != "text_cfg value of the wrong type":  # info reads the fields, builds nothing
        assert_one_line_error(invoke("info", bad), None, needle)
    out = tmp_path / "student"
    result = invoke(
        "crossmodal", "distill", "--teacher", bad, "--pairs", "digits", "--epochs", "1",
        "--device", "cpu", "--quiet", "--out", out,
    )  # fmt: skip
    assert_one_line_error(result, out, needle)


def test_clip_and_tower_files_carry_a_verified_checksum(tiny_clip: Path, tmp_path: Path) -> None:
    from freekd.crossmodal.towers import TextStudent, load_tower, save_tower

    result = invoke("info", tiny_clip, "--json")
    assert result.exit_code == 0, result.output
    assert json.loads(result.stdout)["weights_checksum"] == "verified"
    tower = tmp_path / "tower.pt"
    save_tower(tower, TextStudent(dim=8, text_cfg=TINY_CLIP["text_cfg"]), config={})
    assert json.loads(invoke("info", tower, "--json").stdout)["weights_checksum"] == "verified"
    load_tower(tower)
    edited(tower, tower, lambda d: d["tower"].update(dim="8"))
    assert_one_line_error(invoke("info", tower), None, "tower.dim is '8'")
    edited(tower, tower, lambda d: d["tower"].update(dim=8, kind="audio"))
    assert_one_line_error(invoke("info", tower), None, "tower.kind is 'audio'")


# votes files ------------------------------------------------------------------------------------


def _write_votes(path: Path, kind: str) -> None:
    if kind == "npz of two arrays":
        np.savez(path, a=np.ones((3, 4)), b=np.ones(3))
    elif kind == "text":
        path.write_text("1,2,3\n4,5,6\n")
    elif kind == "empty file":
        path.write_bytes(b"")
    elif kind == "complex":
        np.save(path, np.ones((3, 4), dtype=complex))
    elif kind == "NaN":
        np.save(path, np.full((3, 4), np.nan))
    elif kind == "negative":
        np.save(path, -np.ones((3, 4)))
    elif kind == "one row of classes":
        np.save(path, np.ones(5))
    elif kind == "no queries":
        np.save(path, np.zeros((0, 4)))
    elif kind == "strings":
        np.save(path, np.array([["a", "b"]]))
    elif kind == "objects":
        np.save(path, np.array([[{"a": 1}, 2]], dtype=object), allow_pickle=True)


VOTES = {
    "npz of two arrays": "holds arrays ['a', 'b']",
    "text": "not a .npy file: no NUMPY header",
    "empty file": "not a .npy file: no NUMPY header",
    "complex": "must be finite numbers, got complex128",
    "NaN": "must be finite numbers",
    "negative": "must be non-negative whole counts",
    "one row of classes": "have shape (5,)",
    "no queries": "have shape (0, 4)",
    "strings": "must be finite numbers",
    "objects": "is not a numeric .npy array",
}


@pytest.mark.parametrize("kind", list(VOTES))
def test_odd_votes_file_fails_in_one_line(tmp_path: Path, kind: str) -> None:
    path = tmp_path / ("votes.npz" if kind.startswith("npz") else "votes.npy")
    _write_votes(path, kind)
    result = invoke("privacy", "pate", "--votes", path, "--sigma2", "1", "--delta", "1e-5")
    assert_one_line_error(result, None, VOTES[kind])


def test_votes_npz_of_one_array_is_read_and_answered_flags_must_be_booleans(
    tmp_path: Path,
) -> None:
    votes = np.array([[6, 1, 1], [2, 3, 3]])
    np.savez(tmp_path / "votes.npz", votes=votes)
    np.save(tmp_path / "votes.npy", votes)
    flags = ["--sigma2", "1", "--delta", "1e-5", "--json"]
    from_npz = invoke("privacy", "pate", "--votes", tmp_path / "votes.npz", *flags)
    from_npy = invoke("privacy", "pate", "--votes", tmp_path / "votes.npy", *flags)
    assert from_npz.exit_code == 0, from_npz.output
    assert json.loads(from_npz.stdout) == json.loads(from_npy.stdout)
    np.save(tmp_path / "answered.npy", np.array([1.5, 0.0]))
    result = invoke(
        "privacy", "pate", "--votes", tmp_path / "votes.npy", "--answered",
        tmp_path / "answered.npy", "--sigma1", "1", "--threshold", "2", *flags[:4],
    )  # fmt: skip
    assert_one_line_error(result, None, "must hold booleans (or 0/1), got float64")


# captions files ---------------------------------------------------------------------------------


def _pairs_folder(folder: Path, captions: str, name: str = "captions.csv") -> Path:
    folder.mkdir(parents=True)
    for index in range(12):
        pixels = np.full((8, 8), index * 20, dtype=np.uint8)
        Image.fromarray(pixels).save(folder / f"{index}.png")
    (folder / name).write_text(captions, encoding="utf-8")
    return folder


def _csv(first_row: str, header: str = "file,caption") -> str:
    rows = [first_row] + [f"{i}.png,a grey square {i}" for i in range(1, 12)]
    return header + "\n" + "\n".join(rows) + "\n"


def _jsonl(first_row: object) -> str:
    rows = [first_row] + [{"file": f"{i}.png", "caption": f"square {i}"} for i in range(1, 12)]
    return "".join(json.dumps(row) + "\n" for row in rows)


CAPTIONS: dict[str, tuple[str, str, str]] = {
    # case: (file name, content, text the one line must hold); {outside} is an absolute path.
    "csv row without a caption": ("captions.csv", _csv("0.png"), "captions.csv:2 has no caption"),
    "csv empty caption": ("captions.csv", _csv("0.png,"), "captions.csv:2 has an empty caption"),
    "csv more fields than the header": (
        "captions.csv",
        _csv("0.png,a,b"),
        "captions.csv:2 has more fields than the header",
    ),
    "csv duplicate header": (
        "captions.csv",
        _csv("0.png,a,b", header="file,caption,caption"),
        "names the column 'caption' twice",
    ),
    "csv empty file": ("captions.csv", "", "needs a header with columns file,caption"),
    "csv header only": ("captions.csv", "file,caption\n", "lists no pairs"),
    "csv some rows labelled": (
        "captions.csv",
        _csv("0.png,a,", header="file,caption,label").replace("square 1\n", "square 1,one\n"),
        "has no label while other rows have one",
    ),
    "csv parent path": (
        "captions.csv",
        _csv("../../x.png,escape"),
        "file '../../x.png' lies outside",
    ),
    "csv absolute path": ("captions.csv", _csv("{outside},escape"), "lies outside"),
    "jsonl missing caption": (
        "captions.jsonl",
        _jsonl({"file": "0.png"}),
        'captions.jsonl:1 needs {"file": ..., "caption": ...}',
    ),
    "jsonl caption a list": (
        "captions.jsonl",
        _jsonl({"file": "0.png", "caption": ["a"]}),
        "captions.jsonl:1: caption is ['a']; it must be a string",
    ),
    "jsonl file a number": (
        "captions.jsonl",
        _jsonl({"file": 0, "caption": "a"}),
        "file is 0; it must be a string",
    ),
    "jsonl label a mapping": (
        "captions.jsonl",
        _jsonl({"file": "0.png", "caption": "a", "label": {}}),
        "label is {}",
    ),
    "jsonl not an object": ("captions.jsonl", _jsonl([1, 2]), "captions.jsonl:1 needs"),
    "jsonl empty": ("captions.jsonl", "", "lists no pairs"),
    "jsonl NUL in a path": (
        "captions.jsonl",
        _jsonl({"file": "0.png\x00", "caption": "a"}),
        "holds a NUL character",
    ),
}


@pytest.mark.parametrize("case", list(CAPTIONS) + ["symlink out of the folder", "not UTF-8"])
def test_bad_captions_file_fails_in_one_line(tmp_path: Path, case: str) -> None:
    outside = tmp_path / "secret.png"
    Image.fromarray(np.zeros((8, 8), dtype=np.uint8)).save(outside)
    if case == "symlink out of the folder":
        folder = _pairs_folder(tmp_path / "pairs", _csv("0.png,a grey square"))
        (folder / "0.png").unlink()
        (folder / "0.png").symlink_to(outside)
        needle = "file '0.png' lies outside"
    elif case == "not UTF-8":
        folder = _pairs_folder(tmp_path / "pairs", "")
        (folder / "captions.csv").write_bytes(b"file,caption\n0.png,\xff\xfe\n")
        needle = "is not UTF-8 text"
    else:
        name, content, needle = CAPTIONS[case]
        folder = _pairs_folder(tmp_path / "pairs", content.replace("{outside}", str(outside)), name)
    out = tmp_path / "run"
    result = invoke(
        "crossmodal", "teacher", "--pairs", folder, "--epochs", "1", "--batch-size", "4",
        "--device", "cpu", "--quiet", "--out", out,
    )  # fmt: skip
    assert_one_line_error(result, out, needle)


# resume checkpoints -----------------------------------------------------------------------------


@pytest.fixture(scope="module")
def finished_run(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A one-epoch tiny-cnn run on digits with its resume checkpoint."""
    out = tmp_path_factory.mktemp("resume") / "run"
    config = TeacherTrainConfig(dataset="digits", arch="tiny-cnn", trainer=tiny_trainer(epochs=1))
    run_teacher_train(config, RunOptions(out, quiet=True))
    return out


def _first_module_weight(data: dict[str, Any]) -> str:
    return next(iter(data["modules"]["student"]))


RESUME_EDITS: dict[str, tuple[Callable[[dict[str, Any]], object], str]] = {
    "weight of the wrong shape": (
        lambda d: d["modules"]["student"].update({_first_module_weight(d): torch.zeros(3, 3)}),
        "student shape net.features.0.weight [3, 3] vs [16, 1, 3, 3]",
    ),
    "missing weight": (
        lambda d: d["modules"]["student"].pop(_first_module_weight(d)),
        "student missing net.features.0.weight",
    ),
    "unexpected weight": (
        lambda d: d["modules"]["student"].update(extra=torch.zeros(1)),
        "student unexpected extra",
    ),
    "another module": (lambda d: d["modules"].update(peer={}), "it saved modules"),
    "no modules": (lambda d: d.pop("modules"), "modules is missing or not a mapping"),
    "no optimizer": (lambda d: d.pop("optimizer"), "optimizer is missing"),
    "optimizer of another run": (
        lambda d: d["optimizer"]["param_groups"].append(d["optimizer"]["param_groups"][0]),
        "optimizer has 2 parameter groups, this run 1",
    ),
    "momentum of the wrong shape": (
        lambda d: [
            s.update(momentum_buffer=torch.zeros(2)) for s in d["optimizer"]["state"].values()
        ],
        "optimizer momentum_buffer [2] vs parameter",
    ),
    "step text": (lambda d: d["state"].update(step="x"), "state.step is 'x', not a count"),
    "step negative": (lambda d: d["state"].update(step=-5), "state.step is -5"),
    # An epoch past the plan used to "finish" the run at once, exit 0.
    "epoch past the plan": (lambda d: d["state"].update(epoch=10**18), "past this run's plan"),
    "step past the plan": (
        lambda d: d["state"].update(step=10**18, step_in_epoch=10**18),
        "past this run's plan",
    ),
    "horizon negative": (lambda d: d["state"].update(horizon=-10), "state.horizon is -10"),
    "metrics text": (lambda d: d["state"].update(metrics={"a": "x"}), "state.metrics"),
    "RNG state not bytes": (lambda d: d.update(torch_rng=torch.zeros(3)), "torch_rng"),
    "no config": (lambda d: d.pop("config"), "config is missing or not a mapping"),
    "method state text": (lambda d: d.update(method="x"), "method is not a state_dict"),
    "extras a list": (lambda d: d.update(extras=[1]), "extras is not a mapping"),
}


@pytest.mark.parametrize("case", list(RESUME_EDITS))
def test_resume_checkpoint_of_another_run_fails_in_one_line(
    finished_run: Path, tmp_path: Path, case: str
) -> None:
    run = tmp_path / "run"
    shutil.copytree(finished_run, run)
    edit, needle = RESUME_EDITS[case]
    edited(run / "checkpoint.pt", run / "checkpoint.pt", edit)
    before = {p.name: p.read_bytes() for p in run.iterdir()}
    result = invoke(
        "teacher", "train", "--dataset", "digits", "--arch", "tiny-cnn", "--epochs", "2",
        "--batch-size", "64", "--lr", "0.05", "--device", "cpu", "--quiet", "--resume",
        "--out", run,
    )  # fmt: skip
    line = assert_one_line_error(result, None, needle)
    assert line.startswith(f"error: checkpoint.pt in {run} does not fit this run (")
    assert line.endswith("; run without --resume or with --overwrite")
    after = {p.name: p.read_bytes() for p in run.iterdir()}
    assert after == before  # nothing half-written


# datasets and configs ---------------------------------------------------------------------------


def _dataset_file(folder: Path, kind: str) -> Path:
    images = (np.arange(20 * 64) % 255).astype(np.uint8).reshape(20, 8, 8)
    labels = np.arange(20) % 10
    path = folder / f"{kind.replace(' ', '_')}.npz"
    if kind == "unreadable image":
        for label in ("a", "b"):
            (folder / "images" / label).mkdir(parents=True)
            Image.fromarray(images[0]).save(folder / "images" / label / "0.png")
        (folder / "images" / "b" / "1.png").write_bytes(b"\x89PNG\r\n\x1a\nbroken")
        return folder / "images"
    if kind == "text npz":
        path.write_text("x,y\n")
        return path
    if kind == "npz without x":
        np.savez(path, images=images, y=labels)
    elif kind == "x of int64":
        np.savez(path, x=images.astype(np.int64), y=labels)
    elif kind == "x of rank 2":
        np.savez(path, x=images.reshape(20, 64), y=labels)
    elif kind == "y of floats":
        np.savez(path, x=images, y=labels.astype(float))
    elif kind == "NaN images":
        np.savez(path, x=np.full((20, 8, 8), np.nan), y=labels)
    return path


DATASETS = {
    "npz without x": "has no array 'x'",
    "x of int64": "x has dtype int64",
    "x of rank 2": "x has shape (20, 64)",
    "y of floats": "y has shape (20,) and dtype float64",
    "NaN images": "NaN or infinite values",
    "unreadable image": "cannot read image",
    "text npz": "is not a valid .npz file",
}


@pytest.mark.parametrize("kind", list(DATASETS))
def test_odd_dataset_file_fails_in_one_line(
    tiny_teacher_path: Path, tmp_path: Path, kind: str
) -> None:
    data = _dataset_file(tmp_path, kind)
    out = tmp_path / "run"
    evaluation = invoke("eval", "--model", tiny_teacher_path, "--dataset", data, "--device", "cpu")
    assert_one_line_error(evaluation, None, DATASETS[kind])
    training = invoke(
        "teacher", "train", "--dataset", data, "--arch", "tiny-cnn", "--epochs", "1",
        "--device", "cpu", "--quiet", "--out", out,
    )  # fmt: skip
    assert_one_line_error(training, out, DATASETS[kind])


#: Nine lines that expand to 9**8 values once copied: it used to cost 1.9 GB and print a
#: 254 MB error line (an argument of arch_kwargs).
BILLION_LAUGHS = b"arch_kwargs:\n  a: &a [x, x, x, x, x, x, x, x, x]\n" + b"".join(
    f"  {name}: &{name} [{', '.join(['*' + previous] * 9)}]\n".encode()
    for previous, name in zip("abcdefg", "bcdefgh", strict=True)
)


@pytest.mark.parametrize(
    ("content", "needle"),
    [
        (b"- 1\n- 2\n", "must be a mapping of fields, got list"),
        (b"\xff\xfe\x00trainer", "is not UTF-8 text"),
        (b"trainer: {epochs: [", "is not valid YAML"),
        (b"!!python/object/apply:os.system ['true']\n", "is not valid YAML"),
        (BILLION_LAUGHS, "found the alias *a; freekd reads no YAML aliases"),
        # PyYAML keeps the second silently: this ran 3 epochs.
        (
            b"trainer:\n  epochs: 1\n  lr: 0.1\n  epochs: 3\n",
            "the key 'epochs' is written twice in one mapping (line 4); keep one",
        ),
    ],
    ids=["a list", "not UTF-8", "broken YAML", "a python tag", "nested aliases", "a repeated key"],
)
def test_odd_yaml_config_fails_in_one_line(tmp_path: Path, content: bytes, needle: str) -> None:
    config = tmp_path / "config.yaml"
    config.write_bytes(content)
    out = tmp_path / "run"
    result = invoke(
        "teacher", "train", "--dataset", "digits", "--config", config, "--device", "cpu",
        "--quiet", "--out", out,
    )  # fmt: skip
    assert_one_line_error(result, out, needle)


@pytest.mark.parametrize("kind", ["device", "pipe"])
@pytest.mark.parametrize("role", ["info", "eval --model", "--config", "--dataset", "--teacher"])
def test_a_device_or_pipe_is_not_read(tmp_path: Path, kind: str, role: str) -> None:
    # /dev/zero used to be read until memory ran out (freekd info was killed), a pipe's open
    # blocked forever.
    if kind == "device":
        path = Path("/dev/zero")
    else:
        path = tmp_path / "pipe"
        os.mkfifo(path)
    out = tmp_path / "run"
    data = ["--dataset", "digits"]
    arguments: dict[str, list[object]] = {
        "info": ["info", path],
        "eval --model": ["eval", "--model", path, *data],
        "--config": ["teacher", "train", *data, "--config", path, "--out", out],
        "--dataset": ["teacher", "train", "--dataset", path, "--out", out],
        "--teacher": ["distill", "--teacher", path, *data, "--out", out],
    }
    result = invoke(*arguments[role], "--json" if role in ("info", "eval --model") else "--quiet")
    assert_one_line_error(result, out, f"{path} is not a regular file")


def test_an_error_quoting_a_huge_value_stays_short(tmp_path: Path) -> None:
    config = tmp_path / "config.yaml"
    config.write_text("arch_kwargs: {widths: [" + ", ".join(["7"] * 100_000) + "]}\n")
    out = tmp_path / "run"
    result = invoke("teacher", "train", "--dataset", "digits", "--config", config, "--out", out)
    line = assert_one_line_error(result, out)
    assert len(line) < 800


@pytest.mark.parametrize(
    ("arguments", "message"),
    [
        (["--arch", "torchvision:resnet18", "--arch-kwargs", '{"groups": 2}'],
         "does not accept arch kwargs {'groups': 2}: BasicBlock only supports groups=1"),
        (["--arch", "branched", "--arch-kwargs", '{"base": "tiny-cnn", "branches": 100}'],
         "branches must be an integer in [1, 64]"),
        (["--arch", "mlp", "--arch-kwargs", '{"hidden": [' + ", ".join(["2"] * 1001) + "]}"],
         "at most 1,000 positive integers"),
        (["--arch", "mlp", "--arch-kwargs", '{"a": ' * 1000 + "1" + "}" * 1000],
         "--arch-kwargs nests too deeply"),
        (["--set", "seed=" + "[" * 1000 + "]" * 1000], "expected an integer"),
    ],
    ids=["torchvision value", "branches", "layers", "deep JSON", "deep --set"],
)  # fmt: skip
def test_architecture_arguments_that_fail_inside_the_build_are_one_line(
    tmp_path: Path, arguments: list[str], message: str
) -> None:
    # These ended in ValueError/RecursionError tracebacks, or hung building the network.
    out = tmp_path / "run"
    result = invoke("teacher", "train", "--dataset", "digits", *arguments, "--out", out, "-q")
    assert_one_line_error(result, out, message)


def test_a_config_larger_than_any_config_is_not_read(tmp_path: Path) -> None:
    # A sparse 20 GB file was read whole before the YAML parser could refuse it.
    config = tmp_path / "huge.yaml"
    with config.open("wb") as handle:
        handle.write(b"seed: 1\n")
        handle.truncate(20 * 2**30)
    out = tmp_path / "run"
    result = invoke("teacher", "train", "--dataset", "digits", "--config", config, "--out", out)
    assert_one_line_error(result, out, "is 20480.0 MiB, larger than any config (1 MiB at most)")


def test_a_config_nested_too_deeply_is_one_line(tmp_path: Path) -> None:
    config = tmp_path / "deep.yaml"
    config.write_text("trainer: " + "[" * 1000 + "]" * 1000 + "\n")
    out = tmp_path / "run"
    result = invoke("teacher", "train", "--dataset", "digits", "--config", config, "--out", out)
    assert_one_line_error(result, out, "nests too deeply to be a config")


def test_load_model_refuses_a_pipe_before_opening_it(tmp_path: Path) -> None:
    pipe = tmp_path / "pipe.pt"
    os.mkfifo(pipe)  # freekd.load_model opened it to look for TorchScript and hung
    with pytest.raises(FreekdError, match="is not a regular file"):
        load_model(pipe)


# the privacy ledger -----------------------------------------------------------------------------


@pytest.fixture(scope="module")
def labelled(small_ensemble: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("labels") / "labels"
    result = invoke(*label_command(small_ensemble, out), "--queries", "6")
    assert result.exit_code == 0, result.output
    return out


def label_command(teachers: Path, out: Path) -> list[object]:
    return [
        "pate", "label", "--teachers", teachers, "--queries-from", "digits:test",
        "--aggregator", "gnmax", "--sigma", "1", "--epsilon", "10000", "--set", "holdout=97",
        "--quiet", "--out", out,
    ]  # fmt: skip


def _edit_entry(lines: list[str], edit: Callable[[dict[str, Any]], object]) -> list[str]:
    entry = json.loads(lines[2])
    edit(entry)
    return [*lines[:2], json.dumps(entry), *lines[3:]]


LEDGER_EDITS: dict[str, tuple[Callable[[list[str]], list[str]], str]] = {
    "entry not JSON": (lambda ls: [*ls[:2], "{not json", *ls[3:]], "has a corrupt line"),
    "entry a list": (lambda ls: [*ls[:2], "[1, 2]", *ls[3:]], ":3 is a corrupt entry"),
    "query text": (
        lambda ls: _edit_entry(ls, lambda e: e.update(query="1")),
        "query is '1', not an integer",
    ),
    "rdp negative": (
        lambda ls: _edit_entry(ls, lambda e: e.update(rdp=[-1.0] * len(e["rdp"]))),
        "rdp is not a list of non-negative numbers",
    ),
    "rdp over other orders": (
        lambda ls: _edit_entry(ls, lambda e: e.update(rdp=[0.1])),
        "holds an RDP cost over 1 orders",
    ),
    "header a list": (lambda ls: ["[1]", *ls[1:]], "has a corrupt header line"),
}


@pytest.mark.parametrize("case", list(LEDGER_EDITS))
def test_corrupt_ledger_is_refused_never_reset(
    labelled: Path, small_ensemble: Path, tmp_path: Path, case: str
) -> None:
    run = tmp_path / "labels"
    shutil.copytree(labelled, run)
    ledger = run / "ledger.jsonl"
    edit, needle = LEDGER_EDITS[case]
    ledger.write_text("\n".join(edit(ledger.read_text().splitlines())) + "\n")
    before = {p.name: p.read_bytes() for p in run.iterdir()}
    result = invoke(*label_command(small_ensemble, run), "--queries", "10", "--resume")
    assert_one_line_error(result, None, needle)
    assert {p.name: p.read_bytes() for p in run.iterdir()} == before


def test_fixture_files_are_what_the_table_assumes(labelled: Path) -> None:
    """The ledger rows the table edits exist (header plus six queries) and no lock is left."""
    lines = (labelled / "ledger.jsonl").read_text().splitlines()
    assert len(lines) == 7
    assert all(isinstance(json.loads(line), dict) for line in lines)
    assert not any(name.endswith(".tmp") for name in os.listdir(labelled))


def _labels_npz(run: Path, **arrays: np.ndarray) -> None:
    np.savez(run / "labels.npz", **arrays)  # type: ignore[arg-type]  # numpy's stub: allow_pickle


LABEL_FOLDER_EDITS: dict[str, tuple[Callable[[Path], object], str]] = {
    "report not JSON": (
        lambda run: (run / "report.json").write_text("{"),
        "report.json is not a JSON report",
    ),
    "report without queries": (
        lambda run: (run / "report.json").write_text("[]"),
        "has no queries (dataset, holdout) and privacy",
    ),
    "labels without indices": (
        lambda run: _labels_npz(run, labels=np.zeros(3, dtype=np.int64)),
        "holds no integer arrays indices and labels",
    ),
    "labels of floats": (
        lambda run: _labels_npz(run, indices=np.arange(3), labels=np.zeros(3)),
        "must be 1-D integer arrays of one length",
    ),
    "indices beyond the pool": (
        lambda run: _labels_npz(run, indices=np.arange(3) + 10**6, labels=np.zeros(3, int)),
        "names query 1000002 but digits:test holds",
    ),
}


@pytest.mark.parametrize("case", list(LABEL_FOLDER_EDITS))
def test_damaged_label_folder_fails_in_one_line(labelled: Path, tmp_path: Path, case: str) -> None:
    run = tmp_path / "labels"
    shutil.copytree(labelled, run)
    edit, needle = LABEL_FOLDER_EDITS[case]
    edit(run)
    out = tmp_path / "student"
    result = invoke(
        "pate", "student", "--labels", run, "--epochs", "1", "--device", "cpu", "--quiet",
        "--out", out,
    )  # fmt: skip
    assert_one_line_error(result, out, needle)


@pytest.mark.parametrize("command", ["pate label --teachers", "graph distill --teacher"])
def test_a_torchscript_file_where_none_is_read_is_named(tmp_path: Path, command: str) -> None:
    # It was "not a readable torch file (...)", "expected ... a TorchScript file".
    path = tmp_path / "scripted.pt"
    torch.jit.save(torch.jit.trace(torch.nn.Linear(4, 2), torch.zeros(1, 4)), str(path))
    out = tmp_path / "run"
    result = invoke(*command.split(), path, "--out", out, "-q")
    assert_one_line_error(result, out, f"{path} is a TorchScript file, which is not read here")
