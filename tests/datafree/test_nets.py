"""The DCGAN generator's two output layers and the teacher statistics they use."""

from __future__ import annotations

import math
from pathlib import Path

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from freekd.config import TeacherSourceConfig
from freekd.datafree import nets
from freekd.datafree.nets import (
    Generator,
    GeneratorEnsemble,
    StrokeGenerator,
    plausible_pixel_statistics,
    teacher_pixel_statistics,
)
from freekd.errors import FreekdError
from freekd.teachers import load_teacher
from tests.conftest import assert_same_weights


def test_batchnorm_output_has_the_given_pixel_statistics() -> None:
    torch.manual_seed(0)
    generator = Generator(image_shape=(2, 12, 12), width=16, output="batchnorm")
    generator.set_pixel_statistics([0.5, 0.3], [0.1, 0.05])  # narrow: the clamp barely acts
    images = generator(torch.randn(64, 100))
    assert images.shape == (64, 2, 12, 12)
    assert images.min() >= 0
    assert images.max() <= 1
    channel_means = images.transpose(0, 1).flatten(1).mean(dim=1)
    channel_stds = images.transpose(0, 1).flatten(1).std(dim=1)
    torch.testing.assert_close(channel_means, torch.tensor([0.5, 0.3]), atol=2e-3, rtol=0)
    torch.testing.assert_close(channel_stds, torch.tensor([0.1, 0.05]), atol=2e-3, rtol=0)


def test_one_statistic_broadcasts_and_is_saved_with_the_weights() -> None:
    generator = Generator(image_shape=(3, 8, 8), width=8, output="batchnorm")
    generator.set_pixel_statistics([0.2], [0.4])
    state = generator.state_dict()
    assert state["pixel_mean"].flatten().tolist() == pytest.approx([0.2] * 3)
    fresh = Generator(image_shape=(3, 8, 8), width=8, output="batchnorm")
    fresh.load_state_dict(state)
    assert fresh.pixel_std.flatten().tolist() == pytest.approx([0.4] * 3)


def test_sigmoid_output_stays_the_default_and_unknown_outputs_fail() -> None:
    generator = Generator(image_shape=(1, 8, 8), width=8)
    assert generator.output == "sigmoid"
    with torch.no_grad():
        images = generator(torch.randn(4, 100))
    assert float(images.min()) > 0
    assert float(images.max()) < 1
    with pytest.raises(ValueError, match="sigmoid, batchnorm"):
        Generator(image_shape=(1, 8, 8), output="tanh")


def test_teacher_pixel_statistics_come_from_the_checkpoint(tiny_teacher_path: Path) -> None:
    teacher = load_teacher(TeacherSourceConfig(path=str(tiny_teacher_path)))
    mean, std = teacher_pixel_statistics(teacher)
    assert mean == teacher.metadata["input"]["mean"]
    assert std == teacher.metadata["input"]["std"]
    assert teacher_pixel_statistics(torch.nn.Identity()) == ([0.5], [0.5])


@pytest.mark.parametrize(
    ("mean", "std", "plausible"),
    [
        ([0.1307], [0.3081], True),  # MNIST
        ([0.485, 0.456, 0.406], [0.229, 0.224, 0.225], True),  # ImageNet
        ([0.5], [0.5], True),  # [-1, 1]: the largest std a mean of 0.5 allows
        ([0.0], [1 / 255], False),  # raw 0-255 pixels: a change of units
        ([0.0], [1.0], False),
        ([0.5], [0.6], False),
        ([0.1307, 0.5], [0.3081, 0.0], False),
    ],
)
def test_plausible_pixel_statistics(mean: list[float], std: list[float], plausible: bool) -> None:
    assert plausible_pixel_statistics(mean, std) is plausible


def test_a_change_of_units_is_not_drawn_as_pixel_statistics(
    caplog: pytest.LogCaptureFixture, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A raw-pixel teacher (mean 0, std 1/255) would get black images; it gets 0.5 and 0.5."""
    # The warning is given once per process; another test in this worker may have used it.
    monkeypatch.setattr(nets, "_WARNED", set())

    class RawPixelTeacher(torch.nn.Module):
        metadata = {"input": {"mean": [0.0], "std": [1 / 255]}}  # noqa: RUF012

    with caplog.at_level("WARNING"):
        assert teacher_pixel_statistics(RawPixelTeacher()) == ([0.5], [0.5])
    assert "change of units" in caplog.text


def test_clamped_normal_moments_agree_with_sampling() -> None:
    """The closed form against a million draws, for a clamp that cuts both ends."""
    torch.manual_seed(0)
    for mu, sigma in [(-1.6, 1.9), (0.5, 0.3), (0.9, 0.7)]:
        draws = (mu + sigma * torch.randn(1_000_000, dtype=torch.float64)).clamp(0, 1)
        mean, std = nets.clamped_normal_moments(mu, sigma)
        assert mean == pytest.approx(float(draws.mean()), abs=2e-3)
        assert std == pytest.approx(float(draws.std()), abs=2e-3)


@settings(max_examples=60, deadline=None)
@given(
    mean=st.floats(0.02, 0.98),
    share=st.floats(0.02, 0.97),  # the std as a share of its largest value for the mean
)
def test_matching_normal_gives_the_asked_moments_after_the_clamp(mean: float, share: float) -> None:
    std = share * math.sqrt(mean * (1 - mean))
    matched = nets.matching_normal(mean, std)
    if matched is None:  # only near the bound, where a spread above the cap would be needed
        assert share > 0.9
        return
    got_mean, got_std = nets.clamped_normal_moments(*matched)
    assert got_mean == pytest.approx(mean, abs=1e-6)
    assert got_std == pytest.approx(std, abs=1e-6)


def test_matched_output_draws_the_teachers_statistics_after_the_clamp() -> None:
    """MNIST's mean and std: ``batchnorm``'s clamp moves them (0.199, 0.221), ``matched`` keeps
    them, with most pixels at 0 as in real digits; 0.5 and 0.5 (no statistics, or [-1, 1]) is
    out of its reach and drawn as by ``batchnorm``."""
    torch.manual_seed(0)
    codes = torch.randn(512, 100)
    drawn = {}
    for output in ("batchnorm", "matched"):
        torch.manual_seed(1)
        generator = Generator(image_shape=(1, 28, 28), width=16, output=output)
        generator.set_pixel_statistics([0.1307], [0.3081])
        with torch.no_grad():
            drawn[output] = generator(codes)
    assert float(drawn["batchnorm"].mean()) == pytest.approx(0.199, abs=0.01)
    assert float(drawn["matched"].mean()) == pytest.approx(0.1307, abs=0.01)
    assert float(drawn["matched"].std()) == pytest.approx(0.3081, abs=0.015)
    assert float((drawn["matched"] == 0).float().mean()) > 0.75
    fallback = Generator(image_shape=(1, 8, 8), width=8, output="matched")
    fallback.set_pixel_statistics([0.5], [0.5])
    assert fallback.pixel_mean.flatten().tolist() == [0.5]
    assert fallback.pixel_std.flatten().tolist() == [0.5]


def test_straight_through_output_draws_the_same_images_and_passes_gradient_at_the_clamp() -> None:
    """``matched-st`` forwards ``matched``'s images; backward, a pixel clamped at 0 or 1 still
    passes its gradient to the generator (``matched``'s clamp stops it)."""
    codes = torch.randn(32, 100, generator=torch.Generator().manual_seed(0))
    drawn, grads = {}, {}
    for output in ("matched", "matched-st"):
        torch.manual_seed(1)
        generator = Generator(image_shape=(1, 28, 28), width=16, output=output)
        generator.set_pixel_statistics([0.1307], [0.3081])
        images = generator(codes)
        saturated = (images == 0) | (images == 1)
        # A loss that only saturated pixels feel: what gradient reaches the last convolution.
        (images * saturated * torch.randn_like(images)).sum().backward()
        drawn[output], grads[output] = images.detach(), generator.head.weight.grad
    assert torch.equal(drawn["matched"], drawn["matched-st"])
    assert float(grads["matched"].abs().sum()) == 0.0
    assert float(grads["matched-st"].abs().sum()) > 0.0


def test_antialias_smooths_a_stroke_with_a_normalized_gaussian() -> None:
    """A one-pixel white line on black: its pixels keep the Gaussian's centre row weight, its
    neighbours get grey rims, and the total intensity away from the border is kept."""
    image = torch.zeros(1, 1, 9, 9)
    image[0, 0, 4, 2:7] = 1.0
    smoothed = nets.antialias(image, sigma=0.5)
    side = math.exp(-1 / (2 * 0.5**2))
    centre_row = 1 / (1 + 2 * side)  # the 1-D weights, normalized
    assert float(smoothed[0, 0, 4, 4]) == pytest.approx(centre_row, abs=1e-6)
    assert float(smoothed[0, 0, 3, 4]) == pytest.approx(side * centre_row, abs=1e-6)
    assert float(smoothed.sum()) == pytest.approx(5.0, abs=1e-5)
    assert float(smoothed.min()) >= 0.0
    assert float(smoothed.max()) <= 1.0


def test_blurred_output_is_the_matched_images_antialiased() -> None:
    codes = torch.randn(16, 100, generator=torch.Generator().manual_seed(0))
    drawn = {}
    for output in ("matched", "matched-blur"):
        torch.manual_seed(1)
        generator = Generator(image_shape=(3, 20, 20), width=16, output=output)
        generator.set_pixel_statistics([0.1307, 0.2, 0.3], [0.3081, 0.3, 0.3])
        with torch.no_grad():
            drawn[output] = generator(codes)
    assert torch.allclose(drawn["matched-blur"], nets.antialias(drawn["matched"]), atol=1e-6)
    assert not torch.allclose(drawn["matched-blur"], drawn["matched"])


def test_frame_blackens_the_border_and_nothing_inside() -> None:
    codes = torch.randn(8, 100, generator=torch.Generator().manual_seed(0))
    drawn = {}
    for frame in (0, 3):
        torch.manual_seed(1)
        generator = Generator(image_shape=(1, 12, 16), width=8, output="batchnorm", frame=frame)
        generator.set_pixel_statistics([0.1307], [0.3081])
        with torch.no_grad():
            drawn[frame] = generator(codes)
    inside = (slice(None), slice(None), slice(3, 9), slice(3, 13))
    assert torch.equal(drawn[3][inside], drawn[0][inside])
    border = drawn[3].clone()
    border[inside] = 0
    assert float(border.abs().sum()) == 0.0
    assert float(drawn[0][:, :, :3].sum()) > 0.0
    with pytest.raises(ValueError, match="frame"):
        Generator(image_shape=(1, 12, 16), width=8, frame=6)


def test_a_generator_saved_without_a_frame_loads_into_one_with_a_frame() -> None:
    """The border mask is not saved: a checkpoint from before ``frame`` existed still loads."""
    saved = Generator(image_shape=(1, 12, 12), width=8, output="batchnorm").state_dict()
    framed = Generator(image_shape=(1, 12, 12), width=8, output="batchnorm", frame=2)
    framed.load_state_dict(saved, strict=True)
    assert "inside" not in saved


def test_antialias_refuses_a_non_positive_sigma_and_unbatched_images() -> None:
    with pytest.raises(ValueError, match="sigma"):
        nets.antialias(torch.zeros(1, 1, 4, 4), sigma=0.0)
    with pytest.raises(ValueError, match="sigma"):
        nets.antialias(torch.zeros(1, 4, 4))


def test_an_ensemble_draws_each_part_of_the_batch_with_its_own_generator() -> None:
    torch.manual_seed(0)
    members = [Generator(image_shape=(1, 12, 12), width=8, output="batchnorm") for _ in range(3)]
    ensemble = GeneratorEnsemble(members)
    ensemble.set_pixel_statistics([0.1307], [0.3081])
    codes = torch.randn(10, 100, generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        images = ensemble.train()(codes)
        # tensor_split: parts of 4, 3 and 3 codes, each through its own generator's batch norm.
        expected = torch.cat([members[0](codes[:4]), members[1](codes[4:7]), members[2](codes[7:])])
    assert images.shape == (10, 1, 12, 12)
    assert torch.equal(images, expected)
    assert all(torch.equal(member.get_buffer("pixel_mean"), members[0].get_buffer("pixel_mean"))
               for member in members)  # fmt: skip
    # Members start from different weights, so they draw different images from one code.
    with torch.no_grad():
        same = codes[:4]
        assert not torch.allclose(members[0](same), members[1](same))


def test_an_ensemble_passes_each_generator_only_the_gradient_of_its_own_images() -> None:
    torch.manual_seed(0)
    ensemble = GeneratorEnsemble([Generator(image_shape=(1, 8, 8), width=8) for _ in range(2)])
    codes = torch.randn(8, 100, generator=torch.Generator().manual_seed(1))
    images = ensemble.train()(codes)
    images[:4].sum().backward()  # the first generator's part only
    first, second = ensemble.members
    assert all(p.grad is not None and p.grad.abs().sum() > 0 for p in first.parameters())
    assert all(p.grad is None or float(p.grad.abs().sum()) == 0.0 for p in second.parameters())


def test_an_ensemble_draws_a_small_batch_with_its_first_generators() -> None:
    torch.manual_seed(0)
    ensemble = GeneratorEnsemble([Generator(image_shape=(1, 8, 8), width=8) for _ in range(4)])
    codes = torch.randn(3, 100, generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        images = ensemble.train()(codes)
        # Three codes: one image from each of the first three generators.
        expected = [member(codes[i : i + 1]) for i, member in enumerate(ensemble.members[:3])]
        assert torch.equal(images, torch.cat(expected))
    assert (ensemble.latent_dim, ensemble.image_shape) == (100, (1, 8, 8))
    with pytest.raises(ValueError, match="at least 2 generators"):
        GeneratorEnsemble([Generator(image_shape=(1, 8, 8), width=8)])


def test_stroke_generator_draws_grey_rimmed_strokes_on_black_with_gradients_everywhere() -> None:
    torch.manual_seed(0)
    generator = StrokeGenerator(image_shape=(2, 56, 60), strokes=2, points=3)
    codes = torch.randn(16, 100, generator=torch.Generator().manual_seed(1))
    images = generator.train()(codes)
    assert images.shape == (16, 2, 56, 60)
    assert float(images.detach().min()) >= 0.0
    assert float(images.detach().max()) <= 1.0
    assert torch.equal(images[:, 0], images[:, 1])  # every channel the same strokes
    # Points lie in the central 42.9 × 40 px box (x from 8.6, y from 8), σ at most 4 px (2 px
    # scaled by 56 / 28): the centre of pixel (1, 1) is at least 9.6 px, 2.4 σ, from any
    # point, so two strokes ink it under 1 − (1 − exp(−2.4² / 2))² = 0.11.
    corners = images[:, :, :2, :2]
    assert float(corners.max()) < 0.11
    grey = ((images > 0.05) & (images < 0.5)).float().mean()
    assert float(grey) > 0.02  # anti-aliased rims, not binary strokes
    images.mean().backward()
    for name, parameter in generator.named_parameters():
        assert parameter.grad is not None, name
        assert float(parameter.grad.abs().sum()) > 0, name
    one = generator(codes[:1])  # a batch of one draws too (layer norm, not batch norm)
    assert one.shape == (1, 2, 56, 60)


def draw(points: list[tuple[float, float]], shape: tuple[int, int] = (9, 9)) -> torch.Tensor:
    """One stroke through ``points`` (pixels, (x, y)), σ 1 px, intensity 1, the MLP bypassed."""
    generator = StrokeGenerator(
        image_shape=(1, *shape), strokes=1, points=len(points), extent=1.0,
        width_range=(0.5 * 28 / min(shape), 2.0 * 28 / min(shape)),
    )  # fmt: skip
    height, width = shape
    raw = []
    for x, y in points:
        raw += [
            math.atanh((x - width / 2) / (width / 2)) / generator.SPREAD,
            math.atanh((y - height / 2) / (height / 2)) / generator.SPREAD,
        ]
    raw += [math.log(0.5), 20.0]  # sigmoid(log 0.5) = 1/3: σ = 0.5 + 1.5 / 3 = 1; intensity ≈ 1
    generator.net = torch.nn.Identity()
    return generator(torch.tensor([raw]))[0, 0]


def test_a_stroke_is_rendered_from_its_distance_field() -> None:
    """A horizontal stroke of σ 1 px and intensity 1: ink exp(−d²/2) at distance d."""
    image = draw([(2.5, 4.5), (6.5, 4.5)])
    assert float(image[4, 4]) == pytest.approx(1.0, abs=1e-6)  # on the segment
    assert float(image[2, 4]) == pytest.approx(math.exp(-2.0), rel=1e-4)  # 2 px above it
    assert float(image[4, 0]) == pytest.approx(math.exp(-2.0), rel=1e-4)  # 2 px before it
    # A joint inks no more than the line through it: the distance is to the nearest segment.
    jointed = draw([(2.5, 4.5), (4.5, 4.5), (6.5, 4.5)])
    assert torch.allclose(jointed, image, atol=1e-6)
    # A stroke of one repeated point is a round dot, finite everywhere.
    dot = draw([(4.5, 4.5), (4.5, 4.5)])
    assert float(dot[4, 4]) == pytest.approx(1.0, abs=1e-6)
    assert float(dot[4, 6]) == pytest.approx(math.exp(-2.0), rel=1e-4)
    with pytest.raises(ValueError, match="width_range"):
        StrokeGenerator(image_shape=(1, 9, 9), width_range=(0.0, 2.0))


@pytest.mark.parametrize("kind", nets.KINDS)
def test_generators_are_sized_on_the_meta_device_without_changing_their_weights(kind: str) -> None:
    torch.manual_seed(0)
    checked = nets.build_generator(kind=kind, latent_dim=16, image_shape=(1, 28, 28), count=2)
    torch.manual_seed(0)
    plain = nets.GeneratorEnsemble(
        [
            nets.StrokeGenerator(latent_dim=16, image_shape=(1, 28, 28))
            if kind == "strokes"
            else nets.Generator(latent_dim=16, image_shape=(1, 28, 28))
            for _ in range(2)
        ]
    )
    assert_same_weights(plain, checked)
    if kind != "strokes":  # a latent_dim of a million was a 47,852 GB allocation
        with pytest.raises(FreekdError, match="generator_width or generators"):
            nets.build_generator(latent_dim=10**6, image_shape=(3, 224, 224), width=4096)
