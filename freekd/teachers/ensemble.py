"""K classifiers of one architecture, held as stacked weights and run as one vectorised batch.

PATE trains hundreds of small teachers on disjoint shards (Papernot et al. 2017,
arXiv:1610.05755 §2.1). Looping over them is dominated by per-call overhead on small models, so
:class:`TeacherEnsemble` keeps every member's parameters stacked along a leading axis of size K
(``torch.func.stack_module_state``) and evaluates all members in one call with ``torch.vmap``
over ``torch.func.functional_call`` of a weightless copy of the architecture. The members'
parameters are disjoint slices, so the gradient of a sum of per-member losses is each member's
own gradient, and any element-wise optimizer (SGD with momentum and weight decay, Adam) updates
every member exactly as if it were trained alone.

BatchNorm keeps running statistics that vmap cannot update in place, so architectures with
BatchNorm are refused by :class:`StackedTeacherEnsemble`.

:class:`TeacherEnsemble` holds the same members as ordinary modules and runs them one by one. On
a CPU that is the faster of the two for LeNet-sized members (forward + backward of 250 LeNet-5s
on 32 images each, one core: 2.1 s one by one, 4.3 s vmapped; functional calls on slices of
stacked weights were slower still, 16.9 s, because every slice's backward writes a full-size
gradient), and it takes BatchNorm members (each keeps its own statistics); on a GPU vmap's
single launch wins. Both share the interface and the file layout (every weight stacked along K).
"""

from __future__ import annotations

import copy
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch
from torch import Tensor, nn
from torch.func import functional_call, stack_module_state

from freekd.errors import FreekdError
from freekd.models import ImageClassifier


def has_batchnorm(module: nn.Module) -> bool:
    return any(isinstance(m, nn.modules.batchnorm._BatchNorm) for m in module.modules())


def _key(name: str) -> str:
    return name.replace(".", "__")  # ParameterDict keys may not contain dots


class _EnsembleBase(nn.Module):
    """What both ensembles share: sizes, metadata, votes."""

    size: int
    num_classes: int
    input_shape: tuple[int, int, int]
    metadata: dict[str, Any]

    def _describe(self, members: Sequence[ImageClassifier]) -> None:
        if not members:
            raise FreekdError("an ensemble needs at least one teacher")
        first = members[0]
        if any(m.arch != first.arch or m.arch_kwargs != first.arch_kwargs for m in members):
            raise FreekdError("every member of an ensemble must have the same architecture")
        self.size = len(members)
        self.num_classes = first.num_classes
        self.input_shape = first.input_shape
        self.metadata = first.metadata()

    def _check_batches(self, images: Tensor) -> bool:
        shared = images.ndim == 4
        if not shared and images.shape[0] != self.size:
            raise FreekdError(f"{images.shape[0]} image batches for {self.size} teachers")
        return shared

    def member(self, index: int) -> ImageClassifier:
        raise NotImplementedError

    def stacked_state_dict(self) -> dict[str, Tensor]:
        raise NotImplementedError

    def load_stacked_state_dict(self, state: dict[str, Any]) -> None:
        raise NotImplementedError

    @torch.no_grad()
    def votes(self, images: Tensor, *, chunk: int = 512) -> Tensor:
        """(B, C, H, W) images → (B, classes) int64 counts of the members' predicted classes."""
        counts = []
        for start in range(0, len(images), chunk):
            predictions = self(images[start : start + chunk]).argmax(dim=-1)  # (K, b)
            one_hot = nn.functional.one_hot(predictions, self.num_classes)
            counts.append(one_hot.sum(dim=0))
        return torch.cat(counts).to(torch.int64)


class TeacherEnsemble(_EnsembleBase):
    """Members as ordinary modules, run one by one; same shapes as the stacked ensemble.

    Args:
        members: K ≥ 1 classifiers of the same architecture (BatchNorm allowed).
    """

    def __init__(self, members: Sequence[ImageClassifier]) -> None:
        super().__init__()
        self._describe(members)
        self.members = nn.ModuleList(members)

    def forward(self, images: Tensor) -> Tensor:
        shared = self._check_batches(images)
        return torch.stack([m(images if shared else images[k]) for k, m in enumerate(self.members)])

    def member(self, index: int) -> ImageClassifier:
        """Member ``index`` (the module itself)."""
        return self.members[index]  # type: ignore[return-value]

    def stacked_state_dict(self) -> dict[str, Tensor]:
        """{name: (K, ...) tensor} of every member's state: what an ensemble file stores."""
        states = [m.state_dict() for m in self.members]
        return {name: torch.stack([s[name].detach().cpu() for s in states]) for name in states[0]}

    def load_stacked_state_dict(self, state: dict[str, Any]) -> None:
        for index, m in enumerate(self.members):
            load_member(m, state, index)


def load_member(model: nn.Module, state: dict[str, Any], index: int) -> None:
    """Load slice ``index`` of a stacked state dict into ``model``, with one-line errors."""
    wanted = model.state_dict()
    if set(state) != set(wanted):
        missing, extra = sorted(set(wanted) - set(state)), sorted(set(state) - set(wanted))
        raise FreekdError(
            f"ensemble weights do not fit this architecture: missing {missing[:3]}, "
            f"unexpected {extra[:3]}"
        )
    for name, value in wanted.items():
        if tuple(state[name].shape[1:]) != tuple(value.shape):
            raise FreekdError(
                f"ensemble weight {name} has shape {tuple(state[name].shape[1:])} per teacher, "
                f"expected {tuple(value.shape)}"
            )
    model.load_state_dict({name: state[name][index] for name in wanted})


class StackedTeacherEnsemble(_EnsembleBase):
    """Members of one architecture, stacked: (K, B, C, H, W) or (B, C, H, W) → (K, B, classes).

    Args:
        members: K ≥ 1 classifiers of the same architecture (their current weights are copied).

    Raises:
        FreekdError: the members have BatchNorm or differ in architecture.
    """

    def __init__(self, members: Sequence[ImageClassifier]) -> None:
        super().__init__()
        self._describe(members)
        first = members[0]
        if has_batchnorm(first):
            raise FreekdError(
                f"{first.arch} has BatchNorm, which cannot be trained as one vectorised batch; "
                "use the one-by-one ensemble or a BatchNorm-free --arch"
            )
        # The weightless template vmap calls with each member's slice of the stacked weights.
        self._template = [copy.deepcopy(first).to("meta")]  # a list: not a registered submodule
        parameters, buffers = stack_module_state(list(members))  # type: ignore[arg-type]
        self._parameter_names = list(parameters)
        self._buffer_names = list(buffers)
        self.stacked = nn.ParameterDict(
            {_key(name): nn.Parameter(value.detach().clone()) for name, value in parameters.items()}
        )
        for name, value in buffers.items():
            self.register_buffer(f"buffer__{_key(name)}", value.detach().clone(), persistent=False)

    def _state(self) -> tuple[dict[str, Tensor], dict[str, Tensor]]:
        parameters = {name: self.stacked[_key(name)] for name in self._parameter_names}
        buffers = {name: getattr(self, f"buffer__{_key(name)}") for name in self._buffer_names}
        return parameters, buffers

    def forward(self, images: Tensor) -> Tensor:
        """(K, B, C, H, W) per-member images, or (B, C, H, W) shown to all → (K, B, classes)."""
        template = self._template[0]

        def one(parameters: dict[str, Tensor], buffers: dict[str, Tensor], x: Tensor) -> Tensor:
            return functional_call(template, (parameters, buffers), (x,))  # type: ignore[no-any-return]

        shared = self._check_batches(images)
        parameters, buffers = self._state()
        in_dims = (0, 0, None if shared else 0)
        return torch.vmap(one, in_dims=in_dims, randomness="different")(  # type: ignore[no-any-return]
            parameters, buffers, images
        )

    def member(self, index: int) -> ImageClassifier:
        """Member ``index`` as an ordinary classifier (a copy, on the CPU)."""
        # The members exist, so their architecture was already built on the user's word.
        fresh = ImageClassifier.from_metadata(self.metadata, trust_code=True)
        parameters, buffers = self._state()
        wanted = fresh.state_dict()
        slices = {**parameters, **buffers}
        fresh.load_state_dict({name: slices[name][index].detach().cpu() for name in wanted})
        return fresh

    def stacked_state_dict(self) -> dict[str, Tensor]:
        """{parameter name: (K, ...) tensor}: what an ensemble file stores."""
        parameters, _ = self._state()
        return {name: value.detach().cpu() for name, value in parameters.items()}

    def load_stacked_state_dict(self, state: dict[str, Any]) -> None:
        names = set(self._parameter_names)
        if set(state) != names:
            missing, extra = sorted(names - set(state)), sorted(set(state) - names)
            raise FreekdError(
                f"ensemble weights do not fit {self.metadata['arch']}: missing {missing[:3]}, "
                f"unexpected {extra[:3]}"
            )
        with torch.no_grad():
            for name in self._parameter_names:
                target = self.stacked[_key(name)]
                if tuple(state[name].shape) != tuple(target.shape):
                    raise FreekdError(
                        f"ensemble weight {name} has shape {tuple(state[name].shape)}, expected "
                        f"{tuple(target.shape)}"
                    )
                target.copy_(state[name])


class PluralityVote(nn.Module):
    """The ensemble's plurality vote as a classifier: (B, C, H, W) → (B, classes) log vote shares.

    Not private (no noise): for measuring what the teachers know, never for releasing labels.
    The log of add-one-smoothed vote shares gives ``argmax`` = the plurality class and a finite
    cross-entropy.
    """

    def __init__(self, ensemble: _EnsembleBase) -> None:
        super().__init__()
        self.ensemble = ensemble

    def forward(self, images: Tensor) -> Tensor:
        votes = self.ensemble.votes(images).to(torch.float32)
        return torch.log((votes + 1) / (self.ensemble.size + self.ensemble.num_classes))


ENSEMBLE_FORMAT = "freekd-ensemble/1"


def save_ensemble(
    path: Path, ensemble: _EnsembleBase, *, config: dict[str, Any], shards: dict[str, Any]
) -> None:
    """Atomically write ``teachers.pt``: member metadata, stacked weights, shard description."""
    from freekd import __version__
    from freekd.checkpoint import CHECKSUM_KEY, weights_checksum
    from freekd.io import atomic_write

    state_dict = ensemble.stacked_state_dict()
    data = {
        "format": ENSEMBLE_FORMAT,
        "teachers": ensemble.size,
        "member": ensemble.metadata,
        "state_dict": state_dict,
        CHECKSUM_KEY: weights_checksum(state_dict),
        "shards": shards,
        "config": config,
        "freekd_version": __version__,
    }
    atomic_write(Path(path), lambda stream: torch.save(data, stream))


def load_ensemble(
    path: Path, *, execution: str = "loop", trust_code: bool = False
) -> _EnsembleBase:
    """Read a ``teachers.pt`` (``weights_only``) into an eval-mode ensemble.

    Args:
        path: the ensemble file.
        execution: ``loop`` or ``vmap``.
        trust_code: build a member ``arch`` that is an import path (runs its code); only on the
            user's explicit ``--trust-code``.

    Raises:
        FreekdError: the file is missing, not an ensemble file, names code to import without
            ``trust_code``, or its weights do not fit.
    """
    from freekd.checkpoint import safe_torch_load

    data = safe_torch_load(Path(path), what="teacher ensemble")
    if not isinstance(data, dict) or data.get("format") != ENSEMBLE_FORMAT:
        raise FreekdError(
            f"{path} is not a freekd teacher ensemble (no 'format': '{ENSEMBLE_FORMAT}'); "
            "write one with `freekd pate teachers`"
        )
    check_ensemble_file(data, source=str(path))
    source = f"teacher ensemble {path}"
    members = [
        ImageClassifier.from_metadata(data["member"], source=source, trust_code=trust_code)
        for _ in range(int(data["teachers"]))
    ]
    ensemble = make_ensemble(members, execution=execution)
    ensemble.load_stacked_state_dict(data["state_dict"])
    return ensemble.eval()


def check_ensemble_file(data: dict[str, Any], *, source: str) -> bool:
    """Check the fields of a ``teachers.pt`` mapping and its weights' checksum.

    Returns:
        Whether the weights were verified against a stored checksum.

    Raises:
        FreekdError: a missing field or one of the wrong type (named), weights that are not
            stacked over the teachers, or corrupt weights.
    """
    from freekd.checkpoint import (
        check_mapping,
        check_model_metadata,
        check_positive_int,
        check_required,
        check_state_dict,
        verify_weights,
    )

    keys = ("teachers", "member", "state_dict")
    check_required(data, keys, source=source, kind="teacher ensemble")
    size = data["teachers"]
    check_positive_int(source, "teachers", size, "a positive number of teachers")
    check_model_metadata(data["member"], source=source, prefix="member.")
    check_state_dict(source, "state_dict", data["state_dict"])
    for name, value in data["state_dict"].items():
        if value.dim() == 0 or value.shape[0] != size:
            raise FreekdError(
                f"{source} is damaged: state_dict[{name!r}] has shape {tuple(value.shape)}, "
                f"expected a stack of {size} teachers' weights; re-download or retrain it"
            )
    check_mapping(source, "shards", data.get("shards"), optional=True)
    check_mapping(source, "config", data.get("config"), optional=True)
    return verify_weights(data, source=source)


#: How an ensemble evaluates its members: ``loop`` (one by one; fastest on CPU, BatchNorm
#: allowed) or ``vmap`` (one vectorised call over stacked weights; for GPUs).
EXECUTIONS = ("loop", "vmap")


def check_execution(execution: str, *, setting: str = "execution") -> None:
    """Raise a one-line error unless ``execution`` is one of :data:`EXECUTIONS`."""
    if execution not in EXECUTIONS:
        raise FreekdError(f"unknown {setting} {execution!r}; use {' or '.join(EXECUTIONS)}")


def make_ensemble(members: Sequence[ImageClassifier], *, execution: str) -> _EnsembleBase:
    """The ensemble of ``members`` that evaluates them as ``execution`` says."""
    check_execution(execution)
    if execution == "vmap":
        return StackedTeacherEnsemble(members)
    return TeacherEnsemble(members)
