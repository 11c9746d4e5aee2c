"""User-facing errors.

Every problem a user can cause (a missing or hostile checkpoint, an unknown name, a shape that does
not fit, a diverged loss) raises :class:`FreekdError` with a one-line message that names the problem
and the fix. The CLI turns it into that line on stderr and exit status 2, without a traceback.
"""

from __future__ import annotations


class FreekdError(Exception):
    """A problem with the user's input or run; the message is one line naming problem and fix."""


class UnknownNameError(FreekdError, KeyError):
    """A registry name that does not exist; the message lists the known names."""

    def __str__(self) -> str:  # KeyError would otherwise wrap the message in quotes
        return str(self.args[0]) if self.args else ""
