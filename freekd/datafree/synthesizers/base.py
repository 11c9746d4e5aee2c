"""The Synthesizer contract, the base every synthesizer builds on, and the SYNTHESIZERS registry.

A synthesizer is one file in this package: a :class:`SynthesizerBase` dataclass whose fields are
its hyperparameters (keyword-only, with defaults), registered with ``@SYNTHESIZERS.register``.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, ClassVar, Protocol, runtime_checkable

import torch
from torch import Tensor, nn

from freekd.datafree.bn_hooks import BatchNormStatistics
from freekd.datafree.nets import build_generator, teacher_pixel_statistics
from freekd.losses.inversion import bn_statistics, jensen_shannon, onehot
from freekd.registry import Registry
from freekd.seeding import seeded_scope
from freekd.teachers import Teacher


@runtime_checkable
class Synthesizer(Protocol):
    """Produces inputs from what a teacher holds, for the student's training steps.

    One ``synthesize`` call runs one synthesis round (generator updates, pixel optimization, or
    adversarial steps against the current ``student``); ``sample`` then draws images for the
    student's next steps. ``datafree.source.SyntheticSource`` alternates the two inside the one
    Trainer loop; there is no data-free training loop of its own.

    Contract (tested for every registered synthesizer):
    - ``sample(n)`` has shape (n, C, H, W), values in [0, 1], and carries no autograd graph;
    - ``synthesize`` leaves no hooks on the teacher, the student's train/eval mode unchanged, and
      never updates the teacher;
    - ``images_synthesized`` and ``teacher_queries`` count, for the report, the images produced and
      the images the teacher was asked about (forward passes, per image);
    - ``state_dict``/``load_state_dict`` hold everything needed to resume exactly;
    - ``reinitialize`` starts synthesis afresh, reproducibly from the synthesizer's ``rng``.

    What the ``freekd datafree`` pipeline reads from the class (defaults on
    :class:`SynthesizerBase`):
    - ``needs_batchnorm``: the synthesizer inverts BatchNorm statistics, so a teacher without
      BatchNorm layers is refused before the run starts;
    - ``taps_teacher``: it hooks the teacher's layers (every ``needs_batchnorm`` one does, and
      DAFL its classifier's input), so a TorchScript teacher, which takes no hooks, is refused;
    - ``recommended_method`` and ``recommended_method_params``: the student-side method (a
      ``METHODS`` name) and its parameters the paper pairs with, used when ``method`` is unset;
    - ``recommended_synthesize_every``: student steps per synthesis round when
      ``synthesize_every`` is unset;
    - ``recommended_discrepancy_factor``: ``collapse.discrepancy_factor`` when unset
      (``datafree.collapse``; 0 measures the student's discrepancy without acting on it);
    - ``memory_passes``: (teacher, student) passes a round back-propagates through, for the
      memory estimate (``datafree.memory``).
    """

    needs_batchnorm: ClassVar[bool]
    recommended_method: ClassVar[str]
    recommended_method_params: ClassVar[dict[str, Any]]
    recommended_synthesize_every: ClassVar[int]
    recommended_discrepancy_factor: ClassVar[float]
    memory_passes: ClassVar[tuple[int, int]]

    images_synthesized: int
    teacher_queries: int
    #: Called as ``on_iteration(done, total)`` inside a round of many iterations (the progress bar).
    on_iteration: Callable[[int, int], None] | None
    #: Whether the run's time budget is spent (a long round or warm-up ends early when it is).
    budget_spent: Callable[[], bool] | None

    def synthesize(self, teacher: Teacher, student: nn.Module) -> dict[str, float]:
        """One synthesis round; returns named statistics (loss terms) for the logs."""
        ...

    def sample(self, n: int) -> Tensor:
        """``n`` synthetic images, (n, C, H, W) in [0, 1], detached."""
        ...

    def probe(self, n: int) -> Tensor:
        """``n`` images for the collapse check (``datafree.collapse``): what the synthesizer makes
        now, as ``sample`` but never replayed from a memory of earlier rounds that would hide a
        collapse of the current one (``sample`` where the memory is what it trains on)."""
        ...

    def reinitialize(self, *, lr_scale: float) -> None:
        """Start synthesis afresh after a collapse (``datafree.collapse``).

        New generator (or pixel) weights drawn from ``rng``, optimizer state cleared, every
        optimizer learning rate multiplied by ``lr_scale``, memory bank (if any) emptied. The
        counters ``images_synthesized`` and ``teacher_queries`` keep counting.
        """
        ...

    def follow_schedule(self, multiplier: float) -> None:
        """The student's learning-rate multiplier (its schedule: 1 at the peak) before a round;
        a synthesizer whose learning rates anneal with the student's scales them by it."""
        ...

    def report_entries(self) -> dict[str, Any]:
        """What the synthesizer chose at run time, for ``report.json``'s ``synthesizer.method``."""
        ...

    def state_dict(self) -> dict[str, Any]: ...

    def load_state_dict(self, state: dict[str, Any]) -> None: ...


@dataclass(kw_only=True, eq=False)
class SynthesizerBase:
    """What every synthesizer shares: the arguments the pipeline wires, the counters, the class
    attributes of the :class:`Synthesizer` contract with their defaults, and resumable state.

    A synthesizer is a subclass decorated with ``@dataclass(kw_only=True, eq=False)``: its fields
    are its hyperparameters, each with a default, and ``__post_init__`` builds its networks and
    optimizers. The pipeline constructs every one as
    ``cls(image_shape=(C, H, W), num_classes=K, rng=torch.Generator, device=torch.device,
    **hyperparameters)``; ``state_dict``/``load_state_dict`` save and restore the attributes named
    in ``STATE`` (see :func:`save_state`).

    Args:
        image_shape: (C, H, W) of the teacher's input.
        num_classes: the teacher's class count.
        rng: every random draw of the synthesizer comes from it.
        device: where the synthesizer's networks, codes and memory bank live.
    """

    image_shape: tuple[int, int, int]
    num_classes: int
    rng: torch.Generator
    device: torch.device
    images_synthesized: int = field(default=0, init=False)
    teacher_queries: int = field(default=0, init=False)
    on_iteration: Callable[[int, int], None] | None = field(default=None, init=False, repr=False)
    #: Whether the run's time budget is spent (``StopOnBudget.time_spent``): a long warm-up
    #: round ends early instead of running minutes past ``--budget``.
    budget_spent: Callable[[], bool] | None = field(default=None, init=False, repr=False)

    needs_batchnorm: ClassVar[bool] = False
    taps_teacher: ClassVar[bool] = False
    recommended_method: ClassVar[str] = "kd"
    recommended_method_params: ClassVar[dict[str, Any]] = {"temperature": 4.0}
    recommended_synthesize_every: ClassVar[int] = 1
    recommended_discrepancy_factor: ClassVar[float] = 0.0
    memory_passes: ClassVar[tuple[int, int]] = (1, 1)
    #: The attributes ``state_dict`` saves, in order.
    STATE: ClassVar[tuple[str, ...]] = ("rng", "images_synthesized", "teacher_queries")

    def synthesize(self, teacher: Teacher, student: nn.Module) -> dict[str, float]:
        raise NotImplementedError

    def sample(self, n: int) -> Tensor:
        raise NotImplementedError

    def probe(self, n: int) -> Tensor:
        return self.sample(n)

    def _iterated(self, done: int, total: int) -> None:
        """Iteration ``done`` (1-based) of ``total`` in a round is starting (``on_iteration``)."""
        if self.on_iteration is not None:
            self.on_iteration(done, total)

    def _round_spent(self, done: int) -> bool:
        """Whether a round of many iterations that has run ``done`` of them ends now: the run's
        time budget is spent (``budget_spent``), so the round keeps what it has made instead of
        running minutes past ``--budget``. A round always runs its first iteration."""
        return done > 0 and self.budget_spent is not None and self.budget_spent()

    def reinitialize(self, *, lr_scale: float) -> None:
        raise NotImplementedError

    def follow_schedule(self, multiplier: float) -> None:
        """Nothing anneals by default: the synthesizer keeps its own learning rates."""

    def report_entries(self) -> dict[str, Any]:
        return {}

    def state_dict(self) -> dict[str, Any]:
        return save_state(self, self.STATE)

    def load_state_dict(self, state: dict[str, Any]) -> None:
        load_state(self, self.STATE, state)


@dataclass(kw_only=True, eq=False)
class BatchSynthesizer(SynthesizerBase):
    """A synthesizer that makes ``batch_size`` images per synthesis round (all but noise).

    Args:
        batch_size: images per round (where a loss term uses BatchNorm statistics, they are the
            batch's statistics).
    """

    batch_size: int = 256


@dataclass(kw_only=True, eq=False)
class GeneratorSynthesizer(BatchSynthesizer):
    """A DCGAN generator (``nets.Generator``) trained by Adam on fresh latent codes at every step
    and sampled with fresh codes, so the student never trains on the exact images the generator
    was updated on (DAFL's Algorithm 1, Chen et al. 2019; DFAD and ZSKT alternate the same way).

    A subclass builds the generator and its optimizer with :meth:`_build_generator` in
    ``__post_init__`` and steps it in ``synthesize``; :meth:`_fresh` draws images, and
    :meth:`reinitialize` re-draws the weights from ``rng`` and restarts the optimizer.

    Args:
        latent_dim: size of the latent code.
        lr: Adam learning rate of the generator.
    """

    latent_dim: int = 100
    lr: float = 1e-3

    STATE: ClassVar[tuple[str, ...]] = (
        "generator",
        "optimizer",
        "rng",
        "images_synthesized",
        "teacher_queries",
    )

    def _build_generator(
        self,
        *,
        width: int,
        output: str,
        condition_dim: int = 0,
        frame: int = 0,
        count: int = 1,
        kind: str = "dcgan",
    ) -> None:
        """``self.generator`` on ``latent_dim + condition_dim`` inputs and its Adam optimizer;
        ``count`` > 1 builds a ``GeneratorEnsemble`` of that many (one Adam over all of them:
        its state is per parameter, so each generator keeps its own moments). ``kind``
        ``strokes`` builds ``StrokeGenerator`` s (``width``, ``output`` and ``frame`` are the
        DCGAN's and do not apply)."""
        generator = build_generator(
            kind=kind,
            count=count,
            latent_dim=self.latent_dim + condition_dim,
            image_shape=self.image_shape,
            width=width,
            output=output,
            frame=frame,
        )
        self.generator = generator.to(self.device)
        self.optimizer = torch.optim.Adam(
            self.generator.parameters(), lr=self.lr, betas=GENERATOR_BETAS
        )

    def _latent(self, n: int) -> tuple[Tensor, Tensor | None]:
        """n generator inputs (latent codes from ``rng``) and the classes they ask for, if any."""
        return torch.randn((n, self.latent_dim), generator=self.rng).to(self.device), None

    def _start_round(self, teacher: Teacher) -> None:
        """Batch statistics in the generator, and the teacher's input normalization for its
        ``batchnorm`` output layer."""
        self.generator.train()
        self.generator.set_pixel_statistics(*teacher_pixel_statistics(teacher))

    @torch.no_grad()
    def _fresh(self, n: int) -> Tensor:
        """n images of fresh latent codes, counted as synthesized."""
        self.generator.train()  # batch statistics, as in the generator step (DAFL Alg. 1)
        self.images_synthesized += n
        return self.generator(self._latent(n)[0])  # type: ignore[no-any-return]

    def reinitialize(self, *, lr_scale: float) -> None:
        reset_weights(self.generator, self.rng)
        restart_optimizer(self.optimizer, lr_scale=lr_scale)


# Every entry is a SynthesizerBase subclass (the constructor and class attributes above).
SYNTHESIZERS: Registry[type[SynthesizerBase]] = Registry("synthesizer")


def save_state(owner: object, names: tuple[str, ...]) -> dict[str, Any]:
    """The resumable state of ``owner``'s attributes ``names``.

    Modules, optimizers and memory banks give their ``state_dict()``, a ``torch.Generator`` its
    RNG state, a tensor a detached copy, anything else (counters) itself.
    """
    state: dict[str, Any] = {}
    for name in names:
        value = getattr(owner, name)
        if isinstance(value, torch.Generator):
            state[name] = value.get_state()
        elif isinstance(value, Tensor):
            state[name] = value.detach().clone()
        elif hasattr(value, "state_dict"):
            state[name] = value.state_dict()
        else:
            state[name] = value
    return state


def load_state(owner: object, names: tuple[str, ...], state: dict[str, Any]) -> None:
    """Restore what :func:`save_state` saved, in place."""
    for name in names:
        value = getattr(owner, name)
        if isinstance(value, torch.Generator):
            value.set_state(state[name])
        elif isinstance(value, Tensor):
            with torch.no_grad():
                value.copy_(state[name])
        elif hasattr(value, "load_state_dict"):
            value.load_state_dict(state[name])
        else:
            setattr(owner, name, type(value)(state[name]))


def reset_weights(module: nn.Module, rng: torch.Generator) -> None:
    """Re-draw ``module``'s weights with PyTorch's default initialization, reproducibly.

    The seed comes from ``rng`` and the initializers run under ``torch.random.fork_rng``, so the
    global RNG (dropout, the student's own draws) is left exactly as it was: a resumed run that
    re-initializes at the same step gets the same weights and the same everything else.
    BatchNorm running statistics are reset too.
    """
    seed = int(torch.randint(0, 2**62, (1,), generator=rng))
    cuda = [p.device.index or 0 for p in module.parameters() if p.device.type == "cuda"]
    with seeded_scope(seed, devices=sorted(set(cuda))):
        for child in module.modules():
            reset = getattr(child, "reset_parameters", None)
            if callable(reset):
                reset()


def restart_optimizer(optimizer: torch.optim.Optimizer, *, lr_scale: float) -> None:
    """Clear ``optimizer``'s state (Adam moments, step counts) and scale every group's lr."""
    if lr_scale <= 0:
        raise ValueError(f"lr_scale must be positive, got {lr_scale}")
    optimizer.state.clear()
    for group in optimizer.param_groups:
        group["lr"] = group["lr"] * lr_scale
        if "base_lr" in group:  # the rate a schedule scales (``scale_learning_rates``)
            group["base_lr"] = group["base_lr"] * lr_scale


def scale_learning_rates(optimizer: torch.optim.Optimizer, multiplier: float) -> None:
    """Set every group's lr to ``multiplier`` × its base rate (its lr when first scaled, times
    every ``restart_optimizer`` scale since). The base is kept in the group, so it is saved and
    resumed with the optimizer's state."""
    for group in optimizer.param_groups:
        group["lr"] = group.setdefault("base_lr", group["lr"]) * multiplier


#: Adam's (β1, β2) for every generator and latent code: DCGAN's (Radford et al. 2016,
#: arXiv:1511.06434 §4), as DAFL, DFAD and Fast use them.
GENERATOR_BETAS = (0.5, 0.999)


def draw_normal_(tensor: Tensor, rng: torch.Generator) -> None:
    """Fill ``tensor`` in place with standard normal draws from ``rng``.

    Drawn on the CPU and then copied, so the values do not depend on the tensor's device.
    """
    with torch.no_grad():
        tensor.copy_(torch.randn(tuple(tensor.shape), generator=rng).to(tensor.device))


def optimizer_step(
    optimizer: torch.optim.Optimizer, loss: Tensor, *, allow_unused: bool = False
) -> None:
    """One ``optimizer`` step on ``loss`` that sets the gradients of its parameters only.

    autograd.grad, not backward(): the student's parameters must not collect gradients from
    synthesis (adversarial and competition terms run through the student). ``allow_unused``:
    a parameter that ``loss`` does not reach gets no gradient (and no update).
    """
    parameters = [p for group in optimizer.param_groups for p in group["params"]]
    gradients = torch.autograd.grad(loss, parameters, allow_unused=allow_unused)
    for parameter, gradient in zip(parameters, gradients, strict=True):
        parameter.grad = gradient
    optimizer.step()
    optimizer.zero_grad(set_to_none=True)


def total(terms: dict[str, Tensor]) -> Tensor:
    """The sum of the weighted loss terms: what the synthesizer minimizes."""
    return torch.stack(list(terms.values())).sum()


def logged(terms: dict[str, Tensor]) -> dict[str, float]:
    """The loss terms as plain numbers, what ``synthesize`` returns for the logs."""
    return {name: float(value.detach()) for name, value in terms.items()}


class InversionWeights(Protocol):
    """The weights :func:`inversion_terms` reads (a synthesizer's hyperparameters)."""

    onehot_weight: float
    bn_weight: float
    adversarial_weight: float


def inversion_terms(
    weights: InversionWeights,
    statistics: BatchNormStatistics,
    teacher_logits: Tensor,
    targets: Tensor,
    student_logits: Callable[[], Tensor],
) -> dict[str, Tensor]:
    """The weighted terms of model inversion against a student, as Fast and CMI use them:

        onehot_weight·L_oh(T(x), y) + bn_weight·L_bn(x) + adversarial_weight·(−JS(T(x), S(x)))

    the teacher's cross-entropy on the targets, DeepInversion's BatchNorm-statistics
    regularizer over every layer (Yin et al. 2020, arXiv:1912.08795 Eq. 4) and the adversarial
    term that seeks inputs where the student disagrees with the teacher.

    Args:
        weights: the three weights; the adversarial term is left out when its weight is 0.
        statistics: the teacher's BatchNorm statistics on x (``bn_hooks.batchnorm_statistics``).
        teacher_logits: (B, K) T(x).
        targets: (B,) class targets y.
        student_logits: computes (B, K) S(x), called only for the adversarial term.
    """
    terms = {
        "onehot": weights.onehot_weight * onehot(teacher_logits, targets),
        "bn_statistics": weights.bn_weight
        * bn_statistics(
            statistics.batch_means,
            statistics.batch_variances,
            statistics.running_means,
            statistics.running_variances,
        ),
    }
    if weights.adversarial_weight > 0:
        # The generator maximizes the teacher–student divergence, so it minimizes −JS.
        terms["adversarial"] = -weights.adversarial_weight * jensen_shannon(
            student_logits(), teacher_logits
        )
    return terms
