"""Teachers: frozen classifiers loaded from any of the four kinds of file users bring."""

from freekd.teachers.base import Teacher
from freekd.teachers.load import load_teacher

__all__ = ["Teacher", "load_teacher"]
