"""Attacks and per-example statistics against closed forms and small constructed cases."""

from __future__ import annotations

import math
import pkgutil

import numpy as np
import pytest
import torch
from hypothesis import given
from hypothesis import strategies as st

from freekd.audit import ATTACKS, DEFAULT_ATTACKS, AuditData, auc
from freekd.audit import attacks as attack_package
from freekd.audit import scores as statistics
from freekd.audit.shadows import (
    inclusion_design,
    load_shadow_outputs,
    save_shadow_outputs,
    subsets_of,
)
from freekd.data import pool_fingerprint
from freekd.errors import FreekdError


def two_class_logits(log_odds: np.ndarray) -> torch.Tensor:
    """Logits (…, N, 2) whose label-0 log-odds φ are exactly ``log_odds``."""
    values = torch.as_tensor(log_odds, dtype=torch.float64)
    return torch.stack([values, torch.zeros_like(values)], dim=-1)


def test_log_odds_is_log_p_over_one_minus_p_and_finite_at_certainty() -> None:
    logits = torch.tensor([[2.0, 0.5, -1.0], [300.0, 0.0, 0.0], [-300.0, 0.0, 0.0]])
    labels = torch.tensor([0, 0, 0])
    phi = statistics.true_class_log_odds(logits, labels)
    p = torch.softmax(logits[0].double(), dim=0)[0].item()
    assert phi[0] == pytest.approx(math.log(p / (1 - p)), rel=1e-12)
    assert phi[1] == pytest.approx(300.0 - math.log(2.0), rel=1e-12)  # p rounds to 1 in float64
    assert phi[2] == pytest.approx(-300.0 - math.log(2.0), rel=1e-12)


@given(
    st.lists(st.floats(-8, 8), min_size=3, max_size=3),
    st.integers(min_value=0, max_value=2),
)
def test_modified_entropy_matches_its_formula(logits: list[float], label: int) -> None:
    z = torch.tensor([logits], dtype=torch.float64)
    p = torch.softmax(z[0], dim=0).numpy()
    expected = -(1 - p[label]) * math.log(p[label]) - sum(
        p[i] * math.log(1 - p[i]) for i in range(3) if i != label
    )
    value = statistics.modified_entropy(z, torch.tensor([label]))[0]
    assert value == pytest.approx(expected, rel=1e-9, abs=1e-12)


def test_loss_confidence_and_entropy_order_a_confident_member_first() -> None:
    logits = torch.tensor([[6.0, 0.0, 0.0], [0.5, 0.3, 0.0]])
    data = AuditData(logits, torch.tensor([0, 0]))
    for name in ("loss", "confidence", "entropy", "modified-entropy"):
        scores = ATTACKS.get(name)().scores(data)
        assert scores[0] > scores[1], name


def gaussian_shadows(
    rng: np.random.Generator, *, examples: int, models: int, gap: float, std: float
) -> tuple[AuditData, np.ndarray]:
    """Examples whose log-odds are N(μ_n + gap, std²) in models that trained on them and
    N(μ_n, std²) otherwise, with per-example offsets μ_n: LiRA's model of the world."""
    offsets = rng.normal(0.0, 2.0, size=examples)
    design = inclusion_design(models, examples, generator=torch.Generator().manual_seed(0))
    shadow_phi = offsets + gap * design.numpy() + rng.normal(0, std, size=(models, examples))
    member = rng.random(examples) < 0.5
    target_phi = offsets + gap * member + rng.normal(0, std, size=examples)
    data = AuditData(
        two_class_logits(target_phi),
        torch.zeros(examples, dtype=torch.long),
        two_class_logits(shadow_phi),
        design,
    )
    return data, member


def test_lira_and_rmia_beat_the_loss_threshold_when_examples_differ_in_difficulty() -> None:
    # Per-example offsets hide membership from a global threshold; calibration recovers it.
    data, member = gaussian_shadows(
        np.random.default_rng(0), examples=2000, models=16, gap=1.5, std=0.5
    )
    loss_auc = auc(ATTACKS.get("loss")().scores(data), member)
    for name in DEFAULT_ATTACKS:
        if ATTACKS.get(name).needs_shadows:
            assert auc(ATTACKS.get(name)().scores(data), member) > max(0.85, loss_auc + 0.15), name


def test_online_lira_score_is_the_gaussian_log_likelihood_ratio() -> None:
    phi_in, phi_out, target = [2.0, 2.4, 2.9, 1.7], [0.1, -0.3, 0.5, 0.0], 1.2
    shadow = np.array([phi_in + phi_out]).T  # (8, 1)
    design = torch.tensor([[True]] * 4 + [[False]] * 4)
    data = AuditData(
        two_class_logits(np.array([target])),
        torch.tensor([0]),
        two_class_logits(shadow),
        design,
    )

    def log_density(x: float, values: list[float]) -> float:
        mean, std = float(np.mean(values)), float(np.std(values, ddof=1))
        return -0.5 * ((x - mean) / std) ** 2 - math.log(std)

    expected = log_density(target, phi_in) - log_density(target, phi_out)
    assert ATTACKS.get("lira-online")().scores(data)[0] == pytest.approx(expected, rel=1e-9)
    offline = ATTACKS.get("lira-offline")().scores(data)[0]
    assert offline == pytest.approx((target - np.mean(phi_out)) / np.std(phi_out, ddof=1), rel=1e-9)


def test_rmia_ranks_by_the_ratio_to_the_reference_models() -> None:
    rng = np.random.default_rng(3)
    data, _ = gaussian_shadows(rng, examples=300, models=8, gap=1.0, std=0.5)
    target = np.exp(statistics.true_class_log_probability(data.target_logits, data.labels))
    assert data.shadow_logits is not None
    reference = np.exp(statistics.true_class_log_probability(data.shadow_logits, data.labels))
    ratio = target / reference.mean(axis=0)
    scores = ATTACKS.get("rmia")().scores(data)
    assert np.array_equal(np.argsort(scores, kind="stable"), np.argsort(ratio, kind="stable"))
    # the score is the fraction of the population the example beats (γ = 1)
    assert scores.max() == pytest.approx(1.0, abs=1 / 600)
    assert scores.min() == pytest.approx(1 / 300, abs=1 / 600)


def test_offline_rmia_uses_the_linear_correction_of_the_out_models() -> None:
    data, _ = gaussian_shadows(np.random.default_rng(4), examples=200, models=8, gap=1.0, std=0.5)
    assert data.shadow_logits is not None
    assert data.shadow_in is not None
    reference = np.exp(statistics.true_class_log_probability(data.shadow_logits, data.labels))
    out = ~data.shadow_in.numpy()
    p_out = (reference * out).sum(axis=0) / out.sum(axis=0)
    target = np.exp(statistics.true_class_log_probability(data.target_logits, data.labels))
    for a in (0.0, 0.4, 1.0):
        ratio = target / (0.5 * ((1 + a) * p_out + (1 - a)))
        scores = ATTACKS.get("rmia-offline")(offline_a=a).scores(data)
        assert np.array_equal(np.argsort(scores, kind="stable"), np.argsort(ratio, kind="stable"))


@pytest.mark.parametrize("name", [n for n in ATTACKS.names() if ATTACKS.get(n).needs_shadows])
def test_shadow_attacks_refuse_to_run_without_shadow_models(name: str) -> None:
    data = AuditData(torch.zeros(4, 3), torch.zeros(4, dtype=torch.long))
    with pytest.raises(FreekdError, match="shadow models"):
        ATTACKS.get(name)().scores(data)


@pytest.mark.parametrize("name", ATTACKS.names())
def test_every_attack_gives_one_finite_deterministic_score_per_example(name: str) -> None:
    data, _ = gaussian_shadows(np.random.default_rng(1), examples=50, models=4, gap=1.0, std=0.3)
    first = ATTACKS.get(name)().scores(data)
    assert first.shape == (50,)
    assert np.isfinite(first).all()
    assert np.array_equal(first, ATTACKS.get(name)().scores(data))


def test_the_registry_holds_exactly_the_attacks_of_the_attack_modules() -> None:
    """Adding an attack is adding one file to ``freekd/audit/attacks/``: the package imports
    every module but ``base``, and each registers its attacks (a family's variants) under names
    that start with the module's own."""
    modules = {
        module.name
        for module in pkgutil.iter_modules(attack_package.__path__)
        if module.name != "base" and not module.name.startswith("_")
    }
    registered: dict[str, set[str]] = {}
    for name in ATTACKS.names():
        package, _, module = ATTACKS.get(name).__module__.rpartition(".")
        assert package == "freekd.audit.attacks", name
        registered.setdefault(module, set()).add(name)
    assert set(registered) == modules
    for module, names in registered.items():
        family = module.replace("_", "-")
        assert all(name == family or name.startswith(f"{family}-") for name in names), module
    assert set(DEFAULT_ATTACKS) <= set(ATTACKS.names())
    assert {"loss", "lira-online", "rmia-offline"} <= set(ATTACKS.names())


def test_rmia_rejects_bad_parameters() -> None:
    with pytest.raises(FreekdError, match="gamma"):
        ATTACKS.get("rmia")(gamma=0.0)
    with pytest.raises(FreekdError, match="offline_a"):
        ATTACKS.get("rmia-offline")(offline_a=2.0)


@given(st.integers(min_value=1, max_value=6), st.integers(min_value=2, max_value=41))
def test_inclusion_design_balances_models_and_examples(pairs: int, examples: int) -> None:
    design = inclusion_design(2 * pairs, examples, generator=torch.Generator().manual_seed(5))
    sizes = design.sum(dim=1)
    assert bool((sizes == examples // 2).all())
    counts = design.sum(dim=0)
    if examples % 2 == 0:
        assert bool((counts == pairs).all())  # every example IN exactly half of the models
        assert bool((design[0::2] ^ design[1::2]).all())  # complementary pairs
    assert subsets_of(design).shape == (2 * pairs, examples // 2)


def test_inclusion_design_needs_two_models() -> None:
    with pytest.raises(FreekdError, match="at least 2"):
        inclusion_design(1, 10, generator=torch.Generator())


def test_shadow_outputs_round_trip_and_refuse_another_pool(tmp_path) -> None:  # type: ignore[no-untyped-def]
    images, labels = torch.rand(6, 1, 4, 4), torch.tensor([0, 1, 2, 0, 1, 2])
    fingerprint = pool_fingerprint(images, labels)
    logits, design = torch.randn(4, 6, 3), inclusion_design(4, 6, generator=torch.Generator())
    path = tmp_path / "shadows.npz"
    save_shadow_outputs(path, logits=logits, included=design, fingerprint=fingerprint, arch="mlp")
    loaded, included, arch = load_shadow_outputs(path, fingerprint=fingerprint)
    assert torch.allclose(loaded, logits)
    assert torch.equal(included, design)
    assert arch == "mlp"
    other = pool_fingerprint(images, torch.tensor([1, 1, 2, 0, 1, 2]))
    with pytest.raises(FreekdError, match="another audit pool"):
        load_shadow_outputs(path, fingerprint=other)
    path.write_bytes(b"not an npz")
    with pytest.raises(FreekdError, match="not a freekd shadow file"):
        load_shadow_outputs(path, fingerprint=fingerprint)


def test_modified_entropy_keeps_its_resolution_where_p_rounds_to_one() -> None:
    logits = torch.tensor([[40.0, 0.0, 0.0], [100.0, 0.0, 0.0]])
    values = statistics.modified_entropy(logits, torch.tensor([0, 0]))
    assert values[0] > values[1] > 0.0  # a larger margin is more member-like, not a tie at 0


def test_fixed_variance_needs_two_models_on_a_side() -> None:
    data = AuditData(
        two_class_logits(np.array([0.5, 1.0])),
        torch.zeros(2, dtype=torch.long),
        two_class_logits(np.array([[0.0, 1.0], [1.0, 0.0]])),
        torch.tensor([[True, False], [False, True]]),
    )
    with pytest.raises(FreekdError, match="at least 4 shadow models"):
        ATTACKS.get("lira-offline-fixed-variance")().scores(data)
