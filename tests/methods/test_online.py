"""The online methods' contract (DML, ONE): every network trained, targets detached, branches on
one trunk, state round trip; on real digits."""

from __future__ import annotations

import copy
from typing import Any

import pytest
import torch

from freekd.data import ImageDataset
from freekd.errors import FreekdError
from freekd.methods import ONLINE, MethodContext, build_method
from freekd.methods.one import sigmoid_rampup
from freekd.methods.online import OnlineMethod
from freekd.models import ImageClassifier, build_model

SHAPE = (1, 8, 8)


def network(arch: str = "tiny-cnn") -> ImageClassifier:
    net = build_model(arch, num_classes=10, input_shape=SHAPE)
    return ImageClassifier(net, arch=arch, arch_kwargs={}, num_classes=10, input_shape=SHAPE,
                           mean=[0.3], std=[0.4])  # fmt: skip


def method(name: str, archs: list[str], **params: Any) -> OnlineMethod:
    peers = tuple(network(arch) for arch in archs)
    context = MethodContext(student=peers[0], peers=peers, distills=ONLINE, total_steps=20)
    built = build_method(name, context, params)
    assert isinstance(built, OnlineMethod)
    return built


CASES = [("dml", ["tiny-cnn", "tiny-cnn"]), ("dml", ["tiny-cnn", "mlp", "tiny-cnn-nobn"]),
         ("one", ["resnet8"])]  # fmt: skip


@pytest.mark.parametrize(("name", "archs"), CASES)
def test_one_step_trains_every_network(
    name: str, archs: list[str], digits_train: ImageDataset
) -> None:
    torch.manual_seed(0)
    online = method(name, archs)
    output = online.training_step(digits_train.batch(torch.arange(32)))
    output.loss.backward()
    # Every weight gets a gradient. (A changed value after one SGD step was asked before: with
    # one thread, ONE's gate bias got a gradient too small to move its float32 value.)
    trained = {
        name
        for name, p in online.named_parameters()
        if p.grad is not None and bool(p.grad.abs().sum() > 0)
    }
    weights = {name for name, p in online.named_parameters()}
    assert weights <= trained, sorted(weights - trained)[:5]
    assert {"ce", "kl"} <= set(output.losses)


def test_dml_peers_learn_from_detached_targets(digits_train: ImageDataset) -> None:
    torch.manual_seed(0)
    online = method("dml", ["tiny-cnn", "tiny-cnn"])
    batch = digits_train.batch(torch.arange(16))
    kl = online.training_step(batch).losses["kl"]
    # Peer 0's gradient from the mimicry terms equals its own term's: peer 1's term (which has
    # peer 0's prediction as its target) contributes nothing to it.
    grads = torch.autograd.grad(kl, list(online.student.parameters()))
    from freekd.losses.kd import mutual_kl

    logits = [online.student(batch.images), online.peer1(batch.images)]
    own = torch.autograd.grad(mutual_kl(logits)[0], list(online.student.parameters()))
    for got, expected in zip(grads, own, strict=True):
        torch.testing.assert_close(got, expected)


def test_dml_needs_two_peers() -> None:
    with pytest.raises(FreekdError, match="at least two peers"):
        method("dml", ["tiny-cnn"])


def test_one_refuses_several_architectures() -> None:
    with pytest.raises(FreekdError, match="one --arch"):
        method("one", ["resnet8", "resnet8"])


def test_one_distils_the_detached_ensemble_with_its_ramp(digits_train: ImageDataset) -> None:
    torch.manual_seed(0)
    online = method("one", ["resnet8"], rampup_fraction=0.5)  # 10 of the 20 planned steps
    batch = digits_train.batch(torch.arange(16))
    first = online.training_step(batch)
    network = online.student.net
    assert network.branch_logits is not None
    ensemble = first.logits
    assert ensemble is not None
    from freekd.losses import kd_kl

    raw = sum(kd_kl(z, ensemble.detach(), temperature=3.0) for z in network.branch_logits)
    torch.testing.assert_close(first.losses["kl"], sigmoid_rampup(1 / 10) * raw)
    # The teacher is detached: the KL term moves the branches, never the gate that weighs them.
    gate = list(network.gate.parameters())
    gradients = torch.autograd.grad(first.losses["kl"], gate, allow_unused=True)
    assert all(g is None or not g.abs().sum() for g in gradients)
    assert torch.autograd.grad(first.losses["ce_ensemble"], gate[0])[0].abs().sum() > 0
    for _ in range(12):
        last = online.training_step(batch)
    assert online.steps.item() == 13
    assert sigmoid_rampup(1.3) == 1.0
    assert last.losses["kl"] > 0


def test_sigmoid_rampup_matches_laine_and_aila() -> None:
    assert sigmoid_rampup(0.0) == pytest.approx(torch.exp(torch.tensor(-5.0)).item())
    assert sigmoid_rampup(0.5) == pytest.approx(torch.exp(torch.tensor(-1.25)).item())
    assert sigmoid_rampup(1.0) == sigmoid_rampup(7.0) == 1.0


@pytest.mark.parametrize(("name", "archs"), CASES)
def test_state_round_trip_gives_the_same_step(
    name: str, archs: list[str], digits_train: ImageDataset
) -> None:
    torch.manual_seed(0)
    online = method(name, archs)
    batch = digits_train.batch(torch.arange(16))
    online.training_step(batch)
    copy_of = method(name, archs)
    copy_of.load_state_dict(copy.deepcopy(online.state_dict()))
    a, b = online.training_step(batch), copy_of.training_step(batch)
    for key in a.losses:
        torch.testing.assert_close(a.losses[key], b.losses[key])


@pytest.mark.parametrize(("name", "archs"), CASES)
def test_single_networks_and_the_ensemble_are_ordinary_classifiers(
    name: str, archs: list[str], digits_train: ImageDataset
) -> None:
    online = method(name, archs).eval()
    networks = online.networks()
    assert len(networks) == (3 if name == "one" else len(archs))
    images = digits_train.batch(torch.arange(8)).images
    for single in networks.values():
        assert isinstance(single, ImageClassifier)
        assert single.arch in archs
        assert single(images).shape == (8, 10)
    assert online.ensemble()(images).shape == (8, 10)
