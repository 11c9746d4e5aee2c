"""An open_clip CLIP built from a model config, taking images in [0, 1] of any size.

open_clip's ``CLIP`` (Radford et al. 2021, arXiv:2103.00020 §2.3–2.4: an image tower and a text
tower projected into one embedding space, trained with a learnable temperature) is built from
the same ``embed_dim`` / ``vision_cfg`` / ``text_cfg`` mapping as open_clip's JSON model configs,
and its BPE tokenizer (shipped inside open-clip-torch) is used as is. :class:`ClipModel` owns the
image preparation — resize to the tower's input size, grey to three channels, normalization —
so that, like every freekd model, it takes [0, 1] pixels. Checkpoints are self-describing
(``freekd-clip/1``) and load with ``torch.load(weights_only=True)``; every field is checked for
type before use (:func:`check_clip_file`) and the weights against their stored SHA-256.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from freekd.errors import FreekdError
from freekd.io import atomic_write
from freekd.models import build_within_memory
from freekd.models.classifier import check_normalization

FORMAT = "freekd-clip/1"
#: CLIP's logit scale is clamped at 100 (Radford et al. 2021, §2.5): log 100.
MAX_LOG_SCALE = 4.6052


#: open_clip settings that load a model, tokenizer or weights from outside the config (a hub name
#: or a local path): a config read from a file must not reach outside it, and nothing is fetched.
_EXTERNAL_SETTINGS = {
    "vision_cfg": ("timm_model_pretrained",),
    "text_cfg": ("hf_model_name", "hf_tokenizer_name"),
}


def check_self_contained_tower(tower: str, settings: Any) -> None:
    """Refuse an open_clip tower config (``vision_cfg`` or ``text_cfg``) that reaches outside.

    Hugging Face models and tokenizers, pretrained timm weights, and timm names with a source
    prefix or a path (``hf-hub:...``, ``local-dir:/...``) load files or code from elsewhere; a
    timm architecture name alone is data and is allowed.
    """
    if not isinstance(settings, dict):
        raise FreekdError(f"model config needs a {tower} mapping (see open_clip's configs)")
    reaching = [key for key in _EXTERNAL_SETTINGS.get(tower, ()) if settings.get(key)]
    timm_name = settings.get("timm_model_name")
    if timm_name is not None and (
        not isinstance(timm_name, str) or ":" in timm_name or "/" in timm_name
    ):
        reaching.append("timm_model_name")
    if reaching:
        raise FreekdError(
            f"model config sets {tower}.{reaching[0]}, which loads a model or weights from "
            "outside the file; freekd builds CLIP towers from their config alone"
        )
    for key, (low, high) in _SIZES.items():  # open_clip asserts, or allocates, on others
        value = settings.get(key)
        if key == "layers" and isinstance(value, list | tuple) and value:  # a ResNet's stages
            value = max(value, key=lambda n: n if isinstance(n, int) else high + 1)
        if value is not None and (
            not isinstance(value, int) or isinstance(value, bool) or not low <= value <= high
        ):
            raise FreekdError(
                f"model config {tower}.{key} must be an integer in [{low:,}, {high:,}], got "
                f"{value!r}; fix it in --config or the file"
            )
    image, patch = settings.get("image_size", 224), settings.get("patch_size", 16)
    if (
        tower == "vision_cfg"
        and isinstance(image, int)
        and isinstance(patch, int)
        and patch > image
    ):
        raise FreekdError(
            f"model config vision_cfg.patch_size {patch} is larger than image_size {image}; "
            "fix it in --config or the file"
        )


#: The ranges of an open_clip tower's sizes freekd builds: context_length ≥ 2 holds the start
#: and end tokens, and vocab_size ≥ 49,408 holds every id of open_clip's BPE tokenizer.
_SIZES = {
    "layers": (1, 1_000), "width": (1, 65_536), "heads": (1, 1_024), "head_width": (1, 65_536),
    "patch_size": (1, 4_096), "image_size": (1, 4_096), "context_length": (2, 4_096),
    "vocab_size": (49_408, 10_000_000),
}  # fmt: skip


def _check_self_contained(model_config: Any) -> None:
    """Refuse an open_clip config that would load code, files or weights from elsewhere."""
    if not isinstance(model_config, dict):
        raise FreekdError(
            f"model config must be a mapping of embed_dim, vision_cfg and text_cfg, got "
            f"{type(model_config).__name__}"
        )
    for tower in _EXTERNAL_SETTINGS:
        check_self_contained_tower(tower, model_config.get(tower))
    embed = model_config.get("embed_dim")
    if not isinstance(embed, int) or isinstance(embed, bool) or not 1 <= embed <= 65_536:
        raise FreekdError(
            f"model config embed_dim must be an integer in [1, 65,536], got {embed!r}; fix it "
            "in --config or the file"
        )


class CaptionTokenizer:
    """open_clip's BPE tokenizer with a per-caption cache.

    Templated captions repeat (a few templates per class) and a user's own captions come back
    every epoch, so each distinct caption is encoded once; the ids are exactly open_clip's.
    The cache holds at most ``max_cached`` captions (about 600 bytes each at 77 tokens).
    """

    def __init__(self, context_length: int, max_cached: int = 1 << 16) -> None:
        import open_clip

        self.tokenizer = open_clip.SimpleTokenizer(context_length=context_length)
        self.max_cached = max_cached
        self.cache: dict[str, Tensor] = {}

    def __call__(self, texts: list[str]) -> Tensor:
        distinct = list(dict.fromkeys(texts))
        missing = [text for text in distinct if text not in self.cache]
        if len(self.cache) + len(missing) > self.max_cached:
            self.cache.clear()
            missing = distinct
        if missing:
            self.cache.update(zip(missing, self.tokenizer(missing), strict=True))
        return torch.stack([self.cache[text] for text in texts])


class ClipModel(nn.Module):
    """open_clip CLIP with its tokenizer and image preparation.

    Args:
        model_config: ``{"embed_dim", "vision_cfg", "text_cfg"}`` as in open_clip's JSON configs.
        mean: per-channel normalization of the (three-channel) input images.
        std: per-channel standard deviation.
    """

    mean: Tensor
    std: Tensor

    def __init__(
        self, model_config: dict[str, Any], *, mean: list[float], std: list[float]
    ) -> None:
        super().__init__()
        from open_clip.model import CLIP

        _check_self_contained(model_config)
        check_normalization(mean, std, fix="check mean and std (--set mean=[...] or the file)")
        if len(mean) not in (1, 3) or len(std) not in (1, 3):
            raise FreekdError(
                f"CLIP input normalization takes 1 or 3 values, got mean {list(mean)}, std "
                f"{list(std)}; check mean and std"
            )
        try:
            self.clip = build_within_memory(
                lambda: CLIP(**model_config),
                "the CLIP model",
                "check model (embed_dim, vision_cfg, text_cfg) in --config or the checkpoint",
            )
        except TypeError as error:
            raise FreekdError(
                f"model config is not an open_clip config ({error}); give embed_dim, "
                "vision_cfg and text_cfg"
            ) from None
        self.model_config = dict(model_config)
        self.image_size = int(model_config["vision_cfg"].get("image_size", 224))
        self.context_length = int(model_config["text_cfg"].get("context_length", 77))
        self.tokenizer = CaptionTokenizer(self.context_length)
        self.register_buffer("mean", torch.tensor(mean).view(1, -1, 1, 1), persistent=False)
        self.register_buffer("std", torch.tensor(std).view(1, -1, 1, 1), persistent=False)
        self.normalization = {"mean": list(mean), "std": list(std)}

    @property
    def embed_dim(self) -> int:
        return int(self.model_config["embed_dim"])

    def tokenize(self, texts: list[str]) -> Tensor:
        """(N, context_length) int64 token ids (open_clip's BPE; long captions are cut)."""
        return self.tokenizer(texts)  # type: ignore[no-any-return]

    def prepare(self, images: Tensor) -> Tensor:
        """[0, 1] images (B, 1 or 3, H, W) → the image tower's normalized (B, 3, S, S) input."""
        if images.shape[1] == 1:
            images = images.expand(-1, 3, -1, -1)
        if images.shape[-1] != self.image_size or images.shape[-2] != self.image_size:
            images = F.interpolate(
                images, size=(self.image_size, self.image_size), mode="bilinear",
                align_corners=False,
            )  # fmt: skip
        return (images - self.mean) / self.std

    def encode_image(self, images: Tensor) -> Tensor:
        """(B, embed_dim) image embeddings, not normalized."""
        return self.clip.encode_image(self.prepare(images))  # type: ignore[no-any-return]

    def encode_text(self, tokens: Tensor) -> Tensor:
        """(B, embed_dim) text embeddings, not normalized."""
        return self.clip.encode_text(tokens)  # type: ignore[no-any-return]

    def logit_scale(self) -> Tensor:
        """exp of the learnable log temperature, clamped at 100."""
        return self.clip.logit_scale.clamp(max=MAX_LOG_SCALE).exp()  # type: ignore[no-any-return]

    def tower_parameters(self) -> dict[str, int]:
        """Parameter counts of the image tower, the text tower and the whole model."""
        image = sum(p.numel() for p in self.clip.visual.parameters())
        total = sum(p.numel() for p in self.clip.parameters())
        return {"image": image, "text": total - image - 1, "total": total}


def save_clip(path: Path, model: ClipModel, *, config: dict[str, Any]) -> None:
    """Atomically write a self-describing CLIP checkpoint (``weights_only`` loadable)."""
    from freekd import __version__
    from freekd.checkpoint import CHECKSUM_KEY, weights_checksum

    state_dict = {k: v.detach().cpu().clone() for k, v in model.clip.state_dict().items()}
    data = {
        "format": FORMAT,
        "model_config": model.model_config,
        "normalization": model.normalization,
        "state_dict": state_dict,
        CHECKSUM_KEY: weights_checksum(state_dict),
        "config": config,
        "freekd_version": __version__,
    }
    atomic_write(Path(path), lambda stream: torch.save(data, stream))


def load_clip(path: Path, *, device: torch.device | str = "cpu") -> ClipModel:
    """A :class:`ClipModel` from a ``freekd-clip/1`` file, in eval mode.

    Raises:
        FreekdError: missing, unreadable or not a freekd CLIP checkpoint, or weights that do
            not fit its config.
    """
    from freekd.checkpoint import safe_torch_load

    data = safe_torch_load(Path(path), what="CLIP checkpoint")
    if not isinstance(data, dict) or data.get("format") != FORMAT:
        raise FreekdError(
            f"{path} is not a freekd CLIP checkpoint (no 'format': '{FORMAT}'); train one with "
            "freekd crossmodal teacher"
        )
    check_clip_file(data, source=str(path))
    try:
        model = ClipModel(data["model_config"], **data["normalization"])
    except FreekdError:
        raise
    except Exception as error:  # open_clip raises anything on a bad config value
        raise FreekdError(
            f"{path} is damaged: its model_config does not build a CLIP ({_first_line(error)}); "
            "re-download or retrain it"
        ) from None
    try:
        model.clip.load_state_dict(data["state_dict"])
    except RuntimeError as error:
        first = str(error).splitlines()[0]
        raise FreekdError(f"{path}: weights do not fit the saved model config ({first})") from None
    return model.to(device).eval()


def _first_line(error: BaseException) -> str:
    lines = [line.strip() for line in str(error).splitlines() if line.strip()]
    return lines[0][:200] if lines else type(error).__name__


def check_clip_file(data: dict[str, Any], *, source: str) -> bool:
    """Check the fields of a ``freekd-clip/1`` mapping and its weights' checksum.

    Returns:
        Whether the weights were verified against a stored checksum.

    Raises:
        FreekdError: a missing field or one of the wrong type (named), or corrupt weights.
    """
    from freekd.checkpoint import (
        check_mapping,
        check_numbers,
        check_positive_int,
        check_required,
        check_state_dict,
        damaged,
        verify_weights,
    )

    keys = ("model_config", "normalization", "state_dict")
    check_required(data, keys, source=source, kind="CLIP checkpoint")
    model_config = data["model_config"]
    check_mapping(source, "model_config", model_config)
    for key in ("vision_cfg", "text_cfg"):
        check_mapping(source, f"model_config.{key}", model_config.get(key))
    embed_dim = model_config.get("embed_dim")
    check_positive_int(source, "model_config.embed_dim", embed_dim, "a positive integer")
    normalization = data["normalization"]
    check_mapping(source, "normalization", normalization)
    if set(normalization) != {"mean", "std"}:
        raise damaged(source, "normalization", normalization, "{'mean': [...], 'std': [...]}")
    check_numbers(source, "normalization.mean", normalization["mean"], lengths=(1, 3))
    check_numbers(source, "normalization.std", normalization["std"], lengths=(1, 3), positive=True)
    check_state_dict(source, "state_dict", data["state_dict"])
    check_mapping(source, "config", data.get("config"), optional=True)
    return verify_weights(data, source=source)
