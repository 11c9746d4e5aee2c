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


def shown(value: object, limit: int = 80) -> str:
    """``repr(value)`` fit for a one-line message: its first line, cut to ``limit`` characters
    (a module's repr runs to many lines), with the type named when it was cut."""
    text = repr(value)
    first = text.splitlines()[0] if text else text
    if first == text and len(text) <= limit:
        return text
    return f"{first[:limit].rstrip()}… (a {type(value).__name__})"


def check_path_argument(value: object, name: str) -> None:
    """Refuse, in one line, a Python ``name=`` argument that is not a file path (a network in
    memory, a number): runs and loads start from files, as on the command line."""
    import os

    if not isinstance(value, str | os.PathLike):
        raise FreekdError(
            f"{name}= takes a file path (str or Path), got {shown(value)}; a model in memory "
            "must be saved to a file first (torch.save of its state_dict)"
        )


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
