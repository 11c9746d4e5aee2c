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


def check_regular_file(path: object, what: str) -> None:
    """Refuse a path that is not a regular file before it is opened: a device (``/dev/zero``
    reads forever), a pipe (its open blocks until a writer comes) or a socket.

    Raises:
        FreekdError: ``path`` exists and is not a regular file or a folder (folders and missing
            paths get their own messages where they are opened).
    """
    import os
    import stat

    try:
        mode = os.stat(str(path)).st_mode
    except OSError:
        return
    if not stat.S_ISREG(mode) and not stat.S_ISDIR(mode):
        raise FreekdError(
            f"{what} {path} is not a regular file (a device, a pipe or a socket); pass a file"
        )
