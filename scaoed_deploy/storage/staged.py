"""Local files standing in for objects while an image is denoised: the input fetched whole to a temporary
file, the output written to a temporary file and put as one object only once it is complete."""

from __future__ import annotations

import contextlib
import tempfile
from pathlib import Path

from .objects import is_url, name_of, read_bytes, write_bytes


@contextlib.contextmanager
def local_copy(source):
    """A local path for ``source``: itself when local (or None), else a temporary copy removed afterwards."""
    if not is_url(source):
        yield source
        return
    with tempfile.TemporaryDirectory(prefix="scaoed-in-") as d:
        path = Path(d) / name_of(source)
        path.write_bytes(read_bytes(source))
        yield path


@contextlib.contextmanager
def staged_output(destination):
    """A local path to write ``destination`` to; when it is a URL, the file is put there after the block succeeds
    (nothing is put when it fails)."""
    if not is_url(destination):
        yield destination
        return
    with tempfile.TemporaryDirectory(prefix="scaoed-out-") as d:
        path = Path(d) / name_of(destination)
        yield path
        write_bytes(destination, path.read_bytes())
