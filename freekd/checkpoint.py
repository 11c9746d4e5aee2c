"""Self-describing checkpoints (DESIGN.md, "Checkpoint format").

A ``model.pt`` holds only tensors and plain Python values, so it loads with
``torch.load(path, weights_only=True)`` and never unpickles code::

    {"format": "freekd/1", "arch": NAME, "arch_kwargs": {...}, "num_classes": K,
     "input": {"shape": [C, H, W], "mean": [...], "std": [...]},
     "state_dict": {...}, "config": {...}, "freekd_version": "..."}

The state_dict is the bare network's (``ImageClassifier.net``), saved from the unwrapped module
(no ``module.`` or ``_orig_mod.`` prefixes), so it also loads as a plain state_dict with ``--arch``.
"""

from __future__ import annotations

import pickle
import zipfile
from pathlib import Path
from typing import Any

import torch

from freekd import __version__
from freekd.errors import FreekdError
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
    """Whether ``path`` is a TorchScript archive (a zip holding a ``code/`` folder)."""
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
    if is_torchscript(Path(path)):
        raise FreekdError(f"{path} is a TorchScript file, not a freekd checkpoint")
    data = safe_torch_load(Path(path))
    if not is_freekd_checkpoint(data):
        raise FreekdError(
            f"{path} is not a freekd checkpoint (no 'format': '{FORMAT}' entry); "
            "for a plain state_dict pass --arch and --input-shape"
        )
    missing = [key for key in REQUIRED_KEYS if key not in data]
    if missing:
        raise FreekdError(f"{path} is a damaged freekd checkpoint: missing {', '.join(missing)}")
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
        FreekdError: an import-path ``arch`` without ``trust_code``, or weights that do not fit.
    """
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


def load_model(
    path: str | Path, *, device: str = "cpu", trust_code: bool = False
) -> ImageClassifier:
    """Load a freekd checkpoint as an eval-mode module that takes (B, C, H, W) images in [0, 1].

    ``trust_code=True`` is needed for a checkpoint whose ``arch`` is an import path (a user class):
    building it imports and runs that code.
    """
    data = read_checkpoint(Path(path))
    model = model_from_checkpoint(data, source=f"checkpoint {path}", trust_code=trust_code)
    check_model(model, input_shape=model.input_shape, num_classes=model.num_classes)
    return model.to(device).eval()
