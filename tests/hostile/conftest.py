"""Fixtures of other test folders that the hostile-input tables reuse."""

from tests.privacy.conftest import teachers

__all__ = ["teachers"]
