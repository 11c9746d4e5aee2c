"""Generator networks: latent codes → images in [0, 1]."""

from __future__ import annotations

import functools
import logging
import math
import statistics

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from freekd.models.build import build_within_memory

OUTPUTS = ("sigmoid", "batchnorm", "matched", "matched-st", "matched-blur")
#: Generator architectures: DCGAN (``Generator``) or pen strokes (``StrokeGenerator``).
KINDS = ("dcgan", "strokes")
#: Standard deviation, in pixels, of the 3×3 Gaussian that ``matched-blur`` smooths its images with.
ANTIALIAS_SIGMA = 0.5
#: Pixel mean and std a generator draws with when the teacher's normalization says nothing usable.
DEFAULT_PIXEL_STATISTICS = (0.5, 0.5)

logger = logging.getLogger(__name__)
_WARNED: set[tuple[tuple[float, ...], tuple[float, ...]]] = set()


def teacher_pixel_statistics(teacher: nn.Module) -> tuple[list[float], list[float]]:
    """The per-channel input mean and std a teacher normalizes with (its training data's).

    Read from the teacher's checkpoint metadata; 0.5 and 0.5 when the file did not say (a
    TorchScript or state_dict teacher given without ``--mean``/``--std``), and 0.5 and 0.5, with
    a warning, when what it says cannot be the statistics of images in [0, 1]
    (:func:`plausible_pixel_statistics`): a normalization is also used as a mere change of
    units, e.g. a teacher on raw 0–255 pixels is ``--mean 0 --std 0.0039``. Drawn with those
    values, the generator's images would all be black.
    """
    described = getattr(teacher, "metadata", {}).get("input", {})
    mean = [float(v) for v in described.get("mean") or [DEFAULT_PIXEL_STATISTICS[0]]]
    std = [float(v) for v in described.get("std") or [DEFAULT_PIXEL_STATISTICS[1]]]
    if not plausible_pixel_statistics(mean, std):
        if (key := (tuple(mean), tuple(std))) not in _WARNED:  # once, not every round
            _WARNED.add(key)
            logger.warning(
                "the teacher's input normalization (mean %s, std %s) cannot be the pixel "
                "statistics of images in [0, 1] (a change of units?); the generator draws "
                "images with mean %g and std %g instead",
                ", ".join(f"{v:.4g}" for v in mean),
                ", ".join(f"{v:.4g}" for v in std),
                *DEFAULT_PIXEL_STATISTICS,
            )
        return [DEFAULT_PIXEL_STATISTICS[0]] * len(mean), [DEFAULT_PIXEL_STATISTICS[1]] * len(std)
    return mean, std


def plausible_pixel_statistics(mean: list[float], std: list[float]) -> bool:
    """Whether every channel's (mean m, std s) can describe values in [0, 1]: 0 < m < 1 and
    0 < s ≤ √(m(1 − m)), the largest standard deviation a variable in [0, 1] with mean m can
    have (the Bhatia–Davis inequality, Bhatia & Davis 2000, Amer. Math. Monthly 107(4))."""
    return all(
        0 < m < 1 and 0 < s <= math.sqrt(m * (1 - m)) + 1e-6
        for m, s in zip(mean, std, strict=False)
    )


#: Largest spread (pixel units) of the Gaussian the ``matched`` output clamps: statistics that
#: would need more are drawn as by ``batchnorm`` (a std at the Bhatia–Davis bound, e.g. the
#: 0.5 and 0.5 of a teacher that said nothing, needs an infinite one: binary images).
MATCHED_MAX_SPREAD = 10.0


#: The standard normal's CDF and density (the standard library's).
_STANDARD_NORMAL = statistics.NormalDist()


def clamped_normal_moments(mu: float, sigma: float) -> tuple[float, float]:
    """Mean and standard deviation of clamp(X, 0, 1) for X ~ N(mu, sigma²), in closed form (the
    moments of a normal truncated to (0, 1), plus the mass at 1)."""
    a, b = -mu / sigma, (1.0 - mu) / sigma
    inside = _STANDARD_NORMAL.cdf(b) - _STANDARD_NORMAL.cdf(a)
    above = 1.0 - _STANDARD_NORMAL.cdf(b)
    pdf_a, pdf_b = _STANDARD_NORMAL.pdf(a), _STANDARD_NORMAL.pdf(b)
    first = mu * inside + sigma * (pdf_a - pdf_b)
    second = (
        (mu * mu + sigma * sigma) * inside
        + 2.0 * mu * sigma * (pdf_a - pdf_b)
        + sigma * sigma * (a * pdf_a - b * pdf_b)
    )
    mean = first + above
    return mean, math.sqrt(max(second + above - mean * mean, 0.0))


def _mu_for_mean(mean: float, sigma: float) -> float:
    """The mu whose clamp(N(mu, sigma²), 0, 1) has ``mean`` (bisection: the mean grows with mu)."""
    low, high = -50.0 * (1.0 + sigma), 50.0 * (1.0 + sigma)
    for _ in range(100):
        middle = 0.5 * (low + high)
        low, high = (
            (middle, high) if clamped_normal_moments(middle, sigma)[0] < mean else (low, middle)
        )
    return 0.5 * (low + high)


@functools.lru_cache(maxsize=64)  # set_pixel_statistics runs every round
def matching_normal(mean: float, std: float) -> tuple[float, float] | None:
    """(mu, sigma) such that clamp(N(mu, sigma²), 0, 1) has this mean and std; None when that
    needs sigma above ``MATCHED_MAX_SPREAD`` (or the statistics are not those of [0, 1] values).

    At a fixed clamped mean the clamped std grows with sigma, from 0 towards the Bhatia–Davis
    bound √(mean(1 − mean)), so sigma is found by bisection (on its logarithm), each step
    solving for mu by bisection too.
    """
    if not (0.0 < mean < 1.0 and std > 0.0):
        return None
    if clamped_normal_moments(_mu_for_mean(mean, MATCHED_MAX_SPREAD), MATCHED_MAX_SPREAD)[1] < std:
        return None
    low, high = math.log(1e-6), math.log(MATCHED_MAX_SPREAD)
    for _ in range(100):
        sigma = math.exp(0.5 * (low + high))
        spread = clamped_normal_moments(_mu_for_mean(mean, sigma), sigma)[1]
        low, high = (0.5 * (low + high), high) if spread < std else (low, 0.5 * (low + high))
    sigma = math.exp(0.5 * (low + high))
    return _mu_for_mean(mean, sigma), sigma


def antialias(images: Tensor, sigma: float = ANTIALIAS_SIGMA) -> Tensor:
    """Each channel smoothed by a normalized 3×3 Gaussian of std ``sigma`` pixels (zero padding):
    hard edges get the grey rims of anti-aliased strokes. MNIST's digits are binary NIST strokes
    anti-aliased when they were size-normalized (LeCun et al. 1998, Proc. IEEE, §III-A)."""
    if sigma <= 0 or images.dim() != 4:
        raise ValueError(f"antialias takes (B, C, H, W) images and sigma > 0, got {sigma}")
    offsets = torch.arange(-1, 2, dtype=images.dtype, device=images.device)
    weights = torch.exp(-(offsets**2) / (2 * sigma**2))
    kernel = torch.outer(weights, weights) / weights.sum() ** 2
    channels = images.shape[1]
    kernel = kernel.expand(channels, 1, 3, 3).contiguous()
    return F.conv2d(images, kernel, padding=1, groups=channels)


class Generator(nn.Module):
    """DCGAN-style generator (Radford et al. 2016, arXiv:1511.06434 §3), as DAFL uses it (§3.4).

    z (B, latent_dim) → linear → (B, width, ⌈H/4⌉, ⌈W/4⌉) → [upsample ×2, conv 3×3, BatchNorm,
    LeakyReLU(0.2)] × 2 → conv 3×3 → sigmoid. Sizes that are not multiples of 4 are resized to
    (H, W) before the last convolution. The sigmoid keeps images in [0, 1], the range every freekd
    model takes (models normalize themselves).

    Args:
        latent_dim: size of the latent code z.
        image_shape: (C, H, W) of the images to produce.
        width: channels of the first feature map (halved after the second upsampling).
        output: ``sigmoid`` (images in [0, 1] directly) or ``batchnorm``, DAFL's own output
            layer (§4.1 and its MNIST generator: a BatchNorm without affine parameters after the
            last convolution): every batch then has, channel by channel, the mean and standard
            deviation of the teacher's input normalization (``set_pixel_statistics``), i.e. of
            its training data, clamped to [0, 1]; or ``matched``, the same layer with the
            mean and spread before the clamp chosen so that the clamped pixels have the
            teacher's mean and standard deviation (:func:`matching_normal`, exact for normal
            values; ``batchnorm``'s clamp shifts them: MNIST's 0.1307 and 0.3081 come out as
            0.199 and 0.221). A standard deviation close to its largest possible value for the
            mean (Bhatia–Davis) says the training images are nearly binary, and ``matched``
            draws them so (MNIST's: 81 % of the pixels at 0 and 8 % at 1; real digits: 81 % and
            5 %); statistics out of its reach are drawn as by ``batchnorm``. ``matched-st``
            draws the same images through a straight-through clamp, so saturated pixels pass
            their gradient back (tried on a tuning teacher and stopped 3 points below ``matched``:
            session 27, experiments/2026-12-datafree-zoo). ``matched-blur`` smooths
            ``matched``'s images with a 3×3 Gaussian (:func:`antialias`), giving its strokes
            the grey rims of anti-aliased ones; the blur comes after the clamp, so its pixels
            no longer have the teacher's std (about 0.25 at initialization for MNIST's 0.31;
            tried on a tuning teacher in session 28: below the ``batchnorm`` default, above
            ``matched``).
        frame: width, in pixels, of a border left black in every image (0: none). The border
            is blackened after the output layer, so the images' mean and std are no longer the
            teacher's (MNIST's statistics, ``frame=4``: a mean of about 0.1 at initialization,
            not 0.2).
    """

    def __init__(
        self,
        *,
        latent_dim: int = 100,
        image_shape: tuple[int, int, int],
        width: int = 128,
        output: str = "sigmoid",
        frame: int = 0,
    ) -> None:
        if output not in OUTPUTS:
            raise ValueError(f"generator output must be one of {', '.join(OUTPUTS)}, got {output}")
        super().__init__()
        channels, height, width_pixels = image_shape
        self.latent_dim = latent_dim
        self.image_shape = image_shape
        self.base = (math.ceil(height / 4), math.ceil(width_pixels / 4))
        self.project = nn.Sequential(
            nn.Linear(latent_dim, width * self.base[0] * self.base[1]),
        )
        self.project_norm = nn.BatchNorm2d(width)
        self.body = nn.Sequential(
            nn.Upsample(scale_factor=2),
            nn.Conv2d(width, width, 3, padding=1, bias=False),
            nn.BatchNorm2d(width),
            nn.LeakyReLU(0.2, inplace=True),
            nn.Upsample(scale_factor=2),
            nn.Conv2d(width, width // 2, 3, padding=1, bias=False),
            nn.BatchNorm2d(width // 2),
            nn.LeakyReLU(0.2, inplace=True),
        )
        self.head = nn.Conv2d(width // 2, channels, 3, padding=1)
        self.width = width
        self.output = output
        if frame < 0 or 2 * frame >= min(height, width_pixels):
            raise ValueError(f"frame must leave pixels inside it, got {frame} for {image_shape}")
        # 1 inside, 0 in a border ``frame`` pixels wide (not saved: it follows from the args).
        inside = torch.zeros((1, 1, height, width_pixels))
        inside[..., frame : height - frame, frame : width_pixels - frame] = 1.0
        self.register_buffer("inside", inside, persistent=False)
        self.frame = frame
        # DAFL's output layer: per-channel BatchNorm without affine parameters, i.e. images whose
        # batch statistics are those of the teacher's (normalized) training data.
        self.output_norm = nn.BatchNorm2d(channels, affine=False)
        # The teacher's input normalization (pixel = mean + std · normalized; for ``matched``, the
        # normal's mean and spread before the clamp); set_pixel_statistics fills it from the
        # teacher. Persistent, so a resumed generator maps pixels the same way.
        self.register_buffer("pixel_mean", torch.full((1, channels, 1, 1), 0.5))
        self.register_buffer("pixel_std", torch.full((1, channels, 1, 1), 0.5))

    def set_pixel_statistics(self, mean: list[float], std: list[float]) -> None:
        """Use the teacher's per-channel input mean and std for the ``batchnorm`` output (for
        ``matched``, the normal's that gives them after the clamp, per channel)."""
        channels = self.image_shape[0]
        # One value per channel, or one value for all of them.
        shape = (1, channels, 1, 1)
        mean = mean if len(mean) == channels else mean[:1] * channels
        std = std if len(std) == channels else std[:1] * channels
        if self.output.startswith("matched"):
            matched = [matching_normal(m, s) or (m, s) for m, s in zip(mean, std, strict=True)]
            mean, std = [m for m, _ in matched], [s for _, s in matched]
        means, stds = torch.tensor(mean), torch.tensor(std)
        with torch.no_grad():
            self.get_buffer("pixel_mean").copy_(means.view(shape))
            self.get_buffer("pixel_std").copy_(stds.view(shape))

    def forward(self, latent: Tensor) -> Tensor:
        """(B, latent_dim) codes → (B, C, H, W) images in [0, 1], black outside ``frame``."""
        images = self._images(latent)
        return images * self.get_buffer("inside") if self.frame else images

    def _images(self, latent: Tensor) -> Tensor:
        features = self.project(latent).view(latent.shape[0], self.width, *self.base)
        features = self.body(self.project_norm(features))
        if tuple(features.shape[-2:]) != tuple(self.image_shape[1:]):
            features = F.interpolate(
                features, size=self.image_shape[1:], mode="bilinear", align_corners=False
            )
        logits = self.head(features)
        if self.output == "sigmoid":
            return torch.sigmoid(logits)
        # Normalized images → pixels, clamped to [0, 1] (gradients stop at saturated pixels,
        # except through matched-st's straight-through clamp).
        pixel_mean, pixel_std = self.get_buffer("pixel_mean"), self.get_buffer("pixel_std")
        pixels = pixel_mean + pixel_std * self.output_norm(logits)
        if self.output == "matched-st":
            # Straight-through clamp (Bengio et al. 2013, arXiv:1308.3432 §4): the clamped
            # values forward, the identity's gradient backward, so saturated pixels still learn.
            return pixels + (pixels.clamp(0.0, 1.0) - pixels).detach()
        if self.output == "matched-blur":
            return antialias(pixels.clamp(0.0, 1.0))
        return pixels.clamp(0.0, 1.0)


class GeneratorEnsemble(nn.Module):
    """Several independent :class:`Generator` s behind one call: a batch of latent codes is split
    into as many contiguous parts (``Tensor.tensor_split``), each part drawn by its own
    generator, and the images are concatenated in order.

    Several generators cover more of the teacher's input space than one: each starts from its
    own weights and keeps its own batch statistics, so the student's batches mix images from
    as many adversarial games against it (Choi et al. 2020, "Data-Free Network Quantization
    With Adversarial Knowledge Distillation", CVPR Workshops, arXiv:2005.04136: multiple
    generators for diverse adversarial samples). A generator only receives the gradient of the
    images it drew. A batch of fewer codes than generators is drawn by the first ones, one
    image each (a DCGAN generator's BatchNorm layers pool over the pixels and a stroke
    generator's LayerNorm over features, so one image is enough).
    The parts are contiguous: a consumer that takes the first images of a batch sees the first
    generators only, so take a spread of indices instead (``source.SyntheticSource._keep``).

    Args:
        members: the generators (at least 2; for one, use it alone), built alike.
    """

    def __init__(self, members: list[Generator] | list[Generator | StrokeGenerator]) -> None:
        if len(members) < 2:
            raise ValueError(f"an ensemble needs at least 2 generators, got {len(members)}")
        super().__init__()
        self.members = nn.ModuleList(members)
        # What callers read off a single Generator, the same for every member.
        self.latent_dim = members[0].latent_dim
        self.image_shape = members[0].image_shape
        self.output = members[0].output

    def set_pixel_statistics(self, mean: list[float], std: list[float]) -> None:
        """``Generator.set_pixel_statistics`` on every member."""
        for member in self.members:
            member.set_pixel_statistics(mean, std)  # type: ignore[operator]

    def forward(self, latent: Tensor) -> Tensor:
        """(B, latent_dim) codes → (B, C, H, W) images, part i of the batch from generator i."""
        parts = max(1, min(len(self.members), latent.shape[0]))
        chunks = latent.tensor_split(parts)
        return torch.cat(
            [member(chunk) for member, chunk in zip(self.members, chunks, strict=False)]
        )


class StrokeGenerator(nn.Module):
    """Latent codes → images of anti-aliased pen strokes on a black background.

    Real handwriting is a few strokes of grey-rimmed ink on black; DAFL's DCGAN output draws a
    grey fog over the whole image (for MNIST's statistics, a mean of 0.2 at initialization
    where digits have 0.13, ink in every border). This generator can only draw strokes: an MLP
    maps z to ``strokes`` polylines of ``points`` points each (inside the central box of
    ``extent`` of the image, where size-normalized digits lie), a width and an intensity per
    stroke. Each stroke is rendered from its distance field, ink = intensity · exp(−d² / 2σ²)
    with d the distance from the pixel centre to the polyline (the nearest of its segments),
    as vector-graphics rasterizers pre-filter edges (Li et al. 2020, "Differentiable Vector
    Graphics Rasterization for Editing and Learning", SIGGRAPH Asia, §4: anti-aliasing from the
    distance to the curve), and the strokes are merged as 1 − Π(1 − ink), so every pixel stays
    in [0, 1] and every stroke's points, width and intensity receive a gradient. The MLP's
    hidden layers are layer-normalized, so a batch of one image draws as well as a batch of
    many. A freekd experiment (session 30).

    Args:
        latent_dim: size of the latent code z.
        image_shape: (C, H, W); every channel gets the same strokes.
        strokes: polylines per image.
        points: points per polyline (``points − 1`` straight segments).
        hidden: width of the MLP's two hidden layers (LayerNorm, LeakyReLU(0.2)).
        extent: side of the central box the points lie in, as a share of the image, in
            (0, 1] (MNIST: digits are size-normalized to 20 of 28 pixels).
        width_range: smallest and largest σ of a stroke, in pixels of a 28-pixel image; they
            scale with the image's shorter side, so strokes keep their share of the image.
    """

    #: Gain on the MLP's coordinate outputs before the tanh (see ``forward``).
    SPREAD = 2.5
    #: The image side ``width_range`` is given for.
    REFERENCE_SIDE = 28

    def __init__(
        self,
        *,
        latent_dim: int = 100,
        image_shape: tuple[int, int, int],
        strokes: int = 3,
        points: int = 4,
        hidden: int = 256,
        extent: float = 20 / 28,
        width_range: tuple[float, float] = (0.5, 2.0),
    ) -> None:
        if strokes < 1 or points < 2:
            raise ValueError(f"need a stroke of two points at least, got {strokes} × {points}")
        if not 0 < extent <= 1:
            raise ValueError(f"extent must lie in (0, 1], got {extent}")
        if not 0 < width_range[0] <= width_range[1]:
            raise ValueError(f"width_range must be positive and ordered, got {width_range}")
        super().__init__()
        self.latent_dim = latent_dim
        self.image_shape = image_shape
        self.output = "strokes"
        self.strokes, self.points = strokes, points
        self.extent = extent
        _, height, width = image_shape
        scale = min(height, width) / self.REFERENCE_SIDE
        self.width_range = (width_range[0] * scale, width_range[1] * scale)
        self.net = nn.Sequential(
            nn.Linear(latent_dim, hidden),
            nn.LayerNorm(hidden),
            nn.LeakyReLU(0.2, inplace=True),
            nn.Linear(hidden, hidden),
            nn.LayerNorm(hidden),
            nn.LeakyReLU(0.2, inplace=True),
            nn.Linear(hidden, strokes * (2 * points + 2)),
        )
        ys, xs = torch.meshgrid(
            torch.arange(height, dtype=torch.float32) + 0.5,
            torch.arange(width, dtype=torch.float32) + 0.5,
            indexing="ij",
        )
        # Pixel centres (H·W, 2) as (x, y), in pixels; not saved: they follow from the shape.
        self.register_buffer("grid", torch.stack([xs, ys], dim=-1).view(-1, 2), persistent=False)

    def set_pixel_statistics(self, mean: list[float], std: list[float]) -> None:
        """Nothing to set: the strokes are ink on black in [0, 1] whatever the teacher's
        normalization (the teacher normalizes its own inputs)."""

    def forward(self, latent: Tensor) -> Tensor:
        """(B, latent_dim) codes → (B, C, H, W) images in [0, 1]."""
        batch = latent.shape[0]
        channels, height, width = self.image_shape
        raw = self.net(latent).view(batch, self.strokes, 2 * self.points + 2)
        size = torch.tensor([width, height], dtype=raw.dtype, device=raw.device)
        # ×SPREAD: at initialization the MLP's outputs are small, which would crowd every
        # point into the middle of the box; this spreads them over it.
        coordinates = torch.tanh(self.SPREAD * raw[..., : 2 * self.points])
        points = size / 2 + coordinates.view(batch, self.strokes, self.points, 2) * (
            self.extent * size / 2
        )
        low, high = self.width_range
        sigma = low + (high - low) * torch.sigmoid(raw[..., -2])  # (B, S)
        intensity = torch.sigmoid(raw[..., -1])  # (B, S)
        start, end = points[:, :, :-1], points[:, :, 1:]  # (B, S, P−1, 2)
        direction = end - start
        grid = self.get_buffer("grid")  # (HW, 2)
        offset = grid.view(1, 1, 1, -1, 2) - start.unsqueeze(3)  # (B, S, P−1, HW, 2)
        length = (direction * direction).sum(-1, keepdim=True).clamp_min(1e-6)  # (B, S, P−1, 1)
        along = ((offset * direction.unsqueeze(3)).sum(-1) / length).clamp(0.0, 1.0)
        nearest = offset - along.unsqueeze(-1) * direction.unsqueeze(3)
        # The squared distance to each stroke: to the nearest of its segments (B, S, HW).
        squared = (nearest * nearest).sum(-1).amin(dim=2)
        ink = intensity[..., None] * torch.exp(-squared / (2 * sigma[..., None] ** 2))
        blank = torch.prod(1 - ink, dim=1)  # (B, HW)
        images = (1 - blank).view(batch, 1, height, width)
        return images.expand(batch, channels, height, width).contiguous()


def build_generator(
    *,
    kind: str = "dcgan",
    count: int = 1,
    latent_dim: int,
    image_shape: tuple[int, int, int],
    width: int = 128,
    output: str = "sigmoid",
    frame: int = 0,
) -> Generator | StrokeGenerator | GeneratorEnsemble:
    """``count`` generators of ``kind`` (``KINDS``), built in turn from the global RNG: one
    alone, several as a ``GeneratorEnsemble``. ``width``, ``output`` and ``frame`` are the
    DCGAN's (``Generator``); a ``StrokeGenerator`` takes none of them."""
    if kind not in KINDS:
        raise ValueError(f"generator_kind must be one of {', '.join(KINDS)}, got {kind!r}")

    def build() -> Generator | StrokeGenerator | GeneratorEnsemble:
        members: list[Generator | StrokeGenerator] = [
            StrokeGenerator(latent_dim=latent_dim, image_shape=image_shape)
            if kind == "strokes"
            else Generator(
                latent_dim=latent_dim,
                image_shape=image_shape,
                width=width,
                output=output,
                frame=frame,
            )
            for _ in range(count)
        ]
        return members[0] if count == 1 else GeneratorEnsemble(members)

    return build_within_memory(
        build,
        f"{count} {kind} generator(s) (latent {latent_dim}, width {width}, images {image_shape})",
        "lower the synthesizer's latent_dim, generator_width or generators (--set "
        "synthesizer.params.NAME=...)",
    )
