"""Noisy aggregation: σ = 0 is the plurality vote, seeds reproduce, the noise has its scale."""

from __future__ import annotations

import pytest
import torch

from freekd.privacy.aggregation import (
    ABSTAIN,
    confident_gnmax_labels,
    gnmax_labels,
    interactive_gnmax_labels,
    lnmax_labels,
)


def votes(seed: int = 0, n: int = 500, k: int = 10, teachers: int = 250) -> torch.Tensor:
    rng = torch.Generator().manual_seed(seed)
    choices = torch.randint(0, k, (n, teachers), generator=rng)
    return torch.nn.functional.one_hot(choices, k).sum(dim=1)


def test_zero_noise_is_the_plurality_vote() -> None:
    counts = votes()
    labels = gnmax_labels(counts, sigma=0.0, rng=torch.Generator().manual_seed(0))
    torch.testing.assert_close(labels, counts.argmax(dim=1))


def test_same_seed_same_labels_other_seed_other_labels() -> None:
    counts = votes()

    def draw(seed: int) -> torch.Tensor:
        return gnmax_labels(counts, sigma=10.0, rng=torch.Generator().manual_seed(seed))

    torch.testing.assert_close(draw(1), draw(1))
    assert not torch.equal(draw(1), draw(2))


def test_noise_has_the_stated_scale() -> None:
    # With two classes and equal votes, label 0 wins iff noise_0 − noise_1 > 0: use the margin
    # needed to flip a gap of g, Pr = Φ(−g/(√2σ)), to measure σ.
    counts = torch.tensor([[110, 100]]).repeat(20_000, 1)
    labels = gnmax_labels(counts, sigma=10.0, rng=torch.Generator().manual_seed(0))
    flipped = (labels == 1).double().mean().item()
    expected = 0.5 * torch.erfc(torch.tensor(10 / (2 * 10.0))).item()
    assert flipped == pytest.approx(expected, abs=0.01)
    laplace = lnmax_labels(counts, gamma=0.1, rng=torch.Generator().manual_seed(0))
    # Difference of two Laplace(1/γ): Pr[> g] = ½e^{−γg}(1 + γg/2).
    expected_laplace = 0.5 * torch.exp(torch.tensor(-1.0)).item() * (1 + 0.5)
    assert (laplace == 1).double().mean().item() == pytest.approx(expected_laplace, abs=0.01)


def test_confident_gnmax_abstains_below_the_threshold() -> None:
    counts = torch.tensor([[240, 10, 0], [90, 80, 80]])
    labels = confident_gnmax_labels(
        counts, threshold=200, sigma_threshold=1e-6, sigma=1e-6, rng=torch.Generator()
    )
    assert labels.tolist() == [0, ABSTAIN]


def test_bad_votes_are_refused() -> None:
    with pytest.raises(ValueError, match="K ≥ 2"):
        gnmax_labels(torch.ones(3), sigma=1.0, rng=torch.Generator())
    with pytest.raises(ValueError, match="NaN"):
        gnmax_labels(torch.tensor([[1.0, float("nan")]]), sigma=1.0, rng=torch.Generator())


def test_interactive_gnmax_asks_the_teachers_only_where_they_disagree() -> None:
    counts = torch.tensor([[240, 10, 0], [240, 10, 0], [90, 80, 80]])
    student = torch.tensor([[0.98, 0.01, 0.01], [0.01, 0.98, 0.01], [0.4, 0.3, 0.3]])
    labels, by_teachers = interactive_gnmax_labels(
        counts, student, confidence_scale=200.0, threshold=100.0, student_threshold=0.9,
        sigma_threshold=1e-6, sigma=1e-6, rng=torch.Generator(),
    )  # fmt: skip
    # 1: the student agrees (240 − 196 < 100): its own label, no teacher answer.
    # 2: the student disagrees (240 − 2 ≥ 100): the teachers answer.
    # 3: nobody is sure: dropped.
    assert labels.tolist() == [0, 0, ABSTAIN]
    assert by_teachers.tolist() == [False, True, False]
