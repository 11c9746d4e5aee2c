"""Graph losses against hand-computed values on a small graph built here, and their properties."""

from __future__ import annotations

import math

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from freekd.losses.graph import local_structure_loss, neighbour_softmax, soft_label_kd

# A path 0 - 1 - 2 and an isolated node 3; both directions of every edge.
PATH = torch.tensor([[0, 1, 1, 2], [1, 0, 2, 1]])


def test_soft_label_kd_is_glnn_eq_1_by_hand() -> None:
    student = torch.tensor([[2.0, 0.0], [0.0, 0.0]])
    teacher = torch.tensor([[0.0, 0.0], [math.log(3.0), 0.0]])
    labels = torch.tensor([0, -1])
    ce, kl = soft_label_kd(student, teacher, labels, lam=0.25)
    p0 = 1 / (1 + math.exp(-2))  # student's p(class 0) on node 0
    assert ce.item() == pytest.approx(0.25 * -math.log(p0))
    # KL(teacher ‖ student): node 0 teacher (½, ½), node 1 teacher (¾, ¼), student (½, ½).
    kl0 = 0.5 * math.log(0.5 / p0) + 0.5 * math.log(0.5 / (1 - p0))
    kl1 = 0.75 * math.log(0.75 / 0.5) + 0.25 * math.log(0.25 / 0.5)
    assert kl.item() == pytest.approx(0.75 * (kl0 + kl1) / 2, rel=1e-5)
    none, _ = soft_label_kd(student, teacher, torch.tensor([-1, -1]), lam=0.5)
    assert none.item() == 0.0


def test_local_structure_loss_by_hand() -> None:
    # Node 1 has two neighbours; nodes 0 and 2 one each (their distribution is 1: no loss).
    student = torch.tensor([[0.0], [0.0], [1.0], [5.0]])
    teacher = torch.tensor([[0.0], [0.0], [0.0], [0.0]])
    loss = local_structure_loss(student, teacher, PATH)
    # Student at node 1: SIM is the RBF kernel, exp(0) = 1 to node 0 and exp(-½) to node 2;
    # LS is their softmax. The teacher's SIM is 1 to both: a uniform LS.
    p = torch.tensor([1.0, math.exp(-0.5)]).exp()
    p = p / p.sum()
    kl_node1 = float((p * (p / 0.5).log()).sum())
    assert loss.item() == pytest.approx(kl_node1 / 3, rel=1e-5)  # mean over nodes 0, 1, 2
    assert local_structure_loss(student, student, PATH).item() == pytest.approx(0.0, abs=1e-7)
    wide = local_structure_loss(student, teacher, PATH, sigma=10.0)
    assert 0 < wide.item() < loss.item()  # a wider kernel flattens the student's distribution
    linear = local_structure_loss(student, teacher, PATH, kernel="linear")
    assert linear.item() == pytest.approx(0.0, abs=1e-7)  # z_1 = 0: every dot product is 0
    empty = local_structure_loss(student, teacher, PATH[:, :0])
    assert empty.item() == 0.0


def test_widths_may_differ_and_only_the_student_gets_a_gradient() -> None:
    student = torch.randn(4, 3, requires_grad=True)
    teacher = torch.randn(4, 7)
    local_structure_loss(student, teacher, PATH).backward()
    assert student.grad is not None
    assert student.grad[3].abs().sum() == 0


@settings(max_examples=30, deadline=None)
@given(st.integers(0, 2**31 - 1), st.floats(-5, 5))
def test_rbf_lsp_is_invariant_to_translating_either_embedding(seed: int, shift: float) -> None:
    generator = torch.Generator().manual_seed(seed)
    student = torch.randn(4, 3, generator=generator, dtype=torch.float64)
    teacher = torch.randn(4, 5, generator=generator, dtype=torch.float64)
    base = local_structure_loss(student, teacher, PATH)
    moved = local_structure_loss(student + shift, teacher - shift, PATH)
    assert moved.item() == pytest.approx(base.item(), rel=1e-9, abs=1e-12)
    assert base.item() >= 0


@settings(max_examples=30, deadline=None)
@given(st.lists(st.floats(-50, 50), min_size=4, max_size=4))
def test_neighbour_softmax_sums_to_one_within_each_node(scores: list[float]) -> None:
    values = torch.tensor(scores, dtype=torch.float64)
    p = neighbour_softmax(values, PATH[0], 4)
    sums = torch.zeros(4, dtype=torch.float64).index_add(0, PATH[0], p)
    assert torch.allclose(sums[:3], torch.ones(3, dtype=torch.float64))
