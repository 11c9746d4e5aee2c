"""Data Impressions (Nayak et al. 2019): the class similarity, the Dirichlet targets, the
classifier lookup and the synthesizer on the tiny digits teacher."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from torch import nn

from freekd.config import TeacherSourceConfig
from freekd.datafree.batches import class_similarity, classifier_weights, dirichlet_targets
from freekd.datafree.synthesizers.impressions import DataImpressions
from freekd.errors import FreekdError
from freekd.teachers import Teacher, load_teacher
from tests.datafree.test_contract import SHAPE, make_student


def test_class_similarity_is_the_row_normalized_cosine_by_hand() -> None:
    weights = torch.tensor([[1.0, 0.0], [0.0, 1.0], [1.0, 1.0]])
    # Cosines: rows [1, 0, s], [0, 1, s], [s, s, 1] with s = 1/√2.
    s = 2**-0.5
    expected = torch.tensor(
        [[1.0, 0.0, s], [0.0, 1.0, s], [0.0, 0.0, 1.0]]  # row 3: (s - s) / (1 - s) = 0
    )
    torch.testing.assert_close(class_similarity(weights), expected)
    with pytest.raises(ValueError, match="K ≥ 2"):
        class_similarity(torch.ones(1, 3))


def test_dirichlet_targets_lie_on_the_simplex_follow_the_rng_and_favour_the_class() -> None:
    similarity = torch.eye(4) * 0.9 + 0.1
    classes = torch.arange(4).repeat(500)
    draw = lambda seed: dirichlet_targets(  # noqa: E731
        classes, similarity, [1.0, 0.1], torch.Generator().manual_seed(seed)
    )
    first, again, other = draw(0), draw(0), draw(1)
    assert first.shape == (2000, 4)
    assert torch.all(first >= 0)
    torch.testing.assert_close(first.sum(1), torch.ones(2000))
    torch.testing.assert_close(first, again)
    assert not torch.equal(first, other)
    # E[y_k] = α_k / Σα = 1 / 1.3 for the asked class at either scale.
    asked = first[torch.arange(2000), classes]
    assert asked.mean().item() == pytest.approx(1 / 1.3, abs=0.03)
    # The smaller scale gives sparser vectors: their largest entry is larger on average.
    high, low = first[0::2].max(1).values.mean(), first[1::2].max(1).values.mean()
    assert low > high
    with pytest.raises(ValueError, match="positive"):
        dirichlet_targets(classes, similarity, [0.0], torch.Generator())


def test_the_classifier_is_the_last_parameter_with_one_row_per_class() -> None:
    net = nn.Sequential(nn.Conv2d(1, 10, 3), nn.Flatten(), nn.Linear(10 * 6 * 6, 7), nn.ReLU())
    net.append(nn.Linear(7, 10))
    name, weights = classifier_weights(net, 10)
    assert name == "4.weight"
    assert torch.equal(weights, net[4].weight.detach())
    assert classifier_weights(nn.Sequential(nn.Linear(4, 3)), 10) is None


@pytest.fixture(scope="module")
def teacher(tiny_teacher_path: Path) -> Teacher:
    return load_teacher(TeacherSourceConfig(path=str(tiny_teacher_path)))


def make(seed: int = 0, **params: object) -> DataImpressions:
    values: dict[str, object] = {"batch_size": 32, "iterations": 30}
    values.update(params)
    return DataImpressions(
        image_shape=SHAPE,
        num_classes=10,
        rng=torch.Generator().manual_seed(seed),
        device=torch.device("cpu"),
        **values,  # type: ignore[arg-type]
    )


def test_impressions_move_the_teachers_outputs_towards_their_targets(teacher: Teacher) -> None:
    few, many = make(iterations=1), make(iterations=40)
    first = few.synthesize(teacher, make_student())["impression"]
    last = many.synthesize(teacher, make_student())["impression"]
    assert last < first - 0.05
    assert many.report_entries()["class_similarity"].endswith("weight")
    assert len(many.memory) == 32
    assert many.teacher_queries == 32 * 40
    assert many.images_synthesized == 32


def test_a_teacher_without_a_classifier_row_per_class_gets_the_uniform_similarity() -> None:
    class Paired(nn.Module):  # class k's logit: the mean of channels 2k and 2k + 1
        def __init__(self) -> None:
            super().__init__()
            self.conv = nn.Conv2d(1, 18, 3)  # weight (18, 1, 3, 3): no row per class

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return self.conv(x).mean(dim=(2, 3)).view(len(x), 9, 2).mean(dim=2)

    teacher = Teacher(Paired(), num_classes=9, input_shape=SHAPE, description="test")
    assert classifier_weights(teacher, 9) is None
    synthesizer = DataImpressions(
        image_shape=SHAPE, num_classes=9, rng=torch.Generator(), device=torch.device("cpu"),
        batch_size=9, iterations=2,
    )  # fmt: skip
    synthesizer.synthesize(teacher, make_student())
    assert synthesizer.report_entries()["class_similarity"] == "uniform"
    assert synthesizer.sample(4).shape == (4, *SHAPE)


@pytest.mark.parametrize(
    "params", [{"iterations": 0}, {"temperature": 0.0}, {"scale_low": 0.0}, {"scale_high": -1.0}]
)
def test_bad_hyperparameters_are_refused(params: dict[str, float]) -> None:
    with pytest.raises(FreekdError):
        make(**params)
