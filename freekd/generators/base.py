"""The Synthesizer protocol: where a data-free run's batches come from."""

from __future__ import annotations

from typing import Any, Protocol, runtime_checkable

from torch import Tensor, nn

from freekd.teachers import Teacher


@runtime_checkable
class Synthesizer(Protocol):
    """Produces inputs from what a teacher holds, for the student's training steps.

    One ``synthesize`` call runs one synthesis round (generator updates, pixel optimization, or
    adversarial steps against the current ``student``); ``sample`` then draws images for the
    student's next steps. ``train.sources.SyntheticSource`` alternates the two inside the one
    Trainer loop; there is no data-free training loop of its own.

    Contract (tested for every registered synthesizer):
    - ``sample(n)`` has shape (n, C, H, W), values in [0, 1], and carries no autograd graph;
    - ``synthesize`` leaves no hooks on the teacher, the student's train/eval mode unchanged, and
      never updates the teacher;
    - ``images_synthesized`` and ``teacher_queries`` count, for the report, the images produced and
      the images the teacher was asked about (forward passes, per image);
    - ``state_dict``/``load_state_dict`` hold everything needed to resume exactly.
    """

    images_synthesized: int
    teacher_queries: int

    def synthesize(self, teacher: Teacher, student: nn.Module) -> dict[str, float]:
        """One synthesis round; returns named statistics (loss terms) for the logs."""
        ...

    def sample(self, n: int) -> Tensor:
        """``n`` synthetic images, (n, C, H, W) in [0, 1], detached."""
        ...

    def state_dict(self) -> dict[str, Any]: ...

    def load_state_dict(self, state: dict[str, Any]) -> None: ...
