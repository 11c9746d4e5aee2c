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
BatchNorm are refused here; such teachers are trained one by one instead.
"""

from __future__ import annotations

import copy
from collections.abc import Sequence
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


class TeacherEnsemble(nn.Module):
    """Members of one architecture, stacked: (K, B, C, H, W) or (B, C, H, W) → (K, B, classes).

    Args:
        members: K ≥ 1 classifiers of the same architecture (their current weights are copied).

    Raises:
        FreekdError: the members have BatchNorm or differ in architecture.
    """

    def __init__(self, members: Sequence[ImageClassifier]) -> None:
        super().__init__()
        if not members:
            raise FreekdError("an ensemble needs at least one teacher")
        first = members[0]
        if has_batchnorm(first):
            raise FreekdError(
                f"{first.arch} has BatchNorm, which cannot be trained as one vectorised batch; "
                "train the teachers one by one (--one-by-one) or pick a BatchNorm-free --arch"
            )
        if any(m.arch != first.arch or m.arch_kwargs != first.arch_kwargs for m in members):
            raise FreekdError("every member of an ensemble must have the same architecture")
        self.size = len(members)
        self.num_classes = first.num_classes
        self.input_shape = first.input_shape
        self.metadata = first.metadata()
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

        shared = images.ndim == 4
        if not shared and images.shape[0] != self.size:
            raise FreekdError(f"{images.shape[0]} image batches for {self.size} teachers")
        parameters, buffers = self._state()
        in_dims = (0, 0, None if shared else 0)
        return torch.vmap(one, in_dims=in_dims, randomness="different")(  # type: ignore[no-any-return]
            parameters, buffers, images
        )

    @torch.no_grad()
    def votes(self, images: Tensor, *, chunk: int = 512) -> Tensor:
        """(B, C, H, W) images → (B, classes) int64 counts of the members' predicted classes."""
        counts = []
        for start in range(0, len(images), chunk):
            predictions = self(images[start : start + chunk]).argmax(dim=-1)  # (K, b)
            one_hot = nn.functional.one_hot(predictions, self.num_classes)
            counts.append(one_hot.sum(dim=0))
        return torch.cat(counts).to(torch.int64)

    def member(self, index: int) -> ImageClassifier:
        """Member ``index`` as an ordinary classifier (a copy, on the CPU)."""
        fresh = ImageClassifier.from_metadata(self.metadata)
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
