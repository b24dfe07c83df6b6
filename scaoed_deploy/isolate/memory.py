"""Memory: what the machine has free for a step, what a step will need, and what it took.

- ``available_mb()``: the least of ``/proc/meminfo``'s MemAvailable, the room left under this process's
  memory cgroup limit (v1 or v2, every ancestor's limit counted) and under its ``RLIMIT_AS``, with the
  name of the one that bounds it.
- ``peak_of(name, into)``: the peak resident memory of the block, through Linux's resettable high-water
  mark (``/proc/self/clear_refs`` 5, then ``VmHWM``): a block's own peak, not the process's so far; nested
  blocks each get theirs; a step run in a child process (``run_step``) counts as this process's memory
  at the time plus the child's own peak.
- ``check_fits(step, need_mb, hint)``: one ``ScaoedError`` before a step starts when its expected peak
  is over what is free, naming the step, both figures and a way out.

What a step will need comes from the model (``cost.model_footprint``: every tensor of a forward pass at a
size, on the meta device), by the step that knows what it holds.
"""

from __future__ import annotations

import contextlib
import re
from pathlib import Path

from ..errors import ScaoedError

NO_LIMIT = 1 << 60


class _Frame:
    __slots__ = ("peak",)

    def __init__(self):
        self.peak = 0.0


_open: list[_Frame] = []  # the blocks being measured, outermost first, each with its running maximum


def _status_kb(field: str) -> int | None:
    try:
        m = re.search(rf"{field}:\s+(\d+) kB", Path("/proc/self/status").read_text())
    except OSError:
        return None
    return int(m.group(1)) if m else None


def rss_mb() -> float:
    return (_status_kb("VmRSS") or 0) / 1024


def _high_water_mb() -> float:
    return (_status_kb("VmHWM") or 0) / 1024


def _reset_high_water() -> None:
    with contextlib.suppress(OSError):  # no /proc (or not Linux >= 4.0): peaks are the process's so far
        Path("/proc/self/clear_refs").write_text("5")


def _fold(extra_mb: float = 0.0) -> None:
    now = max(_high_water_mb(), rss_mb() + extra_mb)
    for frame in _open:
        frame.peak = max(frame.peak, now)


@contextlib.contextmanager
def peak_of(name: str, into: dict):
    """Measure the block's peak resident memory into ``into[name]`` (MB, the larger of repeated blocks)."""
    _fold()
    frame = _Frame()
    _open.append(frame)
    _reset_high_water()
    try:
        yield
    finally:
        _fold()
        del _open[next(i for i, f in enumerate(_open) if f is frame)]
        into[name] = round(max(into.get(name, 0), frame.peak))


def add_child_peak(peak_mb: float) -> None:
    """A child process's peak, as the open blocks' memory: this process's resident memory plus the child's."""
    _fold(peak_mb)


# ---------------------------------------------------------------------------- what is free
def _meminfo_mb(field: str) -> float | None:
    try:
        m = re.search(rf"{field}:\s+(\d+) kB", Path("/proc/meminfo").read_text())
    except OSError:
        return None
    return int(m.group(1)) / 1024 if m else None


def _read_int(path: Path) -> int | None:
    try:
        text = path.read_text().strip()
    except OSError:
        return None
    return NO_LIMIT if text == "max" else int(text) if text.isdigit() else None


def cgroup_room_mb() -> float | None:
    """The room left under this process's memory cgroup (the tightest of it and its ancestors), or None."""
    root = Path("/sys/fs/cgroup")
    try:
        lines = Path("/proc/self/cgroup").read_text()
    except OSError:
        return None
    room = None
    for line in lines.splitlines():
        parts = line.split(":", 2)
        if len(parts) != 3:
            continue
        _, controllers, path = parts
        if "memory" in controllers.split(","):
            base, limit_file, usage_file = root / "memory", "memory.limit_in_bytes", "memory.usage_in_bytes"
        elif controllers == "" and (root / "cgroup.controllers").exists():
            base, limit_file, usage_file = root, "memory.max", "memory.current"
        else:
            continue
        here = base / path.lstrip("/")
        while True:
            limit, usage = _read_int(here / limit_file), _read_int(here / usage_file)
            if limit is not None and usage is not None and limit < NO_LIMIT // 2:
                left = max(0, limit - usage) / 2**20
                room = left if room is None else min(room, left)
            if here == base or base not in here.parents:
                break
            here = here.parent
    return room


def available_mb() -> tuple[float, str]:
    """(MB free for a new step, what bounds it)."""
    import resource

    options = []
    avail = _meminfo_mb("MemAvailable")
    if avail is not None:
        options.append((avail, "MemAvailable"))
    room = cgroup_room_mb()
    if room is not None:
        options.append((room, "under this process's memory cgroup limit"))
    soft, _ = resource.getrlimit(resource.RLIMIT_AS)
    if soft != resource.RLIM_INFINITY:
        options.append((max(0.0, soft / 2**20 - (_status_kb("VmSize") or 0) / 1024), "under RLIMIT_AS"))
    return min(options) if options else (float("inf"), "unknown")


def check_fits(step: str, need_mb: float, hint: str) -> None:
    """Refuse a step whose expected peak (``need_mb`` more than this process holds now) is over what is free."""
    free, source = available_mb()
    if need_mb > free:
        raise ScaoedError(
            f"{step} needs about {need_mb / 1024:.1f} GB more, but {free / 1024:.1f} GB is free "
            f"({source}); {hint}; nothing was written"
        )
