"""A run saved before a setting existed resumes with the value that reproduces it."""

from __future__ import annotations

from freekd.crossmodal.config import CrossModalDistillConfig, CrossModalTeacherConfig
from freekd.train.resume import ADDED_SETTINGS, saved_settings


def test_saved_settings_fill_only_the_fields_a_config_has() -> None:
    saved = {"teacher": "t.pt", "seed": 3}
    distill = saved_settings(CrossModalDistillConfig, saved)
    assert distill["min_steps"] == ADDED_SETTINGS["min_steps"] == 0  # the pre-min_steps budget
    assert distill["teacher"] == "t.pt"
    assert distill["seed"] == 3
    assert "min_steps" not in saved_settings(CrossModalTeacherConfig, {"seed": 1})
    # what the run saved wins over the filler
    assert saved_settings(CrossModalDistillConfig, {"min_steps": 500})["min_steps"] == 500
