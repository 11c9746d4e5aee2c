"""``--method auto``'s parameters follow what the teacher is made of (``datafree.auto``)."""

from __future__ import annotations

import pytest
from torch import nn

from freekd.config import ComponentConfig
from freekd.datafree.auto import auto_synthesizer_params, default_synthesizer
from freekd.datafree.config import DataFreeConfig
from freekd.datafree.pipeline import check_settings
from freekd.errors import FreekdError
from freekd.teachers import Teacher


def teacher_of(*layers: nn.Module) -> Teacher:
    return Teacher(
        nn.Sequential(*layers), num_classes=10, input_shape=(1, 8, 8), description="test"
    )


MLP = teacher_of(nn.Flatten(), nn.Linear(64, 32), nn.ReLU(), nn.Linear(32, 10))
ONE_CONV = teacher_of(nn.Conv2d(1, 4, 3), nn.ReLU(), nn.Flatten(), nn.Linear(4 * 36, 10))
TWO_CONV = teacher_of(
    nn.Conv2d(1, 4, 3), nn.ReLU(), nn.Conv2d(4, 4, 3), nn.Flatten(), nn.Linear(4 * 16, 10)
)
WITH_BATCHNORM = teacher_of(nn.Conv2d(1, 4, 3), nn.BatchNorm2d(4), nn.Flatten(), nn.Linear(144, 10))


@pytest.mark.parametrize(
    ("teacher", "convolutions", "expected"),
    [
        (MLP, 0, {"replay_fraction": 0.5}),
        (ONE_CONV, 1, {}),
        (TWO_CONV, 2, {}),
    ],
)
def test_zskt_gets_replay_only_without_convolutions(
    teacher: Teacher, convolutions: int, expected: dict[str, object]
) -> None:
    assert teacher.convolution_layers == convolutions
    assert default_synthesizer(teacher) == "zskt"
    assert auto_synthesizer_params("zskt", teacher, {}) == expected


def test_the_users_parameters_win_and_other_synthesizers_are_left_alone() -> None:
    mine = {"replay_fraction": 0.0, "lr": 0.1}
    assert auto_synthesizer_params("zskt", MLP, mine) == mine
    assert auto_synthesizer_params("nayer", MLP, {}) == {}
    given: dict[str, object] = {}
    auto_synthesizer_params("zskt", MLP, given)
    assert given == {}  # the config's own dict is not changed
    assert default_synthesizer(WITH_BATCHNORM) == "nayer"


def test_a_one_convolution_teacher_gets_no_moving_average_unless_asked() -> None:
    assert auto_synthesizer_params("zskt", ONE_CONV, {}) == {}
    mine = {"generator_momentum": 0.95}
    assert auto_synthesizer_params("zskt", ONE_CONV, mine) == mine


@pytest.mark.parametrize("params", [{"balance_weight": "1"}, {"bn_weight": 5}, {}])
def test_check_settings_under_auto_takes_a_parameter_of_either_candidate(params: dict) -> None:
    # zskt's balance_weight, nayer's bn_weight: auto may run either, so neither is refused
    # before the teacher is known; a name neither has is (tests/audit, the pipeline's check).
    config = DataFreeConfig(synthesizer=ComponentConfig(name="auto", params=dict(params)))
    check_settings(config)
    typo = ComponentConfig(name="auto", params={**params, "bn_wieght": 1})
    bad = DataFreeConfig(synthesizer=typo)
    with pytest.raises(
        FreekdError, match="--method auto \\(nayer or zskt\\) has no parameter 'bn_wieght'"
    ):
        check_settings(bad)


def test_a_torchscript_teacher_with_batchnorm_gets_a_synthesizer_that_needs_no_hooks() -> None:
    """Its BatchNorm statistics cannot be hooked: nayer failed at its first synthesis step."""
    import torch

    from freekd.datafree.pipeline import _check_synthesizer_fits
    from freekd.datafree.synthesizers import SYNTHESIZERS

    layers = nn.Sequential(nn.Conv2d(1, 4, 3), nn.BatchNorm2d(4), nn.Flatten(), nn.Linear(144, 10))
    scripted = Teacher(torch.jit.script(layers.eval()), num_classes=10, input_shape=(1, 8, 8),
                       description="test")  # fmt: skip
    assert scripted.has_batchnorm
    assert scripted.is_torchscript
    assert not WITH_BATCHNORM.is_torchscript
    assert default_synthesizer(scripted) == "zskt"
    for name in ["cmi", "nayer", "deepinversion", "fast", "dafl"]:
        with pytest.raises(FreekdError, match="TorchScript teacher takes no hooks") as error:
            _check_synthesizer_fits(name, SYNTHESIZERS.get(name), scripted)
        assert "zskt" in str(error.value)
    for name in ["zskt", "dfad", "impressions"]:
        _check_synthesizer_fits(name, SYNTHESIZERS.get(name), scripted)
