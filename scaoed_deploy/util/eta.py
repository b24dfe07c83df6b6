"""Progress with the time left for one long step that says nothing while it runs (a library call: ModelOpt
AutoCast, NNCF's quantization, ONNX Runtime's static quantization take minutes at K = 5 on a 2-core CPU).

``long_step(step, kind, message, nodes)`` re-says ``message`` every few seconds with the time spent and the
time left, from an expected duration: units (the graph's node count, squared for AutoCast) x seconds per unit,
as this machine last measured it for ``kind`` (kept in ``step_times.json`` of the user's cache folder), else
the rate in ``DEFAULT_SECONDS_PER_UNIT``. When the step is done, its measured rate replaces the kept one, so the second
estimate on a machine is that machine's own. A step that runs past its estimate says so instead of a
negative time left.
"""

from __future__ import annotations

import contextlib
import json
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path

from .files import atomic_path, cache_dir

#: Seconds per unit on a 2-core CPU, a unit being an ONNX node, or for AutoCast a node squared: it took 8 s at K = 1
#: (887 nodes) and 352 s at K = 5 (4,380), about quadratic. NNCF (one round): 166 s at K = 5; ONNX Runtime's
#: quantize_static and ModelOpt's INT8: 19 and 18 s at K = 1.
DEFAULT_SECONDS_PER_UNIT = {"autocast": 1.8e-5, "nncf": 0.038, "ort-quantize": 0.022, "modelopt-quantize": 0.020}
#: The name of every long step's ticker thread starts with this (precision.quiet lets what it writes through).
TICKER_PREFIX = "long_step:"
#: How a step's time grows with the node count: units = nodes ** power.
POWER = {"autocast": 2}


def _times_file() -> Path:
    return cache_dir() / "step_times.json"


def _known() -> dict[str, float]:
    try:
        data = json.loads(_times_file().read_text())
        return {k: float(v) for k, v in data.items() if isinstance(v, (int, float)) and v > 0}
    except (OSError, ValueError, AttributeError):
        return {}


def expected_seconds(kind: str, nodes: int) -> float:
    """This machine's last rate for ``kind`` (else the default) x the step's units for ``nodes``."""
    return nodes ** POWER.get(kind, 1) * _known().get(kind, DEFAULT_SECONDS_PER_UNIT.get(kind, 0.05))


def remember(kind: str, nodes: int, seconds: float) -> None:
    """Keep ``seconds`` per unit as this machine's rate for ``kind`` (best effort: a read-only cache is skipped)."""
    if nodes <= 0 or seconds <= 0:
        return
    data = dict(_known(), **{kind: seconds / nodes ** POWER.get(kind, 1)})
    with contextlib.suppress(OSError):
        _times_file().parent.mkdir(parents=True, exist_ok=True)
        with atomic_path(_times_file()) as tmp:
            Path(tmp).write_text(json.dumps(data, indent=1, sort_keys=True) + "\n")


def clock(seconds: float) -> str:
    seconds = max(0, round(seconds))
    return f"{seconds // 60} min {seconds % 60:02d} s" if seconds >= 60 else f"{seconds} s"


def progress_text(message: str, spent: float, expected: float) -> str:
    if spent <= expected:
        return f"{message}: {clock(spent)} spent, about {clock(expected - spent)} left"
    return f"{message}: {clock(spent)} spent, longer than the {clock(expected)} expected"


@contextlib.contextmanager
def long_step(step: Callable[[str], None], kind: str, message: str, nodes: int, every: float = 2.0) -> Iterator[None]:
    """Runs the body while a ticker thread re-says the step with the time spent and left every ``every`` seconds,
    through ``step.tick`` where the step function has one (a log prints a tick now and then, a spinner each),
    else ``step``; a body that finishes records its rate."""
    expected = expected_seconds(kind, nodes)
    tick = getattr(step, "tick", step)
    t0 = time.monotonic()
    step(progress_text(message, 0.0, expected))
    done = threading.Event()

    def ticks():
        while not done.wait(every):
            tick(progress_text(message, time.monotonic() - t0, expected))

    ticker = threading.Thread(target=ticks, name=f"{TICKER_PREFIX}{kind}", daemon=True)
    ticker.start()
    try:
        yield
    finally:
        done.set()
        ticker.join()
    remember(kind, nodes, time.monotonic() - t0)  # not reached when the body raised
