"""kd_kl against identities, the T² factor and an independent reference."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from hypothesis import given
from hypothesis import strategies as st

from freekd.losses import kd_kl
from freekd.losses.kd import standardized


def logits(seed: int, shape: tuple[int, int] = (8, 10)) -> torch.Tensor:
    generator = torch.Generator().manual_seed(seed)
    return torch.randn(shape, generator=generator) * 3


def test_identical_logits_give_zero() -> None:
    x = logits(0)
    assert kd_kl(x, x, temperature=4.0).item() == pytest.approx(0.0, abs=1e-6)


@given(seed=st.integers(0, 10_000), temperature=st.floats(0.5, 20.0))
def test_non_negative(seed: int, temperature: float) -> None:
    assert kd_kl(logits(seed), logits(seed + 1), temperature=temperature).item() >= -1e-6


def test_matches_hand_formula_with_t_squared() -> None:
    student, teacher, temperature = logits(1), logits(2), 3.0
    p_teacher = torch.softmax(teacher / temperature, dim=1)
    log_p_student = torch.log_softmax(student / temperature, dim=1)
    by_hand = (p_teacher * (p_teacher.log() - log_p_student)).sum(dim=1).mean() * temperature**2
    torch.testing.assert_close(kd_kl(student, teacher, temperature=temperature), by_hand)


def test_agrees_with_plain_kl_div_reference() -> None:
    student, teacher = logits(3), logits(4)
    reference = (
        F.kl_div(
            F.log_softmax(student / 2, dim=1), F.softmax(teacher / 2, dim=1), reduction="batchmean"
        )
        * 4
    )
    torch.testing.assert_close(kd_kl(student, teacher, temperature=2.0), reference)


def test_gradcheck_float64() -> None:
    student = logits(5).double().requires_grad_()
    teacher = logits(6).double()
    assert torch.autograd.gradcheck(lambda s: kd_kl(s, teacher, temperature=4.0), (student,))


def test_standardized_rows_have_zero_mean_and_unit_std() -> None:
    logits = torch.randn(6, 10, generator=torch.Generator().manual_seed(0)) * 7 + 3
    z = standardized(logits)
    assert torch.allclose(z.mean(1), torch.zeros(6), atol=1e-6)
    assert torch.allclose(z.std(1), torch.ones(6), atol=1e-5)


@given(scale=st.floats(0.05, 50), shift=st.floats(-20, 20))
def test_standardized_kd_ignores_the_teachers_logit_scale(scale: float, shift: float) -> None:
    generator = torch.Generator().manual_seed(1)
    student, teacher = (
        torch.randn(4, 10, generator=generator),
        torch.randn(4, 10, generator=generator),
    )
    reference = kd_kl(student, teacher, temperature=2.0, standardize=True)
    rescaled = kd_kl(student, teacher * scale + shift, temperature=2.0, standardize=True)
    assert torch.allclose(reference, rescaled, atol=1e-4)
    # Without standardization the scale does matter (the test can fail).
    if abs(scale - 1) > 0.2:
        plain = kd_kl(student, teacher * scale, temperature=2.0)
        assert not torch.allclose(plain, kd_kl(student, teacher, temperature=2.0), atol=1e-4)
