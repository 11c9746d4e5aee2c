"""Composition root of ``freekd online``: networks that teach each other, in the one loop.

One ``OnlineMethod`` (``dml``, ``one``) owns every network the run trains and the Trainer runs
it like any other method. A share of the training data is held out (``validation_fraction``):
the ensemble is evaluated on it during training, and the deployable network (``model.pt``) is
the single network with the best accuracy on it, so the test split chooses nothing. The run
writes, besides the files every run writes:

- ``networks/<name>.pt``: every single network (``peer0``, ``branch1``, ...), each an ordinary
  freekd checkpoint (a ONE branch is exported with the trunk as a network of the base
  architecture);
- ``ensemble.pt``: their ensemble as one model (DML: ``mean-ensemble``; ONE: the gated
  ``branched`` network);
- ``model.pt``: a copy of the chosen single network;
- ``baseline/``: each architecture trained alone with the same loop, data and seed (unless
  ``baseline`` is off), so the gain is measured side by side.
"""

from __future__ import annotations

import shutil
from collections.abc import Callable
from pathlib import Path
from typing import Any

from torch import nn

from freekd.checkpoint import save_checkpoint
from freekd.config import to_dict
from freekd.data import ImageDataset
from freekd.errors import FreekdError
from freekd.methods import ONLINE, ONLINE_METHODS, MethodContext, Supervised
from freekd.methods.online import OnlineMethod
from freekd.models import ImageClassifier, count_parameters
from freekd.online.config import BaselineConfig, OnlineConfig
from freekd.runlock import locks_run_folder
from freekd.runs import (
    RESUME_FILE,
    RunOptions,
    TrainResult,
    build_method,
    build_student,
    check_params,
    common_report,
    dataset_statistics,
    finish_run,
    loader_source,
    resolve_augmentation,
    run_training,
    setup_run,
    split_validation,
    train_and_eval_sets,
    warn_few_steps,
)
from freekd.seeding import seed_everything
from freekd.train import DistInfo, Trainer, evaluate
from freekd.train.callbacks import SaveModel
from freekd.train.evaluate import check_input_shape, check_labels_fit

NETWORKS_DIR = "networks"
ENSEMBLE_FILE = "ensemble.pt"
BASELINE_DIR = "baseline"


@locks_run_folder
def run_online(config: OnlineConfig, options: RunOptions) -> dict[str, Any]:
    """``freekd online``: train the method's networks together; returns (and writes)
    ``report.json`` with every single network's, the ensemble's and the baselines' accuracy."""
    method_class = _method_class(config)
    check_params(method_class, config.method.params, what=f"method {config.method.name}")
    for name in ("ema_decay", "swa_start"):
        if getattr(config.trainer, name) is not None:
            raise FreekdError(
                "freekd online trains several networks and keeps no weight average; remove "
                f"trainer.{name}"
            )
    archs = _peer_archs(config)
    sets = _data(config)
    train_set = sets["train"]
    dist, device = setup_run(config.seed, config.trainer, options)
    mean, std = dataset_statistics(train_set)
    peers = [_network(arch, config, train_set, mean, std) for arch in archs]
    source = loader_source(train_set, config.trainer, seed=config.seed, dist=dist)
    warn_few_steps(train_set, config.trainer, source.steps_per_epoch())
    context = MethodContext(
        student=peers[0],
        peers=tuple(peers),
        num_classes=train_set.num_classes,
        train_size=len(train_set),
        input_shape=tuple(train_set.input_shape),
        distills=ONLINE,
        total_steps=source.steps_per_epoch() * config.trainer.epochs,
    )
    method = _online(build_method(config.method.name, context, dict(config.method.params)))
    _check_batch(method, config, dist)
    if not options.resume and dist.is_main:
        _clear_online_files(options.out_dir)
    result = run_training(
        method,
        source,
        eval_set=sets["validation"],
        trainer_config=config.trainer,
        config=config,
        options=options,
        device=device,
        dist=dist,
        description=f"online {config.method.name}: {' + '.join(archs)}",
        evaluate_module=lambda trainer: _online(trainer.method).ensemble(),
        savers=_savers(method, to_dict(config), options.out_dir),
    )
    held_out = {"validation": sets["validation"], "test": sets["test"]}
    report = _report(config, method, held_out, options, dist=dist, device=device)
    if config.baseline:
        report["baseline"] = _baselines(
            config, archs, train_set, held_out, options, dist=dist, device=device
        )
    report.update(
        dataset=sets["full"].name,
        eval_dataset=sets["test"].name,
        train_n=len(train_set),
        validation_n=len(sets["validation"]),
        test_n=len(sets["test"]),
        **common_report(config, result),
    )
    finish_run(report, options, dist)
    return report


def _check_batch(method: OnlineMethod, config: OnlineConfig, dist: DistInfo) -> None:
    """Refuse a batch the method cannot train on, before anything is written."""
    per_process = config.trainer.batch_size // dist.world_size
    if per_process < method.min_batch:
        raise FreekdError(
            f"{config.method.name} needs batches of at least {method.min_batch} images per "
            f"process, got {per_process}; raise --batch-size"
        )


def _clear_online_files(out: Path) -> None:
    """What a run this one replaces left besides the files every run writes: its single
    networks, its ensemble and its baselines."""
    shutil.rmtree(out / NETWORKS_DIR, ignore_errors=True)
    shutil.rmtree(out / BASELINE_DIR, ignore_errors=True)
    (out / ENSEMBLE_FILE).unlink(missing_ok=True)


def _data(config: OnlineConfig) -> dict[str, ImageDataset]:
    """The data: ``full`` (``dataset``), its ``train`` and ``validation`` parts, and ``test``."""
    full_set, test_set = train_and_eval_sets(config)
    check_input_shape(test_set, full_set.input_shape, who=f"a model trained on {full_set.name}")
    check_labels_fit(test_set, full_set.num_classes, who=f"a model trained on {full_set.name}")
    resolve_augmentation(config.trainer.augment, full_set.input_shape)
    train_set, validation_set = split_validation(
        full_set, config.validation_fraction, seed=config.seed
    )
    return {"full": full_set, "train": train_set, "validation": validation_set, "test": test_set}


def _report(
    config: OnlineConfig,
    method: OnlineMethod,
    held_out: dict[str, ImageDataset],
    options: RunOptions,
    *,
    dist: DistInfo,
    device: Any,
) -> dict[str, Any]:
    """Every network and the ensemble measured; the best single network on validation saved
    as ``model.pt`` (main process)."""
    networks = _measure_networks(method, held_out, device=device)
    ensemble = _entry(method.ensemble(), held_out, device=device, path=ENSEMBLE_FILE)
    chosen = max(networks, key=lambda name: networks[name]["validation_accuracy"])
    if dist.is_main:
        model = method.networks()[chosen]
        save_checkpoint(options.out_dir / "model.pt", model, config=to_dict(config))
    student = {"name": chosen, **networks[chosen], "path": "model.pt"}
    return {
        "command": "online",
        "method": {"name": config.method.name, "params": dict(config.method.params)},
        "test_accuracy": networks[chosen]["test_accuracy"],
        "student": {**student, "chosen_by": "validation_accuracy"},
        "networks": networks,
        "ensemble": ensemble,
        "baseline": None,
    }


def _method_class(config: OnlineConfig) -> type[OnlineMethod]:
    method_class = ONLINE_METHODS.get(config.method.name)
    assert issubclass(method_class, OnlineMethod)
    return method_class


def _online(method: Any) -> OnlineMethod:
    assert isinstance(method, OnlineMethod)
    return method


def _peer_archs(config: OnlineConfig) -> list[str]:
    """The architecture of each network the method starts from: every ``--arch``, or
    ``peers`` copies of a single one (default: the method's own count)."""
    archs = list(config.archs)
    default = _method_class(config).default_peers
    if len(archs) == 1:
        return archs * (config.peers if config.peers is not None else default)
    if config.peers is not None and config.peers != len(archs):
        raise FreekdError(
            f"--peers {config.peers} but {len(archs)} architectures given; give one --arch per "
            "peer, or one --arch with --peers K"
        )
    return archs


def _network(
    arch: str,
    config: OnlineConfig,
    train_set: ImageDataset,
    mean: list[float],
    std: list[float],
) -> ImageClassifier:
    return build_student(
        arch,
        dict(config.arch_kwargs),
        train_set=train_set,
        num_classes=train_set.num_classes,
        mean=mean,
        std=std,
    )


def _single(name: str) -> Callable[[Trainer], nn.Module]:
    """The single network ``name`` of the trainer's online method (a ``ModuleChoice``)."""
    return lambda trainer: _online(trainer.method).networks()[name]


def _savers(method: OnlineMethod, resolved: dict[str, Any], out: Path) -> list[SaveModel]:
    """One ``SaveModel`` per single network (``networks/<name>.pt``) and one for the ensemble."""
    savers = [
        SaveModel(out / NETWORKS_DIR / f"{name}.pt", config=resolved, module=_single(name))
        for name in method.networks()
    ]
    savers.append(
        SaveModel(
            out / ENSEMBLE_FILE,
            config=resolved,
            module=lambda trainer: _online(trainer.method).ensemble(),
        )
    )
    return savers


def _entry(
    model: ImageClassifier,
    sets: dict[str, ImageDataset],
    *,
    device: Any,
    path: str,
) -> dict[str, Any]:
    """A network's report entry: architecture, size, accuracy on each held-out set, file."""
    entry: dict[str, Any] = {"arch": model.arch, "parameters": count_parameters(model.net)}
    for split, dataset in sets.items():
        entry[f"{split}_accuracy"] = evaluate(model, dataset, device=device)["accuracy"]
    entry["path"] = path
    return entry


def _measure_networks(
    method: OnlineMethod, sets: dict[str, ImageDataset], *, device: Any
) -> dict[str, dict[str, Any]]:
    return {
        name: _entry(model, sets, device=device, path=f"{NETWORKS_DIR}/{name}.pt")
        for name, model in method.networks().items()
    }


def _baselines(
    config: OnlineConfig,
    archs: list[str],
    train_set: ImageDataset,
    sets: dict[str, ImageDataset],
    options: RunOptions,
    *,
    dist: DistInfo,
    device: Any,
) -> dict[str, dict[str, Any]]:
    """Each distinct architecture trained alone with the same loop, data and seed, in
    ``OUT/baseline`` (one architecture) or ``OUT/baseline/<i>-<arch>``."""
    distinct = list(dict.fromkeys(archs))
    entries = {}
    for index, arch in enumerate(distinct):
        folder = options.out_dir / BASELINE_DIR
        if len(distinct) > 1:
            folder = folder / f"{index}-{_slug(arch)}"
        baseline_options = RunOptions(
            folder,
            overwrite=not (options.resume and (folder / RESUME_FILE).exists()),
            resume=options.resume and (folder / RESUME_FILE).exists(),
            quiet=options.quiet,
        )
        model, result = _train_alone(arch, config, train_set, sets, baseline_options, dist=dist,
                                     device=device)  # fmt: skip
        relative = folder.relative_to(options.out_dir) / "model.pt"
        entries[arch] = {
            **_entry(model, sets, device=device, path=str(relative)),
            "wall_seconds": round(result.wall_seconds, 3),
            "cpu_seconds": round(result.cpu_seconds, 3),
        }
    return entries


def _train_alone(
    arch: str,
    config: OnlineConfig,
    train_set: ImageDataset,
    sets: dict[str, ImageDataset],
    options: RunOptions,
    *,
    dist: DistInfo,
    device: Any,
) -> tuple[ImageClassifier, TrainResult]:
    """``arch`` trained with cross-entropy alone: the vanilla network of the comparison."""
    seed_everything(config.seed, deterministic=config.trainer.deterministic)
    mean, std = dataset_statistics(train_set)
    model = _network(arch, config, train_set, mean, std)
    baseline = BaselineConfig(
        arch=arch,
        arch_kwargs=dict(config.arch_kwargs),
        dataset=config.dataset,
        validation_fraction=config.validation_fraction,
        seed=config.seed,
        trainer=config.trainer,
    )
    if dist.is_main:
        options.out_dir.mkdir(parents=True, exist_ok=True)
    result = run_training(
        Supervised(model),
        loader_source(train_set, config.trainer, seed=config.seed, dist=dist),
        eval_set=sets["validation"],
        trainer_config=config.trainer,
        config=baseline,
        options=options,
        device=device,
        dist=dist,
        description=f"baseline {arch} alone",
    )
    return model, result


def _slug(arch: str) -> str:
    return "".join(c if c.isalnum() or c in "-_" else "-" for c in arch)
