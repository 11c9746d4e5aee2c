"""CMI: Contrastive Model Inversion for Data-Free Knowledge Distillation (Fang et al. 2021,
arXiv:2105.08584)."""

from __future__ import annotations

import copy
from dataclasses import dataclass
from typing import Any, ClassVar

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from freekd.datafree.batches import MemoryBank, balanced_targets
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
    save_state,
    total,
)
from freekd.errors import FreekdError
from freekd.hooks import capture_input, eval_mode, last_linear
from freekd.losses.contrastive import info_nce
from freekd.seeding import seeded_scope
from freekd.teachers import Teacher


class ProjectionHead(nn.Module):
    """The instance discriminator's embedding h: teacher features → contrastive space.

    A two-layer MLP, Linear-ReLU-Linear (the SimCLR head, Chen et al. 2020 arXiv:2002.05709
    §2.1, which CMI §3.2 uses on top of the teacher). Embeddings are not normalized here;
    :func:`freekd.losses.contrastive.info_nce` compares them by cosine similarity.

    Args:
        in_features: D, the size of the teacher features.
        dim: hidden and output size.

    Shapes:
        (B, D) → (B, dim).
    """

    def __init__(self, *, in_features: int, dim: int) -> None:
        super().__init__()
        self.in_features = in_features
        self.hidden = nn.Linear(in_features, dim)
        self.output = nn.Linear(dim, dim)

    def forward(self, features: Tensor) -> Tensor:
        return self.output(F.relu(self.hidden(features)))


def local_view(images: Tensor, *, min_scale: float, flip: bool, rng: torch.Generator) -> Tensor:
    """CMI §3.2's local view: a random square crop of every image, resized back to (H, W).

    Per image, the crop's side is a fraction s ~ U[min_scale, 1] of the image's and its position
    is uniform inside the image; (if ``flip``) it is mirrored horizontally with probability ½.
    Bilinear resampling through ``affine_grid``/``grid_sample`` keeps the view differentiable
    with respect to ``images`` and its values in the input's range.

    Args:
        images: (B, C, H, W).
        min_scale: smallest side fraction of the crop, in (0, 1].
        flip: allow horizontal flips.
        rng: crop sizes, positions and flips come from it.

    Returns:
        (B, C, H, W) crops.
    """
    n = images.shape[0]
    scale = min_scale + (1 - min_scale) * torch.rand(n, generator=rng)
    shift = (2 * torch.rand((n, 2), generator=rng) - 1) * (1 - scale)[:, None]
    sign = torch.ones(n)
    if flip:
        sign = torch.where(torch.rand(n, generator=rng) < 0.5, -1.0, 1.0)
    # Sampling grid in [−1, 1] coordinates: x_in = s·x_out + t, so the crop covers [t − s, t + s].
    theta = torch.zeros((n, 2, 3))
    theta[:, 0, 0] = scale * sign
    theta[:, 1, 1] = scale
    theta[:, :, 2] = shift
    theta = theta.to(device=images.device, dtype=images.dtype)
    grid = F.affine_grid(theta, list(images.shape), align_corners=False)
    return F.grid_sample(images, grid, mode="bilinear", padding_mode="border", align_corners=False)


@SYNTHESIZERS.register("cmi")
@dataclass(kw_only=True, eq=False)
class CMI(BatchSynthesizer):
    """Model inversion with a contrastive term that keeps new samples apart from old ones (CMI).

    Fang et al. 2021 (IJCAI'21) observe that inversion collapses to similar images and make
    diversity an objective (§3.2): samples that are easy to tell apart from each other *and from
    everything synthesized before* are diverse. One ``synthesize`` call synthesizes one batch
    (§3):

    1. re-initialize the generator G(·; θ) and draw a fresh learnable latent code z (B, d) and
       balanced class targets y; draw up to ``contrast_negatives`` earlier images from the
       memory bank and take the teacher's features of them once;
    2. take ``iterations`` Adam steps on (θ, z) and on the projection head h for

           L = onehot_weight·L_oh(T(x), y) + bn_weight·L_bn(x)
               + adversarial_weight·(−JS(T(x), S(x))) + contrastive_weight·L_cr,
           x = G(z; θ),

       the teacher's cross-entropy on the targets, DeepInversion's BatchNorm-statistics
       regularizer (Yin et al. 2020, arXiv:1912.08795 Eq. 4), the adversarial term that seeks
       inputs where the student (in eval mode, as it currently is) disagrees with the teacher,
       and the contrastive term

           L_cr = InfoNCE(h(f(x)), h(f(local(x))); negatives h(f(x_bank))),

       where f is the teacher's penultimate feature (the input of its last ``nn.Linear``; the
       logits if it has none), local(x) a random crop of every image (the local view; the
       global view is the image itself), and positives are the two views of the same image: an
       instance discriminator that every other new image *and* every drawn bank image must fail
       to confuse (§3.2);
    3. store G(z; θ) in the memory bank that ``sample`` draws from and that later batches
       contrast against (the paper's data pool).

    The generator is re-initialized for every batch, so each batch is optimized from scratch as
    in the paper's batch-wise inversion (Fast, Fang et al. 2022, counts CMI among the methods
    that synthesize every batch independently); only the memory bank and the contrastive term
    link batches. The projection head is trained jointly with the generator and, unlike the
    generator, persists across batches (it is the instance discriminator of the whole pool).

    Deviations from the paper: the adversarial term is −JS rather than −KL (bounded, as in
    ``fast``); the negatives are a random subset of ``contrast_negatives`` bank images per batch
    (their teacher features computed once per batch) rather than the whole pool; targets are
    balanced over classes; local views are square crops with optional flips, without colour
    augmentation; far fewer iterations per batch by default (the paper runs thousands on CIFAR);
    the BatchNorm statistics are those of the current batch only; the generator is freekd's
    DCGAN ``Generator`` (sigmoid output in [0, 1]); the memory bank is bounded (FIFO,
    ``memory_size``); :meth:`reinitialize` (collapse recovery) is freekd's addition.

    Teacher queries: per iteration one forward of each view (2·B images), plus the bank
    negatives once per batch.

    Args:
        image_shape: (C, H, W) of the teacher's input.
        num_classes: the teacher's class count (targets are drawn from it).
        rng: generator and head initializations, latent codes, targets, crops and memory-bank
            draws all come from it.
        device: where the generator, head, latent code and memory bank live.
        batch_size: images per batch (BatchNorm statistics are batch statistics).
        iterations: Adam steps per batch.
        latent_dim: size of the latent code z.
        generator_width: channels of the generator's first feature map.
        lr: Adam learning rate of the generator weights θ.
        latent_lr: Adam learning rate of the latent code z.
        head_lr: Adam learning rate of the projection head.
        head_dim: hidden and output size of the projection head.
        temperature: InfoNCE temperature τ.
        local_min_scale: smallest side fraction of the local view's crop.
        flip: horizontal flips in the local view (off: digits are not mirror-symmetric).
        contrast_negatives: bank images drawn per batch as extra negatives (0: none).
        onehot_weight: weight of L_oh.
        bn_weight: weight of L_bn.
        adversarial_weight: weight of the adversarial term.
        contrastive_weight: β, weight of L_cr.
        memory_size: images kept in the memory bank.
    """

    needs_batchnorm = True
    taps_teacher = True
    # Many student steps per synthesized batch, as in the paper's schedule (each epoch
    # synthesizes a batch, then the student trains on the pool). A batch costs ``iterations``
    # generator, teacher and student passes (about a minute on one CPU core with a ResNet-8
    # teacher), so one batch per 100 student steps keeps a 15-minute budget mostly for the
    # student. Chosen by that arithmetic, not tuned.
    recommended_synthesize_every = 100
    memory_passes = (2, 1)  # the global and the local view through the teacher

    iterations: int = 50
    latent_dim: int = 100
    generator_width: int = 64
    lr: float = 5e-3
    latent_lr: float = 0.05
    head_lr: float = 1e-3
    head_dim: int = 128
    temperature: float = 0.1
    local_min_scale: float = 0.5
    flip: bool = False
    contrast_negatives: int = 256
    onehot_weight: float = 1.0
    bn_weight: float = 1.0
    adversarial_weight: float = 0.5
    contrastive_weight: float = 0.5
    memory_size: int = 20_000

    def __post_init__(self) -> None:
        if self.iterations < 1 or self.batch_size < 1 or self.contrast_negatives < 0:
            raise FreekdError("cmi needs iterations ≥ 1, batch_size ≥ 1, contrast_negatives ≥ 0")
        if not 0 < self.local_min_scale <= 1 or self.temperature <= 0:
            raise FreekdError("cmi needs local_min_scale in (0, 1] and temperature > 0")
        self.generator = Generator(
            latent_dim=self.latent_dim, image_shape=self.image_shape, width=self.generator_width
        ).to(self.device)
        self._reset_generator()
        self.latent = nn.Parameter(
            torch.zeros((self.batch_size, self.latent_dim), device=self.device)
        )
        # The head's input size is the teacher's feature size, known at the first synthesis.
        self.head: ProjectionHead | None = None
        self.optimizer = self._build_optimizer()
        self.memory = MemoryBank(self.memory_size)
        # The class targets of the newest batch (informational; each batch draws its own).
        self.targets = torch.zeros(0, dtype=torch.long, device=self.device)
        self.rounds = 0

    # --- construction and re-initialization ------------------------------------------------

    def _seed(self) -> int:
        return int(torch.randint(2**62, (), generator=self.rng))

    def _reset_generator(self) -> None:
        """Fresh generator weights from a seed drawn from ``self.rng``, in place (the optimizer
        keeps its references). Built on the CPU so the draw does not depend on ``device``."""
        seed = self._seed()
        with seeded_scope(seed):
            fresh = Generator(
                latent_dim=self.latent_dim, image_shape=self.image_shape, width=self.generator_width
            )
        self.generator.load_state_dict(fresh.state_dict())

    def _new_head(self, in_features: int, *, seeded: bool = True) -> ProjectionHead:
        if not seeded:  # weights are about to be loaded from a state dict
            return ProjectionHead(in_features=in_features, dim=self.head_dim).to(self.device)
        seed = self._seed()
        with seeded_scope(seed):
            head = ProjectionHead(in_features=in_features, dim=self.head_dim)
        return head.to(self.device)

    def _build_optimizer(self) -> torch.optim.Adam:
        groups: list[dict[str, Any]] = [
            {"params": list(self.generator.parameters()), "lr": self.lr},
            {"params": [self.latent], "lr": self.latent_lr},
        ]
        if self.head is not None:
            groups.append({"params": list(self.head.parameters()), "lr": self.head_lr})
        return torch.optim.Adam(groups, betas=GENERATOR_BETAS)

    def _head_for(self, in_features: int) -> ProjectionHead:
        if self.head is None:
            self.head = self._new_head(in_features)
            # Created before the first optimizer step of the run, so no Adam state is lost.
            self.optimizer = self._build_optimizer()
        elif self.head.in_features != in_features:
            raise FreekdError(
                f"cmi's projection head takes {self.head.in_features} teacher features and this "
                f"teacher gives {in_features}; use one synthesizer per teacher"
            )
        return self.head

    def reinitialize(self, *, lr_scale: float) -> None:
        """Start synthesis afresh: new generator, latent code and projection head (seeded from
        ``self.rng``), no optimizer state, every learning rate times ``lr_scale``, and an empty
        memory bank (``sample`` needs a ``synthesize`` call again). For collapse recovery.
        """
        if lr_scale <= 0:
            raise FreekdError(f"cmi.reinitialize needs lr_scale > 0, got {lr_scale}")
        self._reset_generator()
        draw_normal_(self.latent, self.rng)
        if self.head is not None:
            self.head.load_state_dict(self._new_head(self.head.in_features).state_dict())
        self.optimizer.state.clear()
        self.lr *= lr_scale
        self.latent_lr *= lr_scale
        self.head_lr *= lr_scale
        for group in self.optimizer.param_groups:
            group["lr"] *= lr_scale
        self.memory = MemoryBank(self.memory.capacity)

    # --- synthesis ----------------------------------------------------------------------------

    @staticmethod
    def _teacher_features(
        teacher: Teacher, images: Tensor, classifier: nn.Module | None
    ) -> tuple[Tensor, Tensor]:
        """Teacher logits (B, K) and the features the head embeds, (B, D)."""
        if classifier is None:
            logits = teacher(images)
            return logits, logits
        with capture_input(classifier) as captured:
            logits = teacher(images)
        if captured.value is None:  # the last Linear is not on the forward path
            return logits, logits
        return logits, captured.value.flatten(1)

    def _loss_terms(
        self,
        teacher: Teacher,
        student: nn.Module,
        images: Tensor,
        local_images: Tensor,
        targets: Tensor,
        negative_features: Tensor | None,
    ) -> dict[str, Tensor]:
        """The weighted loss terms of one step (names as reported by ``synthesize``).

        Args:
            images: (B, C, H, W) the new batch (global view).
            local_images: (B, C, H, W) its local view.
            targets: (B,) class targets.
            negative_features: (N, D) teacher features of memory-bank images, or None.
        """
        classifier = last_linear(teacher)
        with batchnorm_statistics(teacher) as statistics:
            teacher_logits, global_features = self._teacher_features(teacher, images, classifier)
        require_batchnorm(statistics, who="cmi")
        terms = inversion_terms(self, statistics, teacher_logits, targets, lambda: student(images))
        if self.contrastive_weight > 0:
            _, local_features = self._teacher_features(teacher, local_images, classifier)
            head = self._head_for(global_features.shape[1])
            negatives = None if negative_features is None else head(negative_features)
            terms["contrastive"] = self.contrastive_weight * info_nce(
                head(global_features),
                head(local_features),
                temperature=self.temperature,
                negatives=negatives,
            )
        return terms

    def _negative_features(self, teacher: Teacher) -> Tensor | None:
        """Teacher features (N, D) of up to ``contrast_negatives`` memory-bank images."""
        if self.contrastive_weight <= 0 or self.contrast_negatives == 0 or len(self.memory) == 0:
            return None
        count = min(self.contrast_negatives, len(self.memory))
        images = self.memory.sample(count, self.rng)
        with torch.no_grad():
            _, features = self._teacher_features(teacher, images, last_linear(teacher))
        self.teacher_queries += count
        return features

    def synthesize(self, teacher: Teacher, student: nn.Module) -> dict[str, float]:
        self._reset_generator()  # every batch is synthesized by a fresh generator
        self.generator.train()  # batch statistics in the generator, as it is trained
        draw_normal_(self.latent, self.rng)
        # Fresh Adam moments for the fresh generator and code; the head's carry over.
        for parameter in [*self.generator.parameters(), self.latent]:
            self.optimizer.state.pop(parameter, None)
        targets = balanced_targets(self.batch_size, self.num_classes, self.rng).to(self.device)
        self.targets = targets
        negative_features = self._negative_features(teacher)
        terms: dict[str, Tensor] = {}
        with eval_mode(student):
            for iteration in range(self.iterations):
                if self._round_spent(iteration):
                    break
                self._iterated(iteration + 1, self.iterations)
                images = self.generator(self.latent)
                local_images = local_view(
                    images, min_scale=self.local_min_scale, flip=self.flip, rng=self.rng
                )
                terms = self._loss_terms(
                    teacher, student, images, local_images, targets, negative_features
                )
                # The head exists only after the first contrastive term, so the optimizer's
                # parameters are listed now; it gets no gradient when that term is off.
                optimizer_step(self.optimizer, total(terms), allow_unused=True)
                self.teacher_queries += self.batch_size * (1 + int("contrastive" in terms))
        with torch.no_grad():
            self.memory.add(self.generator(self.latent))
        self.rounds += 1
        self.images_synthesized += self.batch_size
        return logged(terms)

    def sample(self, n: int) -> Tensor:
        return self.memory.sample(n, self.rng)

    # --- resumable state ----------------------------------------------------------------------

    STATE: ClassVar[tuple[str, ...]] = (
        "generator",
        "latent",
        "optimizer",
        "memory",
        "rng",
        "targets",
        "lr",
        "latent_lr",
        "head_lr",
        "rounds",
        "images_synthesized",
        "teacher_queries",
    )

    def state_dict(self) -> dict[str, Any]:
        state = save_state(self, self.STATE)
        # Adam's state_dict() holds its live moment and step tensors, which later steps update
        # in place; a copy keeps the saved state what it was at this call.
        state["optimizer"] = copy.deepcopy(state["optimizer"])
        state["head"] = None if self.head is None else copy.deepcopy(self.head.state_dict())
        return state

    def load_state_dict(self, state: dict[str, Any]) -> None:
        head_state = state["head"]
        if head_state is None:
            self.head = None
        else:
            in_features = int(head_state["hidden.weight"].shape[1])
            if self.head is None or self.head.in_features != in_features:
                self.head = self._new_head(in_features, seeded=False)
            self.head.load_state_dict(head_state)
        # The optimizer's parameter groups must match the saved ones (with or without the head).
        self.optimizer = self._build_optimizer()
        self.targets = state["targets"].clone()
        # Adam.load_state_dict keeps the given step tensors and increments them in place, so
        # it gets a copy: the same saved state can then be loaded more than once.
        state = {**state, "optimizer": copy.deepcopy(state["optimizer"])}
        load_state(self, tuple(name for name in self.STATE if name != "targets"), state)
