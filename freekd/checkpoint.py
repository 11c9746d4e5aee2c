"""Self-describing checkpoints (DESIGN.md, "Checkpoint format").

A ``model.pt`` holds only tensors and plain Python values, so it loads with
``torch.load(path, weights_only=True)`` and never unpickles code::

    {"format": "freekd/1", "arch": NAME, "arch_kwargs": {...}, "num_classes": K,
     "input": {"shape": [C, H, W], "mean": [...], "std": [...]},
     "state_dict": {...}, "weights_sha256": "...", "config": {...}, "freekd_version": "..."}

The state_dict is the bare network's (``ImageClassifier.net``), saved from the unwrapped module
(no ``module.`` or ``_orig_mod.`` prefixes), so it also loads as a plain state_dict with ``--arch``.
``weights_sha256`` (see :func:`weights_checksum`) lets a load tell corrupt weights from trained
ones; files written before it existed load without the check. Every field is checked for type
and range (:func:`check_checkpoint`) before any of it is used.
"""

from __future__ import annotations

import hashlib
import json
import math
import pickle
import zipfile
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import torch

from freekd import __version__
from freekd.config import is_import_path
from freekd.errors import FreekdError, check_path_argument, check_regular_file
from freekd.io import atomic_write
from freekd.models import (
    ImageClassifier,
    build_model,
    check_model,
    check_trusted_arch,
    replace_batchnorm,
)

FORMAT = "freekd/1"
REQUIRED_KEYS = ("format", "arch", "arch_kwargs", "num_classes", "input", "state_dict")


def checkpoint_dict(
    model: ImageClassifier, *, config: dict[str, Any], privacy: dict[str, Any] | None = None
) -> dict[str, Any]:
    """The checkpoint mapping for ``model`` with the run's resolved ``config`` embedded.

    ``privacy`` is the training run's privacy record (a DP-SGD teacher's (ε, δ) and mechanism):
    every model distilled from this one alone inherits it as post-processing.
    """
    metadata = model.metadata()
    # Keys are saved as the bare network's, even when ``net`` is wrapped (DDP, torch.compile).
    state_dict = {
        _strip_prefixes(key): value.detach().cpu().clone()
        for key, value in model.net.state_dict().items()
    }
    extra: dict[str, Any] = {}
    if "batchnorm_replacement" in metadata:
        extra["batchnorm_replacement"] = metadata["batchnorm_replacement"]
    if privacy is not None:
        extra["privacy"] = privacy
    return {
        **extra,
        "format": FORMAT,
        "arch": metadata["arch"],
        "arch_kwargs": metadata["arch_kwargs"],
        "num_classes": metadata["num_classes"],
        "input": metadata["input"],
        "state_dict": state_dict,
        CHECKSUM_KEY: weights_checksum(state_dict),
        "config": config,
        "freekd_version": __version__,
    }


def save_checkpoint(
    path: Path,
    model: ImageClassifier,
    *,
    config: dict[str, Any],
    privacy: dict[str, Any] | None = None,
) -> None:
    """Atomically write ``model`` as a freekd checkpoint."""
    data = checkpoint_dict(model, config=config, privacy=privacy)
    atomic_write(Path(path), lambda stream: torch.save(data, stream))


def is_torchscript(path: Path) -> bool:
    """Whether ``path`` is a TorchScript archive (a zip holding a ``code/`` folder); never for a
    device or pipe, which opening would read forever or block on (the loader refuses them)."""
    if not Path(path).is_file():
        return False
    try:
        with zipfile.ZipFile(path) as archive:
            return any("/code/" in name or name.startswith("code/") for name in archive.namelist())
    except (zipfile.BadZipFile, OSError):
        return False


def safe_torch_load(path: Path, *, what: str = "checkpoint") -> Any:
    """``torch.load(weights_only=True)`` with one-line errors for missing, corrupt or pickled files.

    Raises:
        FreekdError: the file is missing, is not a torch file, or holds pickled Python objects
            (which only ``trust_pickle`` may load, because unpickling runs code).
    """
    path = Path(path)
    if not path.exists():
        raise FreekdError(f"{what} {path} does not exist; check the path")
    if path.is_dir():
        raise FreekdError(f"{what} {path} is a directory; pass the model.pt file inside it")
    check_regular_file(path, what)

    def not_torch(detail: str) -> FreekdError:
        return FreekdError(
            f"{what} {path} is not a readable torch file ({detail}); expected a freekd "
            "checkpoint, a TorchScript file or a state_dict"
        )

    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as error:
        # The weights-only unpickler rejects random bytes and text too; only a real pickle
        # (a torch zip archive, a stream starting with the PROTO opcode, or one naming a global)
        # holds objects.
        if "Unsupported global" not in str(error) and not _is_pickle_container(path):
            raise not_torch("neither a torch archive nor a pickle") from None
        raise FreekdError(
            f"{what} {path} holds pickled Python objects (e.g. a whole nn.Module) and loading "
            "it would run code from the file; re-save it as a state_dict and pass --arch, "
            "or pass --trust-pickle if you trust its author"
        ) from None
    except Exception as error:  # a corrupt file makes the unpickler raise anything (KeyError ...)
        if is_torchscript(path):  # where TorchScript is read, the caller checks for it first
            raise FreekdError(
                f"{what} {path} is a TorchScript file, which is not read here; give the freekd "
                f"{what} (TorchScript is read as a teacher or a --model to evaluate)"
            ) from None
        detail = "corrupt pickle data" if isinstance(error, LookupError) else _first_line(error)
        raise not_torch(detail) from None


def _is_pickle_container(path: Path) -> bool:
    try:
        with path.open("rb") as stream:
            first = stream.read(1)
    except OSError:
        return False
    return first == b"\x80" or zipfile.is_zipfile(path)


def _first_line(error: BaseException) -> str:
    lines = str(error).strip().splitlines()
    return lines[0][:200] if lines else type(error).__name__


def read_checkpoint(path: Path) -> dict[str, Any]:
    """Load and validate a freekd checkpoint mapping (tensors on CPU)."""
    return _checked_mapping(_read_file(Path(path)), Path(path))


def _checked_mapping(data: Any, path: Path) -> dict[str, Any]:
    if isinstance(data, dict) and str(data.get("format", "")).startswith("freekd-graph/"):
        raise FreekdError(
            f"{path} is a graph checkpoint (freekd graph), not an image classifier; load it "
            "with freekd.load_model in Python, or distill it with freekd graph distill"
        )
    if not is_freekd_checkpoint(data):
        raise FreekdError(
            f"{path} is not a freekd checkpoint (no 'format': '{FORMAT}' entry); "
            "for a plain state_dict pass --arch and --input-shape"
        )
    check_checkpoint(data, source=str(path))
    return data  # type: ignore[no-any-return]


def is_freekd_checkpoint(data: Any) -> bool:
    """Whether a loaded object is a freekd checkpoint mapping."""
    return isinstance(data, dict) and data.get("format") == FORMAT


def model_from_checkpoint(
    data: dict[str, Any], *, source: str = "checkpoint", trust_code: bool = False
) -> ImageClassifier:
    """Rebuild the ``ImageClassifier`` a checkpoint mapping describes, weights loaded, eval mode.

    Args:
        data: the checkpoint mapping (:func:`read_checkpoint`).
        source: where it came from, for messages.
        trust_code: build an ``arch`` that is an import path (``package.module:Class``). A file
            must never choose code to run, so only the user's explicit ``--trust-code`` sets it.

    Raises:
        FreekdError: a damaged field (see :func:`check_checkpoint`), corrupt weights, an
            import-path ``arch`` without ``trust_code``, or weights that do not fit.
    """
    check_checkpoint(data, source=source)
    check_trusted_arch(data["arch"], source=source, trust_code=trust_code)
    shape = tuple(int(v) for v in data["input"]["shape"])
    if len(shape) != 3:
        raise FreekdError(f"{source}: input shape {list(shape)} is not [C, H, W]")
    net = build_model(
        data["arch"],
        num_classes=int(data["num_classes"]),
        input_shape=shape,  # type: ignore[arg-type]
        arch_kwargs=dict(data["arch_kwargs"]),
        trust_code=trust_code,
    )
    replacement = data.get("batchnorm_replacement")
    if replacement is not None:
        net = replace_batchnorm(net, str(replacement))
    load_state_dict_checked(net, data["state_dict"], arch=data["arch"], source=source)
    model = ImageClassifier(
        net,
        arch=data["arch"],
        arch_kwargs=dict(data["arch_kwargs"]),
        num_classes=int(data["num_classes"]),
        input_shape=shape,  # type: ignore[arg-type]
        mean=list(data["input"]["mean"]),
        std=list(data["input"]["std"]),
        batchnorm_replacement=None if replacement is None else str(replacement),
    )
    return model.eval()


def load_state_dict_checked(
    net: torch.nn.Module, state_dict: Any, *, arch: str, source: str
) -> None:
    """``net.load_state_dict(strict=True)`` with a one-line error naming what does not fit."""
    if not isinstance(state_dict, dict) or not all(
        isinstance(v, torch.Tensor) for v in state_dict.values()
    ):
        raise FreekdError(f"{source} does not hold a state_dict of tensors")
    state_dict = {_strip_prefixes(key): value for key, value in state_dict.items()}
    try:
        net.load_state_dict(state_dict, strict=True)
    except RuntimeError as error:
        own = net.state_dict()
        missing = sorted(set(own) - set(state_dict))
        unexpected = sorted(set(state_dict) - set(own))
        mismatched = [
            f"{key} {list(state_dict[key].shape)} vs {list(own[key].shape)}"
            for key in own
            if key in state_dict and state_dict[key].shape != own[key].shape
        ]
        parts = []
        if missing:
            parts.append(f"missing {_few(missing)}")
        if unexpected:
            parts.append(f"unexpected {_few(unexpected)}")
        if mismatched:
            parts.append(f"shape mismatch {_few(mismatched)}")
        detail = "; ".join(parts) or _first_line(error)
        raise FreekdError(
            f"the weights in {source} do not fit --arch {arch} ({detail}); "
            "check --arch, --arch-kwargs, --input-shape and --num-classes"
        ) from None


def _few(items: list[str], limit: int = 3) -> str:
    shown = ", ".join(items[:limit])
    return shown + (f" and {len(items) - limit} more" if len(items) > limit else "")


def _strip_prefixes(key: str) -> str:
    for prefix in ("module.", "_orig_mod.", "_module."):  # DDP, torch.compile, Opacus
        while key.startswith(prefix):
            key = key[len(prefix) :]
    return key


# Validating what a file holds ------------------------------------------------------------------
# Everything read from a checkpoint is checked for type and range in one place before any of it
# is used, so a damaged or hand-edited file fails in one line naming the bad field instead of a
# traceback deep inside model building.

CHECKSUM_KEY = "weights_sha256"


def weights_checksum(state_dict: Mapping[str, Any]) -> str:
    """SHA-256 over a state_dict's tensors in key order: each key, dtype and shape, then bytes.

    Stored as ``weights_sha256`` next to the weights and compared on load, so that a file whose
    tensor bytes were flipped (disk or transfer corruption) is refused instead of evaluating
    at chance without a word.
    """
    digest = hashlib.sha256()
    for key, value in state_dict.items():
        tensor = value.detach().cpu().contiguous()
        header = json.dumps([str(key), str(tensor.dtype), list(tensor.shape)]).encode()
        digest.update(len(header).to_bytes(8, "little") + header)
        digest.update(tensor.reshape(-1).view(torch.uint8).numpy().tobytes())
    return digest.hexdigest()


def verify_weights(data: Mapping[str, Any], *, source: str, key: str = "state_dict") -> bool:
    """Compare ``data[key]`` (a checked state_dict) with its stored checksum, then refuse NaN
    weights (a file without a checksum may still be corrupt, and no trained model holds NaN).

    Returns:
        ``True`` when verified, ``False`` when the file has no checksum (written before
        checksums were stored).

    Raises:
        FreekdError: the checksum is malformed or does not match the weights, or a weight
            holds NaN.
    """
    stored = data.get(CHECKSUM_KEY)
    if stored is not None and (not isinstance(stored, str) or len(stored) != 64):
        raise damaged(source, CHECKSUM_KEY, stored, "a SHA-256 hex digest")
    if stored is not None and weights_checksum(data[key]) != stored.lower():
        raise FreekdError(
            f"the weights in {source} do not match their checksum: the file is corrupt; "
            "re-download or retrain it"
        )
    for name, tensor in data[key].items():
        if tensor.is_floating_point() and bool(torch.isnan(tensor).any()):
            raise FreekdError(
                f"the weights in {source} hold NaN ({key}[{name!r}]): the file is corrupt or "
                "the model diverged; re-download or retrain it"
            )
    return stored is not None


def damaged(source: str, field: str, value: Any, expected: str) -> FreekdError:
    """The one-line error for a field of a file that has the wrong type or value."""
    shown = repr(value)
    shown = shown if len(shown) <= 60 else shown[:57] + "..."
    return FreekdError(
        f"{source} is damaged: {field} is {shown}, expected {expected}; re-download or "
        "re-save the file with freekd"
    )


def check_required(data: Mapping[str, Any], keys: Sequence[str], *, source: str, kind: str) -> None:
    """A one-line error naming the keys of ``keys`` that a file's mapping lacks."""
    missing = [key for key in keys if key not in data]
    if missing:
        raise FreekdError(f"{source} is a damaged {kind}: missing {', '.join(missing)}")


def check_positive_int(source: str, field: str, value: Any, expected: str) -> None:
    """A one-line error unless ``value`` is an int ≥ 1 (not a bool)."""
    if not _is_int(value) or value < 1:
        raise damaged(source, field, value, expected)


def _is_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _is_number(value: Any) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool) and math.isfinite(value)


def check_mapping(source: str, field: str, value: Any, *, optional: bool = False) -> None:
    """``value`` is a dict with string keys (or ``None`` when ``optional``)."""
    if optional and value is None:
        return
    if not isinstance(value, dict) or not all(isinstance(key, str) for key in value):
        raise damaged(source, field, value, "a mapping with string keys")


def check_numbers(
    source: str, field: str, value: Any, *, lengths: tuple[int, ...], positive: bool = False
) -> None:
    """``value`` is a list of finite numbers (positive ones if asked) of one of ``lengths``."""
    wanted = " or ".join(str(n) for n in sorted(set(lengths)))
    if (
        not isinstance(value, list | tuple)
        or len(value) not in lengths
        or not all(_is_number(item) and (item > 0 or not positive) for item in value)
    ):
        kind = "positive numbers" if positive else "finite numbers"
        raise damaged(source, field, value, f"a list of {wanted} {kind}")


def check_state_dict(source: str, field: str, value: Any) -> None:
    """``value`` is a non-empty mapping of string names to tensors."""
    if not isinstance(value, dict) or not value:
        raise damaged(source, field, value, "a mapping of parameter names to tensors")
    for key, tensor in value.items():
        if not isinstance(key, str):
            raise damaged(source, f"a key of {field}", key, "a parameter name")
        if not isinstance(tensor, torch.Tensor):
            raise damaged(source, f"{field}[{key!r}]", tensor, "a tensor")


def check_model_metadata(data: Mapping[str, Any], *, source: str, prefix: str = "") -> None:
    """The model description of a checkpoint (or of a ``teachers.pt`` member): ``arch``,
    ``arch_kwargs``, ``num_classes``, ``input`` and ``batchnorm_replacement``."""
    if not isinstance(data, dict):
        raise damaged(source, prefix.rstrip(".") or "the checkpoint", data, "a mapping")
    for key in ("arch", "num_classes", "input"):
        if key not in data:
            raise FreekdError(
                f"{source} is damaged: {prefix}{key} is missing; re-download or re-save the "
                "file with freekd"
            )
    if not isinstance(data["arch"], str) or not data["arch"].strip():
        raise damaged(source, f"{prefix}arch", data["arch"], "an architecture name")
    check_mapping(source, f"{prefix}arch_kwargs", data.get("arch_kwargs"), optional=True)
    if not _is_int(data["num_classes"]) or data["num_classes"] < 1:
        raise damaged(source, f"{prefix}num_classes", data["num_classes"], "a positive integer")
    description = data["input"]
    check_mapping(source, f"{prefix}input", description)
    for key in ("shape", "mean", "std"):
        if key not in description:
            raise FreekdError(
                f"{source} is damaged: {prefix}input.{key} is missing; re-download or re-save "
                "the file with freekd"
            )
    shape = description["shape"]
    if (
        not isinstance(shape, list | tuple)
        or len(shape) != 3
        or not all(_is_int(size) and size > 0 for size in shape)
    ):
        raise damaged(source, f"{prefix}input.shape", shape, "[C, H, W] of positive integers")
    lengths = (1, shape[0])
    check_numbers(source, f"{prefix}input.mean", description["mean"], lengths=lengths)
    check_numbers(source, f"{prefix}input.std", description["std"], lengths=lengths, positive=True)
    replacement = data.get("batchnorm_replacement")
    if replacement is not None and not isinstance(replacement, str):
        raise damaged(source, f"{prefix}batchnorm_replacement", replacement, "a name or None")


def check_privacy_record(source: str, record: Any) -> None:
    """A checkpoint's ``privacy`` record, if any: a mapping with a non-negative ε (∞ allowed),
    a δ in [0, 1) and, if given, a data-independent ε and a kind name."""
    if record is None:
        return
    check_mapping(source, "privacy", record)
    for key in ("epsilon", "delta", "data_independent_epsilon"):
        value = record.get(key)
        if value is None and key == "data_independent_epsilon":
            continue
        is_real = isinstance(value, int | float) and not isinstance(value, bool)
        if not is_real or math.isnan(value) or value < 0 or (key == "delta" and value >= 1):
            expected = "a number in [0, 1)" if key == "delta" else "a non-negative number"
            raise damaged(source, f"privacy.{key}", value, expected)
    if record.get("kind") is not None and not isinstance(record["kind"], str):
        raise damaged(source, "privacy.kind", record["kind"], "a name")


def check_checkpoint(data: Mapping[str, Any], *, source: str) -> bool:
    """Check every field of a ``freekd/1`` mapping and its weights' checksum.

    Returns:
        Whether the weights were verified against a stored checksum (``False``: the file
        predates checksums).

    Raises:
        FreekdError: a missing field, a field of the wrong type or range (named), or weights
            that do not match their checksum.
    """
    check_required(data, REQUIRED_KEYS, source=source, kind="freekd checkpoint")
    check_model_metadata(data, source=source)
    check_mapping(source, "arch_kwargs", data["arch_kwargs"])
    check_state_dict(source, "state_dict", data["state_dict"])
    check_mapping(source, "config", data.get("config"), optional=True)
    check_privacy_record(source, data.get("privacy"))
    version = data.get("freekd_version")
    if version is not None and not isinstance(version, str):
        raise damaged(source, "freekd_version", version, "a version string")
    return verify_weights(data, source=source)


def check_weights_fit(data: Mapping[str, Any], *, source: str) -> None:
    """What :func:`model_from_checkpoint` would refuse, without allocating or importing anything
    (``freekd info``): the architecture is built on the meta device, so its name, sizes and
    arguments are checked and its weights' names and shapes compared with the file's. An
    import-path ``arch`` (a user class) is not built: that would run its code.

    Raises:
        FreekdError: ``build_model`` refuses the metadata, an unknown BatchNorm replacement, or
            weights that do not fit the architecture.
    """
    if names_code(data["arch"], data["arch_kwargs"]):
        return
    with torch.device("meta"):
        net = build_model(
            data["arch"],
            num_classes=int(data["num_classes"]),
            input_shape=tuple(int(v) for v in data["input"]["shape"]),  # type: ignore[arg-type]
            arch_kwargs=dict(data["arch_kwargs"]),
        )
        if data.get("batchnorm_replacement") is not None:
            net = replace_batchnorm(net, str(data["batchnorm_replacement"]))
    fits = (
        f"{data['arch']} with {data['arch_kwargs']}, {data['num_classes']} classes and input "
        f"{data['input']['shape']}"
    )
    check_weight_shapes(net, data["state_dict"], source=source, fits=fits)


def names_code(arch: Any, arch_kwargs: Any) -> bool:
    """Whether an architecture, or a member it builds (``mean-ensemble``'s members,
    ``branched``'s base), is an import path: building it would run that code."""
    stack = [arch, arch_kwargs]
    while stack:
        node = stack.pop()
        if isinstance(node, dict | list):
            stack.extend(node.values() if isinstance(node, dict) else node)
        elif is_import_path(node):
            return True
    return False


def check_weight_shapes(
    skeleton: torch.nn.Module, state_dict: Mapping[str, Any], *, source: str, fits: str
) -> None:
    """Refuse weights whose names and shapes differ from ``skeleton``'s (built on the meta
    device from the file's metadata), before anything of their size is allocated."""
    expected = {key: tuple(value.shape) for key, value in skeleton.state_dict().items()}
    given = {key: tuple(value.shape) for key, value in state_dict.items()}
    if expected != given:
        raise FreekdError(f"{source} is damaged: its weights do not fit {fits}")


def load_model(
    path: str | Path, *, device: str = "cpu", trust_code: bool = False
) -> ImageClassifier:
    """Load a freekd checkpoint as an eval-mode module that takes (B, C, H, W) images in [0, 1].

    ``trust_code=True`` is needed for a checkpoint whose ``arch`` is an import path (a user class):
    building it imports and runs that code. A graph checkpoint is refused in one line here
    (:func:`load_any_model` loads both kinds).
    """
    check_path_argument(path, "path")
    _check_device(device)
    return _image_model(_read_file(Path(path)), Path(path), device=device, trust_code=trust_code)


def _check_device(device: Any) -> None:
    try:
        torch.device(device)
    except (RuntimeError, TypeError):
        raise FreekdError(f"{device!r} is not a device; use cpu, cuda, cuda:N or mps") from None


def _read_file(path: Path) -> Any:
    """A checkpoint file's contents (``weights_only``), TorchScript refused in one line."""
    if is_torchscript(path):
        raise FreekdError(f"{path} is a TorchScript file, not a freekd checkpoint")
    return safe_torch_load(path)


def _image_model(loaded: Any, path: Path, *, device: str, trust_code: bool) -> ImageClassifier:
    """The eval-mode classifier of a loaded ``freekd/1`` mapping, every field checked first."""
    data = _checked_mapping(loaded, path)
    model = model_from_checkpoint(data, source=f"checkpoint {path}", trust_code=trust_code)
    check_model(model, input_shape=model.input_shape, num_classes=model.num_classes)
    return model.to(device).eval()


def load_any_model(path: str | Path, *, device: str = "cpu", trust_code: bool = False) -> Any:
    """What ``freekd.load_model`` returns: an image classifier (:func:`load_model`), or for a
    graph checkpoint (``freekd graph``) its node classifier, which takes node features and, for a
    GNN, the graph (``freekd.graph.models.GraphNetwork``)."""
    from freekd.graph.models import graph_model_from_mapping, is_graph_checkpoint

    check_path_argument(path, "path")
    _check_device(device)
    loaded = _read_file(Path(path))  # read once, whichever kind it is
    if is_graph_checkpoint(loaded):
        return graph_model_from_mapping(loaded, path=Path(path)).to(device)
    return _image_model(loaded, Path(path), device=device, trust_code=trust_code)
