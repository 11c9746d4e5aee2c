"""``freekd eval`` and ``freekd info``: a model's accuracy, and what a checkpoint holds."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from freekd.checkpoint import (
    check_checkpoint,
    check_weights_fit,
    is_torchscript,
    names_code,
    read_checkpoint,
    safe_torch_load,
)
from freekd.config import TeacherSourceConfig
from freekd.crossmodal.clip import FORMAT as CLIP_FORMAT
from freekd.crossmodal.clip import check_clip_file
from freekd.crossmodal.towers import FORMAT as TOWER_FORMAT
from freekd.crossmodal.towers import check_tower_file
from freekd.data import load_dataset
from freekd.errors import FreekdError
from freekd.teachers import load_teacher
from freekd.teachers.ensemble import ENSEMBLE_FORMAT, check_ensemble_file
from freekd.train import (
    evaluate,
    resolve_device,
)
from freekd.train.evaluate import check_input_shape


def run_eval(
    model: TeacherSourceConfig,
    dataset: str,
    *,
    data_root: str | None = None,
    device: str = "auto",
    batch_size: int = 512,
    trust_code: bool = False,
) -> dict[str, Any]:
    """``freekd eval``: accuracy of any loadable model (the four kinds of teacher file)."""
    if isinstance(batch_size, bool) or not isinstance(batch_size, int) or batch_size < 1:
        raise FreekdError(f"--batch-size must be a positive integer, got {batch_size!r}")
    data = load_dataset(dataset, default_split="test", root=Path(data_root) if data_root else None)
    loaded = load_teacher(model, trust_code=trust_code, flag="--model")
    check_input_shape(data, loaded.input_shape, who=f"model {model.path}")
    if data.num_classes > loaded.num_classes:
        raise FreekdError(
            f"{data.name} has {data.num_classes} classes but model {model.path} "
            f"has {loaded.num_classes}; evaluate on matching data"
        )
    torch_device = resolve_device(device)
    result = evaluate(loaded.to(torch_device), data, device=torch_device, batch_size=batch_size)
    return {
        "accuracy": result["accuracy"],
        "n": int(result["n"]),
        "loss": result["loss"],
        "dataset": data.name,
        "model": model.path,
    }


def describe_checkpoint(path: Path) -> dict[str, Any]:
    """``freekd info``: what a checkpoint holds (metadata, parameter count, embedded config).

    Every field is checked first, and the weights against their stored SHA-256:
    ``weights_checksum`` is ``"verified"``, or ``"none"`` for a file written before checksums.
    """

    if is_torchscript(Path(path)):
        raise FreekdError(
            f"{path} is a TorchScript file: it holds no freekd metadata to show; give it as a "
            "teacher or to freekd eval --model with --input-shape C,H,W"
        )
    raw = safe_torch_load(Path(path), what="checkpoint")
    if isinstance(raw, dict) and raw.get("format") == ENSEMBLE_FORMAT:
        return _describe_ensemble(raw, Path(path))
    if isinstance(raw, dict) and raw.get("format") in (CLIP_FORMAT, TOWER_FORMAT):
        check = check_clip_file if raw["format"] == CLIP_FORMAT else check_tower_file
        verified = check(raw, source=str(path))
        return {  # cross-modal files: a CLIP, or one encoder tower
            "format": raw["format"],
            "model": raw.get("model_config") or raw.get("tower"),
            "parameters": sum(int(v.numel()) for v in raw["state_dict"].values()),
            "weights_checksum": "verified" if verified else "none",
            "freekd_version": raw.get("freekd_version"),
            "config": raw.get("config") or {},
        }
    if isinstance(raw, dict) and str(raw.get("format", "")).startswith("freekd-graph/"):
        return _describe_graph(raw, Path(path))
    data = read_checkpoint(path)
    verified = check_checkpoint(data, source=str(path))
    check_weights_fit(data, source=str(path))
    parameters = sum(
        int(v.numel())
        for k, v in data["state_dict"].items()
        if not k.endswith(("running_mean", "running_var", "num_batches_tracked"))
    )
    return {
        "format": data["format"],
        "arch": data["arch"],
        "arch_names_code": names_code(data["arch"], data["arch_kwargs"]),  # needs --trust-code
        "arch_kwargs": data["arch_kwargs"],
        "num_classes": data["num_classes"],
        "input": data["input"],
        "parameters": parameters,
        "weights_checksum": "verified" if verified else "none",
        "freekd_version": data.get("freekd_version"),
        "config": data.get("config") or {},
        "batchnorm_replacement": data.get("batchnorm_replacement"),
        "privacy": data.get("privacy"),
    }


def _describe_graph(raw: dict[str, Any], path: Path) -> dict[str, Any]:
    """``freekd info`` of a graph checkpoint (``freekd graph``), every field checked first."""
    from freekd.graph.models import checked_graph_mapping

    data = checked_graph_mapping(raw, path=path)
    graph = data["graph"]
    return {
        "format": data["format"],
        "model": {
            "arch": data["arch"],
            "arch_kwargs": data["arch_kwargs"],
            "in_features": data["in_features"],
            "num_classes": data["num_classes"],
        },
        "parameters": sum(int(v.numel()) for v in data["state_dict"].values()),
        "weights_checksum": "verified",
        "freekd_version": data.get("freekd_version"),
        "config": data.get("config") or {},
        "trained_on": f"{graph['dataset']}, {graph['setting']}"
        + (
            f" ({int(graph['held_out'].numel())} test nodes held out)"
            if graph["held_out"].numel()
            else ""
        ),
    }


def _describe_ensemble(raw: dict[str, Any], path: Path) -> dict[str, Any]:
    """``freekd info`` of a PATE teacher ensemble (``teachers.pt``), every field checked first."""
    verified = check_ensemble_file(raw, source=str(path))
    member = raw["member"]
    config = raw.get("config") or {}
    return {
        "format": raw["format"],
        "model": {"teachers": raw["teachers"]}
        | {key: member.get(key) for key in ("arch", "arch_kwargs", "num_classes", "input")},
        "arch_names_code": names_code(member["arch"], member.get("arch_kwargs") or {}),
        "parameters": sum(int(v.numel()) for v in raw["state_dict"].values()),
        "weights_checksum": "verified" if verified else "none",
        "freekd_version": raw.get("freekd_version"),
        "config": config,
        "trained_on": config.get("dataset"),
    }
