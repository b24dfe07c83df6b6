"""Files: written atomically (a temporary beside the target, renamed on success), read as one JSON object with one
line per way it can be broken, named by their sha256, and the user's cache folder.

A write that fails is one line (``write_error``: a ``DiskFullError`` when no space is left); the temporaries of a
write in progress are tracked so that a forced stop removes them, and ``sweep_stale_temporaries`` removes those a
killed writer left.
"""

from __future__ import annotations

import contextlib
import errno
import functools
import hashlib
import json
import os
import tempfile
from pathlib import Path

from ..errors import DiskFullError, ScaoedError, first_line


def current_umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def read_json_object(path: str | os.PathLike, what: str = "JSON file") -> dict:
    """A JSON file that must hold an object (a sidecar, a config), with one line for every way it can be broken:
    unreadable, not UTF-8, not JSON, or JSON of another shape."""
    try:
        data = json.loads(Path(path).read_bytes().decode("utf-8"))
    except OSError as e:
        raise ScaoedError(f"{path}: cannot read the {what} ({e.strerror or e})") from e
    except UnicodeDecodeError as e:
        raise ScaoedError(f"{path}: the {what} is not UTF-8 text (byte {e.start})") from e
    except json.JSONDecodeError as e:
        raise ScaoedError(f"{path}: the {what} is not valid JSON ({e})") from e
    if not isinstance(data, dict):
        raise ScaoedError(f"{path}: the {what} holds a JSON {type(data).__name__}, not an object")
    return data


def sha256_of(path: str | Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def cache_dir() -> Path:
    """Where learned figures live: $SCAOED_DEPLOY_CACHE, else $XDG_CACHE_HOME/scaoed-deploy, else ~/.cache/..."""
    explicit = os.environ.get("SCAOED_DEPLOY_CACHE")
    if explicit:
        return Path(explicit)
    return Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "scaoed-deploy"


TEMP_MARK = ".tmp-"  # in every temporary name atomic_path makes: ".STEM.tmp-HOST-PID-RANDOM.SUFFIX"
_LIVE_TEMPORARIES: set[Path] = set()  # temporary files being written now, removed by a forced stop
_FORCED_EXIT_HOOKS: list = []  # what a forced stop still does (keep finished work) before the process ends


def track_temporary(path: str | os.PathLike) -> None:
    _LIVE_TEMPORARIES.add(Path(path))


def untrack_temporary(path: str | os.PathLike) -> None:
    _LIVE_TEMPORARIES.discard(Path(path))


def live_temporaries() -> list[Path]:
    """The temporary files being written now (a stop that cannot wait for their writers removes them)."""
    return list(_LIVE_TEMPORARIES)


@contextlib.contextmanager
def on_forced_exit(hook):
    """Run ``hook()`` if the command is ended by force (a signal it could not take in time) inside this block."""
    _FORCED_EXIT_HOOKS.append(hook)
    try:
        yield
    finally:
        _FORCED_EXIT_HOOKS.remove(hook)


def forced_exit_hooks() -> list:
    return list(_FORCED_EXIT_HOOKS)


@functools.cache
def _host_tag() -> str:
    import hashlib
    import socket

    return hashlib.sha1(socket.gethostname().encode()).hexdigest()[:8]


def is_temporary(path: str | os.PathLike) -> bool:
    """A temporary file of atomic_path's naming (a write in progress, or one a killed writer left): never an input."""
    name = Path(path).name
    return name.startswith(".") and TEMP_MARK in name


def temporary_name_parts(path: str | os.PathLike) -> tuple[str, list[str]] | None:
    """(the stem of the file it stands for, [host tag, writer's pid, random, ...]) of a temporary file of
    atomic_path's naming, or None for any other file."""
    if not is_temporary(path):
        return None
    stem, _, rest = Path(path).name[1:].partition(TEMP_MARK)
    return stem, rest.split("-")


def sweep_stale_temporaries(folder: str | os.PathLike) -> list[Path]:
    """Remove the temporary files atomic_path left in ``folder`` whose writer is gone (a process of this host that
    no longer runs; a writer on another host is left alone). Returns what was removed."""
    folder = Path(folder)
    if not folder.is_dir():
        return []
    host, removed = _host_tag(), []
    for p in folder.iterdir():
        named = temporary_name_parts(p)
        if named is None:
            continue
        parts = named[1]
        if len(parts) < 3 or parts[0] != host or not parts[1].isdigit():
            continue  # another host's, or of an older naming: its writer cannot be told apart
        try:
            os.kill(int(parts[1]), 0)
            continue  # the writer still runs
        except ProcessLookupError:
            pass
        except PermissionError:
            continue  # a live process of another user
        with contextlib.suppress(OSError):
            p.unlink()
            removed.append(p)
    return removed


@contextlib.contextmanager
def atomic_path(path: str | os.PathLike):
    """Yield a temporary path beside ``path``; rename it onto ``path`` on success.

    The temporary name keeps the suffix, so writers that choose a format by
    extension still work. On any error the temporary file is removed and
    ``path`` is left as it was; a write that fails (a full disk, a quota) is one line, a ``DiskFullError``
    when there is no space left.
    """
    path = Path(path)
    parent = path.parent
    try:
        parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(
            prefix=f".{path.stem}{TEMP_MARK}{_host_tag()}-{os.getpid()}-", suffix=path.suffix, dir=parent
        )
    except OSError as e:
        raise write_error(path, e) from e
    os.close(fd)
    tmp_path = Path(tmp)
    track_temporary(tmp_path)
    try:
        yield tmp_path
        os.chmod(tmp_path, 0o666 & ~current_umask())  # mkstemp makes 0600; give the file the usual permissions
        os.replace(tmp_path, path)
    except BaseException as e:
        with contextlib.suppress(OSError):
            tmp_path.unlink()
        if isinstance(e, OSError) and not isinstance(e, ScaoedError):
            raise write_error(path, e) from e
        raise
    finally:
        untrack_temporary(tmp_path)


def write_error(path: str | os.PathLike, e: OSError) -> ScaoedError:
    """One line for a failed write: a ``DiskFullError`` when the disk (or quota) is full."""
    full = e.errno in (errno.ENOSPC, errno.EDQUOT)
    return (DiskFullError if full else ScaoedError)(f"cannot write {path}: {e.strerror or first_line(e)}")
