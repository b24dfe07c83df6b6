"""Errors a user can act on, and atomic file writing.

Every error that comes from bad input (a missing or corrupt file, a wrong key
layout, an unsupported image) is a ``ScaoedError``: the CLI prints its message
as one line and exits with its ``exit_code``, never with a traceback.
"""

from __future__ import annotations

import contextlib
import os
import tempfile
from pathlib import Path


class ScaoedError(Exception):
    """An error with a one-line message meant for the user."""

    exit_code = 1


class CheckpointError(ScaoedError):
    """A checkpoint is missing, unreadable, or in the wrong layout."""


class ImageError(ScaoedError):
    """An image cannot be read or written as asked."""


class VerificationError(ScaoedError):
    """An artifact failed a numerical check (parity, NaN/Inf)."""

    exit_code = 3


def current_umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def first_line(e: BaseException, limit: int = 200) -> str:
    """The first line of a library's error message: enough to say what broke, on one line."""
    lines = str(e).strip().splitlines()
    return lines[0][:limit] if lines else type(e).__name__


def short_list(items, limit: int = 5) -> str:
    """'a, b, c (+12 more)': long key lists stay on one readable line."""
    items = list(items)
    head = ", ".join(str(i) for i in items[:limit])
    return head + (f" (+{len(items) - limit} more)" if len(items) > limit else "")


@contextlib.contextmanager
def atomic_path(path: str | os.PathLike):
    """Yield a temporary path beside ``path``; rename it onto ``path`` on success.

    The temporary name keeps the suffix, so writers that choose a format by
    extension still work. On any error the temporary file is removed and
    ``path`` is left as it was.
    """
    path = Path(path)
    parent = path.parent
    try:
        parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(prefix=f".{path.stem}.tmp-", suffix=path.suffix, dir=parent)
    except OSError as e:
        raise ScaoedError(f"cannot write {path}: {e.strerror or e}") from e
    os.close(fd)
    tmp_path = Path(tmp)
    try:
        yield tmp_path
        os.chmod(tmp_path, 0o666 & ~current_umask())  # mkstemp makes 0600; give the file the usual permissions
        os.replace(tmp_path, path)
    except BaseException:
        with contextlib.suppress(OSError):
            tmp_path.unlink()
        raise
