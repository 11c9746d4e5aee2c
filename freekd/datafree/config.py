"""Config of ``freekd datafree``: the synthesizer, the collapse monitor and the KD student."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from freekd.config import Checks, ComponentConfig, TeacherSourceConfig, TrainerConfig


@dataclass(frozen=True)
class CollapseConfig:
    """Collapse detection and recovery for ``freekd datafree`` (``datafree.collapse``).

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
        keep_per_check: images of every probe kept, with the teacher's logits on them, for
            ``collapse/earlier_discrepancy`` in ``metrics.jsonl``: at each check, the student's
            KL to the teacher on the images kept from the earlier checks. It rises when the
            student forgets what earlier generators showed it while matching the current one
            (a measurement only; no extra teacher queries). 0: not measured.
        keep_size: at most this many kept images (the oldest are dropped), and never more than
            32 MB of pixels (1,024 MNIST images, 55 at 224 × 224 × 3).
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
    keep_per_check: int = 16
    keep_size: int = 1024


#: ``DataFreeConfig.method.name`` for the synthesizer's recommended student-side method.
AUTO_METHOD = "auto"


@dataclass(frozen=True)
class DataFreeConfig:
    """``freekd datafree``: distill a student from a teacher with synthetic inputs only.

    Attributes:
        teacher: where the teacher comes from (any of the four kinds of file).
        student: student architecture; default: a smaller model of the teacher's family, else
            ``shallow-cnn`` for a grey teacher of one convolution and one linear layer, else a
            general student smaller than the teacher (``models.students``).
        student_kwargs: keyword arguments for the student architecture (for a default
            ``shallow-cnn``: ``pool: avg`` for an average-pooling teacher, under these).
        synthesizer: the data-free method (``--method``) by registry name, with its parameters;
            ``auto`` (the default) picks ``nayer`` for a teacher with BatchNorm (not
            TorchScript) and ``zskt`` otherwise (``auto.default_synthesizer``), zskt with
            ``replay_fraction`` 0.5 for a teacher without BatchNorm and without convolutions
            (``auto.auto_synthesizer_params``), and the saved config names both.
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
        fit_schedule_to_budget: with a time or CPU budget, shorten the learning-rate schedule
            (and a generator that anneals with it) to the steps the budget pays for, priced
            over a tenth of it spent after the first step (``train.callbacks.StopOnBudget``).
            Off by default: on the Fashion-MNIST ResNet-8 teacher (cmi, 15 CPU min) the
            annealed run reached 51.17 % where the schedule cut off by the budget reached
            55.18 % (``experiments/2026-12-datafree-budget-curve``).
        proxy_dataset: train on these real images instead of synthesizing (``--proxy-data``):
            labels are hidden and the student-side method is the same; ``mnist:train`` for an
            MNIST teacher is the real-data upper bound, ``animal-mnist`` an unrelated proxy.
        collapse: collapse detection and recovery of the synthesizer.
        save_queries: at the end, write this many images of the final synthesizer to
            ``queries.npz`` (labels: the teacher's classes), the query pool of data-free PATE
            (``freekd pate label --queries-from OUT/queries.npz``); 0: none.
        queries_confidence: keep only saved queries the teacher labels with at least this
            probability, at most ``save_queries / classes`` per class, drawing up to 50 times
            ``save_queries`` images (post-processing of the teacher: it costs nothing more);
            0: every image, as drawn.
        confident_probe: a measurement, off at 0: this many images per class the teacher is
            sure of (class-conditional inversion, ``probe.confident_images``) are drawn once,
            and after every epoch the evaluated student's KL to the teacher and its agreement
            with it there go into ``metrics.jsonl`` (``probe/kl``, ``probe/agreement``, and
            the teacher's mean top probability on them, ``probe/teacher_confidence``). It
            queries the teacher only and draws from its own generator: without a budget the
            run trains as without it (the drawing is done before a budget's clocks start, the
            measurement after each epoch counts in it). At most 256 MB of images; ignored
            (with a warning) for ``proxy_dataset`` runs.
        seed: seed for weights, latent codes and noise.
        memory_gb: memory the run may use, in GB; default: what is free (available RAM, the
            cgroup's limit, ``ulimit -v``). Before the first step the synthesis batch, the
            student batch and the synthesizer's memory bank are halved until a measured estimate
            fits (``datafree.memory``), each change a warning; a run that does not fit even
            at two images is refused.
        trainer: the training loop's settings (``batch_size`` = synthetic images per step, and
            per synthesis round unless ``synthesizer.params.batch_size`` says otherwise).
            ``ema_decay`` defaults to 0.999: the student evaluated and saved is the moving
            average of its weights, because a data-free student forgets what earlier
            generators showed it and its accuracy on real images dips between epochs (chosen
            on the zoo's tuning teachers, ``experiments/2026-12-datafree-zoo``); ``null``
            saves the raw weights.
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
    fit_schedule_to_budget: bool = False
    proxy_dataset: str | None = None
    collapse: CollapseConfig = field(default_factory=CollapseConfig)
    save_queries: int = 0
    queries_confidence: float = 0.0
    confident_probe: int = 0
    seed: int = 0
    memory_gb: float | None = None
    trainer: TrainerConfig = field(
        default_factory=lambda: TrainerConfig(
            epochs=20, batch_size=256, lr=0.01, augment="none", eval_every=1, ema_decay=0.999
        )
    )

    def __post_init__(self) -> None:
        check = Checks(self)
        check.at_least("steps_per_epoch", 1)
        check.at_least("synthesize_every", 1, optional=True)
        check.positive("budget_minutes", optional=True)
        check.positive("budget_cpu_minutes", optional=True)
        check.at_least("budget_images", 1, optional=True)
        check.at_least("save_queries", 0)
        check.within("queries_confidence", 0, 1, closed="[)")
        check.at_least("confident_probe", 0)
        check.positive("memory_gb", optional=True)
