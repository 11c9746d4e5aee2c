"""Composition root of ``freekd audit``: shadow models, attacks, ROC and the ε lower bound."""

from __future__ import annotations

import dataclasses
import logging
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from freekd import __version__
from freekd.audit import ATTACKS, DEFAULT_ATTACKS, AuditData, attack_metrics, one_run_audit
from freekd.audit.metrics import roc_curve
from freekd.audit.shadows import (
    SHADOWS_FILE,
    inclusion_design,
    load_shadow_outputs,
    save_shadow_outputs,
    subsets_of,
    warn_unused_trainer,
)
from freekd.audit.summary import audit_summary, strongest_attack
from freekd.config import TrainerConfig, dump_yaml, to_dict
from freekd.data import AUGMENTATIONS, ImageDataset, load_dataset, pool_fingerprint
from freekd.errors import FreekdError
from freekd.io import atomic_write, atomic_write_json, atomic_write_text, check_not_inputs
from freekd.methods import EnsembleSupervised
from freekd.plots import plot_roc
from freekd.privacy.report import guarantee
from freekd.runlock import locks_run_folder
from freekd.runs import (
    RunOptions,
    TrainResult,
    as_float,
    build_student,
    check_params,
    prepare_run_dir,
    resolve_augmentation,
    run_training,
    saved_config,
    seeded,
)
from freekd.seeding import reseed, seed_everything
from freekd.teachers import Teacher, load_teacher
from freekd.teachers.ensemble import check_execution, make_ensemble, save_ensemble
from freekd.train import DistInfo, SubsetSource, resolve_device
from freekd.train.callbacks import RESUME_FILE
from freekd.train.evaluate import check_input_shape

logger = logging.getLogger(__name__)

#: The scores the ε lower bound uses by default with shadow models. Offline LiRA with a fixed
#: variance needs no IN models and no per-example variance, so it stays calibrated with few
#: shadow models and with targets trained differently from them (students), where the online
#: per-example fit was the weakest attack on the tiny test pool (AUC 0.53 against 0.73).
AUTO_BOUND_ATTACK = "lira-offline-fixed-variance"


AUDIT_FILES = ("report.json", "summary.txt", "roc.png", "shadows.npz", "scores.npz", "config.yaml")


@dataclass(frozen=True)
class _AuditPool:
    """Members then non-members, as one dataset, with the membership of each example."""

    data: ImageDataset
    is_member: torch.Tensor
    members_name: str
    non_members_name: str


def _audit_pool(config: Any, teacher: Teacher) -> _AuditPool:
    """Members and non-members as one pool in a seeded random order, blind to membership.

    The order matters for the ε lower bound: with members first, batch-size-dependent rounding
    of the outputs would differ between the two sides and could be mistaken for leakage.
    ``max_examples`` keeps a random part of the pool chosen without looking at membership, so
    the members stay an independent coin-flip choice when they were one.
    """
    root = Path(config.data_root) if config.data_root else None
    sides: list[ImageDataset] = []
    for spec, what in ((config.members, "--members"), (config.non_members, "--non-members")):
        if not spec:
            raise FreekdError(f"{what} is required: a dataset spec (mnist:test, a .npz file ...)")
        data = load_dataset(spec, default_split="train", root=root)
        check_input_shape(data, teacher.input_shape, who=f"the audited model ({what})")
        if int(data.labels.max()) >= teacher.num_classes:
            raise FreekdError(
                f"{what} {data.name} has labels up to {int(data.labels.max())}, but the model has "
                f"{teacher.num_classes} classes; audit it on data of its own classes"
            )
        sides.append(data)
    members, non_members = sides
    if len(members.classes) == len(non_members.classes) and members.classes != non_members.classes:
        raise FreekdError(
            f"--members and --non-members name their classes differently ({members.classes[:3]} "
            f"… against {non_members.classes[:3]} …); give both in the model's class order"
        )
    both_uint8 = members.images.dtype == non_members.images.dtype == torch.uint8
    images = [side.images if both_uint8 else as_float(side.images) for side in sides]
    is_member = torch.cat(
        [
            torch.ones(len(members), dtype=torch.bool),
            torch.zeros(len(non_members), dtype=torch.bool),
        ]
    )
    order = torch.randperm(len(is_member), generator=seeded(config.seed, 21))
    if config.max_examples is not None:
        if config.max_examples < 2:
            raise FreekdError(f"max_examples must be at least 2, got {config.max_examples}")
        order = order[: config.max_examples]
    is_member = is_member[order]
    if bool(is_member.all()) or not bool(is_member.any()):
        raise FreekdError("the audit needs members and non-members; raise max_examples")
    classes = (
        members.classes if len(members.classes) >= len(non_members.classes) else non_members.classes
    )
    pool = ImageDataset(
        torch.cat(images)[order],
        torch.cat([members.labels, non_members.labels])[order],
        list(classes),
        f"{members.name} + {non_members.name}",
    )
    return _AuditPool(pool, is_member, members.name, non_members.name)


def _pool_logits(model: nn.Module, data: ImageDataset, device: torch.device) -> torch.Tensor:
    """Logits of ``model`` on every example of ``data``, in order (no gradients, eval mode)."""
    chunks = []
    model.eval()
    with torch.no_grad():
        for start in range(0, len(data), 512):
            images = data.batch(torch.arange(start, min(start + 512, len(data)))).images
            chunks.append(model(images.to(device)).float().cpu())
    return torch.cat(chunks, dim=-2)


def _claimed_privacy(config: Any, teacher: Teacher) -> dict[str, Any]:
    """The (ε, δ) the audited model claims, and which figure of its record that is.

    A PATE record's budgeted ε may be the data-dependent one, which is not a DP guarantee on
    its own; the audit compares with the record's guarantee (``privacy.report.guarantee``:
    the data-independent ε, or a sanitized ε that is one), and only a record without any
    guarantee (an old file) with its ``epsilon``, whose kind the report then names.
    """

    record = teacher.metadata.get("privacy") or {}
    epsilon, kind = config.accountant_epsilon, "given"
    if epsilon is None and record:
        figure = guarantee(record)
        if figure is not None:
            epsilon, kind = figure["epsilon"], figure["kind"]
        else:
            epsilon, kind = record.get("epsilon"), record.get("kind", "accountant")
    delta = config.delta if config.delta is not None else record.get("delta")
    delta = 1e-5 if delta is None else delta
    return {
        "epsilon": None if epsilon is None else float(epsilon),
        "delta": float(delta),
        "kind": kind if epsilon is not None else None,
        "record": {k: v for k, v in record.items() if not k.endswith("_rdp") and k != "orders"},
    }


@dataclass(frozen=True)
class _ShadowRecipe:
    """How the shadow models are built and trained, and where that recipe came from."""

    arch: str
    arch_kwargs: dict[str, Any]
    trainer: TrainerConfig
    source: str


def check_shadow_settings(shadow: Any) -> None:
    """The shadow models' settings that need no model: recipe, its arch, execution."""
    if shadow.recipe not in ("target", "config"):
        raise FreekdError(f"unknown shadow.recipe {shadow.recipe!r}; use target or config")
    if shadow.recipe == "config" and not shadow.arch:
        raise FreekdError("shadow.recipe=config needs shadow.arch; e.g. --set shadow.arch=lenet5")
    check_execution(shadow.execution, setting="shadow.execution")


def _shadow_recipe(config: Any, teacher: Teacher) -> _ShadowRecipe:
    """The shadow models' recipe: arch, arch_kwargs, trainer settings and their source."""
    shadow = config.shadow
    check_shadow_settings(shadow)
    if shadow.recipe == "config":
        return _ShadowRecipe(shadow.arch, dict(shadow.arch_kwargs), shadow.trainer, "shadow config")
    arch = teacher.metadata.get("arch")
    if not arch:
        raise FreekdError(
            f"the audited model ({teacher.description}) names no architecture for its shadow "
            "models; pass --set shadow.recipe=config --set shadow.arch=NAME"
        )
    saved = saved_config(Path(config.model.path))
    # A supervised training run (freekd teacher train) is the only recipe that fits training
    # on the pool; a distillation run's trainer settings belong to its own data.
    if {"arch", "trainer", "dp", "label_smoothing"} <= set(saved):
        from freekd.config import from_dict

        trainer = from_dict(TrainerConfig, dict(saved["trainer"]))
        warn_unused_trainer(shadow)
        trainer = dataclasses.replace(trainer, eval_every=0, device=shadow.trainer.device)
        return _ShadowRecipe(
            arch,
            dict(teacher.metadata.get("arch_kwargs") or {}),
            trainer,
            "target's training run",
        )
    return _ShadowRecipe(
        arch, dict(teacher.metadata.get("arch_kwargs") or {}), shadow.trainer, "shadow config"
    )


def _shadow_ensemble(
    config: Any, teacher: Teacher, pool: _AuditPool, recipe: _ShadowRecipe
) -> nn.Module:
    """``shadow.models`` fresh models of the recipe's architecture, as one ensemble, seeded."""
    mean = teacher.metadata.get("input", {}).get("mean")
    std = teacher.metadata.get("input", {}).get("std")
    reseed(config.seed)
    members = [
        build_student(
            recipe.arch,
            recipe.arch_kwargs,
            train_set=pool.data,
            num_classes=teacher.num_classes,
            mean=mean,
            std=std,
            setting="shadow.arch",
        )
        for _ in range(config.shadow.models)
    ]
    return make_ensemble(members, execution=config.shadow.execution)


def _shadow_run_options(options: RunOptions) -> RunOptions:
    """The ``shadows/`` sub-run: overwritten on a fresh audit, resumed with the audit."""
    shadow_dir = options.out_dir / "shadows"
    shadow_options = RunOptions(
        shadow_dir,
        overwrite=True,
        resume=options.resume and (shadow_dir / RESUME_FILE).exists(),
        quiet=options.quiet,
    )
    if shadow_options.resume:
        shadow_options = dataclasses.replace(shadow_options, overwrite=False)
    return shadow_options


def _train_shadow_models(
    config: Any, teacher: Teacher, pool: _AuditPool, options: RunOptions, device: torch.device
) -> tuple[torch.Tensor, torch.Tensor, dict[str, Any]]:
    """Train ``shadow.models`` models on complementary random halves of the pool in one loop;
    returns their (M, N, K) logits on the pool, the (M, N) inclusion design and a report."""

    shadow = config.shadow
    recipe = _shadow_recipe(config, teacher)
    trainer_config = recipe.trainer
    design = inclusion_design(shadow.models, len(pool.data), generator=seeded(config.seed, 7))
    augment_name = resolve_augmentation(trainer_config.augment, pool.data.input_shape)
    source = SubsetSource(
        pool.data,
        subsets_of(design),
        batch_size=trainer_config.batch_size,
        seed=config.seed,
        augment=None if augment_name == "none" else AUGMENTATIONS.get(augment_name),
        what="shadow models",
        fix="audit more examples, or --set shadow.recipe=config --set shadow.trainer.batch_size=N",
    )
    ensemble = _shadow_ensemble(config, teacher, pool, recipe)
    shadow_options = _shadow_run_options(options)
    resolved_config = dataclasses.replace(
        config, shadow=dataclasses.replace(shadow, trainer=trainer_config)
    )

    def save(module: nn.Module, resolved: dict[str, Any]) -> None:
        save_ensemble(
            shadow_options.out_dir / "shadows.pt",
            module,  # type: ignore[arg-type]
            config=resolved,
            shards={
                "design": "complementary random halves of the audit pool",
                "pool": len(pool.data),
            },
        )

    result = run_training(
        EnsembleSupervised(ensemble),
        source,
        eval_set=None,
        trainer_config=trainer_config,
        config=resolved_config,
        options=shadow_options,
        device=device,
        dist=DistInfo(),
        description=f"{shadow.models} shadow models {recipe.arch}",
        save=save,
    )
    logits = _pool_logits(ensemble, pool.data, device)
    return logits, design, _shadow_training_report(config, recipe, design, logits, pool, result)


def _shadow_training_report(
    config: Any,
    recipe: _ShadowRecipe,
    design: torch.Tensor,
    logits: torch.Tensor,
    pool: _AuditPool,
    result: TrainResult,
) -> dict[str, Any]:
    """``shadow_models`` of the report: the recipe, the cost and the shadow models' accuracy."""
    shadow_accuracy = (logits.argmax(-1) == pool.data.labels).float()
    return {
        "models": config.shadow.models,
        "arch": recipe.arch,
        "recipe": recipe.source,
        "execution": config.shadow.execution,
        "train_size": int(design.sum(dim=1)[0]),
        "epochs": recipe.trainer.epochs,
        "wall_seconds": round(result.wall_seconds, 3),
        "cpu_seconds": round(result.cpu_seconds, 3),
        "train_accuracy": round(float(shadow_accuracy[design].mean()), 6),
        "held_out_accuracy": round(float(shadow_accuracy[~design].mean()), 6),
    }


def _shadow_outputs(
    config: Any,
    teacher: Teacher,
    pool: _AuditPool,
    options: RunOptions,
    device: torch.device,
    target_logits: torch.Tensor,
) -> tuple[torch.Tensor, torch.Tensor, dict[str, Any]]:
    """The shadow models' logits on the pool and their design: reused (``shadow.reuse``, or this
    audit's own ``shadows.npz`` when resuming) or trained; checked and saved in ``shadows.npz``."""
    reuse = config.shadow.reuse
    fingerprint = pool_fingerprint(
        pool.data.batch(torch.arange(len(pool.data))).images, pool.data.labels
    )
    saved = options.out_dir / SHADOWS_FILE
    shadow_report: dict[str, Any]
    if reuse is not None or (options.resume and saved.exists()):
        source_path = Path(reuse) / SHADOWS_FILE if reuse is not None else saved
        shadow_logits, shadow_in, arch = load_shadow_outputs(source_path, fingerprint=fingerprint)
        shadow_report = {
            "models": int(shadow_logits.shape[0]),
            "arch": arch,
            "reused_from": str(source_path),
        }
    else:
        shadow_logits, shadow_in, shadow_report = _train_shadow_models(
            config, teacher, pool, options, device
        )
    if not bool(torch.isfinite(shadow_logits).all()):
        raise FreekdError(
            "a shadow model gives non-finite outputs (it diverged); lower shadow.trainer.lr"
        )
    if tuple(shadow_logits.shape[1:]) != tuple(target_logits.shape):
        raise FreekdError(
            "the shadow outputs do not fit this model's classes; train new shadow models"
        )
    save_shadow_outputs(
        saved,
        logits=shadow_logits,
        included=shadow_in,
        fingerprint=fingerprint,
        arch=str(shadow_report["arch"]),
    )
    return shadow_logits, shadow_in, shadow_report


def _build_attack(name: str, attack_params: dict[str, Any]) -> Any:

    cls = ATTACKS.get(name)
    given = attack_params.get(name)
    if given is not None and not isinstance(given, dict):
        raise FreekdError(
            f"attack_params.{name} must map {name}'s parameters to values (as attack_params."
            f"{name}.NAME=VALUE), got {given!r}"
        )
    # Checked in place: config.yaml then holds the numbers the attack ran with.
    params = given if given is not None else {}
    check_params(cls, params, what=f"attack {name}")
    return cls(**params)


@dataclass(frozen=True)
class _AttackPlan:
    """The attacks an audit reports (``names``), every attack it runs, and the bound's attack."""

    names: list[str]
    attacks: dict[str, Any]
    bound_attack: str


def plan_attacks(config: Any, *, with_shadows: bool) -> _AttackPlan:
    """The attacks ``config`` asks for (by default every one its shadow models allow) and the
    attack whose scores give the ε lower bound, checked before any work."""
    names = list(config.attacks) or [
        name for name in DEFAULT_ATTACKS if with_shadows or not ATTACKS.get(name).needs_shadows
    ]
    unused = sorted(set(config.attack_params) - set(ATTACKS.names()))
    if unused:
        raise FreekdError(
            f"attack_params names unknown attack {unused[0]!r}; known: {', '.join(ATTACKS.names())}"
        )
    attacks = {name: _build_attack(name, config.attack_params) for name in names}
    bound_attack = config.bound_attack
    if bound_attack == "auto":
        bound_attack = AUTO_BOUND_ATTACK if with_shadows else "loss"
    if bound_attack not in attacks:
        attacks[bound_attack] = _build_attack(bound_attack, config.attack_params)
    needing = [name for name, attack in attacks.items() if attack.needs_shadows]
    if needing and not with_shadows:
        raise FreekdError(
            f"{', '.join(needing)} need shadow models; pass --shadow-models N (N ≥ 4) or drop them"
        )
    return _AttackPlan(names, attacks, bound_attack)


def _open_audit_folder(config: Any, options: RunOptions) -> None:
    """Prepare the run folder (or check there is an audit to resume) and clear old results,
    never one this audit reads (the model, or ``--shadows-from`` the same folder)."""
    if options.resume:
        # An audit resumes from its saved shadow outputs or its shadow models' checkpoint.
        if not (options.out_dir / "config.yaml").exists():
            raise FreekdError(f"nothing to resume in {options.out_dir}; run without --resume")
    else:
        prepare_run_dir(options)
    if options.overwrite:
        reused = config.shadow.reuse and str(Path(config.shadow.reuse) / SHADOWS_FILE)
        check_not_inputs(options.out_dir, AUDIT_FILES, inputs=[to_dict(config), reused])
        for name in AUDIT_FILES:
            (options.out_dir / name).unlink(missing_ok=True)


def _target_logits(teacher: Teacher, pool: _AuditPool, device: torch.device) -> torch.Tensor:
    """The audited model's logits on the pool, which must all be finite."""
    target_logits = _pool_logits(teacher, pool.data, device)
    if not bool(torch.isfinite(target_logits).all()):
        bad = int((~torch.isfinite(target_logits)).any(dim=-1).sum())
        raise FreekdError(
            f"the audited model gives non-finite outputs on {bad} example(s); check the checkpoint"
        )
    return target_logits


def _run_attacks(
    plan: _AttackPlan, data: AuditData, is_member: np.ndarray
) -> tuple[dict[str, Any], dict[str, Any], dict[str, Any]]:
    """(metrics, ROC curves) of every reported attack, and the scores of every attack run."""
    results: dict[str, Any] = {}
    curves: dict[str, Any] = {}
    all_scores: dict[str, Any] = {}
    for name, attack in plan.attacks.items():
        scores = attack.scores(data)
        all_scores[name] = scores
        if name in plan.names:
            results[name] = attack_metrics(scores, is_member) | {"paper": attack.paper}
            curves[name] = roc_curve(scores, is_member)
    return results, curves, all_scores


def _epsilon_bound(
    config: Any, scores: np.ndarray, is_member: np.ndarray, *, attack: str, claimed: dict[str, Any]
) -> dict[str, Any]:
    """``epsilon_lower_bound`` of the report, compared with the ε the model claims; a bound above
    the claim is logged as a privacy bug."""
    bound = one_run_audit(
        scores,
        is_member,
        confidence=config.confidence,
        delta=claimed["delta"],
        sides=("both", "in", "out"),
    )
    bound |= {
        "attack": attack,
        "accountant_epsilon": claimed["epsilon"],
        "accountant_kind": claimed["kind"],
        "assumption": "each pool example was a member independently with probability 1/2 "
        "(the canaries of Steinke, Nasr & Jagielski 2023)",
        "assumption_holds": bool(config.random_split),
        "consistent": None,  # no claimed ε to compare with
    }
    if claimed["epsilon"] is not None:
        bound["consistent"] = bool(bound["epsilon"] <= claimed["epsilon"])
        if not bound["consistent"]:
            logger.warning(
                "PRIVACY BUG: the empirical ε lower bound %.3f exceeds the accountant's ε %.3f "
                "(%s)",
                bound["epsilon"],
                claimed["epsilon"],
                claimed["kind"],
            )
    return bound


def _model_entry(
    config: Any,
    teacher: Teacher,
    pool: _AuditPool,
    target_logits: torch.Tensor,
    claimed: dict[str, Any],
) -> dict[str, Any]:
    """``model`` of the report: what was audited, its accuracy on members and non-members."""
    correct = (target_logits.argmax(-1) == pool.data.labels).float()
    accuracy = float(correct[pool.is_member].mean())
    held_out = float(correct[~pool.is_member].mean())
    return {
        "path": config.model.path,
        "kind": teacher.description,
        "arch": teacher.metadata.get("arch"),
        "member_accuracy": round(accuracy, 6),
        "non_member_accuracy": round(held_out, 6),
        "privacy": claimed["record"] or None,
    }


@locks_run_folder
def run_audit(config: Any, options: RunOptions) -> dict[str, Any]:
    """``freekd audit``: every attack against one model, ROC curves and the ε lower bound.

    Writes ``report.json`` (``attacks``: per attack ``auc``, ``tpr_at_fpr``,
    ``balanced_accuracy``, ``advantage``; ``epsilon_lower_bound``), ``roc.png``,
    ``summary.txt`` and, when shadow models are trained, ``shadows.npz`` and ``shadows/``.
    """
    wall_start, cpu_start = time.perf_counter(), time.process_time()
    _open_audit_folder(config, options)
    seed_everything(config.seed)
    device = resolve_device(config.shadow.trainer.device, DistInfo())
    if not config.model.path:
        raise FreekdError("--model is required: the checkpoint to audit")
    with_shadows = config.shadow.models > 0 or config.shadow.reuse is not None
    plan = plan_attacks(config, with_shadows=with_shadows)
    teacher = load_teacher(
        config.model, device=device, trust_code=options.trust_code, flag="--model"
    )
    pool = _audit_pool(config, teacher)
    options.out_dir.mkdir(parents=True, exist_ok=True)
    atomic_write_text(options.out_dir / "config.yaml", dump_yaml(config))
    target_logits = _target_logits(teacher, pool, device)
    shadow_logits = shadow_in = None
    shadow_report: dict[str, Any] | None = None
    if with_shadows:
        shadow_logits, shadow_in, shadow_report = _shadow_outputs(
            config, teacher, pool, options, device, target_logits
        )
    data = AuditData(target_logits, pool.data.labels, shadow_logits, shadow_in)
    is_member = pool.is_member.numpy()
    results, curves, all_scores = _run_attacks(plan, data, is_member)
    _save_scores(options.out_dir / "scores.npz", all_scores, is_member)
    claimed = _claimed_privacy(config, teacher)
    bound = _epsilon_bound(
        config, all_scores[plan.bound_attack], is_member, attack=plan.bound_attack, claimed=claimed
    )
    plot_roc(
        curves,
        options.out_dir / "roc.png",
        title="membership inference: " + "/".join(Path(config.model.path).parts[-2:]),
    )
    report: dict[str, Any] = {
        "command": "audit",
        "model": _model_entry(config, teacher, pool, target_logits, claimed),
        "members": {"dataset": pool.members_name, "n": int(pool.is_member.sum())},
        "non_members": {"dataset": pool.non_members_name, "n": int((~pool.is_member).sum())},
        # DESIGN.md's headline keys: the strongest attack's figures (every attack is in "attacks").
        **strongest_attack(results),
        "attacks": results,
        "epsilon_lower_bound": bound,
        "shadow_models": shadow_report,
        "wall_seconds": round(time.perf_counter() - wall_start, 3),
        "cpu_seconds": round(time.process_time() - cpu_start, 3),
        "seed": config.seed,
        "freekd_version": __version__,
    }
    summary = audit_summary(report)
    report["summary"] = summary
    atomic_write_text(options.out_dir / "summary.txt", summary + "\n")
    atomic_write_json(options.out_dir / "report.json", report)
    return report


def _save_scores(path: Path, scores: dict[str, Any], is_member: Any) -> None:
    """Every attack's per-example scores and the membership, for plots and later analysis."""

    atomic_write(path, lambda stream: np.savez(stream, is_member=is_member, **scores))
