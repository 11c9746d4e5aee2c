"""ONE's branched network and the composite architectures (freekd.models.branching, composite)."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F  # noqa: N812  (the PyTorch convention)

from freekd.checkpoint import load_model, save_checkpoint
from freekd.errors import FreekdError
from freekd.models import ImageClassifier, build_model
from freekd.models.branching import BranchedNetwork, BranchStage, PerBranch, find_branch_point
from freekd.models.composite import branch_classifier, ensemble_classifier, export_branch

GREY = (1, 28, 28)


def classifier(arch: str, shape: tuple[int, int, int] = GREY, **kwargs: object) -> ImageClassifier:
    net = build_model(arch, num_classes=10, input_shape=shape, arch_kwargs=dict(kwargs),
                      trust_code=True)  # fmt: skip
    return ImageClassifier(net, arch=arch, arch_kwargs=dict(kwargs), num_classes=10,
                           input_shape=shape, mean=[0.5], std=[0.25])  # fmt: skip


@pytest.mark.parametrize(
    ("arch", "shape", "stage"),
    [
        ("resnet8", GREY, "stages.2"),
        ("resnet20", (3, 32, 32), "stages.2"),
        ("wrn-16-1", GREY, "groups.2"),
        ("torchvision:resnet18", (3, 64, 64), "layer4"),
    ],
)
def test_the_last_stage_is_found_on_resnets_and_wrns(
    arch: str, shape: tuple[int, int, int], stage: str
) -> None:
    net = build_model(arch, num_classes=10, input_shape=shape)
    assert find_branch_point(net, shape) == stage


def test_a_network_without_a_stage_is_refused_in_one_line() -> None:
    net = build_model("lenet5", num_classes=10, input_shape=GREY)
    with pytest.raises(FreekdError, match="method.params.branch_at") as error:
        find_branch_point(net, GREY)
    assert "\n" not in str(error.value)


def test_branches_share_the_trunk_and_start_apart() -> None:
    torch.manual_seed(0)
    net = build_model("branched", num_classes=10, input_shape=GREY,
                      arch_kwargs={"base": "resnet8", "branches": 3})  # fmt: skip
    assert isinstance(net, BranchedNetwork)
    stage = net.base.get_submodule("stages.2")
    head = net.base.get_submodule("fc")
    assert isinstance(stage, BranchStage)
    assert isinstance(head, PerBranch)
    assert len(stage.branches) == len(head.branches) == 3
    # One trunk: the stem and the first two stages exist once.
    single = build_model("resnet8", num_classes=10, input_shape=GREY)
    trunk = sum(
        p.numel()
        for name, p in single.named_parameters()
        if name.startswith(("stem", "stages.0", "stages.1"))
    )  # noqa: E501
    branch = sum(
        p.numel() for name, p in single.named_parameters() if name.startswith(("stages.2", "fc"))
    )  # noqa: E501
    gate = sum(p.numel() for p in net.gate.parameters())
    assert sum(p.numel() for p in net.parameters()) == trunk + 3 * branch + gate
    # Independent initializations: the branches are not copies of each other.
    first, second = (list(b.parameters())[0] for b in stage.branches[:2])
    assert not torch.equal(first, second)


def test_one_pass_gives_the_branches_the_gate_and_their_weighted_sum() -> None:
    torch.manual_seed(0)
    net = build_model("branched", num_classes=10, input_shape=GREY,
                      arch_kwargs={"base": "resnet8", "branches": 3})  # fmt: skip
    images = torch.randn(4, *GREY)
    ensemble = net(images)
    assert net.branch_logits is not None
    assert net.gate_weights is not None
    assert net.branch_logits.shape == (3, 4, 10)
    assert net.gate_weights.shape == (4, 3)
    torch.testing.assert_close(net.gate_weights.sum(dim=1), torch.ones(4))
    expected = sum(net.gate_weights[:, m, None] * net.branch_logits[m] for m in range(3))
    torch.testing.assert_close(ensemble, expected)
    # The ensemble's gradient reaches the trunk, every branch and the gate.
    F.cross_entropy(ensemble, torch.arange(4)).backward()
    assert all(p.grad is not None and p.grad.abs().sum() > 0 for p in net.parameters())


@pytest.mark.parametrize("base", ["resnet8", "wrn-16-1"])
def test_an_exported_branch_is_the_base_network_computing_that_branch(base: str) -> None:
    torch.manual_seed(0)
    model = branch_classifier(classifier(base), branches=2, branch_at="auto").eval()
    images = torch.rand(3, *GREY)
    with torch.no_grad():
        model(images)
        branches = model.net.branch_logits
        assert branches is not None
        for index in range(2):
            single = export_branch(model, index).eval()
            assert single.arch == base
            torch.testing.assert_close(single(images), branches[index])


def test_a_user_network_branches_where_it_is_told(tmp_path: object) -> None:
    model = classifier("tests.models.user_arch:UserNet", num_classes=10)
    branched = branch_classifier(model, branches=2, branch_at="conv")
    assert branched.net.heads == ["fc"]
    assert branched(torch.rand(2, *GREY)).shape == (2, 10)
    with pytest.raises(FreekdError, match="no module 'layer9'.*conv, pool, fc"):
        branch_classifier(model, branches=2, branch_at="layer9")


def test_mixing_trunk_and_branch_features_is_refused_in_one_line() -> None:
    model = classifier("tests.models.user_arch:SkipNet")
    with pytest.raises(FreekdError, match="branch at a later module") as error:
        branch_classifier(model, branches=2, branch_at="block2")
    assert "\n" not in str(error.value)


def test_the_mean_ensemble_averages_probabilities_and_round_trips(tmp_path: object) -> None:
    from pathlib import Path

    torch.manual_seed(0)
    peers = [classifier("tiny-cnn", (1, 8, 8)), classifier("mlp", (1, 8, 8))]
    ensemble = ensemble_classifier(peers).eval()
    images = torch.rand(5, 1, 8, 8)
    with torch.no_grad():
        mean = torch.stack([p.eval()(images).softmax(1) for p in peers]).mean(0)
        torch.testing.assert_close(ensemble(images).exp(), mean)
    path = Path(str(tmp_path)) / "ensemble.pt"
    save_checkpoint(path, ensemble, config={})
    loaded = load_model(path)
    with torch.no_grad():
        torch.testing.assert_close(loaded(images), ensemble(images))


def test_members_named_by_import_path_need_trust(tmp_path: object) -> None:
    from pathlib import Path

    peers = [classifier("tests.models.user_arch:UserNet", num_classes=10), classifier("mlp")]
    path = Path(str(tmp_path)) / "ensemble.pt"
    save_checkpoint(path, ensemble_classifier(peers), config={})
    with pytest.raises(FreekdError, match="import path"):
        load_model(path)
    assert load_model(path, trust_code=True) is not None


def test_a_file_cannot_grant_a_composite_trust() -> None:
    with pytest.raises(FreekdError, match="trust_code"):
        build_model("mean-ensemble", num_classes=10, input_shape=GREY,
                    arch_kwargs={"members": [{"arch": "mlp"}], "trust_code": True})  # fmt: skip
    with pytest.raises(FreekdError, match="composite"):
        build_model("branched", num_classes=10, input_shape=GREY,
                    arch_kwargs={"base": "branched"})  # fmt: skip


def test_grey_images_reach_three_channel_members_and_branches() -> None:
    torch.manual_seed(0)
    shape = (1, 32, 32)
    images = torch.rand(2, *shape)
    peers = [classifier("torchvision:resnet18", shape), classifier("mlp", shape)]
    assert ensemble_classifier(peers).eval()(images).shape == (2, 10)
    branched = branch_classifier(classifier("torchvision:resnet18", shape), branches=2,
                                 branch_at="auto")  # fmt: skip
    assert branched.net.branch_at == "layer3"
    assert branched.eval()(images).shape == (2, 10)


def test_a_head_inside_a_head_is_repeated_once_with_it() -> None:
    model = classifier("tests.models.user_arch:ScaledNet")
    branched = branch_classifier(model, branches=2, branch_at="conv")
    assert branched.net.heads == ["head"]
    assert branched(torch.rand(2, *GREY)).shape == (2, 10)


@pytest.mark.parametrize("branch_at", ["features.2", "features.6"])
def test_a_branch_point_that_works_in_place_leaves_the_trunk_and_the_other_branches_alone(
    branch_at: str,
) -> None:
    """tiny-cnn's ReLUs are in place: each branch copy gets its own clone of the trunk's maps
    (before, the first copy overwrote them and backward failed in the first training step)."""
    torch.manual_seed(0)
    kwargs = {"base": "tiny-cnn", "branches": 2, "branch_at": branch_at}
    net = build_model("branched", num_classes=10, input_shape=(1, 8, 8), arch_kwargs=kwargs)
    images = torch.randn(4, 1, 8, 8)
    F.cross_entropy(net(images), torch.arange(4)).backward()
    assert net.branch_logits is not None
    assert torch.isfinite(net.branch_logits).all()
    assert all(p.grad is not None for p in net.parameters())
