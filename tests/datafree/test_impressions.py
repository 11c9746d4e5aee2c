"""Data Impressions (Nayak et al. 2019) on the tiny digits teacher: the class similarity, where
the templates come from, the Dirichlet targets and the crafting itself."""

from __future__ import annotations

import math
from pathlib import Path

import pytest
import torch
from torch import nn

from freekd.config import TeacherSourceConfig
from freekd.datafree.synthesizers.impressions import (
    CONCENTRATION_FLOOR,
    DataImpressions,
    class_similarity,
    classifier_templates,
)
from freekd.teachers import Teacher, load_teacher
from tests.datafree.test_contract import SHAPE, make_student


@pytest.fixture(scope="module")
def teacher(tiny_teacher_path: Path) -> Teacher:
    return load_teacher(TeacherSourceConfig(path=str(tiny_teacher_path)))


def make(seed: int = 0, **params: object) -> DataImpressions:
    values: dict[str, object] = {"batch_size": 40, "iterations": 30}
    values.update(params)
    return DataImpressions(
        image_shape=SHAPE,
        num_classes=10,
        rng=torch.Generator().manual_seed(seed),
        device=torch.device("cpu"),
        **values,  # type: ignore[arg-type]
    )


def test_class_similarity_is_the_row_normalized_cosine_of_the_templates() -> None:
    templates = torch.tensor([[1.0, 0.0], [0.0, 1.0], [1.0, 1.0]])
    # Cosines: (0, 1) = 0, (0, 2) = (1, 2) = 1/√2, diagonal 1.
    c = 1 / math.sqrt(2)
    # Row 0: [1, 0, c] → min 0, max 1 → unchanged; row 2: [c, c, 1] → [0, 0, 1].
    expected = torch.tensor([[1.0, 0.0, c], [0.0, 1.0, c], [0.0, 0.0, 1.0]])
    assert torch.allclose(class_similarity(templates), expected, atol=1e-6)
    # Scaling a template does not change it (cosine), and rows span [0, 1].
    scaled = class_similarity(templates * torch.tensor([[3.0], [0.5], [2.0]]))
    assert torch.allclose(scaled, expected, atol=1e-6)


class _LateClassifier(nn.Module):
    """The classifier is defined first but called last; a decoy linear with K outputs is
    called first."""

    def __init__(self) -> None:
        super().__init__()
        self.head = nn.Linear(6, 10)
        self.decoy = nn.Linear(64, 10)
        self.body = nn.Linear(10, 6)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(torch.relu(self.body(self.decoy(x.flatten(1)))))


def test_templates_are_the_last_called_linear_layer_with_k_outputs() -> None:
    torch.manual_seed(0)
    net = _LateClassifier()
    templates, where = classifier_templates(net, SHAPE, 10)
    assert where == "layer head"
    assert templates is not None
    assert torch.equal(templates, net.head.weight.detach())
    assert not any(m._forward_hooks for m in net.modules())  # no hook left behind


def test_a_teacher_without_a_linear_classifier_falls_back_to_the_identity() -> None:
    net = nn.Sequential(nn.Conv2d(1, 10, 8), nn.Flatten())  # logits from a convolution
    synthesizer = make(iterations=2)
    synthesizer.synthesize(
        Teacher(net, num_classes=10, input_shape=SHAPE, description="conv head"), make_student()
    )
    assert synthesizer.similarity is not None
    assert torch.equal(synthesizer.similarity, torch.eye(10).clamp_min(CONCENTRATION_FLOOR))
    assert synthesizer.report_entries()["similarity"].startswith("identity (no linear layer")


def test_soft_targets_are_seeded_dirichlet_draws_peaked_at_their_class(teacher: Teacher) -> None:
    synthesizer = make()
    concentration = synthesizer._concentrations(teacher)
    assert concentration.min() >= CONCENTRATION_FLOOR
    assert torch.allclose(concentration.diagonal(), torch.ones(10))
    classes = torch.arange(10).repeat(40)
    targets = synthesizer._soft_targets(classes, concentration)
    assert targets.shape == (400, 10)
    assert torch.allclose(targets.sum(1), torch.ones(400), atol=1e-5)
    assert bool((targets >= 0).all())
    # The target class has the largest concentration, so it gets the largest mean share.
    means = torch.stack([targets[classes == k].mean(0) for k in range(10)])
    assert bool((means.argmax(1) == torch.arange(10)).all())
    # Each class's draws alternate β = 1, 0.1, ...: the class at position i has drawn i // 10
    # times before; β = 0.1 gives more peaked vectors.
    low = (torch.arange(400) // 10) % 2 == 1
    assert targets[low].max(1).values.mean() > targets[~low].max(1).values.mean()
    again = make()._soft_targets(classes, concentration)
    assert torch.equal(targets, again)


def test_crafting_moves_the_teachers_softmax_towards_the_targets(teacher: Teacher) -> None:
    synthesizer = make(iterations=60)
    student = make_student()
    synthesizer.synthesize(teacher, student)
    assert synthesizer.memory.images is not None
    crafted = synthesizer.memory.images[-40:]
    # The same draws again: the targets and the starting noise of that batch.
    replay = make()
    concentration = replay._concentrations(teacher)
    from freekd.datafree.batches import balanced_targets

    classes = balanced_targets(40, 10, replay.rng)
    targets = replay._soft_targets(classes, concentration)
    noise = torch.rand((40, *SHAPE), generator=replay.rng)

    def cross_entropy(images: torch.Tensor) -> float:
        with torch.no_grad():
            log_p = torch.log_softmax(teacher(images) / 20.0, dim=1)
        return float(-(targets * log_p).sum(1).mean())

    assert cross_entropy(crafted) < cross_entropy(noise) - 0.05
    assert synthesizer.teacher_queries == 60 * 40 + 2  # and the forward that found the layer
    assert synthesizer.images_synthesized == 40
    # The teacher's top class on a crafted image is mostly its target's top class (on noise, it
    # is one class for nearly every image).
    with torch.no_grad():
        agree = (teacher(crafted).argmax(1) == targets.argmax(1)).float().mean()
        before = (teacher(noise).argmax(1) == targets.argmax(1)).float().mean()
    assert before < 0.2
    assert agree > 0.6


def test_a_spent_time_budget_ends_a_round_early(teacher: Teacher) -> None:
    synthesizer = make(iterations=500)
    synthesizer.budget_spent = lambda: True
    synthesizer.synthesize(teacher, make_student())
    assert synthesizer.teacher_queries == 40 + 2  # the first step only (and the layer's probe)
    assert len(synthesizer.memory) == 40


@pytest.mark.parametrize(
    ("params", "message"),
    [
        ({"iterations": 0}, "iterations must be at least 1, got 0"),
        ({"batch_size": 0}, "batch_size must be at least 1"),
        ({"temperature": 0.0}, "temperature must be positive"),
        ({"lr": 0.0}, "lr must be positive"),
        ({"beta_low": 0.0}, "beta_low must be positive"),
        ({"beta_high": float("nan")}, "beta_high must be positive"),
        ({"l2_weight": -1.0}, "l2_weight must be at least 0"),
        ({"total_variation_weight": float("nan")}, "total_variation_weight must be at least 0"),
    ],
)
def test_bad_parameters_are_one_line(params: dict[str, float], message: str) -> None:
    """ValueError: the pipeline turns it into one line naming --method and the fix."""
    with pytest.raises(ValueError, match=message):
        make(**params)


def test_a_bad_parameter_on_the_command_line_is_one_line(tiny_teacher_path: Path) -> None:
    from typer.testing import CliRunner

    from freekd.cli import app

    result = CliRunner().invoke(
        app,
        [
            "datafree", "--teacher", str(tiny_teacher_path), "--method", "impressions",
            "--set", "synthesizer.params.iterations=0", "--out", "/nonexistent/never-written",
        ],
    )  # fmt: skip
    assert result.exit_code == 2
    lines = result.output.strip().splitlines()
    assert len(lines) == 1
    assert "--method impressions: iterations must be at least 1, got 0" in lines[0]
    assert "fix --set synthesizer.params" in lines[0]


class _AuxiliaryHead(nn.Module):
    """A main head returned, and an auxiliary head of the same width called after it."""

    def __init__(self) -> None:
        super().__init__()
        self.body = nn.Linear(64, 6)
        self.head = nn.Linear(6, 10)
        self.aux = nn.Linear(6, 10)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = torch.relu(self.body(x.flatten(1)))
        out = self.head(h)
        self.aux(h)
        return out


class _HiddenWidthK(nn.Module):
    """A hidden linear layer with K outputs, then a classifier that is a 1x1 convolution."""

    def __init__(self) -> None:
        super().__init__()
        self.hidden = nn.Linear(64, 10)
        self.head = nn.Conv1d(10, 10, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.hidden(x.flatten(1))[:, :, None])[:, :, 0]


def test_only_the_layer_that_gives_the_teachers_output_holds_the_templates() -> None:
    torch.manual_seed(0)
    auxiliary = _AuxiliaryHead()
    templates, where = classifier_templates(auxiliary, SHAPE, 10)
    assert where == "layer head"
    assert templates is not None
    assert torch.equal(templates, auxiliary.head.weight.detach())
    templates, where = classifier_templates(_HiddenWidthK(), SHAPE, 10)
    assert templates is None
    assert where == "no linear layer with 10 outputs gives the teacher's output"


def test_a_degenerate_template_keeps_its_class_peak() -> None:
    templates = torch.tensor([[1.0, 0.0], [0.0, 0.0], [1.0, 1.0]])
    similarity = class_similarity(templates)
    assert torch.equal(similarity.diagonal(), torch.ones(3))
    assert torch.equal(class_similarity(torch.zeros(1, 4)), torch.ones(1, 1))


def test_the_similarity_source_survives_a_resume(teacher: Teacher) -> None:
    first = make(iterations=2)
    first.synthesize(teacher, make_student())
    second = make(iterations=2, seed=5)
    second.load_state_dict(first.state_dict())
    assert second.report_entries() == first.report_entries()
    assert second.report_entries()["similarity"].startswith("final-layer class templates")
    # The resumed one recomputes the similarity without counting its probe again.
    first.synthesize(teacher, make_student())
    second.synthesize(teacher, make_student())
    assert second.teacher_queries == first.teacher_queries
    assert torch.equal(second.sample(4), first.sample(4))


def test_a_torchscript_teacher_says_its_layer_was_not_checked() -> None:
    torch.manual_seed(0)
    scripted = torch.jit.script(_AuxiliaryHead())
    templates, where = classifier_templates(scripted, SHAPE, 10)
    assert templates is not None
    assert where == "layer aux, TorchScript: not checked against the output"


def test_direct_pixels_are_rescaled_to_the_unit_range_after_every_step(teacher: Teacher) -> None:
    """The authors' code: pixels optimized themselves, the batch min-max rescaled to [0, 1]."""
    synthesizer = make(iterations=5, parametrization="direct")
    synthesizer.synthesize(teacher, make_student())
    assert synthesizer.memory.images is not None
    crafted = synthesizer.memory.images
    assert float(crafted.min()) == 0.0
    assert float(crafted.max()) == 1.0
    assert not crafted.requires_grad
    with pytest.raises(ValueError, match="parametrization must be one of sigmoid, direct"):
        make(parametrization="tanh")
