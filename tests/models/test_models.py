"""Tests for freekd.models: every registered network, build_model, ImageClassifier, check_model."""

from __future__ import annotations

import importlib.util
import io
import re
import sys
from pathlib import Path
from typing import Any

import pytest
import torch
import torch.nn.functional as F  # noqa: N812  (the PyTorch convention)
from torch import Tensor, nn

from freekd.errors import FreekdError, UnknownNameError
from freekd.models import (
    MODELS,
    ImageClassifier,
    build_model,
    check_arch_name,
    check_model,
    count_parameters,
)
from freekd.models.lenet import LeNet5
from freekd.models.wrn import WideResNet
from tests.conftest import assert_same_weights

NUM_CLASSES = 10
# Architectures that need kwargs to be built at all.
REQUIRED_KWARGS: dict[str, dict[str, Any]] = {
    "wrn": {"depth": 10, "widen_factor": 1},
    "branched": {"base": "resnet8", "branches": 2},
    "mean-ensemble": {"members": [{"arch": "tiny-cnn"}, {"arch": "mlp"}]},
}
# Forward + backward of the largest networks takes seconds on one CPU thread.
SLOW = {("wrn-28-10", (1, 28, 28)), ("wrn-28-10", (3, 32, 32)), ("resnet34", (3, 32, 32))}


def build(arch: str, input_shape: tuple[int, int, int], **kwargs: Any) -> nn.Module:
    arch_kwargs = {**REQUIRED_KWARGS.get(arch, {}), **kwargs}
    return build_model(
        arch, num_classes=NUM_CLASSES, input_shape=input_shape, arch_kwargs=arch_kwargs
    )


def forward_backward_cases() -> list[Any]:
    return [
        pytest.param(
            name,
            shape,
            marks=[pytest.mark.slow] if (name, shape) in SLOW else [],
            id=f"{name}-{'x'.join(map(str, shape))}",
        )
        for name in MODELS.names()
        for shape in [(1, 28, 28), (3, 32, 32)]
    ]


@pytest.mark.parametrize(("arch", "input_shape"), forward_backward_cases())
def test_registered_model_gives_logits_and_gradients(
    arch: str, input_shape: tuple[int, int, int]
) -> None:
    torch.manual_seed(0)
    net = build(arch, input_shape).train()
    images = torch.randn(2, *input_shape)  # batch of 2: BatchNorm still has >1 value per channel

    logits = net(images)

    assert isinstance(logits, Tensor)
    assert logits.shape == (2, NUM_CLASSES)
    assert torch.isfinite(logits).all()
    F.cross_entropy(logits, torch.tensor([1, 2])).backward()
    gradients = [parameter.grad for parameter in net.parameters()]
    assert all(gradient is not None for gradient in gradients)
    assert all(torch.isfinite(gradient).all() for gradient in gradients if gradient is not None)
    assert any(gradient.abs().sum() > 0 for gradient in gradients if gradient is not None)


@pytest.mark.parametrize("arch", MODELS.names())
def test_registered_model_takes_tiny_images_with_an_unusual_channel_count(arch: str) -> None:
    net = build(arch, (2, 8, 8)).eval()

    with torch.no_grad():
        logits = net(torch.rand(2, 2, 8, 8))

    assert logits.shape == (2, NUM_CLASSES)
    assert torch.isfinite(logits).all()


def test_shallow_cnn_is_one_convolution_a_pool_and_a_linear_layer() -> None:
    net = build("shallow-cnn", (1, 28, 28))
    convolutions = [m for m in net.modules() if isinstance(m, nn.Conv2d)]
    assert [(c.out_channels, c.kernel_size) for c in convolutions] == [(32, (5, 5))]
    assert count_parameters(net) == 32 * 25 + 32 + 32 * 7 * 7 * 10 + 10  # 16,522
    assert isinstance(build("shallow-cnn", (1, 28, 28), pool="avg").pool, nn.AvgPool2d)
    assert count_parameters(build("shallow-cnn", (1, 28, 28), width=8, kernel_size=7)) == (
        8 * 49 + 8 + 8 * 49 * 10 + 10
    )
    for kwargs, message in [
        ({"width": 0}, "width must be an integer"),
        ({"width": True}, "width must be an integer"),
        ({"kernel_size": 4}, "kernel_size must be odd"),
        ({"kernel_size": 5.0}, "kernel_size must be an integer"),
        ({"pool": "min"}, "pool must be one of max, avg"),
    ]:
        with pytest.raises(FreekdError, match=message):
            build("shallow-cnn", (1, 28, 28), **kwargs)


@pytest.mark.parametrize("arch", ["tiny-cnn", "tiny-cnn-nobn"])
def test_tiny_cnn_on_digits_size(arch: str) -> None:
    net = build(arch, (1, 8, 8))

    assert net(torch.rand(2, 1, 8, 8)).shape == (2, NUM_CLASSES)
    assert count_parameters(net) == pytest.approx(5_000, rel=0.1)
    has_batch_norm = any(isinstance(module, nn.BatchNorm2d) for module in net.modules())
    assert has_batch_norm == (arch == "tiny-cnn")


@pytest.mark.parametrize(
    ("arch", "input_shape", "num_classes", "paper_count", "tolerance"),
    [
        # DAFL §4.1: LeNet-5 ≈62k, LeNet-5-half ≈16k parameters (MNIST, 32×32).
        ("lenet5", (1, 32, 32), 10, 62_000, 0.1),
        ("lenet5-half", (1, 32, 32), 10, 16_000, 0.1),
        # He et al. 2016 §4.2 (CIFAR-10, option A).
        ("resnet20", (3, 32, 32), 10, 270_000, 0.02),
        ("resnet32", (3, 32, 32), 10, 460_000, 0.02),
        ("resnet44", (3, 32, 32), 10, 660_000, 0.02),
        ("resnet56", (3, 32, 32), 10, 850_000, 0.02),
        ("resnet110", (3, 32, 32), 10, 1_700_000, 0.03),
        # CRD (Tian et al. 2020) Table 1 (CIFAR-100).
        ("resnet8x4", (3, 32, 32), 100, 1_230_000, 0.01),
        ("resnet32x4", (3, 32, 32), 100, 7_430_000, 0.01),
        # Zagoruyko & Komodakis 2016 (CIFAR-10).
        ("wrn-40-1", (3, 32, 32), 10, 600_000, 0.07),
        ("wrn-40-2", (3, 32, 32), 10, 2_200_000, 0.03),
        ("wrn-28-10", (3, 32, 32), 10, 36_500_000, 0.01),
        # The CIFAR ResNet-18/34 of the KD literature (He et al. Table 1 with a 3×3 stem).
        ("resnet18", (3, 32, 32), 10, 11_170_000, 0.01),
        ("resnet34", (3, 32, 32), 10, 21_280_000, 0.01),
    ],
)
def test_parameter_counts_match_the_papers(
    arch: str,
    input_shape: tuple[int, int, int],
    num_classes: int,
    paper_count: int,
    tolerance: float,
) -> None:
    net = build_model(arch, num_classes=num_classes, input_shape=input_shape)

    assert count_parameters(net) == pytest.approx(paper_count, rel=tolerance)


def test_lenet_counts_are_exact_and_independent_of_28_or_32_inputs() -> None:
    for input_shape in [(1, 28, 28), (1, 32, 32)]:
        assert count_parameters(build("lenet5", input_shape)) == 61_706
        assert count_parameters(build("lenet5-half", input_shape)) == 15_738


def test_lenet_pads_28_pixel_inputs_like_lecun_and_upsamples_smaller_ones() -> None:
    net_28 = build("lenet5", (1, 28, 28))
    net_32 = build("lenet5", (1, 32, 32))
    assert isinstance(net_28, LeNet5)
    assert isinstance(net_32, LeNet5)
    first_28, first_32 = net_28.features[0], net_32.features[0]
    assert isinstance(first_28, nn.Conv2d)
    assert isinstance(first_32, nn.Conv2d)
    assert first_28.padding == (2, 2)
    assert first_32.padding == (0, 0)
    # With the padding a 28×28 input reaches conv3 at 5×5, so the final map is 1×1 as in the paper.
    features = net_28.features[:-1](torch.rand(2, 1, 28, 28))
    assert features.shape == (2, 120, 1, 1)
    for size in (1, 8, 27, 45):
        assert net_28(torch.rand(2, 1, size, size)).shape == (2, NUM_CLASSES)


def test_option_a_shortcuts_are_parameter_free_and_option_b_projects() -> None:
    option_a = build("resnet20", (3, 32, 32))
    option_b = build("resnet20", (3, 32, 32), shortcut="B")

    # Two downsampling blocks gain a 1×1 convolution (16→32, 32→64) and its BN.
    extra = (16 * 32 + 2 * 32) + (32 * 64 + 2 * 64)
    assert count_parameters(option_b) - count_parameters(option_a) == extra
    with pytest.raises(FreekdError, match="shortcut"):
        build("resnet20", (3, 32, 32), shortcut="C")


def test_wrn_strings_are_parsed_and_aliases_agree_with_the_generic_factory() -> None:
    parsed = build_model("wrn-22-1", num_classes=10, input_shape=(3, 32, 32))
    generic = build_model(
        "wrn",
        num_classes=10,
        input_shape=(3, 32, 32),
        arch_kwargs={"depth": 22, "widen_factor": 1},
    )
    alias = build_model("wrn-16-2", num_classes=10, input_shape=(3, 32, 32))
    parsed_alias = WideResNet(num_classes=10, in_channels=3, depth=16, widen_factor=2)

    assert isinstance(parsed, WideResNet)
    assert count_parameters(parsed) == count_parameters(generic)
    assert count_parameters(alias) == count_parameters(parsed_alias)
    dropout = build_model(
        "wrn-10-1", num_classes=10, input_shape=(3, 8, 8), arch_kwargs={"dropout": 0.3}
    )
    assert any(isinstance(m, nn.Dropout) and m.p == 0.3 for m in dropout.modules())


@pytest.mark.parametrize("arch", ["wrn-18-2", "wrn-4-1", "wrn-0-1"])
def test_wrn_strings_with_an_invalid_depth_are_rejected(arch: str) -> None:
    with pytest.raises(FreekdError, match=r"depth - 4 must be a positive multiple of 6"):
        build_model(arch, num_classes=10, input_shape=(3, 32, 32))


def test_wrn_errors() -> None:
    with pytest.raises(FreekdError, match="depth"):
        build_model(
            "wrn",
            num_classes=10,
            input_shape=(3, 32, 32),
            arch_kwargs={"depth": 20, "widen_factor": 1},
        )
    with pytest.raises(FreekdError, match="wrn-16-2 does not accept arch kwargs"):
        build_model("wrn-16-2", num_classes=10, input_shape=(3, 32, 32), arch_kwargs={"depth": 16})
    with pytest.raises(FreekdError, match="sets depth"):
        build_model("wrn-22-2", num_classes=10, input_shape=(3, 32, 32), arch_kwargs={"depth": 16})
    with pytest.raises(FreekdError, match="check --arch-kwargs"):
        build_model("wrn", num_classes=10, input_shape=(3, 32, 32))  # depth is required


@pytest.mark.parametrize(
    ("arch", "num_classes", "input_shape", "arch_kwargs", "message"),
    [
        ("lenet5", 10**12, (1, 28, 28), None, "weights would hold"),
        ("mlp", 10, (1, 28, 28), {"hidden": [10**6, 10**6]}, "weights would hold"),
        ("wrn-16-100000", 10, (3, 32, 32), None, "weights would hold"),
        ("wrn-10006-1", 10, (3, 32, 32), None, "depth 10006 is above 1,000"),
        ("lenet5", 10, (1, 10**5, 10**5), None, "holds more than 67,108,864 values"),
        ("torchvision:resnet18", 10**9, (3, 32, 32), None, "weights would hold"),
    ],
)
def test_sizes_from_a_file_or_flag_are_refused_before_they_are_allocated(
    arch: str,
    num_classes: int,
    input_shape: tuple[int, int, int],
    arch_kwargs: dict[str, Any] | None,
    message: str,
) -> None:
    # These used to allocate until memory ran out (a raw RuntimeError) or hang; checkpoint
    # metadata, --num-classes, --input-shape and --arch-kwargs all reach build_model.
    with pytest.raises(FreekdError, match=re.escape(message)):
        build_model(arch, num_classes=num_classes, input_shape=input_shape, arch_kwargs=arch_kwargs)


def test_the_size_check_does_not_change_the_random_weights() -> None:
    # The network is built once on the meta device first; that must not draw random numbers.
    torch.manual_seed(0)
    first = build_model("lenet5", num_classes=10, input_shape=(1, 28, 28))
    torch.manual_seed(0)
    plain = LeNet5(num_classes=10, in_channels=1, widths=(6, 16, 120, 84), first_padding=2)
    assert_same_weights(first, plain)


def test_unknown_names_list_the_known_ones() -> None:
    with pytest.raises(UnknownNameError, match="resnet20") as raised:
        build_model("resnet21", num_classes=10, input_shape=(3, 32, 32))
    assert "torchvision:NAME" in str(raised.value)
    assert "\n" not in str(raised.value)


def test_registry_models_reject_bad_arch_kwargs() -> None:
    with pytest.raises(FreekdError, match=r"resnet20 does not accept arch kwargs \{'width': 3\}"):
        build_model("resnet20", num_classes=10, input_shape=(3, 32, 32), arch_kwargs={"width": 3})
    with pytest.raises(FreekdError, match="--num-classes"):
        build_model("mlp", num_classes=10, input_shape=(1, 8, 8), arch_kwargs={"num_classes": 3})
    with pytest.raises(FreekdError, match="positive integers"):
        build_model("mlp", num_classes=10, input_shape=(1, 8, 8), arch_kwargs={"hidden": [0]})
    with pytest.raises(FreekdError, match="check --num-classes"):
        build_model("mlp", num_classes=0, input_shape=(1, 8, 8))
    with pytest.raises(FreekdError, match="check --input-shape"):
        build_model("mlp", num_classes=10, input_shape=(1, 8))  # type: ignore[arg-type]


def test_mlp_hidden_sizes() -> None:
    net = build_model("mlp", num_classes=4, input_shape=(1, 8, 8), arch_kwargs={"hidden": [16]})

    linear_shapes = [m.weight.shape for m in net.modules() if isinstance(m, nn.Linear)]
    assert linear_shapes == [(16, 64), (4, 16)]


def test_torchvision_resnet18_on_grey_28_pixel_images() -> None:
    net = build_model("torchvision:resnet18", num_classes=10, input_shape=(1, 28, 28))
    model = ImageClassifier(
        net,
        arch="torchvision:resnet18",
        arch_kwargs={},
        num_classes=10,
        input_shape=(1, 28, 28),
        mean=[0.1307],
        std=[0.3081],
    )

    assert model.expected_channels == 3
    check_model(model, input_shape=(1, 28, 28), num_classes=10)
    assert model.train()(torch.rand(2, 1, 28, 28)).shape == (2, 10)


def test_torchvision_errors() -> None:
    with pytest.raises(UnknownNameError, match="resnet18") as raised:
        build_model("torchvision:resnet19", num_classes=10, input_shape=(3, 32, 32))
    assert "check --arch" in str(raised.value)
    with pytest.raises(FreekdError, match="check --arch-kwargs"):
        build_model(
            "torchvision:resnet18",
            num_classes=10,
            input_shape=(3, 32, 32),
            arch_kwargs={"depth": 3},
        )
    with pytest.raises(FreekdError, match="never downloaded"):
        build_model(
            "torchvision:resnet18",
            num_classes=10,
            input_shape=(3, 32, 32),
            arch_kwargs={"weights": "DEFAULT"},
        )


def test_torchvision_kwargs_are_passed_on() -> None:
    net = build_model(
        "torchvision:mobilenet_v3_small",
        num_classes=7,
        input_shape=(3, 32, 32),
        arch_kwargs={"dropout": 0.5},
    )

    assert net.eval()(torch.rand(1, 3, 32, 32)).shape == (1, 7)
    assert any(isinstance(m, nn.Dropout) and m.p == 0.5 for m in net.modules())


def test_import_path_passes_num_classes_and_arch_kwargs() -> None:
    net = build_model(
        "tests.models.user_arch:UserNet",
        num_classes=7,
        input_shape=(1, 8, 8),
        arch_kwargs={"width": 6},
        trust_code=True,
    )

    assert net(torch.rand(2, 1, 8, 8)).shape == (2, 7)
    assert net.conv.out_channels == 6  # type: ignore[union-attr]
    # arch_kwargs may set num_classes themselves for import paths
    overridden = build_model(
        "tests.models.user_arch:UserNet",
        num_classes=7,
        input_shape=(1, 8, 8),
        arch_kwargs={"num_classes": 3},
        trust_code=True,
    )
    assert overridden(torch.rand(2, 1, 8, 8)).shape == (2, 3)


def test_import_path_functions_get_only_the_arguments_they_name() -> None:
    fixed = build_model(
        "tests.models.user_arch:fixed_net", num_classes=7, input_shape=(1, 8, 8), trust_code=True
    )
    shaped = build_model(
        "tests.models.user_arch:shaped_net", num_classes=7, input_shape=(1, 8, 8), trust_code=True
    )

    assert fixed(torch.rand(2, 1, 8, 8)).shape == (2, 5)
    assert shaped(torch.rand(2, 1, 8, 8)).shape == (2, 7)


@pytest.mark.parametrize(
    ("arch", "arch_kwargs", "message"),
    [
        ("tests.models.no_such_module:Net", {}, r"cannot import .*; check --arch"),
        ("tests.models.user_arch:NoSuchNet", {}, r"cannot import .*; check --arch"),
        (":UserNet", {}, r"cannot import"),
        (
            "tests.models.user_arch:UserNet",
            {"depth": 3},
            r"UserNet does not accept arch kwargs \{'depth': 3\}: .*; check --arch-kwargs",
        ),
        ("tests.models.user_arch:not_a_module", {}, r"expected a torch.nn.Module"),
    ],
)
def test_import_path_errors(arch: str, arch_kwargs: dict[str, Any], message: str) -> None:
    with pytest.raises(FreekdError, match=message) as raised:
        build_model(
            arch, num_classes=3, input_shape=(1, 8, 8), arch_kwargs=arch_kwargs, trust_code=True
        )
    assert "\n" not in str(raised.value)


@pytest.mark.parametrize(
    ("arch", "arch_kwargs", "kind", "message"),
    [
        ("lenet99", {}, UnknownNameError, r"package\.module:Class in --student$"),
        ("torchvision:resnet19", {}, UnknownNameError, r"; check --student$"),
        ("tests.models.no_such_module:Net", {}, FreekdError, r"; check --student$"),
        ("lenet5", {"depth": 3}, FreekdError, r"; check student_kwargs$"),
    ],
)
def test_errors_name_the_setting_the_user_named_the_model_with(
    arch: str, arch_kwargs: dict[str, Any], kind: type[Exception], message: str
) -> None:
    """A student's bad name points at --student, not at --arch (which names the teacher)."""
    with pytest.raises(kind, match=message) as raised:
        build_model(
            arch,
            num_classes=3,
            input_shape=(1, 28, 28),
            arch_kwargs=arch_kwargs,
            trust_code=True,
            setting="--student",
        )
    assert "--arch" not in str(raised.value)


def test_import_path_is_refused_without_trust_code() -> None:
    """An import path imports and calls code: never built unless the caller trusts it."""
    with pytest.raises(FreekdError, match="import path and would run its code") as raised:
        build_model("os:system", num_classes=3, input_shape=(1, 8, 8), arch_kwargs={})
    assert "\n" not in str(raised.value)


class Passthrough(nn.Module):
    """Returns its (normalized) input; with an unused 3-channel conv to claim RGB input."""

    def __init__(self, expected_channels: int | None = None) -> None:
        super().__init__()
        if expected_channels is not None:
            self.conv = nn.Conv2d(expected_channels, 1, kernel_size=1)

    def forward(self, images: Tensor) -> Tensor:
        return images


def wrap(net: nn.Module, **changes: Any) -> ImageClassifier:
    arguments: dict[str, Any] = {
        "arch": "test",
        "arch_kwargs": {},
        "num_classes": 2,
        "input_shape": (3, 4, 4),
        "mean": [0.5, 0.4, 0.3],
        "std": [0.2, 0.25, 0.5],
        **changes,
    }
    return ImageClassifier(net, **arguments)


def test_image_classifier_normalizes_per_channel() -> None:
    images = torch.rand(2, 3, 4, 4)
    model = wrap(Passthrough())

    expected = torch.stack(
        [
            (images[:, 0] - 0.5) / 0.2,
            (images[:, 1] - 0.4) / 0.25,
            (images[:, 2] - 0.3) / 0.5,
        ],
        dim=1,
    )
    torch.testing.assert_close(model(images), expected)
    assert model.expected_channels == 3


def test_image_classifier_broadcasts_a_single_mean_and_std() -> None:
    model = wrap(Passthrough(), mean=[0.5], std=[0.25])
    images = torch.rand(2, 3, 4, 4)

    torch.testing.assert_close(model(images), (images - 0.5) / 0.25)
    assert model.metadata()["input"]["mean"] == [0.5, 0.5, 0.5]


def test_image_classifier_repeats_grey_for_rgb_networks_after_normalizing() -> None:
    model = wrap(Passthrough(expected_channels=3), input_shape=(1, 4, 4), mean=[0.5], std=[0.2])
    images = torch.rand(2, 1, 4, 4)

    output = model(images)

    assert model.expected_channels == 3
    torch.testing.assert_close(output, ((images - 0.5) / 0.2).repeat(1, 3, 1, 1))


@pytest.mark.parametrize(
    ("changes", "message"),
    [
        ({"mean": [0.1, 0.2]}, r"mean has 2 values .* 3 channel\(s\); give 1 or 3 values"),
        ({"std": [0.1, 0.2]}, "std has 2 values"),
        ({"std": [0.0]}, r"std \[0.0, 0.0, 0.0\] is not usable"),
        ({"input_shape": (3, 4)}, "check --input-shape"),
        ({"arch_kwargs": {"layer": nn.ReLU}}, "cannot be stored in a checkpoint"),
    ],
)
def test_image_classifier_rejects_bad_arguments(changes: dict[str, Any], message: str) -> None:
    with pytest.raises(FreekdError, match=message):
        wrap(Passthrough(), **changes)


def test_image_classifier_rejects_images_with_the_wrong_channel_count() -> None:
    with pytest.raises(FreekdError, match="3-channel images, got 1"):
        wrap(Passthrough())(torch.rand(2, 1, 4, 4))


def test_image_classifier_state_dict_holds_only_the_network() -> None:
    net = build_model("tiny-cnn", num_classes=10, input_shape=(1, 8, 8))
    model = wrap(net, arch="tiny-cnn", num_classes=10, input_shape=(1, 8, 8), mean=[0.3], std=[0.4])

    keys = list(model.state_dict())

    assert keys
    assert all(key.startswith("net.") for key in keys)
    assert [key.removeprefix("net.") for key in keys] == list(net.state_dict())
    assert model.to(torch.float64).mean.dtype == torch.float64  # buffers still follow .to()


def test_metadata_is_plain_and_rebuilds_the_classifier() -> None:
    net = build_model("mlp", num_classes=4, input_shape=(1, 8, 8), arch_kwargs={"hidden": (32, 16)})
    model = ImageClassifier(
        net,
        arch="mlp",
        arch_kwargs={"hidden": (32, 16)},
        num_classes=4,
        input_shape=(1, 8, 8),
        mean=[0.3],
        std=[0.4],
    )
    buffer = io.BytesIO()
    torch.save({"metadata": model.metadata(), "state_dict": model.net.state_dict()}, buffer)
    buffer.seek(0)

    loaded = torch.load(buffer, weights_only=True)
    metadata = loaded["metadata"]
    assert metadata == {
        "arch": "mlp",
        "arch_kwargs": {"hidden": [32, 16]},
        "num_classes": 4,
        "input": {"shape": [1, 8, 8], "mean": [0.3], "std": [0.4]},
    }
    rebuilt = ImageClassifier.from_metadata(metadata)
    rebuilt.net.load_state_dict(loaded["state_dict"])
    images = torch.rand(2, 1, 8, 8)
    torch.testing.assert_close(rebuilt(images), model(images))
    with pytest.raises(FreekdError, match="missing"):
        ImageClassifier.from_metadata({"arch": "mlp"})


def test_check_model_accepts_a_fitting_model_and_restores_modes() -> None:
    net = build_model("tiny-cnn", num_classes=10, input_shape=(1, 8, 8)).train()
    next(module for module in net.modules() if isinstance(module, nn.BatchNorm2d)).eval()
    # a mixed train/eval state must come back exactly as it was
    modes = [module.training for module in net.modules()]

    check_model(net, input_shape=(1, 8, 8), num_classes=10)

    assert [module.training for module in net.modules()] == modes
    eval_net = net.eval()
    check_model(eval_net, input_shape=(1, 8, 8), num_classes=10)
    assert not any(module.training for module in eval_net.modules())


def test_check_model_reports_an_input_shape_that_does_not_fit() -> None:
    net = build_model("mlp", num_classes=10, input_shape=(1, 28, 28)).train()

    with pytest.raises(
        FreekdError,
        match=r"model MultilayerPerceptron cannot take input of shape "
        r"3×32×32: .*; check --input-shape",
    ) as raised:
        check_model(net, input_shape=(3, 32, 32), num_classes=10)
    assert "\n" not in str(raised.value)
    assert net.training


def test_check_model_reports_the_wrong_class_count_with_the_arch_name() -> None:
    net = build_model("tiny-cnn", num_classes=10, input_shape=(1, 8, 8))
    model = wrap(net, arch="tiny-cnn", num_classes=10, input_shape=(1, 8, 8), mean=[0], std=[1])

    with pytest.raises(
        FreekdError,
        match=r"model tiny-cnn outputs shape \(2, 10\) .*\(2, 3\); "
        r"check --num-classes",
    ):
        check_model(model, input_shape=(1, 8, 8), num_classes=3)


def test_check_model_rejects_tuple_outputs() -> None:
    net = build_model(
        "tests.models.user_arch:TupleNet", num_classes=3, input_shape=(1, 8, 8), trust_code=True
    )

    with pytest.raises(FreekdError, match="returns tuple, expected a"):
        check_model(net, input_shape=(1, 8, 8), num_classes=3)


def test_count_parameters() -> None:
    net = nn.Sequential(nn.Linear(3, 2), nn.Linear(2, 1))
    net[0].requires_grad_(False)

    assert count_parameters(net) == 8 + 3
    assert count_parameters(net, trainable_only=True) == 3


@pytest.mark.parametrize("arch", ["lenet5", "wrn-16-2", "torchvision:resnet18", "pkg.mod:Net"])
def test_check_arch_name_passes_what_build_model_can_build_by_name(arch: str) -> None:
    check_arch_name(arch)  # an import path or torchvision name is checked when it is built


@pytest.mark.parametrize("arch", ["nosuch", "", 5, None, "wrn-16", "wrn-11-2", "wrn-16-0"])
def test_check_arch_name_refuses_in_one_line_naming_the_setting(arch: object) -> None:
    with pytest.raises(FreekdError, match="student.student") as caught:
        check_arch_name(arch, setting="student.student")
    assert "\n" not in str(caught.value)


def test_an_import_path_is_also_found_in_the_current_folder(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # The installed `freekd` command does not look in the current folder (python -m does), so
    # `--arch mypkg.nets:Net` beside the user failed with "No module named 'mypkg'".
    package = tmp_path / "userpkg37"
    package.mkdir()
    (package / "__init__.py").write_text("")
    (package / "nets.py").write_text(
        "import torch.nn as nn\n\n"
        "def net(num_classes):\n"
        "    return nn.Sequential(nn.Flatten(), nn.Linear(64, num_classes))\n"
    )
    monkeypatch.chdir(tmp_path)
    monkeypatch.setattr(sys, "path", [p for p in sys.path if p not in ("", str(tmp_path))])
    (tmp_path / "json_probe37.py").write_text("raise SystemExit('imported from the folder')\n")
    model = build_model("userpkg37.nets:net", num_classes=3, input_shape=(1, 8, 8), trust_code=True)
    assert model(torch.zeros(2, 1, 8, 8)).shape == (2, 3)
    # Only the named package came from the folder: no later import looks there.
    assert str(tmp_path) not in sys.path
    assert importlib.util.find_spec("json_probe37") is None  # a file beside it stays unseen
    for name in ("userpkg37.nets", "userpkg37"):
        sys.modules.pop(name)
    with pytest.raises(FreekdError, match="No module named 'nosuchpkg37'"):
        build_model("nosuchpkg37.nets:net", num_classes=3, input_shape=(1, 8, 8), trust_code=True)
