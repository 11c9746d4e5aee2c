"""One network with M branches on a shared trunk and a gate: the network ONE trains.

Lan, Zhu & Gong 2018 (NeurIPS, "Knowledge Distillation by On-the-Fly Native Ensemble",
arXiv:1806.04606) §3.1: the low-level layers are shared, the last stage and the classifier are
repeated M times, and a gate (global pooling of the trunk's features, a fully connected layer,
BatchNorm, ReLU and a softmax, Eq. 1) weighs the M branches' logits into the ensemble teacher
z_e = Σ_m g_m · z_m (Eq. 2).

The network is built from an unmodified architecture, with no code of its own for branching:

- the *branch point* is a module path of the network (``stages.2``, ``layer4``, ``groups.2``);
  ``"auto"`` finds the last resolution stage (:func:`find_branch_point`);
- that module becomes :class:`BranchStage`, M copies applied to the same trunk features, their
  outputs stacked along the batch (M·B rows);
- every module that owns weights and runs after it (the classifier, a final BatchNorm) becomes
  :class:`PerBranch`: copy m applied to rows m·B…(m+1)·B, so each branch keeps its own classifier
  and statistics. What runs in between without weights (pooling, flattening) treats rows alike.

Each branch's copies come from a freshly built network of the architecture, so the branches
start from independent initializations, as in the paper. :meth:`BranchedNetwork.branch_state_dict`
exports branch m with the trunk as the state_dict of an ordinary network of the base architecture.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from freekd.errors import FreekdError
from freekd.hooks import eval_mode

AUTO = "auto"
#: Each named module's (name, input shape, output shape, calls), in the order modules start.
Trace = list[tuple[str, Any, Any, int]]
#: Names of composite architectures, which cannot be the base of a branched network.
COMPOSITE = ("branched", "mean-ensemble")


def _spatial(shape: Sequence[int]) -> tuple[int, int] | None:
    return (int(shape[-2]), int(shape[-1])) if len(shape) == 4 and shape[-2:] != (1, 1) else None


def _first_tensor(values: Any) -> Tensor | None:
    if isinstance(values, Tensor):
        return values
    if isinstance(values, (tuple, list)) and values and isinstance(values[0], Tensor):
        return values[0]
    return None


def first_conv_channels(network: nn.Module) -> int | None:
    """The input channels of the network's first ``nn.Conv2d`` (``None`` without one)."""
    first = next((m for m in network.modules() if isinstance(m, nn.Conv2d)), None)
    return None if first is None else int(first.in_channels)


def _network_input(network: nn.Module, input_shape: Sequence[int]) -> tuple[int, ...]:
    """The shape the bare network takes: a grey image's channel is repeated for a network
    built for three (``ImageClassifier`` does the same), so probes use the network's count."""
    channels = first_conv_channels(network) or int(input_shape[0])
    return (channels, *(int(size) for size in input_shape[1:]))


def _trace(network: nn.Module, input_shape: Sequence[int]) -> Trace:
    """Each named module's (name, input shape, output shape, calls) in the order modules start,
    from one eval-mode pass of two blank images (the trace the branch point is found on)."""
    seen: dict[str, list[Any]] = {}
    handles = []
    for name, module in network.named_modules():
        if not name:
            continue

        def before(module: nn.Module, inputs: Any, name: str = name) -> None:
            first = _first_tensor(inputs)
            entry = seen.setdefault(name, [None, None, 0])
            entry[0] = None if first is None else tuple(first.shape)
            entry[2] += 1

        def after(module: nn.Module, inputs: Any, output: Any, name: str = name) -> None:
            first = _first_tensor(output)
            seen[name][1] = None if first is None else tuple(first.shape)

        handles += [module.register_forward_pre_hook(before), module.register_forward_hook(after)]
    reference = next(network.parameters(), None)
    device = reference.device if reference is not None else torch.device("cpu")
    try:
        with torch.no_grad(), eval_mode(network):
            network(torch.zeros((2, *_network_input(network, input_shape)), device=device))
    finally:
        for handle in handles:
            handle.remove()
    return [(name, entry[0], entry[1], entry[2]) for name, entry in seen.items()]


def find_branch_point(
    network: nn.Module, input_shape: Sequence[int], *, trace: Trace | None = None
) -> str:
    """The module path of the network's last resolution stage (ONE's branch point).

    The stage is the outermost module with weights, called once, that turns the trunk's feature
    maps into the last resolution's (its input and output sizes differ, its output has the last
    size) and whose inner modules only produce maps of its input's or its output's size:
    ``stages.2`` of a freekd ResNet, ``groups.2`` of a WideResNet, ``layer4`` of a torchvision
    ResNet at 224 × 224.

    Raises:
        FreekdError: no module qualifies (e.g. a LeNet, whose last convolution is not a stage);
            the message says to name one with ``method.params.branch_at``.
    """
    trace = trace if trace is not None else _trace(network, input_shape)
    sizes = [_spatial(out) for _, _, out, _ in trace if out is not None and _spatial(out)]
    if not sizes:
        raise FreekdError(
            "the network has no convolutional stage to branch at; name the module ONE repeats "
            "with --set method.params.branch_at=PATH"
        )
    last = sizes[-1]
    outputs = {name: _spatial(out) for name, _, out, _ in trace if out is not None}
    modules = dict(network.named_modules())
    for name, inputs, output, calls in trace:  # modules in the order they start: outer first
        if calls != 1 or inputs is None or output is None or _spatial(output) != last:
            continue
        if not any(True for _ in modules[name].parameters()):
            continue  # a pooling layer is no stage to repeat
        start = _spatial(inputs)
        if start is None or start == last:
            continue
        inner = {size for key, size in outputs.items() if key.startswith(name + ".") and size}
        if inner <= {start, last}:
            return name
    candidates = [name for name, _, out, _ in trace if name and out is not None and _spatial(out)]
    raise FreekdError(
        "found no last stage to branch at (a module that turns the trunk's maps into the last "
        "resolution); name the module ONE repeats with --set method.params.branch_at=PATH, one "
        f"of the modules with feature maps: {', '.join(candidates[:12])}"
        + (", ..." if len(candidates) > 12 else "")
    )


def _owns_state(module: nn.Module) -> bool:
    return any(True for _ in module.parameters(recurse=False)) or any(
        True for _ in module.buffers(recurse=False)
    )


def heads_after(
    network: nn.Module, branch_at: str, input_shape: Sequence[int], *, trace: Trace | None = None
) -> list[str]:
    """The modules that own weights (or buffers) and run after the branch point: each branch
    gets its own copy of these (the classifier, a final BatchNorm).

    Raises:
        FreekdError: the branch point runs more than once per forward pass, or a module with
            weights runs both before and after it (it cannot be both trunk and branch).
    """
    trace = trace if trace is not None else _trace(network, input_shape)
    names = [name for name, _, _, _ in trace]
    calls = {name: count for name, _, _, count in trace}
    if branch_at not in calls:
        raise FreekdError(
            f"the branch point {branch_at!r} does not run in the network's forward pass; name a "
            "module that does with --set method.params.branch_at=PATH"
        )
    if calls[branch_at] != 1:
        raise FreekdError(
            f"the branch point {branch_at!r} runs {calls[branch_at]} times per forward pass; "
            "name a module that runs once with --set method.params.branch_at=PATH"
        )
    start = names.index(branch_at)
    inside = branch_at + "."
    modules = dict(network.named_modules())
    later = [
        name
        for name in names[start + 1 :]
        if not name.startswith(inside) and _owns_state(modules[name])
    ]
    # A head inside another head is repeated with it (a block with a scale of its own).
    later = [name for name in later if not any(name.startswith(h + ".") for h in later)]
    for name in later:
        if calls[name] != 1:
            raise FreekdError(
                f"module {name!r} runs {calls[name]} times per forward pass, both in the trunk "
                f"and after the branch point {branch_at!r}; branch at a later module"
            )
    return later


class BranchStage(nn.Module):
    """M copies of the branch-point module on the same input; outputs stacked along the batch.

    Keeps the last input (the trunk's features) in ``trunk_features`` for the gate. Each copy
    gets its own clone of the features, so a copy that starts with an in-place operation
    (``ReLU(inplace=True)``) changes neither the other copies' input nor the gate's.
    """

    def __init__(self, copies: Sequence[nn.Module]) -> None:
        super().__init__()
        self.branches = nn.ModuleList(copies)
        self.trunk_features: Tensor | None = None

    def forward(self, features: Tensor, *args: Any, **kwargs: Any) -> Tensor:
        self.trunk_features = features
        return torch.cat([branch(features.clone(), *args, **kwargs) for branch in self.branches])


class PerBranch(nn.Module):
    """M copies of a module after the branch point: copy m on the m-th block of B rows."""

    def __init__(self, copies: Sequence[nn.Module]) -> None:
        super().__init__()
        self.branches = nn.ModuleList(copies)

    def forward(self, stacked: Tensor) -> Tensor:
        parts = stacked.chunk(len(self.branches))
        if len(parts) != len(self.branches) or stacked.shape[0] % len(self.branches):
            raise FreekdError(
                f"a module after the branch point got {stacked.shape[0]} rows, not M·B for "
                f"M = {len(self.branches)} branches: the network mixes branch and trunk "
                "features after its branch point; branch at a later module"
            )
        return torch.cat([branch(part) for branch, part in zip(self.branches, parts, strict=True)])


class Gate(nn.Module):
    """ONE's gate (Eq. 1): global average pooling of the trunk's features, FC, BN, ReLU, softmax.

    Shapes:
        (B, C, H, W) or (B, C) trunk features → (B, M) branch weights summing to one.
    """

    def __init__(self, channels: int, branches: int) -> None:
        super().__init__()
        self.fc = nn.Linear(channels, branches)
        self.norm = nn.BatchNorm1d(branches)

    def forward(self, features: Tensor) -> Tensor:
        pooled = features.flatten(2).mean(dim=2) if features.dim() > 2 else features
        return F.softmax(F.relu(self.norm(self.fc(pooled.flatten(1)))), dim=1)


class BranchedNetwork(nn.Module):
    """A network of one architecture with its last stage and heads repeated M times, and a gate.

    ``forward`` returns the gated ensemble's logits (B, K), so the network evaluates, saves and
    loads as any classifier; the branches' own logits (M, B, K) and the gate's weights (B, M) of
    the last pass are in ``branch_logits`` and ``gate_weights`` (read them right after the call:
    that is how ONE's loss sees every branch while the pass goes through DDP as one call).

    Args:
        build: returns a freshly initialized network of the base architecture; called M times.
        branches: M ≥ 2.
        branch_at: the module path where the branches start, or ``"auto"``.
        input_shape: (C, H, W) of the network's input, for the probe passes.
    """

    def __init__(
        self,
        build: Callable[[], nn.Module],
        *,
        branches: int,
        branch_at: str,
        input_shape: Sequence[int],
    ) -> None:
        super().__init__()
        if branches < 2:
            raise FreekdError(f"ONE needs at least 2 branches, got {branches}; check branches")
        networks = [build() for _ in range(branches)]
        base = networks[0]
        trace = _trace(base, input_shape)  # one probe pass serves the three questions below
        self.branch_at = (
            find_branch_point(base, input_shape, trace=trace) if branch_at == AUTO else branch_at
        )
        _check_module(base, self.branch_at)
        self.heads = heads_after(base, self.branch_at, input_shape, trace=trace)
        trunk_features = _input_shape_of(trace, self.branch_at)
        for path in [self.branch_at, *self.heads]:
            copies = [network.get_submodule(path) for network in networks]
            wrapper = BranchStage if path == self.branch_at else PerBranch
            base.set_submodule(path, wrapper(copies))
        self.base = base
        self.branches = branches
        self.gate = Gate(int(trunk_features[0]), branches)
        self.branch_logits: Tensor | None = None
        self.gate_weights: Tensor | None = None
        self._check_runs(input_shape)

    def _check_runs(self, input_shape: Sequence[int]) -> None:
        """One eval pass of two blank images, so a network that cannot run branched fails now,
        in one line, rather than at the first training step."""
        reference = next(self.parameters())
        shape = _network_input(self.base, input_shape)
        try:
            with torch.no_grad(), eval_mode(self):
                self(torch.zeros((2, *shape), device=reference.device))
        except FreekdError:
            raise
        except (RuntimeError, ValueError, TypeError, IndexError) as error:
            first = str(error).strip().splitlines()[0] if str(error).strip() else type(error)
            raise FreekdError(
                f"the network cannot run with branches at {self.branch_at!r} ({first}): "
                "something after it mixes branch and trunk features; branch at a later module"
            ) from None
        finally:
            self.branch_logits = self.gate_weights = None

    def forward(self, images: Tensor) -> Tensor:
        stacked = self.base(images)
        if stacked.dim() != 2 or stacked.shape[0] != self.branches * images.shape[0]:
            raise FreekdError(
                f"the branched network returned shape {tuple(stacked.shape)}, not (M·B, K): "
                f"something after the branch point {self.branch_at!r} mixes the rows of a "
                "batch; branch at a later module"
            )
        logits = stacked.view(self.branches, images.shape[0], -1)
        stage = self.base.get_submodule(self.branch_at)
        assert isinstance(stage, BranchStage)
        assert stage.trunk_features is not None
        weights = self.gate(stage.trunk_features)
        stage.trunk_features = None
        self.branch_logits, self.gate_weights = logits, weights
        return torch.einsum("bm,mbk->bk", weights, logits)

    def branch_state_dict(self, index: int) -> dict[str, Tensor]:
        """Branch ``index`` with the trunk, as the state_dict of a network of the base
        architecture (the keys it would have had unbranched)."""
        if not 0 <= index < self.branches:
            raise FreekdError(f"no branch {index}; the network has {self.branches}")
        wrapped = [self.branch_at, *self.heads]
        state: dict[str, Tensor] = {}
        for key, value in self.base.state_dict().items():
            owner = next((path for path in wrapped if key.startswith(path + ".branches.")), None)
            if owner is None:
                state[key] = value
                continue
            rest = key[len(owner) + len(".branches.") :]
            number, _, inner = rest.partition(".")
            if int(number) == index:
                state[f"{owner}.{inner}"] = value
        return state


def _check_module(network: nn.Module, path: str) -> None:
    try:
        module = network.get_submodule(path)
    except AttributeError:
        tops = [name for name, _ in network.named_children()]
        raise FreekdError(
            f"the network has no module {path!r} to branch at; its top modules: "
            f"{', '.join(tops) or 'none'} (name deeper ones by module path, e.g. layer3)"
        ) from None
    if module is network:
        raise FreekdError("the branch point cannot be the whole network; name one of its stages")


def _input_shape_of(trace: Trace, path: str) -> tuple[int, ...]:
    for name, inputs, _, _ in trace:
        if name == path and inputs is not None:
            return tuple(inputs[1:])
    raise FreekdError(f"the branch point {path!r} takes no tensor input; name another module")
