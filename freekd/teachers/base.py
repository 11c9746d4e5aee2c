"""The Teacher: a frozen, always-eval classifier that owns its input normalization."""

from __future__ import annotations

from typing import Any

import torch
from torch import Tensor, nn
from torch.overrides import TorchFunctionMode

#: torch's convolution classes, by the name a TorchScript module keeps of its class.
_CONVOLUTION_NAMES = frozenset(nn.modules.conv.__all__)
#: Pooling module class names (TorchScript keeps only these) and their kind.
_POOLING = {
    f"{prefix}{kind.title()}Pool{d}d": kind
    for prefix in ("", "Adaptive")
    for kind in ("max", "avg")
    for d in (1, 2, 3)
}


class _PoolingCalls(TorchFunctionMode):
    """Records the kind of every pooling function called under it (``max_pool2d``,
    ``adaptive_avg_pool1d``, ``max_pool2d_with_indices`` ...; ``lp_pool*`` is neither kind)."""

    def __init__(self) -> None:
        super().__init__()
        self.kinds: set[str] = set()

    def __torch_function__(self, func: Any, types: Any, args: Any = (), kwargs: Any = None) -> Any:
        name = getattr(func, "__name__", "").removeprefix("adaptive_")
        for kind in ("max", "avg"):
            if name.startswith(f"{kind}_pool"):
                self.kinds.add(kind)
        return func(*args, **(kwargs or {}))


class Teacher(nn.Module):
    """A frozen classifier over [0, 1] images (STYLE.md rule 6).

    Its parameters never require gradients and it stays in eval mode even when a parent module
    calls ``.train()``. It never wraps ``forward`` in ``no_grad``: data-free synthesis
    back-propagates through the teacher into a generator, so the caller decides.

    Args:
        model: module mapping (B, C, H, W) images in [0, 1] to (B, K) logits; it normalizes inputs
            itself (an ``ImageClassifier``, or a wrapper around a TorchScript/pickled network).
        num_classes: K.
        input_shape: (C, H, W) the model expects.
        description: where the teacher came from, for reports ("freekd checkpoint", ...).
        metadata: checkpoint-style metadata (arch, input mean/std ...) when known.
    """

    def __init__(
        self,
        model: nn.Module,
        *,
        num_classes: int,
        input_shape: tuple[int, int, int],
        description: str,
        metadata: dict[str, Any] | None = None,
    ) -> None:
        super().__init__()
        self.model = model
        self.num_classes = num_classes
        self.input_shape = input_shape
        self.description = description
        self.metadata = metadata or {}
        for parameter in self.model.parameters():
            parameter.requires_grad_(False)
        super().train(False)

    def train(self, mode: bool = True) -> Teacher:
        """Ignore ``mode``: a teacher's BatchNorm statistics and dropout must never change."""
        return super().train(False)

    def forward(self, images: Tensor) -> Tensor:
        """(B, C, H, W) images in [0, 1] → (B, K) logits."""
        return self.model(images)  # type: ignore[no-any-return]

    @property
    def convolution_layers(self) -> int:
        """How many convolution modules (1-, 2- or 3-d, transposed too) are inside; one called
        twice counts once, and ``F.conv2d`` called in ``forward`` is not seen."""
        return sum(
            isinstance(m, nn.modules.conv._ConvNd)
            # TorchScript modules keep only the original class name (exactly torch's: a user's
            # ``ConvBlock`` or ``ConvNet`` is not a convolution).
            or getattr(m, "original_name", "") in _CONVOLUTION_NAMES
            for m in self.modules()
        )

    @property
    def has_convolution(self) -> bool:
        """Whether any convolution is inside: a teacher without one (an MLP) has no locality or
        translation prior the student's convolutions share."""
        return self.convolution_layers > 0

    @property
    def linear_layers(self) -> int:
        """How many ``nn.Linear`` modules are inside (TorchScript ones by class name)."""
        return sum(
            isinstance(m, nn.Linear) or getattr(m, "original_name", "") == "Linear"
            for m in self.modules()
        )

    @property
    def pooling(self) -> str | None:
        """``"max"`` or ``"avg"`` when every pooling inside is of that kind (adaptive too), else
        ``None`` (no pooling, or both kinds).

        Pooling modules are read off the module tree (TorchScript ones by class name); pooling
        called in ``forward`` (``F.max_pool2d(x, 2)``, as PyTorch's own MNIST example does) is
        seen by running one blank image through the teacher and recording the pooling
        functions it calls (not inside TorchScript code, which only its modules show).
        """
        kinds = {
            _POOLING[name]
            for m in self.modules()
            if (name := getattr(m, "original_name", None) or type(m).__name__) in _POOLING
        } | self._called_pooling()
        return kinds.pop() if len(kinds) == 1 else None

    def _called_pooling(self) -> set[str]:
        """The kinds of the pooling functions one forward pass of a blank image calls (empty
        if that pass fails: the module tree is then all there is to go on)."""
        reference = next(iter(self.parameters()), None)
        # Two float32 images, as real batches are: one would fail a BatchNorm without running
        # statistics, and a teacher's first parameter need not have its input's dtype.
        blank = torch.zeros(2, *self.input_shape)
        if reference is not None:
            blank = blank.to(reference.device)
        recorder = _PoolingCalls()
        try:
            with torch.no_grad(), recorder:
                self(blank)
        except Exception:  # noqa: BLE001 - a teacher that fails here fails, in one line, later
            return set()
        return recorder.kinds

    @property
    def is_torchscript(self) -> bool:
        """Whether any module inside is TorchScript: its layers take no forward hooks."""
        return any(isinstance(m, torch.jit.ScriptModule) for m in self.modules())

    @property
    def has_batchnorm(self) -> bool:
        """Whether any BatchNorm layer (whose running statistics inversion can use) is inside."""
        return any(
            isinstance(m, nn.modules.batchnorm._BatchNorm)
            # TorchScript modules keep only the original class name.
            or getattr(m, "original_name", "").startswith(("BatchNorm", "SyncBatchNorm"))
            for m in self.modules()
        )
