"""Composition root of ``freekd audit pipeline``: every private path trained and audited.

The one module allowed to run other features' pipelines (STYLE.md §4.1): it trains the KD,
data-free, PATE and DP-SGD students on a member/non-member split and audits each.
"""

from __future__ import annotations

import dataclasses
import json
import time
from dataclasses import dataclass
from functools import partial
from pathlib import Path
from typing import Any

import numpy as np
import torch

from freekd import __version__
from freekd.audit.config import AuditConfig, AuditPipelineConfig
from freekd.audit.pipeline import check_shadow_settings, plan_attacks, run_audit
from freekd.config import TeacherSourceConfig, dump_yaml
from freekd.data import ImageDataset, load_dataset, pool_fingerprint
from freekd.datafree.auto import AUTO_CANDIDATES, AUTO_SYNTHESIZER
from freekd.datafree.config import DataFreeConfig
from freekd.datafree.pipeline import check_settings as check_datafree_settings
from freekd.datafree.pipeline import run_datafree
from freekd.datafree.synthesizers import SYNTHESIZERS
from freekd.distill.pipeline import run_distill
from freekd.errors import FreekdError
from freekd.io import atomic_write, atomic_write_json, atomic_write_text
from freekd.methods import CLASSIFIER_METHODS
from freekd.models import check_arch_name
from freekd.pate.config import PateRunConfig
from freekd.pate.pipeline import PateLayout, run_pate
from freekd.pate.pipeline import check_settings as check_pate_settings
from freekd.plots import plot_roc
from freekd.privacy.dpsgd import check_dp_settings
from freekd.runlock import locks_run_folder
from freekd.runs import RunOptions, as_float, check_params, in_section, prepare_run_dir, seeded
from freekd.supervised.config import TeacherTrainConfig
from freekd.supervised.pipeline import run_teacher_train

AUDIT_PATHS = ("kd", "datafree", "pate", "dpsgd-datafree")


def save_npz(path: Path, data: ImageDataset) -> None:
    """``data`` as a ``.npz`` dataset file (uint8 pixels, labels, class names), atomically."""

    images = data.images
    pixels = (
        images
        if images.dtype == torch.uint8
        else (images.clamp(0, 1) * 255).round().to(torch.uint8)
    )

    def write(stream: Any) -> None:
        np.savez(
            stream,
            x=pixels.numpy(),
            y=data.labels.numpy(),
            classes=np.array(list(data.classes)),
        )

    atomic_write(path, write)


def data_fingerprint(data: ImageDataset) -> str:

    return pool_fingerprint(as_float(data.images), data.labels)


def stage_done(folder: Path, options: RunOptions) -> bool:
    return options.resume and (folder / "report.json").exists()


def read_report(folder: Path) -> dict[str, Any]:

    return json.loads((folder / "report.json").read_text())  # type: ignore[no-any-return]


@locks_run_folder
def run_audit_pipeline(config: Any, options: RunOptions) -> dict[str, Any]:
    """``freekd audit pipeline``: the distillation threat model of Jagielski et al. (2023).

    "Students Parrot Their Teachers: Membership Inference on Model Distillation" (NeurIPS 2023)
    shows that a student trained only on public data still leaks its teacher's private set.
    The members are the teacher's private training examples, drawn from a pool by fair coin
    flips (the canaries of the one-run ε lower bound); each path distills a student without
    the members; the teacher and every student are audited against the same members and
    non-members with the same shadow models. Stages write into ``OUT/<stage>/``; ``--resume``
    skips the finished ones.
    """

    assert isinstance(config, AuditPipelineConfig)
    unknown = [path for path in config.paths if path not in AUDIT_PATHS]
    if unknown:
        raise FreekdError(f"unknown path {unknown[0]!r}; known: {', '.join(AUDIT_PATHS)}")
    if config.pool < 4:
        raise FreekdError(f"--pool must hold at least 4 images, got {config.pool}")
    _check_stages(config)
    out = options.out_dir
    if not options.resume:
        prepare_run_dir(options)
    wall_start, cpu_start = time.perf_counter(), time.process_time()
    out.mkdir(parents=True, exist_ok=True)
    atomic_write_text(out / "config.yaml", dump_yaml(config))
    run, coins = _draw_membership(config, options)
    models = _train_models(run)
    audits = _audit_models(run, models)
    table = [_audit_row(name, models[name][1], audits[name]) for name in models]
    curves = {}

    for name, report in audits.items():
        attack = report["epsilon_lower_bound"]["attack"]
        curves[f"{name} ({attack})"] = _roc_of(out / "audit" / name, report, attack)
    plot_roc(curves, out / "roc.png", title="membership inference through distillation")
    report = {
        "command": "audit pipeline",
        "dataset": config.dataset,
        "pool": config.pool,
        "members": int(coins.sum()),
        "non_members": int((~coins).sum()),
        "public": config.public,
        "paths": list(config.paths),
        "table": table,
        "audits": {
            name: {k: v for k, v in audit.items() if k != "summary"}
            for name, audit in audits.items()
        },
        "wall_seconds": round(time.perf_counter() - wall_start, 3),
        "cpu_seconds": round(time.process_time() - cpu_start, 3),
        "seed": config.seed,
        "freekd_version": __version__,
    }
    atomic_write_json(out / "report.json", report)
    return report


def _check_stages(config: AuditPipelineConfig) -> None:
    """Every stage's settings that need no data and no trained model, before the first stage
    trains: a typo in the audit's attacks must not cost the teacher's and the students'
    training. Each message names the section of the pipeline's config it is about."""
    paths = set(config.paths)
    _check_architectures(config)
    if "kd" in paths:
        name, params = config.distill.method.name, config.distill.method.params
        method = CLASSIFIER_METHODS.get
        in_section("distill", lambda: check_params(method(name), params, what=f"method {name}"))
    if "dpsgd-datafree" in paths and config.dp_teacher.dp.enabled:
        in_section("dp_teacher", lambda: check_dp_settings(config.dp_teacher))
        if not config.datafree.proxy_dataset:  # first: its message names what that path runs
            _check_dp_synthesizer(config.datafree, both_paths="datafree" in paths)
    if {"datafree", "dpsgd-datafree"} & paths:
        in_section("datafree", lambda: check_datafree_settings(config.datafree))
    if "pate" in paths:
        in_section("pate", lambda: check_pate_settings(config.pate))
    shadow = config.audit.shadow
    with_shadows = shadow.models > 0 or shadow.reuse is not None
    if shadow.models > 0 and shadow.reuse is None:
        in_section("audit", lambda: check_shadow_settings(shadow))
    in_section("audit", lambda: plan_attacks(config.audit, with_shadows=with_shadows))


def _check_dp_synthesizer(config: DataFreeConfig, *, both_paths: bool) -> None:
    """What only the ``dpsgd-datafree`` path asks of the synthesizer (its DP-SGD teacher never
    has BatchNorm): none that inverts it, and under ``auto`` only what ``zskt`` (auto's choice
    for such a teacher) takes; the rest is the shared ``datafree`` check's. ``both_paths``: the
    ``datafree`` path shares these settings."""
    name = config.synthesizer.name
    if name == AUTO_SYNTHESIZER:
        chosen = AUTO_CANDIDATES[1]  # without BatchNorm
        synthesizer = dataclasses.replace(config.synthesizer, name=chosen)
        checked = dataclasses.replace(config, synthesizer=synthesizer)
        shared = " (it shares datafree.synthesizer with the datafree path)" if both_paths else ""
        section = f"datafree: the dpsgd-datafree path runs {chosen} under auto{shared}"
        in_section(section, lambda: check_datafree_settings(checked), keys="datafree.")
    elif name in SYNTHESIZERS.names() and SYNTHESIZERS.get(name).needs_batchnorm:
        usable = [n for n in SYNTHESIZERS.names() if not SYNTHESIZERS.get(n).needs_batchnorm]
        raise FreekdError(
            f"datafree.synthesizer.name {name} inverts BatchNorm statistics and the DP-SGD "
            f"teacher of the dpsgd-datafree path has none; use auto or one of: {', '.join(usable)}"
        )


def _check_architectures(config: AuditPipelineConfig) -> None:
    """Every architecture the pipeline names, by name (the PATE path's: ``check_pate_settings``)."""
    paths = set(config.paths)
    named = {"teacher.arch": config.teacher.arch}
    if "kd" in paths:
        named["distill.student"] = config.distill.student
    if {"datafree", "dpsgd-datafree"} & paths and config.datafree.student:
        named["datafree.student"] = config.datafree.student  # unset: chosen for the teacher
    if "dpsgd-datafree" in paths:
        named["dp_teacher.arch"] = config.dp_teacher.arch
    shadow = config.audit.shadow
    trains_shadows = shadow.models > 0 and shadow.reuse is None
    if trains_shadows and shadow.recipe == "config" and shadow.arch:
        named["audit.shadow.arch"] = shadow.arch
    for setting, arch in named.items():
        in_section(setting.split(".")[0], partial(check_arch_name, arch, setting=setting))


@dataclass(frozen=True)
class ThreatModelRun:
    """What every stage of one ``freekd audit pipeline`` run shares.

    Attributes:
        config: the pipeline's config.
        options: the pipeline's run options (its folder, ``--resume``).
        files: the ``members``, ``non_members`` and ``public`` data files in ``OUT/data``.
    """

    config: AuditPipelineConfig
    options: RunOptions
    files: dict[str, Path]

    @property
    def out(self) -> Path:
        return self.options.out_dir

    @property
    def test_spec(self) -> str:
        """Where every model's test accuracy is measured."""
        return f"{self.config.dataset}:test"

    def stage(self, name: str) -> RunOptions:
        """The options of stage ``name``: its folder ``OUT/<name>``, replaced when run again."""
        return RunOptions(
            self.out / name,
            overwrite=True,
            quiet=self.options.quiet,
            trust_code=self.options.trust_code,
        )

    def done(self, name: str) -> bool:
        """Whether ``--resume`` keeps stage ``name`` (it finished on an earlier run)."""
        return stage_done(self.out / name, self.options)


def _draw_membership(
    config: AuditPipelineConfig, options: RunOptions
) -> tuple[ThreatModelRun, torch.Tensor]:
    """Draw the pool, flip each image's membership coin, and save (or check) the data files.

    Returns the run's shared state and the coins (True: a member).
    """

    root = Path(config.data_root) if config.data_root else None
    train = load_dataset(f"{config.dataset}:train", root=root)
    if config.pool + config.public > len(train):
        raise FreekdError(
            f"{config.dataset}:train has {len(train)} images, fewer than --pool {config.pool} + "
            f"public {config.public}; lower them"
        )
    order = torch.randperm(len(train), generator=seeded(config.seed, 11))
    pool_index = order[: config.pool]
    coins = torch.rand(config.pool, generator=seeded(config.seed, 12)) < 0.5
    if bool(coins.all()) or not bool(coins.any()):
        raise FreekdError("the membership coin flips gave one side no example; use a larger --pool")
    data_dir = options.out_dir / "data"
    data_dir.mkdir(exist_ok=True)
    files = {
        "members": data_dir / "members.npz",
        "non_members": data_dir / "non_members.npz",
        "public": data_dir / "public.npz",
    }
    subsets = {
        "members": train.subset(pool_index[coins]),
        "non_members": train.subset(pool_index[~coins]),
        "public": train.subset(order[config.pool : config.pool + config.public]),
    }
    for key, subset in subsets.items():
        if options.resume and files[key].exists():
            # Finished stages are kept: they must have been trained on exactly these sets.
            saved = load_dataset(str(files[key]))
            if data_fingerprint(saved) != data_fingerprint(subset):
                raise FreekdError(
                    f"{files[key]} differs from what this config draws (another --seed, --pool "
                    "or dataset?); resume with the run's own settings or start a new --out"
                )
        else:
            save_npz(files[key], subset)
    return ThreatModelRun(config, options, files), coins


#: Every trained model of the pipeline: name → (path of its model.pt, its test accuracy).
Models = dict[str, tuple[str, float | None]]

#: The pipeline's PATE stages: OUT/pate-teachers, OUT/pate-labels, OUT/student-pate; the audit
#: pipeline owns its folder, so ``--resume`` keeps every finished stage (``PateLayout``).
AUDIT_PATE_LAYOUT = PateLayout(
    teachers="pate-teachers", labels="pate-labels", student="student-pate", summary=None, owned=True
)


def _train_models(run: ThreatModelRun) -> Models:
    """The teacher and every path's student (and the DP teacher), in the table's order."""

    config = run.config
    models: Models = {}
    teacher_path = _teacher_stage(run, "teacher", config.teacher, models)
    source = TeacherSourceConfig(path=str(teacher_path))
    if "kd" in config.paths:
        if not run.done("student-kd"):
            run_distill(
                dataclasses.replace(
                    config.distill, teacher=source, dataset=str(run.files["public"]),
                    eval_dataset=run.test_spec, data_root=config.data_root, seed=config.seed,
                ),
                run.stage("student-kd"),
            )  # fmt: skip
        models["student-kd"] = _student_model(run.out / "student-kd")
    if "datafree" in config.paths:
        models["student-datafree"] = _datafree_stage(run, "student-datafree", source)
    if "pate" in config.paths:
        pate = run_pate(_pate_config(run), run.options, layout=AUDIT_PATE_LAYOUT)
        models["student-pate"] = (
            str(Path(pate["stages"]["student"]) / "model.pt"),
            pate["student"]["test_accuracy"],
        )
    if "dpsgd-datafree" in config.paths:
        dp_path = _teacher_stage(run, "dp-teacher", config.dp_teacher, models)
        models["student-dpsgd-datafree"] = _datafree_stage(
            run, "student-dpsgd-datafree", TeacherSourceConfig(path=str(dp_path))
        )
    return models


def _teacher_stage(
    run: ThreatModelRun, name: str, teacher_config: TeacherTrainConfig, models: Models
) -> Path:
    """Train a teacher on the members (unless kept); add it to ``models``; its model.pt."""

    folder = run.out / name
    if not run.done(name):
        run_teacher_train(
            dataclasses.replace(
                teacher_config, dataset=str(run.files["members"]), eval_dataset=run.test_spec,
                data_root=run.config.data_root, seed=run.config.seed,
            ),
            run.stage(name),
        )  # fmt: skip
    models[name] = (str(folder / "model.pt"), read_report(folder)["test_accuracy"])
    return folder / "model.pt"


def _datafree_stage(
    run: ThreatModelRun, name: str, teacher: TeacherSourceConfig
) -> tuple[str, float | None]:
    """A data-free student of ``teacher`` in ``OUT/<name>`` (unless kept)."""

    if not run.done(name):
        run_datafree(
            dataclasses.replace(
                run.config.datafree, teacher=teacher, eval_dataset=run.test_spec,
                data_root=run.config.data_root, seed=run.config.seed,
            ),
            run.stage(name),
        )  # fmt: skip
    return _student_model(run.out / name)


def _student_model(folder: Path) -> tuple[str, float | None]:
    return str(folder / "model.pt"), read_report(folder)["student"]["test_accuracy"]


def _pate_config(run: ThreatModelRun) -> PateRunConfig:
    """The ``pate`` path's stages on this run's data: teachers on shards of the members,
    queries from the public set."""

    config, pate = run.config, run.config.pate
    root, seed, test = config.data_root, config.seed, run.test_spec
    return dataclasses.replace(
        pate,
        teachers=dataclasses.replace(
            pate.teachers, dataset=str(run.files["members"]), eval_dataset=test,
            data_root=root, seed=seed,
        ),
        label=dataclasses.replace(
            pate.label, query_dataset=str(run.files["public"]), eval_dataset=test,
            data_root=root, seed=seed,
        ),
        student=dataclasses.replace(pate.student, data_root=root, seed=seed),
    )  # fmt: skip


def _audit_models(run: ThreatModelRun, models: Models) -> dict[str, dict[str, Any]]:
    """Audit every model against the same members and non-members (unless kept).

    The first audit trains the shadow models (unless ``audit.shadow.reuse`` names some); every
    later audit reuses them.
    """

    config = run.config
    audits: dict[str, dict[str, Any]] = {}
    shadow_source: str | None = config.audit.shadow.reuse
    for name, (path, _) in models.items():
        folder = run.out / "audit" / name
        if run.done(f"audit/{name}"):
            audits[name] = read_report(folder)
        else:
            audit_config = dataclasses.replace(
                config.audit,
                model=TeacherSourceConfig(path=path),
                members=str(run.files["members"]),
                non_members=str(run.files["non_members"]),
                data_root=config.data_root,
                random_split=True,
                seed=config.seed,
                shadow=dataclasses.replace(config.audit.shadow, reuse=shadow_source),
            )
            assert isinstance(audit_config, AuditConfig)
            audits[name] = run_audit(audit_config, run.stage(f"audit/{name}"))
        if shadow_source is None and config.audit.shadow.models > 0:
            shadow_source = str(folder)  # the teacher's shadow models serve every later audit
    return audits


def _roc_of(folder: Path, report: dict[str, Any], attack: str) -> tuple[Any, Any]:
    """The ROC of ``attack`` in an audit folder, recomputed from the saved scores."""

    with np.load(folder / "scores.npz", allow_pickle=False) as saved:
        from freekd.audit.metrics import roc_curve

        return roc_curve(np.array(saved[attack]), np.array(saved["is_member"]))


#: The LiRA variant of the pipeline table: Carlini et al. (2022, §4.2) recommend one shared
#: variance below about 64 shadow models, where per-example variances are too noisy.
TABLE_LIRA = "lira-online-fixed-variance"


def _audit_row(name: str, accuracy: float | None, report: dict[str, Any]) -> dict[str, Any]:
    attacks = report["attacks"]
    bound = report["epsilon_lower_bound"]
    lira = attacks.get(TABLE_LIRA)
    return {
        "model": name,
        "test_accuracy": accuracy,
        "member_accuracy": report["model"]["member_accuracy"],
        "non_member_accuracy": report["model"]["non_member_accuracy"],
        "auc": {attack: round(result["auc"], 4) for attack, result in attacks.items()},
        "best_auc": max(result["auc"] for result in attacks.values()),
        "tpr_at_fpr": {attack: result["tpr_at_fpr"] for attack, result in attacks.items()},
        "lira_attack": TABLE_LIRA,
        "lira_tpr_at_0.001": None if lira is None else lira["tpr_at_fpr"]["0.001"],
        "loss_tpr_at_0.001": attacks["loss"]["tpr_at_fpr"]["0.001"] if "loss" in attacks else None,
        "epsilon_lower_bound": bound["epsilon"],
        "bound_attack": bound["attack"],
        "accountant_epsilon": bound.get("accountant_epsilon"),
        "accountant_kind": bound.get("accountant_kind"),
        "consistent": bound.get("consistent"),
    }
