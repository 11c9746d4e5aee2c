"""Relation-, graph-based and decoupled losses against hand computations and their papers'
invariances."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F
from hypothesis import given, settings
from hypothesis import strategies as st

from freekd.losses import kd_kl
from freekd.losses.contrastive import queue_contrastive
from freekd.losses.kd import decoupled_kd
from freekd.losses.relations import (
    angles,
    correlation_congruence,
    correlation_matrix,
    gram,
    irg_edges,
    irg_transformation,
    pairwise_distances,
    probabilistic_transfer,
    rkd_angle,
    rkd_distance,
    similarity_preserving,
)

RELATION_LOSSES = (
    similarity_preserving,
    rkd_distance,
    rkd_angle,
    probabilistic_transfer,
    correlation_congruence,
    irg_edges,
)


def features(seed: int, shape: tuple[int, ...] = (6, 5)) -> torch.Tensor:
    return torch.randn(shape, generator=torch.Generator().manual_seed(seed), dtype=torch.float64)


def test_distances_and_angles_by_hand() -> None:
    points = torch.tensor([[0.0, 0.0], [3.0, 0.0], [0.0, 4.0]], dtype=torch.float64)
    distances = pairwise_distances(points)
    assert torch.allclose(distances, torch.tensor([[0, 3, 4], [3, 0, 5], [4, 5, 0.0]]).double())
    # The angle at vertex 0 between points 1 and 2 is a right angle; at vertex 1 its cosine is 3/5.
    assert angles(points)[0, 1, 2].item() == pytest.approx(0.0, abs=1e-12)
    assert angles(points)[1, 0, 2].item() == pytest.approx(3 / 5)


def test_gram_rows_are_unit_and_similarity_by_hand() -> None:
    x = features(0, (4, 2, 3, 3))
    g = gram(x)
    assert torch.allclose(g.norm(dim=1), torch.ones(4, dtype=torch.float64))
    flat = x.flatten(1)
    assert torch.allclose(g, F.normalize(flat @ flat.T, dim=1))


@settings(max_examples=20, deadline=None)
@given(scale=st.floats(0.01, 100.0), seed=st.integers(0, 1000))
def test_rkd_is_scale_invariant(scale: float, seed: int) -> None:
    """Park et al. 2019 §3.2: distances normalized by their mean, and angles, ignore scale."""
    student, teacher = features(seed), features(seed + 1, (6, 9))
    assert rkd_distance(student * scale, teacher).item() == pytest.approx(
        rkd_distance(student, teacher).item(), rel=1e-6, abs=1e-9
    )
    assert rkd_angle(student * scale, teacher / scale).item() == pytest.approx(
        rkd_angle(student, teacher).item(), rel=1e-6, abs=1e-9
    )


@settings(max_examples=20, deadline=None)
@given(seed=st.integers(0, 1000))
def test_relation_losses_are_equivariant_to_the_batch_order(seed: int) -> None:
    """Tung & Mori 2019: permuting the batch permutes both Gram matrices alike (the loss stays);
    the same holds for every relation loss here."""
    student, teacher = features(seed, (7, 3, 2, 2)), features(seed + 1, (7, 5, 2, 2))
    order = torch.randperm(7, generator=torch.Generator().manual_seed(seed))
    for loss in RELATION_LOSSES:
        assert loss(student[order], teacher[order]).item() == pytest.approx(
            loss(student, teacher).item(), rel=1e-9, abs=1e-12
        ), loss.__name__


def test_each_relation_loss_is_zero_on_identical_features() -> None:
    x = features(3, (5, 4, 3, 3))
    for loss in RELATION_LOSSES:
        assert loss(x, x.clone()).item() == pytest.approx(0.0, abs=1e-12), loss.__name__
        assert loss(x, features(4, (5, 7))).item() > 0, loss.__name__


def test_sp_by_hand() -> None:
    student = torch.tensor([[1.0, 0.0], [0.0, 1.0]], dtype=torch.float64)
    teacher = torch.tensor([[1.0, 1.0], [1.0, 1.0]], dtype=torch.float64)
    # G̃_S = I (rows already unit), G̃_T = all 1/√2; (1/4)·Σ (G_S − G_T)² = (1/4)·(2(1 − 1/√2)² + 2/2)
    expected = (2 * (1 - 1 / math.sqrt(2)) ** 2 + 1) / 4
    assert similarity_preserving(student, teacher).item() == pytest.approx(expected)


def test_pkt_by_hand() -> None:
    student = torch.tensor([[1.0, 0.0], [0.0, 1.0]], dtype=torch.float64)
    teacher = torch.tensor([[1.0, 0.0], [1.0, 0.0]], dtype=torch.float64)
    # Kernel (1 + cos)/2: student [[1, .5], [.5, 1]] → rows [2/3, 1/3]; teacher all 1 → rows ½.
    p_s = torch.tensor([[2 / 3, 1 / 3], [1 / 3, 2 / 3]], dtype=torch.float64)
    expected = (0.5 * torch.log(0.5 / p_s)).mean().item()
    assert probabilistic_transfer(student, teacher).item() == pytest.approx(expected, rel=1e-6)


def test_cc_kernel_approaches_the_gaussian_rbf() -> None:
    x = F.normalize(features(5), dim=1)
    exact = torch.exp(-0.4 * pairwise_distances(x, squared=True))
    assert torch.allclose(correlation_matrix(x, gamma=0.4, order=12), exact, atol=1e-9)
    assert not torch.allclose(correlation_matrix(x, gamma=0.4, order=1), exact, atol=1e-3)


def test_irg_transformation_by_hand_and_bridges_widths() -> None:
    first = torch.tensor([[[[1.0]], [[3.0]]]])  # (1, 2, 1, 1): pooled (1, 3)
    second = torch.tensor([[0.0, 0.0]])
    assert irg_transformation(first, second).item() == pytest.approx(math.sqrt(10))
    wide = torch.tensor([[1.0, 3.0, 5.0, 7.0]])  # averaged down to two channels: (2, 6)
    narrow = torch.tensor([[2.0, 6.0]])
    assert irg_transformation(wide, narrow).item() == pytest.approx(0.0, abs=1e-6)


def test_dkd_with_alpha_one_and_beta_one_minus_pt_is_kd() -> None:
    """Zhao et al. 2022 Eq. 6: KD = TCKD + (1 − p^T_t) · NCKD."""
    student, teacher = features(6, (8, 5)), features(7, (8, 5)) * 3
    target = torch.tensor([0, 1, 2, 3, 4, 0, 1, 2])
    p_t = F.softmax(teacher / 4.0, dim=1).gather(1, target[:, None]).squeeze(1)
    value = decoupled_kd(student, teacher, target, alpha=1.0, beta=1 - p_t, temperature=4.0)
    assert value.item() == pytest.approx(kd_kl(student, teacher, temperature=4.0).item(), rel=1e-9)


def test_dkd_is_zero_on_equal_logits_and_its_gradient_is_finite() -> None:
    logits = features(8, (4, 6)).requires_grad_()
    target = torch.tensor([0, 5, 2, 2])
    assert decoupled_kd(logits, logits.detach(), target).item() == pytest.approx(0.0, abs=1e-12)
    decoupled_kd(logits, features(9, (4, 6)), target).backward()
    assert logits.grad is not None
    assert torch.isfinite(logits.grad).all()


def test_queue_contrastive_by_hand() -> None:
    anchors = torch.tensor([[1.0, 0.0]], dtype=torch.float64)
    positives = torch.tensor([[1.0, 0.0]], dtype=torch.float64)
    negatives = torch.tensor([[0.0, 1.0], [-1.0, 0.0]], dtype=torch.float64)
    expected = -math.log(math.e**10 / (math.e**10 + math.e**0 + math.e**-10))
    value = queue_contrastive(anchors, positives, negatives, temperature=0.1)
    assert value.item() == pytest.approx(expected, rel=1e-6)
    # A masked negative no longer counts.
    masked = queue_contrastive(
        anchors, positives, negatives, temperature=0.1, negative_mask=torch.tensor([[False, True]])
    )
    assert masked.item() == pytest.approx(-math.log(math.e**10 / (math.e**10 + math.e**-10)))
    same = queue_contrastive(anchors, anchors, anchors.repeat(3, 1), temperature=0.5)
    assert same.item() == pytest.approx(math.log(4))
