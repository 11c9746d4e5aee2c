"""load_teacher on the four kinds of teacher file users bring (DESIGN.md, "Teachers users bring"),
and on everything else: hostile pickles, corrupt files, shapes that do not fit."""

from __future__ import annotations

import os
import pathlib
import pickle
import shlex
import zipfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import torch
from torch import Tensor, nn

import freekd
from freekd.checkpoint import load_model, read_checkpoint
from freekd.config import TeacherSourceConfig
from freekd.data import ImageDataset
from freekd.errors import FreekdError
from freekd.models import ImageClassifier, build_model
from freekd.teachers import Teacher, load_teacher
from tests.teachers.user_net import FlatNet, UserNet

SHAPE = [1, 8, 8]

pytestmark = [
    pytest.mark.filterwarnings("ignore:`torch.jit.*` is deprecated:FutureWarning"),
    pytest.mark.filterwarnings("ignore:Detected pickle protocol:UserWarning"),
]


@pytest.fixture(scope="module")
def classifier(tiny_teacher_path: Path) -> ImageClassifier:
    """The tiny digits teacher as freekd loads it: the reference for every other kind of file."""
    return load_model(tiny_teacher_path)


@pytest.fixture(scope="module")
def images(digits_test: ImageDataset) -> Tensor:
    """64 real held-out digits in [0, 1]."""
    return digits_test.batch(torch.arange(64)).images.float()


def load(path: Path | str, **options: Any) -> Teacher:
    return load_teacher(TeacherSourceConfig(path=str(path), **options))


def normalization(model: ImageClassifier) -> dict[str, list[float]]:
    return {"mean": list(model.mean_values), "std": list(model.std_values)}


def assert_frozen_and_eval(teacher: Teacher) -> None:
    assert all(not parameter.requires_grad for parameter in teacher.parameters())
    teacher.train()
    assert not any(module.training for module in teacher.modules())
    nn.ModuleDict({"teacher": teacher}).train()  # a parent's .train() reaches the teacher too
    assert not any(module.training for module in teacher.modules())


def load_error(path: Path | str, **options: Any) -> str:
    """The message of the FreekdError that loading ``path`` raises; it must be one line."""
    with pytest.raises(FreekdError) as caught:
        load(path, **options)
    message = str(caught.value)
    assert message
    assert "\n" not in message, message
    return message


# 1. freekd checkpoints ---------------------------------------------------------------------------


def test_freekd_checkpoint_gives_a_frozen_eval_teacher_with_its_metadata(
    tiny_teacher_path: Path, classifier: ImageClassifier, images: Tensor
) -> None:
    teacher = load(tiny_teacher_path)

    assert teacher.num_classes == 10
    assert teacher.input_shape == (1, 8, 8)
    assert teacher.description == "freekd checkpoint"
    assert teacher.metadata["arch"] == "tiny-cnn"
    assert teacher.has_batchnorm
    assert_frozen_and_eval(teacher)
    with torch.no_grad():
        assert torch.equal(teacher(images), freekd.load_model(str(tiny_teacher_path))(images))
        assert torch.equal(teacher(images), classifier(images))


def test_teacher_never_moves_its_batchnorm_statistics_but_passes_input_gradients(
    tiny_teacher_path: Path, images: Tensor
) -> None:
    teacher = load(tiny_teacher_path)
    before = {name: buffer.clone() for name, buffer in teacher.named_buffers()}
    teacher.train()
    inputs = images.clone().requires_grad_(True)
    teacher(inputs).logsumexp(dim=1).sum().backward()  # a data-free synthesizer does this

    assert inputs.grad is not None
    assert inputs.grad.abs().sum() > 0
    assert all(parameter.grad is None for parameter in teacher.parameters())
    for name, buffer in teacher.named_buffers():
        assert torch.equal(buffer, before[name]), name


# 2. TorchScript ----------------------------------------------------------------------------------


def traced_classifier(model: ImageClassifier, path: Path) -> dict[str, Any]:
    """The whole classifier traced: it normalizes itself, so the file needs only a shape."""
    torch.jit.trace(model, torch.rand(2, *SHAPE)).save(str(path))
    return {}


def scripted_network(model: ImageClassifier, path: Path) -> dict[str, Any]:
    """The bare network scripted: it expects normalized input, so --mean/--std are needed."""
    torch.jit.script(model.net).save(str(path))
    return normalization(model)


@pytest.mark.filterwarnings("ignore::torch.jit.TracerWarning")
@pytest.mark.parametrize("export", [traced_classifier, scripted_network])
def test_torchscript_teacher_predicts_like_the_original(
    classifier: ImageClassifier,
    images: Tensor,
    tmp_path: Path,
    export: Callable[[ImageClassifier, Path], dict[str, Any]],
) -> None:
    path = tmp_path / "teacher.ts"
    options = export(classifier, path)

    teacher = load(path, input_shape=SHAPE, **options)

    assert teacher.description == "a TorchScript file"
    assert teacher.num_classes == 10
    assert teacher.input_shape == (1, 8, 8)
    assert teacher.has_convolution  # seen through TorchScript's class names too
    assert_frozen_and_eval(teacher)
    with torch.no_grad():
        expected, got = classifier(images), teacher(images)
    torch.testing.assert_close(got, expected, rtol=1e-5, atol=1e-5)
    assert torch.equal(got.argmax(dim=1), expected.argmax(dim=1))
    # The class count, when given, must be the one the network outputs.
    assert load(path, input_shape=SHAPE, num_classes=10, **options).num_classes == 10


@pytest.mark.parametrize("export", ["eager", "scripted"])
def test_a_network_without_convolutions_is_told_apart(tmp_path: Path, export: str) -> None:
    from tests.teachers.user_net import ConvNet, FlatNet, UserNet

    for net, convolutions in ((FlatNet(num_classes=10), 0), (UserNet(10), 1), (ConvNet(10), 1)):
        path = tmp_path / f"{type(net).__name__}.pt"
        if export == "scripted":
            torch.jit.script(net).save(str(path))
            teacher = load(path, input_shape=SHAPE)
        else:
            torch.save(net.state_dict(), path)
            arch = f"tests.teachers.user_net:{type(net).__name__}"
            teacher = load(path, arch=arch, input_shape=SHAPE, num_classes=10)
        assert teacher.convolution_layers == convolutions, type(net).__name__
        assert teacher.has_convolution is (convolutions > 0)
        assert not teacher.has_batchnorm


def test_torchscript_teacher_needs_the_input_shape(
    classifier: ImageClassifier, tmp_path: Path
) -> None:
    path = tmp_path / "teacher.ts"
    torch.jit.script(classifier.net).save(str(path))

    assert "--input-shape" in load_error(path)


def test_torchscript_teacher_with_another_class_count_is_refused(
    classifier: ImageClassifier, tmp_path: Path
) -> None:
    path = tmp_path / "teacher.ts"
    torch.jit.script(classifier.net).save(str(path))

    message = load_error(path, input_shape=SHAPE, num_classes=5)
    assert "10 classes" in message
    assert "--num-classes" in message


# 3. plain state_dicts + --arch -------------------------------------------------------------------


def state_dict_layouts() -> list[Callable[[dict[str, Tensor]], object]]:
    return [
        lambda state: state,
        lambda state: {"state_dict": state},
        lambda state: {"model": state},
        lambda state: {f"module.{key}": value for key, value in state.items()},  # saved from DDP
    ]


@pytest.mark.parametrize(
    "layout", state_dict_layouts(), ids=["plain", "state_dict-key", "model-key", "ddp-prefix"]
)
def test_state_dict_teacher_predicts_like_the_checkpoint(
    classifier: ImageClassifier,
    images: Tensor,
    tmp_path: Path,
    layout: Callable[[dict[str, Tensor]], object],
) -> None:
    path = tmp_path / "weights.pt"
    torch.save(layout(classifier.net.state_dict()), path)

    teacher = load(path, arch="tiny-cnn", input_shape=SHAPE, **normalization(classifier))

    assert teacher.description == "state_dict + --arch"
    assert teacher.num_classes == 10  # read off the last layer
    assert teacher.input_shape == (1, 8, 8)
    assert teacher.has_batchnorm
    assert_frozen_and_eval(teacher)
    with torch.no_grad():
        assert torch.equal(teacher(images), classifier(images))


@pytest.mark.parametrize(
    ("key", "value", "expected"),
    [
        ("weight", float("nan"), "non-finite weights (NaN or infinity)"),
        ("weight", float("inf"), "non-finite weights (NaN or infinity)"),
        ("running_var", float("nan"), "holds non-finite values in"),
        ("running_var", float("inf"), "holds non-finite values in"),
    ],
)
def test_a_teacher_with_non_finite_weights_is_refused_in_one_line(
    classifier: ImageClassifier, tmp_path: Path, key: str, value: float, expected: str
) -> None:
    """A diverged or damaged teacher used to reach training and fail as a NaN loss that named
    the learning rate."""
    state = classifier.net.state_dict()
    name = next(n for n in state if n.endswith(key))
    state[name] = state[name].clone()
    state[name].view(-1)[0] = value
    path = tmp_path / "weights.pt"
    torch.save(state, path)

    message = load_error(path, arch="tiny-cnn", input_shape=SHAPE, **normalization(classifier))
    assert expected in message
    assert "train it again" in message


def test_an_infinity_in_a_buffer_that_is_not_a_statistic_is_accepted(tmp_path: Path) -> None:
    """An attention mask holds −inf on purpose."""

    class Masked(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.fc = nn.Linear(64, 10)
            self.register_buffer("mask", torch.tensor([0.0, float("-inf")]))

        def forward(self, x: Tensor) -> Tensor:
            return self.fc(x.flatten(1))

    path = tmp_path / "masked.pt"
    torch.jit.script(Masked()).save(str(path))
    teacher = load(path, input_shape=SHAPE)
    assert teacher.num_classes == 10


def test_state_dict_teacher_needs_an_arch(classifier: ImageClassifier, tmp_path: Path) -> None:
    path = tmp_path / "weights.pt"
    torch.save(classifier.net.state_dict(), path)

    message = load_error(path, input_shape=SHAPE)
    assert "state_dict" in message
    assert "--arch" in message


@pytest.mark.parametrize(
    ("mean", "std"),
    [([float("nan")], [1.0]), ([0.0], [1e-320]), ([float("inf")], [1.0]), ([1e308], [1.0])],
)
def test_unusable_normalization_is_refused(
    classifier: ImageClassifier, tmp_path: Path, mean: list[float], std: list[float]
) -> None:
    # --mean nan used to score 7.42 % with exit 0: every input became NaN.
    path = tmp_path / "weights.pt"
    torch.save(classifier.net.state_dict(), path)
    message = load_error(path, arch="tiny-cnn", input_shape=SHAPE, mean=mean, std=std)
    assert "is not usable" in message
    assert "check --mean and --std" in message


def test_a_file_without_normalization_loads_with_a_warning_unless_it_is_given(
    classifier: ImageClassifier, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    # A state_dict teacher trained on normalized inputs silently scored at chance.
    path = tmp_path / "weights.pt"
    torch.save(classifier.net.state_dict(), path)
    with caplog.at_level("WARNING", logger="freekd.teachers.load"):
        load(path, arch="tiny-cnn", input_shape=SHAPE)
    assert "records no input normalization and no --mean/--std was given" in caplog.text
    caplog.clear()
    with caplog.at_level("WARNING", logger="freekd.teachers.load"):
        load(path, arch="tiny-cnn", input_shape=SHAPE, **normalization(classifier))
    assert not caplog.text


def test_flags_a_freekd_checkpoint_overrides_are_named(
    tiny_teacher_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    with caplog.at_level("WARNING", logger="freekd.teachers.load"):
        load(tiny_teacher_path, arch="resnet8", num_classes=3)
    assert "--arch, --num-classes ignored" in caplog.text


@pytest.mark.parametrize(
    ("arch", "arch_kwargs", "num_classes"),
    [
        ("mlp", {}, None),
        ("tiny-cnn-nobn", {}, None),
        ("tiny-cnn", {"channels": [8, 16]}, None),
        ("tiny-cnn", {}, 5),
    ],
    ids=["other-arch", "other-arch-same-layers", "other-arch-kwargs", "other-class-count"],
)
def test_state_dict_that_does_not_fit_the_arch_is_refused(
    classifier: ImageClassifier,
    tmp_path: Path,
    arch: str,
    arch_kwargs: dict[str, Any],
    num_classes: int | None,
) -> None:
    path = tmp_path / "weights.pt"
    torch.save(classifier.net.state_dict(), path)

    message = load_error(
        path, arch=arch, arch_kwargs=arch_kwargs, input_shape=SHAPE, num_classes=num_classes
    )
    assert f"do not fit --arch {arch}" in message


def test_torchvision_state_dict_round_trip(tmp_path: Path) -> None:
    torch.manual_seed(0)
    shape = (3, 32, 32)
    net = build_model("torchvision:resnet18", num_classes=10, input_shape=shape).eval()
    original = ImageClassifier(
        net,
        arch="torchvision:resnet18",
        arch_kwargs={},
        num_classes=10,
        input_shape=shape,
        mean=[0.5, 0.4, 0.3],
        std=[0.2, 0.25, 0.3],
    )
    path = tmp_path / "resnet18.pt"
    torch.save(net.state_dict(), path)

    teacher = load(
        path,
        arch="torchvision:resnet18",
        input_shape=list(shape),
        num_classes=10,
        mean=[0.5, 0.4, 0.3],
        std=[0.2, 0.25, 0.3],
    )

    images = torch.rand(4, *shape, generator=torch.Generator().manual_seed(1))
    assert teacher.num_classes == 10
    assert teacher.input_shape == shape
    with torch.no_grad():
        assert torch.equal(teacher(images), original(images))


def test_import_path_arch_without_batchnorm(images: Tensor, tmp_path: Path) -> None:
    torch.manual_seed(0)
    net = UserNet(num_classes=10).eval()
    path = tmp_path / "user.pt"
    torch.save(net.state_dict(), path)

    teacher = load(
        path,
        arch="tests.teachers.user_net:UserNet",
        input_shape=SHAPE,
        num_classes=10,
        mean=[0.3],
        std=[0.4],
    )

    assert teacher.num_classes == 10
    assert not teacher.has_batchnorm
    assert_frozen_and_eval(teacher)
    with torch.no_grad():
        assert torch.equal(teacher(images), net((images - 0.3) / 0.4))


# 4. pickled modules ------------------------------------------------------------------------------


def test_pickled_module_needs_trust_pickle(
    classifier: ImageClassifier, images: Tensor, tmp_path: Path
) -> None:
    path = tmp_path / "module.pt"
    torch.save(classifier.net, path)

    assert "--trust-pickle" in load_error(path, input_shape=SHAPE)

    teacher = load(path, input_shape=SHAPE, trust_pickle=True, **normalization(classifier))
    assert teacher.description == "a pickled nn.Module"
    assert teacher.num_classes == 10
    assert_frozen_and_eval(teacher)
    with torch.no_grad():
        assert torch.equal(teacher(images), classifier(images))


# 5. hostile pickles ------------------------------------------------------------------------------


class TouchMarker:
    """Unpickling this object creates ``marker``: the code a hostile checkpoint would run."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self) -> tuple[Any, ...]:
        return (pathlib.Path.touch, (self.marker,))


class ShellMarker(TouchMarker):
    def __reduce__(self) -> tuple[Any, ...]:
        return (os.system, (f"touch {shlex.quote(str(self.marker))}",))


def write_with_torch(payload: object, path: Path) -> None:
    torch.save({"state_dict": {"weight": torch.zeros(2)}, "extra": payload}, path)


def write_with_pickle(payload: object, path: Path) -> None:
    with path.open("wb") as stream:
        pickle.dump(payload, stream)


def write_as_torchscript_archive(payload: object, path: Path) -> None:
    """A real TorchScript archive whose data.pkl is replaced by the hostile pickle."""
    real = path.with_suffix(".real")
    torch.jit.script(nn.Linear(2, 2)).save(str(real))
    with zipfile.ZipFile(real) as source, zipfile.ZipFile(path, "w") as target:
        for name in source.namelist():
            data = source.read(name)
            if name.endswith("/data.pkl"):
                data = pickle.dumps(payload, protocol=2)
            target.writestr(name, data)
    real.unlink()


@pytest.mark.parametrize("payload_class", [TouchMarker, ShellMarker], ids=["touch", "os.system"])
@pytest.mark.parametrize(
    "write",
    [write_with_torch, write_with_pickle, write_as_torchscript_archive],
    ids=["torch.save", "pickle.dump", "torchscript-archive"],
)
def test_hostile_pickle_is_refused_without_running_it(
    tmp_path: Path, payload_class: type[TouchMarker], write: Callable[[object, Path], None]
) -> None:
    marker = tmp_path / "pwned"
    path = tmp_path / "hostile.pt"
    write(payload_class(marker), path)
    assert not marker.exists()

    load_error(path, input_shape=SHAPE)
    load_error(path, arch="tiny-cnn", input_shape=SHAPE)
    with pytest.raises(FreekdError):
        load_model(path)
    with pytest.raises(FreekdError):
        read_checkpoint(path)

    assert not marker.exists()


def test_hostile_pickle_message_names_trust_pickle(tmp_path: Path) -> None:
    marker = tmp_path / "pwned"
    path = tmp_path / "hostile.pt"
    write_with_torch(TouchMarker(marker), path)

    assert "--trust-pickle" in load_error(path)
    assert not marker.exists()


# 6. files that are not teachers ------------------------------------------------------------------


def write_bad_file(kind: str, folder: Path, checkpoint: Path) -> Path:
    path = folder / f"{kind}.pt"
    if kind == "missing":
        return path
    if kind == "directory":
        path.mkdir()
    elif kind == "empty":
        path.write_bytes(b"")
    elif kind == "random-bytes":
        data = torch.randint(0, 256, (4096,), generator=torch.Generator().manual_seed(0))
        path.write_bytes(bytes(data.to(torch.uint8).tolist()))
    elif kind == "text":
        path.write_text("epochs: 10\nlr: 0.1\n# not a checkpoint at all\n" * 20)
    elif kind == "zip-not-torch":
        with zipfile.ZipFile(path, "w") as archive:
            archive.writestr("readme.txt", "hello\n")
            archive.writestr("data/values.csv", "1,2,3\n")
    elif kind == "truncated-checkpoint":
        data = checkpoint.read_bytes()
        path.write_bytes(data[: len(data) // 2])
    elif kind == "list":
        torch.save([torch.zeros(2), 1], path)
    elif kind == "dict-without-tensors":
        torch.save({"epochs": 3, "name": "teacher"}, path)
    else:
        raise AssertionError(kind)
    return path


BAD_FILES = [
    "missing",
    "directory",
    "empty",
    "random-bytes",
    "text",
    "zip-not-torch",
    "truncated-checkpoint",
    "list",
    "dict-without-tensors",
]


@pytest.mark.parametrize("trust_pickle", [False, True], ids=["default", "trust-pickle"])
@pytest.mark.parametrize("kind", BAD_FILES)
def test_file_that_is_no_teacher_gives_a_one_line_error(
    tmp_path: Path, tiny_teacher_path: Path, kind: str, trust_pickle: bool
) -> None:
    path = write_bad_file(kind, tmp_path, tiny_teacher_path)

    message = load_error(path, input_shape=SHAPE, arch="tiny-cnn", trust_pickle=trust_pickle)

    assert str(path) in message
    if kind == "missing":
        assert "does not exist" in message
    if kind in ("random-bytes", "text", "zip-not-torch", "truncated-checkpoint"):
        # Only files that really hold pickled objects may suggest --trust-pickle.
        assert "--trust-pickle" not in message or trust_pickle
    with pytest.raises(FreekdError) as caught:  # freekd.load_model reads the same files
        load_model(path)
    assert "\n" not in str(caught.value)


def test_no_teacher_path_is_an_error() -> None:
    assert "--teacher" in load_error("")


# 7. input shapes that do not fit -----------------------------------------------------------------


def test_state_dict_teacher_with_a_shape_its_arch_cannot_take(tmp_path: Path) -> None:
    mlp_path = tmp_path / "mlp.pt"  # an MLP's first layer is sized for the 8×8 pixels
    torch.save(build_model("mlp", num_classes=10, input_shape=(1, 8, 8)).state_dict(), mlp_path)
    flat_path = tmp_path / "flat.pt"  # a user network that can only take 8×8 inputs
    torch.save(FlatNet(num_classes=10).state_dict(), flat_path)

    assert load(mlp_path, arch="mlp", input_shape=SHAPE).num_classes == 10
    assert "--input-shape" in load_error(mlp_path, arch="mlp", input_shape=[1, 28, 28])
    arch = "tests.teachers.user_net:FlatNet"
    assert load(flat_path, arch=arch, input_shape=SHAPE).num_classes == 10
    assert "--input-shape" in load_error(flat_path, arch=arch, input_shape=[1, 28, 28])


@pytest.mark.filterwarnings("ignore::torch.jit.TracerWarning")
def test_torchscript_teacher_with_a_wrong_shape(
    classifier: ImageClassifier, tmp_path: Path
) -> None:
    mlp = ImageClassifier(
        build_model("mlp", num_classes=10, input_shape=(1, 8, 8)),
        arch="mlp",
        arch_kwargs={},
        num_classes=10,
        input_shape=(1, 8, 8),
        mean=[0.0],
        std=[1.0],
    ).eval()
    mlp_path = tmp_path / "mlp.ts"
    torch.jit.trace(mlp, torch.rand(2, *SHAPE)).save(str(mlp_path))
    cnn_path = tmp_path / "cnn.ts"
    torch.jit.script(classifier.net).save(str(cnn_path))

    assert "--input-shape" in load_error(mlp_path, input_shape=[1, 28, 28])
    assert "--input-shape" in load_error(cnn_path, input_shape=[3, 8, 8])


@pytest.mark.parametrize("shape", [[1, 8], [0, 8, 8], [1, 8, 8, 8]])
def test_malformed_input_shape(
    classifier: ImageClassifier, tmp_path: Path, shape: list[int]
) -> None:
    path = tmp_path / "weights.pt"
    torch.save(classifier.net.state_dict(), path)

    assert "--input-shape" in load_error(path, arch="tiny-cnn", input_shape=shape)
