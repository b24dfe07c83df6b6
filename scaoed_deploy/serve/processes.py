"""The processes of a served model: the tripwire that ends tritonserver with its parent, the process tree (the
server and its python stubs), their memory, and what a server that was killed leaves behind.

A ``kill -9`` of ``scaoed-deploy serve`` cannot run its clean-up: tritonserver is started with a
parent-death signal (``PR_SET_PDEATHSIG``, SIGKILL), and its python stubs exit when their parent
is gone. Their shared-memory regions (``/dev/shm/triton_python_backend_shm_region_*``, 1 MiB each)
and ``serve``'s temporary folder are removed by the next ``serve`` (``clean_stale``): a region no
live process names, a folder whose owner process is gone.
"""

from __future__ import annotations

import contextlib
import ctypes
import os
import shutil
import signal
import tempfile
import time
from pathlib import Path

SHM = Path("/dev/shm")
SHM_PREFIX = "triton_python_backend_shm_region_"
WORKDIR_PREFIX = "scaoed-triton-"
OWNER_FILE = "owner.pid"  # in serve's temporary folder: the pid of the serve process that made it
STALE_AFTER_S = 60  # a region younger than this may belong to a server that is starting now
PR_SET_PDEATHSIG = 1


def die_with_parent() -> None:
    """In a child before exec: SIGKILL it when its parent dies (Linux; elsewhere nothing)."""
    with contextlib.suppress(OSError, AttributeError):
        ctypes.CDLL(None, use_errno=True).prctl(PR_SET_PDEATHSIG, signal.SIGKILL)


def process_tree(pid: int) -> set[int]:
    """A process and its descendants (the server and its python stubs), from /proc; empty once it is gone."""
    parents = {}
    for stat in Path("/proc").glob("[0-9]*/stat"):
        with contextlib.suppress(OSError, ValueError, IndexError):
            fields = stat.read_text().rsplit(")", 1)[1].split()
            parents[int(stat.parent.name)] = int(fields[1])
    if pid not in parents:
        return set()
    tree, frontier = {pid}, [pid]
    while frontier:
        children = [p for p, pp in parents.items() if pp in frontier and p not in tree]
        tree.update(children)
        frontier = children
    return tree


def process_tree_rss(pid: int) -> int:
    """Resident memory (bytes) of a process and its descendants."""
    total = 0
    for p in process_tree(pid):
        with contextlib.suppress(OSError):
            for line in Path(f"/proc/{p}/status").read_text().splitlines():
                if line.startswith("VmRSS:"):
                    total += int(line.split()[1]) * 1024
    return total


def shm_regions(pid: int) -> set[str]:
    """The shared-memory regions the python backend made for the stubs under ``pid`` (named on their command lines).
    A server that is killed leaves them in /dev/shm; ``TritonServer.stop`` removes them."""
    names = set()
    for p in process_tree(pid):
        with contextlib.suppress(OSError):
            names.update(
                a.decode()
                for a in Path(f"/proc/{p}/cmdline").read_bytes().split(b"\0")
                if a.startswith(SHM_PREFIX.encode())
            )
    return names


def _named_in_live_processes() -> set[str]:
    """Every shared-memory region name on a live process's command line."""
    names = set()
    for cmdline in Path("/proc").glob("[0-9]*/cmdline"):
        with contextlib.suppress(OSError):
            names.update(
                a.decode(errors="replace")
                for a in cmdline.read_bytes().split(b"\0")
                if a.startswith(SHM_PREFIX.encode())
            )
    return names


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def clean_stale(now: float | None = None) -> dict[str, list[str]]:
    """Remove what killed servers left: python-backend regions no live process names (older than
    STALE_AFTER_S) and serve's temporary folders whose owner process is gone. Returns what went."""
    now = time.time() if now is None else now
    live = _named_in_live_processes()
    regions = []
    for region in SHM.glob(SHM_PREFIX + "*") if SHM.is_dir() else []:
        with contextlib.suppress(OSError):
            if region.name not in live and now - region.stat().st_mtime > STALE_AFTER_S:
                region.unlink()
                regions.append(region.name)
    folders = []
    for folder in Path(tempfile.gettempdir()).glob(WORKDIR_PREFIX + "*"):
        try:
            owner = int((folder / OWNER_FILE).read_text())
        except (OSError, ValueError):
            continue  # not made by a serve that records its owner: left alone
        if not _alive(owner):
            shutil.rmtree(folder, ignore_errors=True)
            folders.append(str(folder))
    return {"shm_regions": regions, "folders": folders}
