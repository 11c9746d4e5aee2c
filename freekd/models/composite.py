"""Architectures made of other architectures: the networks online KD saves as its ensembles.

- ``branched``: a base architecture with its last stage repeated and a gate
  (:class:`~freekd.models.branching.BranchedNetwork`, ONE's network); arch kwargs ``base``,
  ``base_kwargs``, ``branches``, ``branch_at``.
- ``mean-ensemble``: several networks whose softmax outputs are averaged (DML's ensemble of
  peers); arch kwargs ``members``, a list of ``{"arch": ..., "arch_kwargs": {...}}``.

Both are registered names, so a checkpoint of either loads like any freekd model. Their member
architectures are names read from the same file: a member that is an import path
(``package.module:Class``) is built only when the caller trusts code (``trust_code``, the user's
``--trust-code``), exactly as a top-level ``arch`` is.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch
from torch import Tensor, nn

from freekd.errors import FreekdError
from freekd.models.branching import AUTO, COMPOSITE, BranchedNetwork, first_conv_channels
from freekd.models.build import build_model
from freekd.models.classifier import ImageClassifier
from freekd.models.factory import MODELS


def _base_arch(arch: Any, where: str) -> str:
    if not isinstance(arch, str) or not arch:
        raise FreekdError(f"{where} must be an architecture name, got {arch!r}")
    if arch in COMPOSITE:
        raise FreekdError(f"{where} cannot be the composite architecture {arch!r}")
    return arch


@MODELS.register("branched")
def branched(
    *,
    num_classes: int,
    input_shape: tuple[int, int, int],
    base: str,
    base_kwargs: dict[str, Any] | None = None,
    branches: int = 3,
    branch_at: str = AUTO,
    trust_code: bool = False,
) -> nn.Module:
    """ONE's network: ``base`` with its last stage and heads repeated ``branches`` times."""
    arch = _base_arch(base, "the branched network's base")
    if not isinstance(branches, int) or isinstance(branches, bool) or not 1 <= branches <= 64:
        raise FreekdError(f"branches must be an integer in [1, 64], got {branches!r}")

    def build() -> nn.Module:
        return build_model(
            arch,
            num_classes=num_classes,
            input_shape=input_shape,
            arch_kwargs=dict(base_kwargs or {}),
            trust_code=trust_code,
        )

    return BranchedNetwork(build, branches=branches, branch_at=branch_at, input_shape=input_shape)


class MeanEnsemble(nn.Module):
    """Networks whose class probabilities are averaged; returns log p̄ as its logits.

    Each member takes the normalized images with the channels it was built for: a grey image is
    repeated for a member expecting three channels, and a grey image already repeated to three
    channels (by an ``ImageClassifier`` whose first convolution is a three-channel member's) is
    given back as one channel to a member expecting one.

    Shapes:
        (B, C, H, W) normalized images → (B, K) log mean probabilities.
    """

    def __init__(self, members: Sequence[nn.Module], *, channels: int) -> None:
        super().__init__()
        if not members:
            raise FreekdError("an ensemble needs at least one member")
        self.members = nn.ModuleList(members)
        # What each member takes: its first convolution's channels, else the data's.
        self.channels = [first_conv_channels(member) or channels for member in members]

    def forward(self, images: Tensor) -> Tensor:
        probabilities = [
            member(_with_channels(images, channels)).softmax(dim=-1)
            for member, channels in zip(self.members, self.channels, strict=True)
        ]
        return torch.stack(probabilities).mean(dim=0).clamp_min(1e-12).log()


def _with_channels(images: Tensor, channels: int) -> Tensor:
    if images.shape[1] == channels:
        return images
    if images.shape[1] == 1 and channels == 3:
        return images.repeat(1, 3, 1, 1)
    if images.shape[1] == 3 and channels == 1:
        return images[:, :1]  # the grey channel, repeated by the wrapper for another member
    return images  # the member's own error names the mismatch


@MODELS.register("mean-ensemble")
def mean_ensemble(
    *,
    num_classes: int,
    input_shape: tuple[int, int, int],
    members: list[dict[str, Any]],
    trust_code: bool = False,
) -> nn.Module:
    """DML's ensemble: the mean of the members' softmax outputs."""
    if not isinstance(members, list) or not 1 <= len(members) <= 64:
        raise FreekdError(f"members must be a list of 1 to 64 architectures, got {members!r}")
    built = []
    for index, member in enumerate(members):
        if not isinstance(member, dict):
            raise FreekdError(f"ensemble member {index} must be a mapping, got {member!r}")
        kwargs = member.get("arch_kwargs") or {}
        if not isinstance(kwargs, dict):
            raise FreekdError(f"ensemble member {index}'s arch_kwargs must be a mapping")
        built.append(
            build_model(
                _base_arch(member.get("arch"), f"ensemble member {index}'s arch"),
                num_classes=num_classes,
                input_shape=input_shape,
                arch_kwargs=dict(kwargs),
                trust_code=trust_code,
            )
        )
    return MeanEnsemble(built, channels=input_shape[0])


def branch_classifier(model: ImageClassifier, *, branches: int, branch_at: str) -> ImageClassifier:
    """``model``'s architecture as ONE's branched network (new weights, the same normalization);
    ``"auto"`` is resolved, so the saved ``arch_kwargs`` name the branch point found."""
    arch_kwargs = {
        "base": model.arch,
        "base_kwargs": dict(model.arch_kwargs),
        "branches": branches,
        "branch_at": branch_at,
    }
    # The base architecture is the one the user chose for ``model`` (a vetted name).
    net = build_model(
        "branched",
        num_classes=model.num_classes,
        input_shape=model.input_shape,
        arch_kwargs=arch_kwargs,
        trust_code=True,
    )
    assert isinstance(net, BranchedNetwork)
    arch_kwargs["branch_at"] = net.branch_at
    return _like(model, net, "branched", arch_kwargs)


def export_branch(model: ImageClassifier, index: int) -> ImageClassifier:
    """Branch ``index`` of a ``branched`` classifier with its trunk, as an ordinary classifier of
    the base architecture (a copy: later training of ``model`` does not change it)."""
    net = model.net
    assert isinstance(net, BranchedNetwork)
    base, base_kwargs = model.arch_kwargs["base"], dict(model.arch_kwargs.get("base_kwargs") or {})
    single = build_model(
        base,
        num_classes=model.num_classes,
        input_shape=model.input_shape,
        arch_kwargs=base_kwargs,
        trust_code=True,  # the base of a network this run built from the user's own choice
    )
    reference = next(net.parameters())
    single.load_state_dict(net.branch_state_dict(index))
    single.to(reference.device)
    return _like(model, single, base, base_kwargs)


def ensemble_classifier(models: Sequence[ImageClassifier]) -> ImageClassifier:
    """A ``mean-ensemble`` classifier of ``models`` (their networks, not copies), which share
    one normalization (they were trained on the same data)."""
    first = models[0]
    members = [{"arch": m.arch, "arch_kwargs": dict(m.arch_kwargs)} for m in models]
    ensemble = MeanEnsemble([m.net for m in models], channels=first.input_shape[0])
    return _like(first, ensemble, "mean-ensemble", {"members": members})


def _like(
    model: ImageClassifier, net: nn.Module, arch: str, arch_kwargs: dict[str, Any]
) -> ImageClassifier:
    return ImageClassifier(
        net,
        arch=arch,
        arch_kwargs=arch_kwargs,
        num_classes=model.num_classes,
        input_shape=model.input_shape,
        mean=model.mean_values,
        std=model.std_values,
    )
