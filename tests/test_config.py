"""Config loading: YAML is data, values are coerced by annotation, unknown keys are errors."""

from __future__ import annotations

from pathlib import Path

import pytest

from freekd.config import ComponentConfig, coerce_like, dump_yaml, from_dict, load_config
from freekd.datafree.config import DataFreeConfig
from freekd.distill.config import DistillConfig
from freekd.errors import FreekdError
from freekd.pate.config import PateLabelConfig
from freekd.supervised.config import TeacherTrainConfig


def test_defaults_and_dotted_overrides() -> None:
    config = load_config(TeacherTrainConfig, overrides=["trainer.lr=5e-3", "trainer.epochs=3"])
    assert config.trainer.lr == 0.005
    assert config.trainer.epochs == 3
    assert config.arch == "lenet5"


def test_yaml_string_floats_are_coerced(tmp_path: Path) -> None:
    path = tmp_path / "c.yaml"
    path.write_text("trainer:\n  weight_decay: 1e-5\n  max_grad_norm: 5\n")
    config = load_config(TeacherTrainConfig, path)
    assert config.trainer.weight_decay == 1e-5
    assert config.trainer.max_grad_norm == 5.0


def test_plugin_parameters_take_the_kind_of_their_default() -> None:
    """A plug-in's parameters have no annotation the config sees: ``check_params`` reads
    ``--set`` strings by the kind of each default (``coerce_like``)."""
    assert coerce_like(1.0, "1e-5", "p") == 1e-5
    assert coerce_like(1.0, 2, "p") == 2.0
    assert coerce_like(False, "true", "p") is True
    assert coerce_like(4, "3", "p") == 3
    assert coerce_like(4, 16.0, "p") == 16
    assert coerce_like(None, "anything", "p") == "anything"
    assert coerce_like("dcgan", "strokes", "p") == "strokes"
    for default, value, message in (
        (1.0, "abc", "p: expected a number, got 'abc'"),
        (1.0, True, "p: expected a number, got True"),
        (1.0, "nan", "p: expected a finite number, got 'nan'"),
        (1.0, float("inf"), "p: expected a finite number, got inf"),
        (4, "x", "p: expected an integer, got 'x'"),
        (4, 2.5, "p: expected an integer, got 2.5"),
        (4, True, "p: expected an integer, got True"),
        (False, "maybe", "p: expected true or false, got 'maybe'"),
    ):
        with pytest.raises(FreekdError, match=message):
            coerce_like(default, value, "p")


def test_unknown_key_suggests_the_close_one() -> None:
    with pytest.raises(
        FreekdError, match="TeacherTrainConfig.trainer has no field 'lrr'; did you mean 'lr'"
    ):
        load_config(TeacherTrainConfig, overrides=["trainer.lrr=0.2"])


@pytest.mark.parametrize(
    ("override", "message"),
    [
        ("trainer.epochs=abc", "expected an integer"),
        ("trainer.amp=maybe", "true or false"),
        ("trainer.lr=[1]", "expected a number"),
        ("epochs", "expected key=value"),
    ],
)
def test_bad_values_are_one_line_errors(override: str, message: str) -> None:
    with pytest.raises(FreekdError, match=message) as error:
        load_config(TeacherTrainConfig, overrides=[override])
    assert "\n" not in str(error.value)


def test_yaml_is_data_only(tmp_path: Path) -> None:
    path = tmp_path / "evil.yaml"
    path.write_text("arch: !!python/object/apply:os.system ['echo hacked']\n")
    with pytest.raises(FreekdError, match="not valid YAML"):
        load_config(TeacherTrainConfig, path)


def test_round_trip_through_yaml(tmp_path: Path) -> None:
    config = load_config(
        DistillConfig, overrides=["method.params.temperature=2", "teacher.input_shape=1,8,8"]
    )
    assert config.teacher.input_shape == [1, 8, 8]
    path = tmp_path / "config.yaml"
    path.write_text(dump_yaml(config))
    assert load_config(DistillConfig, path) == config


def test_flags_win_over_file_and_base(tmp_path: Path) -> None:
    path = tmp_path / "c.yaml"
    path.write_text("arch: mlp\ntrainer: {epochs: 4}\n")
    config = load_config(
        TeacherTrainConfig,
        path,
        values={"trainer.epochs": 7, "arch": None},
        base={"dataset": "digits"},
    )
    assert (config.dataset, config.arch, config.trainer.epochs) == ("digits", "mlp", 7)


def test_partial_component_keeps_its_defaults_unless_renamed() -> None:
    config = load_config(DistillConfig, overrides=["method.params.ce_weight=0.5"])
    assert config.method.name == "kd"
    assert config.method.params == {"temperature": 4.0, "ce_weight": 0.5}
    renamed = load_config(DistillConfig, overrides=["method.name=other"])
    assert renamed.method.params == {}


def test_datafree_partial_method_is_the_recommended_one_with_those_params() -> None:
    config = load_config(DataFreeConfig, overrides=["method.params.temperature=2"])
    assert config.method == ComponentConfig(name="auto", params={"temperature": 2})
    assert load_config(DataFreeConfig).method is None
    named = load_config(DataFreeConfig, overrides=["method.name=kd"])
    assert named.method == ComponentConfig(name="kd", params={})


def test_from_dict_rejects_non_mapping_group() -> None:
    with pytest.raises(FreekdError, match="expected a mapping"):
        from_dict(TeacherTrainConfig, {"trainer": 3})


@pytest.mark.parametrize("seed", [-1, 2**32, 9_223_372_036_854_775_807])
def test_a_seed_beyond_32_bits_is_refused(seed: int) -> None:
    # A PATE label run with seed 2**63 - 1 wrote its ledger header, then overflowed deriving
    # its first query's seed (ValueError traceback), which locked the folder for good.
    with pytest.raises(FreekdError, match=r"seed must be an integer in \[0, 2\*\*32 - 1\]"):
        load_config(PateLabelConfig, overrides=[f"seed={seed}"])
    assert load_config(PateLabelConfig, overrides=[f"seed={2**32 - 1}"]).seed == 2**32 - 1
