"""Run configuration: typed dataclasses are the schema, YAML files and ``--set`` are data.

Every command builds one frozen dataclass from its defaults, then a YAML file of overrides
(``--config``), then dotted ``--set key=value`` overrides, then the CLI's real flags. Values are
type-checked and coerced by annotation (PyYAML reads ``1e-5`` as a string), unknown keys are errors
with a suggestion, and the resolved config is saved with every run and inside every checkpoint.

This module imports no torch, so the CLI's ``--help`` and the config tests stay fast.
"""

from __future__ import annotations

import dataclasses
import difflib
import math
import re
import types
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar, Union

import yaml

from freekd.errors import FreekdError

C = TypeVar("C")

#: Prefix of torchvision model names in ``arch`` fields (data: a name, not code).
TORCHVISION_PREFIX = "torchvision:"
#: Config fields that name an architecture. An import path there runs code when the model is
#: built, so a file (YAML, a run's saved ``config.yaml``) may hold one only with ``--trust-code``.
ARCHITECTURE_FIELDS = frozenset({"arch", "student", "student_arch"})
#: Flags that let freekd run code from a file; only the command line may switch them on.
TRUST_FIELDS = frozenset({"trust_pickle"})


def is_import_path(arch: object) -> bool:
    """Whether ``arch`` names code to import (``package.module:Attribute``), not a data name."""
    return isinstance(arch, str) and ":" in arch and not arch.startswith(TORCHVISION_PREFIX)


# ---------------------------------------------------------------------------------------------
# Value checks: every dataclass checks its own ranges in ``__post_init__``, so YAML files,
# ``--set``, CLI flags and the Python API are all covered, before any run folder is touched.

#: The CLI flag that sets a dotted config key, named in the message when that key is invalid.
FLAGS: dict[str, str] = {
    "trainer.epochs": "--epochs",
    "trainer.batch_size": "--batch-size",
    "trainer.lr": "--lr",
    "trainer.device": "--device",
    "shadow.trainer.device": "--device",
    "budget_minutes": "--budget",
    "budget_cpu_minutes": "--budget",
    "budget_images": "--budget",
    "shadow.models": "--shadow-models",
    "max_examples": "--max-examples",
    "confidence": "--confidence",
    "dp.epsilon": "--epsilon",
    "dp.delta": "--delta",
    "dp.max_grad_norm": "--max-grad-norm",
    "queries": "--queries",
    "save_queries": "--save-queries",
    "teachers": "--teachers",
    "pool": "--pool",
}

#: What ``trainer.device`` accepts (``freekd.train.distributed.resolve_device``).
DEVICE_PATTERN = re.compile(r"auto|cpu|mps|cuda(:[0-9]+)?")


class ConfigValueError(FreekdError):
    """A config field holds a value outside its valid range.

    Raised by the dataclasses' ``__post_init__``; :func:`from_dict` restates it with the dotted
    key the user wrote (``trainer.lr``) and the flag that sets it.
    """

    def __init__(self, owner: str, name: str, rule: str, value: Any) -> None:
        self.name, self.rule, self.value = name, rule, value
        super().__init__(self.message(f"{owner}.{name}"))

    def message(self, key: str) -> str:
        """The one-line message for the field at dotted ``key``."""
        flag = FLAGS.get(key)
        fix = (
            f"pass a valid {flag} (or --set {key}=...)" if flag else f"fix it with --set {key}=..."
        )
        return f"{key} {self.rule}, got {_shown(self.value)}; {fix}"


def _shown(value: Any) -> str:
    if isinstance(value, float):
        return f"{value:g}"
    return repr(value)


class _Checks:
    """Range checks of one config object; each failure raises :class:`ConfigValueError`."""

    def __init__(self, config: Any) -> None:
        self.config = config
        self.owner = type(config).__name__

    def fail(self, name: str, rule: str) -> None:
        raise ConfigValueError(self.owner, name, rule, getattr(self.config, name))

    def _number(self, name: str, *, optional: bool) -> float | None:
        value = getattr(self.config, name)
        if value is None:
            if not optional:
                self.fail(name, "must be a number")
            return None
        if not math.isfinite(value):
            self.fail(name, "must be a finite number")
        return float(value)

    def at_least(self, name: str, low: float, *, optional: bool = False) -> None:
        value = self._number(name, optional=optional)
        if value is not None and value < low:
            self.fail(name, f"must be at least {low:g}")

    def positive(self, name: str, *, optional: bool = False) -> None:
        value = self._number(name, optional=optional)
        if value is not None and value <= 0:
            self.fail(name, "must be a finite number above 0")

    def within(
        self, name: str, low: float, high: float, *, closed: str = "[)", optional: bool = False
    ) -> None:
        value = self._number(name, optional=optional)
        if value is None:
            return
        above = value >= low if closed[0] == "[" else value > low
        below = value <= high if closed[1] == "]" else value < high
        if not (above and below):
            self.fail(name, f"must lie in {closed[0]}{low:g}, {high:g}{closed[1]}")


@dataclass(frozen=True)
class TrainerConfig:
    """The one training loop's knobs (see ``freekd.train.Trainer``).

    Attributes:
        epochs: passes over the batch source.
        batch_size: global batch size; under DistributedDataParallel each of W processes takes
            ``batch_size // W`` so that results match one process.
        lr: peak learning rate.
        optimizer: ``sgd`` (momentum, Nesterov off) or ``adam``/``adamw``.
        momentum: SGD momentum.
        weight_decay: L2 penalty (decoupled for adamw).
        scheduler: ``cosine`` (per step, to zero), ``step`` (×0.1 at 50 % and 75 %) or ``constant``.
        warmup_steps: linear warm-up steps before the schedule.
        max_grad_norm: clip the gradient norm to this value; ``None`` disables clipping.
        augment: batch augmentation: ``auto`` (the default) is ``crop`` for images of 24 pixels
            and more and ``none`` below, where a 2-pixel shift is too large; ``crop`` (random
            shifts of up to 2 pixels; it lifts LeNet-5 on MNIST from 98.8 % to 99.3 %),
            ``crop-flip`` (CIFAR's padding 4 and horizontal flips) or ``none``.
        device: ``auto`` (CUDA when present), ``cpu`` or ``cuda[:N]``.
        amp: mixed precision (bfloat16 autocast) on CUDA; on CPU only with ``amp_cpu``.
        amp_cpu: with ``amp``, autocast to bfloat16 on CPU too (off by default: on most CPUs
            it is slower and changes the results; it runs the mixed-precision path where there
            is no GPU, as the tests do).
        deterministic: ``torch.use_deterministic_algorithms(True)``; bitwise repeatable on CPU.
        log_every: steps between ``metrics.jsonl`` lines (and an extra line every epoch).
        checkpoint_every: steps between resumable checkpoints (and one at every epoch end).
        eval_every: epochs between evaluations on the held-out split (0 = only at the end).
        ema_decay: keep an exponential moving average of the student's weights with this decay
            (e.g. 0.999) and evaluate and save the average (``train.callbacks.WeightAverage``);
            ``None`` trains and saves the raw weights.
    """

    epochs: int = 10
    batch_size: int = 128
    lr: float = 0.05
    optimizer: str = "sgd"
    momentum: float = 0.9
    weight_decay: float = 5e-4
    scheduler: str = "cosine"
    warmup_steps: int = 0
    max_grad_norm: float | None = None
    augment: str = "auto"
    device: str = "auto"
    amp: bool = True
    amp_cpu: bool = False
    deterministic: bool = False
    log_every: int = 50
    checkpoint_every: int = 500
    eval_every: int = 1
    ema_decay: float | None = None

    def __post_init__(self) -> None:
        check = _Checks(self)
        check.at_least("epochs", 1)
        check.at_least("batch_size", 1)
        check.positive("lr")
        check.within("momentum", 0, 1)
        check.at_least("weight_decay", 0)
        check.at_least("warmup_steps", 0)
        check.positive("max_grad_norm", optional=True)
        if not DEVICE_PATTERN.fullmatch(self.device):
            check.fail("device", "must be auto, cpu, cuda, cuda:N or mps")
        check.at_least("log_every", 1)
        check.at_least("checkpoint_every", 1)
        check.at_least("eval_every", 0)
        check.within("ema_decay", 0, 1, closed="()", optional=True)


@dataclass(frozen=True)
class ComponentConfig:
    """A plug-in chosen by registry name, with keyword arguments checked against its constructor."""

    name: str
    params: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class TeacherSourceConfig:
    """How to load a teacher file a user brings (DESIGN.md, "Teachers users bring").

    Attributes:
        path: a freekd checkpoint, a TorchScript file, a plain state_dict (needs ``arch``) or, with
            ``trust_pickle``, a pickled ``nn.Module``.
        arch: registry name, ``torchvision:<name>`` or ``package.module:Class`` for a state_dict.
        arch_kwargs: keyword arguments for ``arch``.
        input_shape: ``[C, H, W]``; required for anything but a freekd checkpoint.
        num_classes: class count; inferred from a forward pass when omitted.
        mean: per-channel normalization mean the teacher expects (default: none, i.e. [0, 1] input).
        std: per-channel normalization std.
        trust_pickle: allow unpickling a full module; pickle executes code from the file.
    """

    path: str = ""
    arch: str | None = None
    arch_kwargs: dict[str, Any] = field(default_factory=dict)
    input_shape: list[int] | None = None
    num_classes: int | None = None
    mean: list[float] | None = None
    std: list[float] | None = None
    trust_pickle: bool = False

    def __post_init__(self) -> None:
        _Checks(self).at_least("num_classes", 1, optional=True)


@dataclass(frozen=True)
class DPConfig:
    """DP-SGD for ``freekd teacher train --dp`` (Abadi et al. 2016, arXiv:1607.00133, Alg. 1).

    Per-example gradients are clipped to ``max_grad_norm`` and Gaussian noise of standard
    deviation ``noise_multiplier · max_grad_norm`` is added to their sum (Opacus'
    ``DPOptimizer``); batches are Poisson samples at rate ``batch_size / N``. The privacy cost
    is Opacus' RDP analysis of the sampled Gaussian mechanism, converted to (ε, δ).

    Attributes:
        enabled: train with DP-SGD.
        epsilon: target ε for the whole run; the noise multiplier is chosen to meet it
            (Opacus' ``get_noise_multiplier``) unless ``noise_multiplier`` is given.
        delta: δ of the guarantee (below 1/N: 1e-5 for 60,000 images).
        max_grad_norm: per-example clipping norm C.
        noise_multiplier: σ/C; overrides ``epsilon`` when given.
    """

    enabled: bool = False
    epsilon: float | None = None
    delta: float = 1e-5
    max_grad_norm: float = 1.0
    noise_multiplier: float | None = None

    def __post_init__(self) -> None:
        check = _Checks(self)
        check.positive("epsilon", optional=True)
        check.within("delta", 0, 1, closed="()")
        check.positive("max_grad_norm")
        check.positive("noise_multiplier", optional=True)


@dataclass(frozen=True)
class TeacherTrainConfig:
    """``freekd teacher train``: supervised training of a classifier.

    Attributes:
        dataset: training data spec (registry name[:split], ``.npz`` file or image folder).
        eval_dataset: held-out data spec; default: the ``test`` split of ``dataset``.
        data_root: torchvision-format root for datasets that need one (CIFAR, SVHN).
        download: let torchvision download into ``data_root`` (needs a network).
        arch: model architecture name.
        arch_kwargs: keyword arguments for the architecture.
        mean: normalization mean stored in the model; default: computed from the training set.
        std: normalization std stored in the model; default: computed from the training set.
        label_smoothing: cross-entropy label smoothing.
        seed: seed for weights, data order, augmentation and noise.
        trainer: the training loop's settings.
        dp: DP-SGD settings (``--dp``); BatchNorm layers are replaced by GroupNorm.
    """

    dataset: str = "mnist"
    eval_dataset: str | None = None
    data_root: str | None = None
    download: bool = False
    arch: str = "lenet5"
    arch_kwargs: dict[str, Any] = field(default_factory=dict)
    mean: list[float] | None = None
    std: list[float] | None = None
    label_smoothing: float = 0.0
    seed: int = 0
    trainer: TrainerConfig = field(default_factory=TrainerConfig)
    dp: DPConfig = field(default_factory=DPConfig)

    def __post_init__(self) -> None:
        _Checks(self).within("label_smoothing", 0, 1)


@dataclass(frozen=True)
class PateTeachersConfig:
    """``freekd pate teachers``: K teachers on disjoint shards of the private data.

    Attributes:
        dataset: the private training data spec.
        eval_dataset: held-out data for the teachers' and the plurality vote's accuracy;
            default: the ``test`` split of ``dataset``.
        data_root: torchvision-format root for ``dataset``.
        download: let torchvision download into ``data_root``.
        arch: architecture of every teacher.
        arch_kwargs: its keyword arguments.
        teachers: K, the number of teachers (and of disjoint shards).
        execution: ``loop`` (members one by one; fastest on CPU, BatchNorm allowed) or ``vmap``
            (one vectorised call; BatchNorm-free architectures, fastest on GPU).
        seed: seed for the shards, the weights and the batch order.
        trainer: the loop's settings; ``batch_size`` is the batch of *each* teacher.
    """

    dataset: str = "mnist"
    eval_dataset: str | None = None
    data_root: str | None = None
    download: bool = False
    arch: str = "lenet5"
    arch_kwargs: dict[str, Any] = field(default_factory=dict)
    teachers: int = 250
    execution: str = "loop"
    seed: int = 0
    trainer: TrainerConfig = field(
        default_factory=lambda: TrainerConfig(
            epochs=40, batch_size=24, lr=0.05, augment="none", eval_every=0
        )
    )

    def __post_init__(self) -> None:
        _Checks(self).at_least("teachers", 1)


@dataclass(frozen=True)
class PateLabelConfig:
    """``freekd pate label``: noisy, accounted labels for public queries from a teacher ensemble.

    The query pool is a public unlabelled set (PATE 2017/2018 use part of the MNIST test split):
    its first ``len(pool) − holdout`` images are queried in order, up to ``queries``; the last
    ``holdout`` images are never queried and serve to evaluate the student.

    Attributes:
        teachers: the ``teachers.pt`` of ``freekd pate teachers``.
        query_dataset: the public pool (its labels are used only to measure label accuracy).
        data_root: torchvision-format root for ``query_dataset``.
        queries: how many pool images to ask about at most.
        holdout: pool images kept back for evaluation (never queried).
        aggregator: ``lnmax``, ``gnmax`` or ``confident-gnmax``.
        sigma: σ (GNMax) or σ₂ (Confident-GNMax): the noise of an answer.
        sigma_threshold: σ₁, the noise of Confident-GNMax's check.
        threshold: T of Confident-GNMax's check.
        gamma: LNMax's inverse Laplace scale.
        student_model: Interactive-GNMax: a student checkpoint (e.g. from an earlier
            ``freekd pate student``) whose probabilities decide which queries the teachers see.
        confidence_scale: Interactive-GNMax's O.
        student_threshold: Interactive-GNMax's T': a student this confident labels alone.
        epsilon: the budget's ε; no answer may push the budgeted figure past it.
        delta: the budget's δ.
        budget_on: ``data-independent`` (publishable) or ``data-dependent-unsanitized``.
        seed: seeds the per-query noise (and the smooth-sensitivity release).
        eval_dataset: labelled real data the student is evaluated on; default: the pool's
            held-out part. Needed when the pool is synthetic (``holdout`` may then be 0).
        queries_public: the pool is a ``queries.npz`` of ``freekd datafree`` whose teacher has
            no DP record, and that teacher never saw the private data (a public model), so the
            queries cost nothing; without it such a pool is refused.
        sanitize: with ``gnmax`` or ``confident-gnmax``, release the data-dependent ε through
            smooth sensitivity at the end (``privacy.smooth``; report ``privacy.sanitized``).
        sanitize_sigma: the release's noise multiplier σ_s (``None``: 10).
        sanitize_beta: its smoothness β (``None``: 1/(4·order)).
        sanitize_order: its Rényi order (``None``: the best data-dependent one).
    """

    teachers: str = ""
    query_dataset: str = "mnist:test"
    data_root: str | None = None
    queries: int = 9000
    holdout: int = 1000
    aggregator: str = "confident-gnmax"
    sigma: float | None = 40.0
    sigma_threshold: float | None = 150.0
    threshold: float | None = 200.0
    gamma: float | None = None
    student_model: str | None = None
    confidence_scale: float | None = None
    student_threshold: float | None = None
    epsilon: float = 2.0
    delta: float = 1e-5
    budget_on: str = "data-independent"
    seed: int = 0
    eval_dataset: str | None = None
    queries_public: bool = False
    sanitize: bool = True
    sanitize_sigma: float | None = None
    sanitize_beta: float | None = None
    sanitize_order: float | None = None

    def __post_init__(self) -> None:
        check = _Checks(self)
        check.at_least("queries", 1)
        check.at_least("holdout", 0)
        for name in ("sigma", "sigma_threshold", "gamma", "confidence_scale"):
            check.positive(name, optional=True)
        check.at_least("threshold", 0, optional=True)
        check.positive("epsilon")
        check.within("delta", 0, 1, closed="()")
        check.positive("sanitize_sigma", optional=True)
        check.positive("sanitize_beta", optional=True)
        check.positive("sanitize_order", optional=True)
        if self.sanitize_order is not None and self.sanitize_order <= 1:
            check.fail("sanitize_order", "must be a Rényi order above 1")


@dataclass(frozen=True)
class PateStudentConfig:
    """``freekd pate student``: a student trained on the answered queries only.

    Attributes:
        labels: the run folder of ``freekd pate label`` (its ``labels.npz`` and ``report.json``).
        student: student architecture.
        student_kwargs: its keyword arguments.
        data_root: torchvision-format root for the query pool.
        semi_supervised: ``vat`` (the default): virtual adversarial training on the answered
            queries plus every other non-held-out image of the pool, unlabelled, as the PATE
            papers train their students; ``none``: cross-entropy on the answered queries only.
        semi_supervised_kwargs: hyperparameters of ``methods.semi.VirtualAdversarial``.
        labelled_batch_size: answered queries per step with ``vat`` (``trainer.batch_size`` is
            then the number of unlabelled images per step).
        seed: seed for weights and batch order.
        trainer: the loop's settings.
    """

    labels: str = ""
    student: str = "lenet5"
    student_kwargs: dict[str, Any] = field(default_factory=dict)
    data_root: str | None = None
    semi_supervised: str = "vat"
    semi_supervised_kwargs: dict[str, Any] = field(default_factory=dict)
    labelled_batch_size: int = 32
    seed: int = 0
    trainer: TrainerConfig = field(
        default_factory=lambda: TrainerConfig(epochs=30, batch_size=128, lr=0.05)
    )

    def __post_init__(self) -> None:
        _Checks(self).at_least("labelled_batch_size", 1)


@dataclass(frozen=True)
class PateRunConfig:
    """``freekd pate run``: the three PATE stages in one file (``configs/pate/``).

    The ``label`` stage's ``teachers`` and the ``student`` stage's ``labels`` are filled in by
    the command (they are the folders of the earlier stages).
    """

    teachers: PateTeachersConfig = field(default_factory=PateTeachersConfig)
    label: PateLabelConfig = field(default_factory=PateLabelConfig)
    student: PateStudentConfig = field(default_factory=PateStudentConfig)


@dataclass(frozen=True)
class DistillConfig:
    """``freekd distill``: classic knowledge distillation on real data.

    Attributes:
        teacher: where the teacher comes from.
        student: student architecture name.
        student_kwargs: keyword arguments for the student architecture.
        dataset: transfer data spec (labels are used by the CE term).
        eval_dataset: held-out data spec; default: the ``test`` split of ``dataset``.
        data_root: torchvision-format root for datasets that need one.
        download: let torchvision download into ``data_root``.
        method: distillation method by registry name with its parameters.
        seed: seed for weights, data order, augmentation and noise.
        trainer: the training loop's settings.
    """

    teacher: TeacherSourceConfig = field(default_factory=TeacherSourceConfig)
    student: str = "lenet5-half"
    student_kwargs: dict[str, Any] = field(default_factory=dict)
    dataset: str = "mnist"
    eval_dataset: str | None = None
    data_root: str | None = None
    download: bool = False
    method: ComponentConfig = field(
        default_factory=lambda: ComponentConfig(name="kd", params={"temperature": 4.0})
    )
    seed: int = 0
    # KD's T²-scaled soft targets give larger gradients than cross-entropy: at lr 0.05 LeNet-5-half
    # (no BatchNorm) reached 93-96 % on MNIST after 2 epochs, at 0.01 it reached 98.3 %.
    trainer: TrainerConfig = field(default_factory=lambda: TrainerConfig(lr=0.01))


@dataclass(frozen=True)
class CollapseConfig:
    """Collapse detection and recovery for ``freekd datafree`` (``generators.collapse``).

    Every ``check_every`` synthesis rounds a probe of ``probe_size`` synthetic images is measured
    (the teacher labels it: ``probe_size`` teacher queries per check; the student labels it
    too). Diversity below ``diversity_threshold``, label balance below ``balance_threshold`` or
    the student's KL to the teacher above ``discrepancy_factor`` × its lowest so far (and above
    ``discrepancy_floor``) at ``patience`` consecutive checks is a collapse: the synthesizer is
    re-initialized with every learning rate × ``lr_scale``, at most ``max_recoveries`` times;
    after that the report says the collapse was not recovered.

    Attributes:
        enabled: run the checks at all.
        check_every: synthesis rounds between checks.
        probe_size: images per check.
        diversity_threshold: mean pairwise RMS pixel distance below this is low (measured on
            MNIST, LeNet-5 teacher: real digits 0.36, uniform noise 0.41, freshly initialized
            generators 0.16–0.18, generators with a zeroed last layer 0.000).
        balance_threshold: normalized entropy of the teacher's label histogram below this is low
            (real digits 0.98, uniform noise 0.36, every synthesizer in a short run ≥ 0.23, one
            class 0; uniform noise on the tiny digits teacher 0.07, so a ``noise`` run there
            reports an unrecovered collapse). See experiments/2026-11-collapse-thresholds.
        discrepancy_factor: the student's KL(teacher ‖ student) on the probe above this many
            times its lowest value so far is low (0: never). ``None`` (the default): the
            synthesizer's ``recommended_discrepancy_factor``, 3 for the adversarial ones (zskt,
            dfad), 0 for the others. It catches an adversarial generator that has won the game
            against a student whose learning rate has decayed, which diversity and balance do
            not (experiments/datafree/README.md, "A generator that wins the game").
        discrepancy_floor: ... and above this many nats. Healthy zskt runs on MNIST stayed at
            0.19–0.48 nats and at most 1.9× their lowest; a won game rose 15-fold, to 3 nats
            (experiments/datafree/README.md).
        patience: consecutive low checks that make a collapse.
        max_recoveries: re-initializations per run.
        lr_scale: factor on every synthesizer learning rate at each re-initialization.
    """

    enabled: bool = True
    check_every: int = 10
    probe_size: int = 128
    diversity_threshold: float = 0.05
    balance_threshold: float = 0.1
    discrepancy_factor: float | None = None
    discrepancy_floor: float = 0.5
    patience: int = 2
    max_recoveries: int = 3
    lr_scale: float = 0.5


#: ``DataFreeConfig.method.name`` for the synthesizer's recommended student-side method.
AUTO_METHOD = "auto"


@dataclass(frozen=True)
class DataFreeConfig:
    """``freekd datafree``: distill a student from a teacher with synthetic inputs only.

    Attributes:
        teacher: where the teacher comes from (any of the four kinds of file).
        student: student architecture; default: a smaller model of the teacher's family.
        student_kwargs: keyword arguments for the student architecture.
        synthesizer: the data-free method (``--method``) by registry name, with its parameters;
            ``auto`` (the default) picks ``cmi`` for a teacher with BatchNorm and ``zskt`` for
            one without (``pipelines.default_synthesizer``), and the saved config names it.
        method: the student-side distillation rule on synthetic batches (labels never exist);
            default: the synthesizer's ``recommended_method`` (e.g. ``logit-l1`` for dfad), else
            ``kd`` at temperature 4. The name ``auto`` is that recommendation with ``params``
            over its parameters: ``--set method.params.temperature=2`` alone changes one.
        eval_dataset: labelled real data used only to report accuracy (never trained on).
        data_root: torchvision-format root for ``eval_dataset``.
        download: let torchvision download into ``data_root``.
        steps_per_epoch: student steps per epoch.
        synthesize_every: student steps between synthesis rounds; default: the synthesizer's
            ``recommended_synthesize_every`` (5 for dfad, 10 for zskt), else 1.
        budget_minutes: stop once this much wall-clock time is spent.
        budget_cpu_minutes: stop once this process has used this much CPU time (all threads);
            a fair budget on a shared machine (``--budget cpu:15m``).
        budget_images: stop once this many images have been synthesized.
        proxy_dataset: train on these real images instead of synthesizing (``--proxy-data``):
            labels are hidden and the student-side method is the same; ``mnist:train`` for an
            MNIST teacher is the real-data upper bound, ``animal-mnist`` an unrelated proxy.
        collapse: collapse detection and recovery of the synthesizer.
        save_queries: at the end, write this many images of the final synthesizer to
            ``queries.npz`` (labels: the teacher's classes), the query pool of data-free PATE
            (``freekd pate label --queries-from OUT/queries.npz``); 0: none.
        seed: seed for weights, latent codes and noise.
        trainer: the training loop's settings (``batch_size`` = synthetic images per step).
    """

    teacher: TeacherSourceConfig = field(default_factory=TeacherSourceConfig)
    student: str | None = None
    student_kwargs: dict[str, Any] = field(default_factory=dict)
    synthesizer: ComponentConfig = field(default_factory=lambda: ComponentConfig(name="auto"))
    # A partial ``--set method.params.temperature=2`` fills the name with ``auto``.
    method: ComponentConfig | None = field(default=None, metadata={"partial_name": AUTO_METHOD})
    eval_dataset: str | None = None
    data_root: str | None = None
    download: bool = False
    steps_per_epoch: int = 200
    synthesize_every: int | None = None
    budget_minutes: float | None = None
    budget_cpu_minutes: float | None = None
    budget_images: int | None = None
    proxy_dataset: str | None = None
    collapse: CollapseConfig = field(default_factory=CollapseConfig)
    save_queries: int = 0
    seed: int = 0
    trainer: TrainerConfig = field(
        default_factory=lambda: TrainerConfig(
            epochs=20, batch_size=256, lr=0.01, augment="none", eval_every=1
        )
    )

    def __post_init__(self) -> None:
        check = _Checks(self)
        check.at_least("steps_per_epoch", 1)
        check.at_least("synthesize_every", 1, optional=True)
        check.positive("budget_minutes", optional=True)
        check.positive("budget_cpu_minutes", optional=True)
        check.at_least("budget_images", 1, optional=True)
        check.at_least("save_queries", 0)


@dataclass(frozen=True)
class ShadowConfig:
    """Shadow (reference) models for LiRA and RMIA (``freekd.audit.shadows``).

    Attributes:
        models: how many; each trains on a random half of the audit pool (members and
            non-members together), in complementary pairs so that every example is in exactly
            half of them. 0: none, and only the threshold attacks run.
        recipe: ``target``: the audited model's architecture and normalization, and, when the
            model was trained by ``freekd teacher train``, its trainer settings (``trainer``
            below otherwise); ``config``: ``arch``, ``arch_kwargs`` and ``trainer`` below.
        arch: architecture for ``recipe: config``.
        arch_kwargs: its keyword arguments.
        execution: ``loop`` (one by one; fastest on CPU) or ``vmap`` (one vectorised batch;
            BatchNorm-free architectures), the PATE ensemble's machinery.
        reuse: folder of an earlier audit on the same pool whose ``shadows.npz`` is reused (a
            teacher's shadow models serve the audits of its students).
        trainer: training settings of the shadow models (see ``recipe``).
    """

    models: int = 16
    recipe: str = "target"
    arch: str | None = None
    arch_kwargs: dict[str, Any] = field(default_factory=dict)
    execution: str = "loop"
    reuse: str | None = None
    trainer: TrainerConfig = field(
        default_factory=lambda: TrainerConfig(
            epochs=30, batch_size=64, lr=0.05, weight_decay=5e-4, augment="none", eval_every=0
        )
    )

    def __post_init__(self) -> None:
        if self.models < 0 or self.models == 1:
            # Shadow models come in IN/OUT pairs (``audit.shadows.inclusion_design``).
            _Checks(self).fail("models", "must be 0 (threshold attacks only) or at least 2")


@dataclass(frozen=True)
class AuditConfig:
    """``freekd audit``: membership inference against a model, and an empirical ε lower bound.

    Attributes:
        model: the audited model (any teacher file freekd loads).
        members: examples the model trained on (dataset spec).
        non_members: examples it did not train on, from the same distribution.
        data_root: torchvision-format root for datasets that need one.
        max_examples: audit at most this many examples in all: a seeded random part of the
            pool chosen without looking at membership; ``None``: all.
        attacks: attack names (``freekd.audit.ATTACKS``); empty: every attack the shadow
            models allow.
        attack_params: keyword arguments per attack, e.g. ``{rmia: {gamma: 2}}``.
        shadow: the shadow models.
        bound_attack: whose scores the one-run ε lower bound uses. It must be fixed before the
            scores are seen, or the stated confidence is void; ``auto``:
            ``lira-offline-fixed-variance`` with shadow models, ``loss`` without.
        confidence: confidence of the ε lower bound (Steinke, Nasr & Jagielski 2023).
        delta: δ of the lower bound; default: the model's accountant δ, else 1e-5.
        accountant_epsilon: the ε the model claims; default: its privacy record, if any.
        random_split: the members were chosen from the pool of members ∪ non-members
            independently with probability ½, which the ε lower bound assumes (true for
            ``freekd audit pipeline``); when false the bound is still computed but reported as
            not valid.
        seed: seed of the example choice and the shadow models.
    """

    model: TeacherSourceConfig = field(default_factory=TeacherSourceConfig)
    members: str = ""
    non_members: str = ""
    data_root: str | None = None
    max_examples: int | None = None
    attacks: list[str] = field(default_factory=list)
    attack_params: dict[str, Any] = field(default_factory=dict)
    shadow: ShadowConfig = field(default_factory=ShadowConfig)
    bound_attack: str = "auto"
    confidence: float = 0.95
    delta: float | None = None
    accountant_epsilon: float | None = None
    random_split: bool = False
    seed: int = 0

    def __post_init__(self) -> None:
        check = _Checks(self)
        check.at_least("max_examples", 2, optional=True)
        check.within("confidence", 0, 1, closed="()")
        check.within("delta", 0, 1, optional=True)
        check.at_least("accountant_epsilon", 0, optional=True)


@dataclass(frozen=True)
class AuditPipelineConfig:
    """``freekd audit pipeline``: the distillation threat model, end to end.

    A pool of ``pool`` images is drawn from the training split of ``dataset``; each is a member
    of the teacher's private training set independently with probability ½ (so every pool image
    is a canary of the one-run ε lower bound). The teacher trains on the members; students are
    distilled from it by each path in ``paths``, all without seeing the members; the teacher and
    every student are then audited against the members, with the same shadow models.
    ``public`` other training images serve as the public transfer set (``kd``) and as PATE's
    query pool; the test split measures accuracy.

    Attributes:
        dataset: registry name of the data (its ``train`` and ``test`` splits are used).
        data_root: torchvision-format root for datasets that need one.
        pool: audit pool size (members + non-members).
        public: public images for KD and PATE queries, disjoint from the pool.
        paths: distillation paths: ``kd`` (real-data KD on the public set), ``datafree``
            (synthetic inputs only), ``pate`` (teachers on shards of the members, noisy labels
            of public queries), ``dpsgd-datafree`` (a DP-SGD teacher on the members, then a
            data-free student; its DP teacher is audited too).
        teacher: the non-private teacher's training (``dataset`` is filled in).
        distill: the ``kd`` path (``teacher`` and ``dataset`` are filled in).
        datafree: the data-free paths (``teacher`` and ``eval_dataset`` are filled in).
        pate: the ``pate`` path's three stages (data fields are filled in).
        dp_teacher: the DP-SGD teacher of ``dpsgd-datafree`` (``dataset`` is filled in).
        audit: the audit settings (``model``, ``members``, ``non_members`` are filled in).
        seed: seed of the pool, the membership coin flips and every stage.
    """

    dataset: str = "mnist"
    data_root: str | None = None
    pool: int = 2000
    public: int = 10000
    paths: list[str] = field(default_factory=lambda: ["kd", "datafree", "pate", "dpsgd-datafree"])
    teacher: TeacherTrainConfig = field(
        default_factory=lambda: TeacherTrainConfig(
            trainer=TrainerConfig(
                epochs=30, batch_size=64, lr=0.05, weight_decay=5e-4, augment="none", eval_every=0
            )
        )
    )
    distill: DistillConfig = field(
        default_factory=lambda: DistillConfig(
            trainer=TrainerConfig(epochs=10, batch_size=128, lr=0.01, eval_every=0)
        )
    )
    datafree: DataFreeConfig = field(
        default_factory=lambda: DataFreeConfig(
            budget_cpu_minutes=4.0,
            trainer=TrainerConfig(epochs=20, batch_size=256, lr=0.01, augment="none", eval_every=0),
        )
    )
    # PATE on about 1,000 private images: 25 teachers of 40 images each (plurality about 89 %
    # on MNIST); Confident-GNMax answers only the clearest queries, at a data-independent ε of
    # 20 (experiments/audit/README.md).
    pate: PateRunConfig = field(
        default_factory=lambda: PateRunConfig(
            teachers=PateTeachersConfig(
                teachers=25,
                trainer=TrainerConfig(
                    epochs=60, batch_size=16, lr=0.05, augment="none", eval_every=0
                ),
            ),
            label=PateLabelConfig(
                queries=3000,
                holdout=0,
                threshold=18.0,
                sigma_threshold=8.0,
                sigma=5.0,
                epsilon=20.0,
                budget_on="data-independent",
            ),
            student=PateStudentConfig(
                student="lenet5-half",
                trainer=TrainerConfig(epochs=10, batch_size=128, lr=0.05, eval_every=0),
            ),
        )
    )
    # DP-SGD on about 1,000 images at ε 4: Adam at 0.004 reached 78.8 % on MNIST where SGD
    # (lr 0.1–4, with or without momentum) stayed between 9 % and 69 % (seed 0).
    dp_teacher: TeacherTrainConfig = field(
        default_factory=lambda: TeacherTrainConfig(
            dp=DPConfig(enabled=True, epsilon=4.0, delta=1e-5, max_grad_norm=1.0),
            trainer=TrainerConfig(
                epochs=60,
                batch_size=128,
                lr=0.004,
                optimizer="adam",
                momentum=0.0,
                weight_decay=0.0,
                scheduler="constant",
                augment="none",
                eval_every=0,
            ),
        )
    )
    audit: AuditConfig = field(default_factory=AuditConfig)
    seed: int = 0

    def __post_init__(self) -> None:
        check = _Checks(self)
        check.at_least("pool", 4)
        check.at_least("public", 1)


def _tiny_clip() -> dict[str, Any]:
    """The tiny open_clip of DATA.md: 64-d embeddings, a 2-layer ViT (32 px, patch 8, width 64)
    and a 2-layer text transformer (width 64, 16 tokens)."""
    return {
        "embed_dim": 64,
        "vision_cfg": {
            "image_size": 32,
            "layers": 2,
            "width": 64,
            "patch_size": 8,
            "head_width": 32,
        },
        "text_cfg": {
            "context_length": 16,
            "vocab_size": 49408,
            "width": 64,
            "heads": 2,
            "layers": 2,
        },
    }


def _clip_trainer() -> TrainerConfig:
    """CLIP training on small pairs: AdamW at 1e-3 with weight decay 0.1 and a short warm-up
    (open_clip's recipe at CPU scale), 2 epochs."""
    return TrainerConfig(
        epochs=2, batch_size=128, lr=1e-3, optimizer="adamw", weight_decay=0.1,
        warmup_steps=50, augment="none", eval_every=0,
    )  # fmt: skip


@dataclass(frozen=True)
class CrossModalTeacherConfig:
    """``freekd crossmodal teacher``: train a small open_clip CLIP on templated pairs.

    Attributes:
        pairs: labelled images whose classes become captions (``fashion-mnist``, ``mnist``,
            ``animal-mnist``, ``digits``, a ``.npz`` …); its ``train`` split by default.
        eval_pairs: held-out labelled images; default: the ``test`` split of ``pairs``.
        eval_size: pairs of the held-out set used for retrieval recall (a seeded choice);
            zero-shot accuracy uses the whole held-out set.
        captions: template family: ``auto`` (digits for MNIST and digits, silhouettes for
            Animal-MNIST, photos otherwise), ``photo``, ``digit`` or ``silhouette``.
        data_root: torchvision-format root for datasets that need one.
        model: open_clip model config (``embed_dim``, ``vision_cfg``, ``text_cfg``).
        mean: per-channel normalization of the three-channel input; default: the training
            images' own statistics.
        std: per-channel standard deviation.
        seed: seed of weights, order and caption draws.
        trainer: the training loop's settings.
    """

    pairs: str = "fashion-mnist"
    eval_pairs: str | None = None
    eval_size: int = 1000
    captions: str = "auto"
    data_root: str | None = None
    model: dict[str, Any] = field(default_factory=_tiny_clip)
    mean: list[float] | None = None
    std: list[float] | None = None
    seed: int = 0
    trainer: TrainerConfig = field(default_factory=_clip_trainer)

    def __post_init__(self) -> None:
        _Checks(self).at_least("eval_size", 1)


@dataclass(frozen=True)
class CrossModalDistillConfig:
    """``freekd crossmodal distill``: a small CLIP student distilled from a CLIP teacher.

    Attributes:
        teacher: a ``freekd-clip/1`` checkpoint (``freekd crossmodal teacher``), or one tower:
            an image classifier's ``model.pt`` (its penultimate features teach a text student),
            ``clip-image:PATH`` / ``clip-text:PATH`` (one tower of a CLIP checkpoint) or
            ``minilm`` (the pretrained all-MiniLM-L6-v2 sentence encoder teaches an image
            student).
        student: a CLIP teacher's student: its open_clip model config; ``None``: about a
            quarter of the teacher (text width ÷ 4, image width ÷ 2, embedding ÷ 2, same depth
            and context). An image teacher's text student: its open_clip ``text_cfg``;
            ``None``: width 32, 2 layers, 4 heads, context 16.
        student_arch: a text teacher's image student: a model registry architecture whose
            last layer outputs the teacher's embedding dimension.
        student_kwargs: keyword arguments of ``student_arch``.
        method: the distillation strategy (``crossmodal.CROSSMODAL_METHODS``: ``contrastive``,
            ``feature``, ``icl``) and its parameters.
        baseline: also train the same student with CLIP's loss alone at the same budget.
        pairs: labelled images whose classes become captions (``train`` split by default).
        eval_pairs: held-out labelled images; default: the ``test`` split of ``pairs``.
        eval_size: held-out pairs used for retrieval recall.
        captions: template family (see ``CrossModalTeacherConfig``).
        data_root: torchvision-format root for datasets that need one.
        seed: seed of weights, order and caption draws (the baseline uses the same).
        trainer: the training loop's settings (the baseline's too).
    """

    teacher: str = ""
    student: dict[str, Any] | None = None
    student_arch: str = "lenet5"
    student_kwargs: dict[str, Any] = field(default_factory=dict)
    method: ComponentConfig = field(default_factory=lambda: ComponentConfig(name="contrastive"))
    baseline: bool = True
    pairs: str = "fashion-mnist"
    eval_pairs: str | None = None
    eval_size: int = 1000
    captions: str = "auto"
    data_root: str | None = None
    seed: int = 0
    trainer: TrainerConfig = field(default_factory=_clip_trainer)

    def __post_init__(self) -> None:
        _Checks(self).at_least("eval_size", 1)


# ---------------------------------------------------------------------------------------------
# Loading: dict/YAML → dataclass, with type coercion and helpful errors.


def _type_name(annotation: Any) -> str:
    return getattr(annotation, "__name__", None) or str(annotation).replace("typing.", "")


def _coerce(annotation: Any, value: Any, where: str) -> Any:
    """Check ``value`` against ``annotation``, coercing YAML strings such as ``"1e-5"``."""
    origin = typing.get_origin(annotation)
    args = typing.get_args(annotation)
    if annotation is Any:
        return value
    if origin in (Union, types.UnionType):
        if value is None and type(None) in args:
            return None
        errors = []
        for option in (a for a in args if a is not type(None)):
            try:
                return _coerce(option, value, where)
            except FreekdError as error:
                errors.append(str(error))
        raise FreekdError(errors[0] if errors else f"{where}: cannot be {value!r}")
    if dataclasses.is_dataclass(annotation):
        if dataclasses.is_dataclass(value) and isinstance(value, annotation):  # type: ignore[arg-type]
            return value
        if not isinstance(value, dict):
            raise FreekdError(f"{where}: expected a mapping of fields, got {value!r}")
        return from_dict(annotation, value, where=where)  # type: ignore[arg-type]
    if origin is list:
        if isinstance(value, str):  # "1,28,28" from a --set or a CLI flag
            value = [v for v in value.replace(" ", "").split(",") if v]
        if not isinstance(value, list | tuple):
            raise FreekdError(f"{where}: expected a list, got {value!r}")
        (item,) = args or (Any,)
        return [_coerce(item, v, f"{where}[{i}]") for i, v in enumerate(value)]
    if origin is dict:
        if not isinstance(value, dict):
            raise FreekdError(f"{where}: expected a mapping, got {value!r}")
        return dict(value)
    if annotation is bool:
        if isinstance(value, bool):
            return value
        if isinstance(value, str) and value.lower() in ("true", "false", "yes", "no", "1", "0"):
            return value.lower() in ("true", "yes", "1")
        raise FreekdError(f"{where}: expected true or false, got {value!r}")
    if annotation is int:
        if isinstance(value, bool):
            raise FreekdError(f"{where}: expected an integer, got {value!r}")
        if isinstance(value, int):
            return value
        if isinstance(value, str):
            try:
                return int(value)
            except ValueError:
                pass
        if isinstance(value, float) and value.is_integer():
            return int(value)
        raise FreekdError(f"{where}: expected an integer, got {value!r}")
    if annotation is float:
        if isinstance(value, bool):
            raise FreekdError(f"{where}: expected a number, got {value!r}")
        if isinstance(value, int | float):
            return float(value)
        if isinstance(value, str):
            try:
                return float(value)  # PyYAML reads 1e-5 (no dot) as a string
            except ValueError:
                pass
        raise FreekdError(f"{where}: expected a number, got {value!r}")
    if annotation is str:
        if isinstance(value, str):
            return value
        if isinstance(value, int | float) and not isinstance(value, bool):
            return str(value)
        raise FreekdError(f"{where}: expected a string, got {value!r}")
    raise FreekdError(f"{where}: unsupported type {_type_name(annotation)}")


def from_dict(cls: type[C], data: dict[str, Any], *, where: str | None = None) -> C:
    """Build dataclass ``cls`` from a mapping; unknown keys raise with a "did you mean" hint."""
    where = where or cls.__name__
    hints = typing.get_type_hints(cls)
    names = [f.name for f in dataclasses.fields(cls)]  # type: ignore[arg-type]
    kwargs: dict[str, Any] = {}
    for key, value in data.items():
        if key not in names:
            close = difflib.get_close_matches(str(key), names, n=1)
            hint = (
                f"; did you mean {close[0]!r}?" if close else f"; known fields: {', '.join(names)}"
            )
            raise FreekdError(f"{where} has no field {key!r}{hint}")
        annotation = hints[key]
        optional = [a for a in typing.get_args(annotation) if a is not type(None)]
        target = optional[0] if len(optional) == 1 else annotation  # X | None → X
        if dataclasses.is_dataclass(target) and isinstance(value, dict):
            value = _with_field_defaults(cls, key, value)
        kwargs[key] = _coerce(annotation, value, f"{where}.{key}")
    try:
        return cls(**kwargs)
    except ConfigValueError as error:  # restate it with the dotted key the user wrote
        key = ".".join([*where.split(".")[1:], error.name])
        raise FreekdError(error.message(key)) from None
    except TypeError as error:  # a required field (e.g. a component's name) is missing
        missing = str(error).split(":")[-1].strip()
        raise FreekdError(
            f"{where} needs {missing}; e.g. --set {where.split('.', 1)[-1]}.name=..."
        ) from None


def _with_field_defaults(cls: type, key: str, value: dict[str, Any]) -> dict[str, Any]:
    """Fill a partial group (``method.params.temperature=2``) with the field's default values.

    A component renamed to another plug-in does not inherit the default's ``params``.
    """
    (spec,) = [f for f in dataclasses.fields(cls) if f.name == key]  # type: ignore[arg-type]
    if spec.default is not dataclasses.MISSING:
        default = spec.default
    elif spec.default_factory is not dataclasses.MISSING:
        default = spec.default_factory()
    else:
        return value
    if default is None:
        partial = spec.metadata.get("partial_name")
        if partial is not None and "name" not in value:
            return {"name": partial, **value}
        return value
    defaults = to_dict(default)
    if "name" in value and "name" in defaults and value["name"] != defaults["name"]:
        defaults.pop("params", None)
    return _merge(defaults, value)


def to_dict(config: Any) -> dict[str, Any]:
    """A plain-python (YAML- and ``weights_only``-safe) dict of a config dataclass."""
    return dataclasses.asdict(config)


def _parse_scalar(text: str) -> Any:
    """Parse the value of a ``--set key=value`` as YAML (so ``[1,2]`` and ``null`` work)."""
    try:
        return yaml.safe_load(text)
    except yaml.YAMLError:
        return text


def _set_dotted(data: dict[str, Any], dotted: str, value: Any) -> None:
    keys = dotted.split(".")
    node = data
    for key in keys[:-1]:
        child = node.get(key)
        if child is None:
            child = {}
            node[key] = child
        if not isinstance(child, dict):
            raise FreekdError(f"--set {dotted}: {key!r} is not a group of fields")
        node = child
    node[keys[-1]] = value


def _merge(base: dict[str, Any], update: dict[str, Any]) -> dict[str, Any]:
    merged = dict(base)
    for key, value in update.items():
        if isinstance(value, dict) and isinstance(merged.get(key), dict):
            merged[key] = _merge(merged[key], value)
        else:
            merged[key] = value
    return merged


def read_yaml(path: Path) -> dict[str, Any]:
    """Read a YAML mapping with ``safe_load`` (data only: no tags, no code)."""
    try:
        text = Path(path).read_text()
    except OSError as error:
        raise FreekdError(f"cannot read config {path}: {error.strerror}; check --config") from None
    except UnicodeDecodeError as error:
        raise FreekdError(
            f"config {path} is not UTF-8 text (byte {error.start}); save it as UTF-8 YAML"
        ) from None
    try:
        data = yaml.safe_load(text)
    except yaml.YAMLError as error:
        first = str(error).splitlines()[0]
        raise FreekdError(f"config {path} is not valid YAML ({first}); fix the file") from None
    if data is None:
        return {}
    if not isinstance(data, dict):
        raise FreekdError(f"config {path} must be a mapping of fields, got {type(data).__name__}")
    return data


def load_config(
    cls: type[C],
    path: Path | None = None,
    *,
    overrides: list[str] | None = None,
    values: dict[str, Any] | None = None,
    base: dict[str, Any] | None = None,
    trust_code: bool = False,
) -> C:
    """Resolve a run configuration.

    Args:
        cls: the config dataclass of the command.
        path: optional YAML file of overrides.
        overrides: ``key=value`` strings with dotted keys, e.g. ``trainer.lr=5e-3``.
        values: dotted keys → values from real CLI flags; ``None`` values are skipped. Applied last.
        base: a resolved config to start from instead of the defaults (``--resume`` passes the
            run's saved ``config.yaml``).
        trust_code: the user passed ``--trust-code``: ``path`` and ``base`` may name
            architectures by import path (``package.module:Class``).

    Returns:
        The frozen, type-checked dataclass.

    Raises:
        FreekdError: unknown key (with a suggestion), a value of the wrong type, malformed
            override, or a file that names code to import (without ``trust_code``) or switches a
            trust flag on.
    """
    data: dict[str, Any] = dict(base or {})
    if path is not None:
        data = _merge(data, read_yaml(path))
    command_line: dict[str, Any] = {}
    for item in overrides or []:
        if "=" not in item:
            raise FreekdError(f"--set {item!r}: expected key=value, e.g. trainer.lr=0.01")
        key, text = item.split("=", 1)
        nested: dict[str, Any] = {}
        _set_dotted(nested, key.strip(), _parse_scalar(text))
        command_line = _merge(command_line, nested)
    for key, value in (values or {}).items():
        if value is not None:
            nested = {}
            _set_dotted(nested, key, value)
            command_line = _merge(command_line, nested)
    what = f"config {path}" if path is not None else "the saved config.yaml"
    _check_file_trust(data, command_line, what=what, trust_code=trust_code)
    return from_dict(cls, _merge(data, command_line))


def _check_file_trust(
    file_data: dict[str, Any], command_line: dict[str, Any], *, what: str, trust_code: bool
) -> None:
    """Refuse a file that would make freekd run code the user did not name.

    A value the command line overrides does not count: only what reaches the run from the
    file. Architecture import paths need ``--trust-code``; trust flags need their own flag.
    """

    def walk(node: dict[str, Any], override: Any, prefix: str) -> None:
        for key, value in node.items():
            given = override.get(key) if isinstance(override, dict) else None
            dotted = f"{prefix}{key}"
            if isinstance(value, dict):
                walk(value, given, f"{dotted}.")
            elif given is not None:
                continue  # the command line decides this value
            elif key in ARCHITECTURE_FIELDS and is_import_path(value) and not trust_code:
                raise FreekdError(
                    f"{what} names code to import in {dotted} ({value!r}) and freekd never runs "
                    f"code a file names; pass --trust-code if you trust the file, or give "
                    f"the architecture on the command line (--set {dotted}=...)"
                )
            elif key in TRUST_FIELDS and value not in (False, None, "false", "False"):
                flag = "--" + key.replace("_", "-")
                raise FreekdError(
                    f"{what} sets {dotted} and a file may not grant itself trust; "
                    f"remove it and pass {flag} on the command line"
                )

    walk(file_data, command_line, "")


def dump_yaml(config: Any) -> str:
    """The resolved config as YAML text (what ``config.yaml`` holds)."""
    return yaml.safe_dump(to_dict(config), sort_keys=False)


# Which schema each folder of configs/ holds (the config test validates every file by it).
CONFIG_KINDS: dict[str, type] = {
    "teacher": TeacherTrainConfig,
    "distill": DistillConfig,
    "datafree": DataFreeConfig,
    "pate": PateRunConfig,
    "audit": AuditPipelineConfig,
    "crossmodal": CrossModalTeacherConfig,
}
