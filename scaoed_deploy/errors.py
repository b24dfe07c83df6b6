"""Errors a user can act on.

Every error that comes from bad input (a missing or corrupt file, a wrong key
layout, an unsupported image) is a ``ScaoedError``: the CLI prints its message
as one line and exits with its ``exit_code``, never with a traceback.
"""

from __future__ import annotations


class ScaoedError(Exception):
    """An error with a one-line message meant for the user."""

    exit_code = 1


class CheckpointError(ScaoedError):
    """A checkpoint is missing, unreadable, or in the wrong layout."""


class ImageError(ScaoedError):
    """An image cannot be read or written as asked."""


class UsageError(ScaoedError):
    """Options that do not fit together (the CLI's usage exit code)."""

    exit_code = 2


class DiskFullError(ScaoedError):
    """No space (or quota) left where a file is written: every later write would fail the same way."""


class VerificationError(ScaoedError):
    """An artifact failed a numerical check (parity, NaN/Inf)."""

    exit_code = 3


def first_line(e: BaseException, limit: int = 200) -> str:
    """The first line of a library's error message: enough to say what broke, on one line."""
    lines = str(e).strip().splitlines()
    return lines[0][:limit] if lines else type(e).__name__


def short_list(items, limit: int = 5) -> str:
    """'a, b, c (+12 more)': long key lists stay on one readable line."""
    items = list(items)
    head = ", ".join(str(i) for i in items[:limit])
    return head + (f" (+{len(items) - limit} more)" if len(items) > limit else "")
