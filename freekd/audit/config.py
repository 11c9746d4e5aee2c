"""Configs of ``freekd audit`` (one model) and ``freekd audit pipeline`` (the threat model)."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from freekd.config import Checks, TeacherSourceConfig, TrainerConfig
from freekd.datafree.config import DataFreeConfig
from freekd.distill.config import DistillConfig
from freekd.errors import FreekdError
from freekd.pate.config import PateLabelConfig, PateRunConfig, PateStudentConfig, PateTeachersConfig
from freekd.privacy.config import DPConfig
from freekd.supervised.config import TeacherTrainConfig

#: Most shadow models an audit trains (LiRA's largest experiments use 256; Carlini et al. 2022).
MAX_SHADOW_MODELS = 1024


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
            Checks(self).fail("models", "must be 0 (threshold attacks only) or at least 2")
        if self.models > MAX_SHADOW_MODELS:  # 10**9 were all built before any check
            Checks(self).fail("models", f"must be at most {MAX_SHADOW_MODELS:,}")


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
        check = Checks(self)
        check.distinct_names("attacks")
        check.at_least("max_examples", 2, optional=True)
        check.within("confidence", 0, 1, closed="()")
        check.within("delta", 0, 1, optional=True)
        check.at_least("accountant_epsilon", 0, optional=True)
        lira = [name for name in self.attacks if name.startswith("lira")]
        if not self.attacks:  # the default attacks include LiRA's, and so does the auto bound
            lira.append("lira (a default attack)")
        if self.bound_attack == "auto" or self.bound_attack.startswith("lira"):
            lira.append(f"bound_attack {self.bound_attack}")
        if self.shadow.reuse is None and 0 < self.shadow.models < 4 and lira:
            # Found after the shadow models had trained: the fixed variance had no spread.
            raise FreekdError(
                f"{lira[0]} needs at least 4 shadow models (2 with and 2 without each example), "
                f"this audit trains {self.shadow.models}; pass --shadow-models 4 or more, or "
                "--attack rmia,rmia-offline,loss --set bound_attack=rmia-offline"
            )


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
        check = Checks(self)
        check.distinct_names("paths")
        check.at_least("pool", 4)
        check.at_least("public", 1)
