"""Configs of the three PATE stages (``freekd pate teachers|label|student``) and ``pate run``."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from freekd.config import Checks, TeacherSourceConfig, TrainerConfig


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
        Checks(self).at_least("teachers", 1)


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
        check = Checks(self)
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
        queries_from: the query pool when the labels were made on a file or folder (e.g. a
            ``freekd datafree`` ``queries.npz``): freekd opens no path read from the label
            report, and the pool given must match the fingerprint the report records.
            A registered pool (``mnist:test``) is opened by its name.
        eval_dataset: held-out data to report on; default: the labelling run's
            ``eval_dataset`` when it is a registered name (a path must be given here), else
            the pool's held-out part.
        semi_supervised: ``vat`` (the default): virtual adversarial training on the answered
            queries plus every other non-held-out image of the pool, unlabelled, as the PATE
            papers train their students; ``teacher`` (data-free PATE): cross-entropy on the
            answered queries plus the soft targets of ``distill_teacher`` on every pool image
            (``methods.semi.LabelsAndTeacher``); ``none``: cross-entropy on the answered
            queries only.
        semi_supervised_kwargs: hyperparameters of ``methods.semi.VirtualAdversarial`` or
            ``LabelsAndTeacher``.
        distill_teacher: with ``teacher``, the model the synthetic query pool was made from
            (``distill_teacher.path`` and, for a plain state_dict, its ``arch`` and friends).
            Its weights must be those the labelling run composed (checked by their SHA-256),
            so its soft targets cost nothing beyond the labels' (ε, δ).
        init_student: a freekd checkpoint whose weights start the student (its architecture
            is ``student``): allowed only when it is post-processing of the DP model the labels
            compose, its privacy record naming that model's weights (e.g.
            the data-free student of the DP teacher whose synthetic pool was labelled), so it
            costs nothing beyond their (ε, δ).
        labelled_batch_size: answered queries per step with ``vat`` (``trainer.batch_size`` is
            then the number of unlabelled images per step).
        seed: seed for weights and batch order.
        trainer: the loop's settings.
    """

    labels: str = ""
    student: str = "lenet5"
    student_kwargs: dict[str, Any] = field(default_factory=dict)
    data_root: str | None = None
    queries_from: str | None = None
    eval_dataset: str | None = None
    semi_supervised: str = "vat"
    semi_supervised_kwargs: dict[str, Any] = field(default_factory=dict)
    distill_teacher: TeacherSourceConfig = field(default_factory=TeacherSourceConfig)
    init_student: str | None = None
    labelled_batch_size: int = 32
    seed: int = 0
    trainer: TrainerConfig = field(
        default_factory=lambda: TrainerConfig(epochs=30, batch_size=128, lr=0.05)
    )

    def __post_init__(self) -> None:
        Checks(self).at_least("labelled_batch_size", 1)


@dataclass(frozen=True)
class PateRunConfig:
    """``freekd pate run``: the three PATE stages in one file (``configs/pate/``).

    The ``label`` stage's ``teachers`` and the ``student`` stage's ``labels`` are filled in by
    the command (they are the folders of the earlier stages).
    """

    teachers: PateTeachersConfig = field(default_factory=PateTeachersConfig)
    label: PateLabelConfig = field(default_factory=PateLabelConfig)
    student: PateStudentConfig = field(default_factory=PateStudentConfig)
