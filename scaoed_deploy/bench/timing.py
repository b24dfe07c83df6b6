"""Timing a runner: latency after warm-up, peak memory, the machine it ran on and the load beside it.

CPU runs time each call with ``perf_counter``; GPU runs use CUDA events (torch) or synchronise around each
call (ONNX Runtime, TensorRT). Peak memory is the process's resident set sampled while a runner is timed
(CPU) or torch's CUDA peak. ``bench`` and ``optimize`` time every candidate with ``measure``.
"""

from __future__ import annotations

import os
import platform
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field

import numpy as np

from ..cpu import this_cpu
from ..isolate.memory import rss_mb
from ..runtime.cpu_memory import release_free_memory


# ---------------------------------------------------------------------------- machine
def machine() -> dict:
    from importlib.metadata import PackageNotFoundError, version

    import torch

    cpu = this_cpu()
    versions = {}
    for pkg in (
        "scaoed-deploy",
        "torch",
        "onnx",
        "onnxruntime",
        "onnxruntime-gpu",
        "openvino",
        "nncf",
        "nvidia-modelopt",
        "tensorrt",
        "polygraphy",
    ):
        try:
            versions[pkg] = version(pkg)
        except PackageNotFoundError:
            pass
    gpu = None
    if torch.cuda.is_available():
        major, minor = torch.cuda.get_device_capability(0)
        gpu = {"name": torch.cuda.get_device_name(0), "compute_capability": f"{major}.{minor}"}
    peak = {
        "clock_mhz": cpu.mhz,
        "macs_per_cycle_per_core": cpu.macs_per_cycle(),
        "gmacs_per_s_per_core": cpu.peak_gmacs(1),
        "assumes": "a run's peak: its threads x the clock /proc/cpuinfo reports x "
        "macs_per_cycle (cpu.py); a kernel that multiplies less than a direct convolution (Winograd) or a boosted "
        "clock can exceed it",
    }
    return {
        "cpu": cpu.name,
        "cores": os.cpu_count(),
        "isa": cpu.isa,
        "isa_class": cpu.isa_class,
        "peak": peak,
        "isa_capped_by": cpu.capped_by,
        "gpu": gpu,
        "python": platform.python_version(),
        "platform": platform.platform(),
        "versions": versions,
    }


# ---------------------------------------------------------------------------- memory
class RssSampler:
    """Peak resident set size of this process while the block runs (Linux /proc; else ru_maxrss)."""

    def __init__(self, every_s: float = 0.005):
        self.every_s, self.peak = every_s, 0
        self._stop = threading.Event()

    @staticmethod
    def rss() -> int:
        mb = rss_mb()  # VmRSS, as isolate.memory reads it (0 without /proc)
        if mb:
            return int(mb * 1024 * 1024)
        import resource

        return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024

    def _loop(self):
        while not self._stop.is_set():
            self.peak = max(self.peak, self.rss())
            time.sleep(self.every_s)

    def __enter__(self):
        release_free_memory()  # what earlier rows freed but malloc kept is not this row's
        self.peak = self.rss()
        self._thread = threading.Thread(target=self._loop, daemon=True)
        self._thread.start()
        return self

    def __exit__(self, *exc):
        self._stop.set()
        self._thread.join()
        self.peak = max(self.peak, self.rss())


# ---------------------------------------------------------------------------- timing
#: ``until(times)`` is asked after each timed call (seconds so far) and ends the timing early with its reason.
Until = Callable[[list[float]], "str | None"]


def time_calls(
    fn, x: np.ndarray, warmup: int, iters: int, cuda: bool, until: Until | None = None
) -> tuple[list, str | None]:
    """Seconds per call after ``warmup`` calls, and why timing stopped before ``iters`` calls (None: it did not)."""
    import torch

    for _ in range(warmup):
        fn(x)
    times = []
    for _ in range(iters):
        if cuda:
            torch.cuda.synchronize()
        t0 = time.perf_counter()
        fn(x)
        if cuda:
            torch.cuda.synchronize()
        times.append(time.perf_counter() - t0)
        stop = until(times) if until and len(times) < iters else None
        if stop:
            return times, stop
    return times, None


def cuda_event_times(fn, x, warmup: int, iters: int, until: Until | None = None) -> tuple[list, str | None]:
    """Seconds per call by CUDA events around each call, after ``warmup`` calls (whatever ``fn`` does with ``x``:
    bench's rows copy it to the device and back, the GPU latency script keeps it there); as ``time_calls``."""
    import torch

    for _ in range(warmup):
        fn(x)
    times = []
    for _ in range(iters):
        start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        start.record()
        fn(x)
        end.record()
        torch.cuda.synchronize()
        times.append(start.elapsed_time(end) / 1000)
        stop = until(times) if until and len(times) < iters else None
        if stop:
            return times, stop
    return times, None


def latency_stats(times: list[float]) -> dict:
    t = np.asarray(times) * 1000
    return {
        "median": float(np.median(t)),
        "p90": float(np.percentile(t, 90)),
        "p99": float(np.percentile(t, 99)),
        "min": float(t.min()),
        "std": float(t.std()),
        "iters": len(times),
    }


# ---------------------------------------------------------------------------- machine load
BUSY_CORES = 0.25  # other processes using more than this many cores on average make a run's ratios unreliable


def _machine_busy_seconds() -> float | None:
    """CPU seconds the whole machine has been busy since boot (/proc/stat), or None where there is none."""
    try:
        with open("/proc/stat") as f:
            vals = [int(v) for v in f.readline().split()[1:9]]
    except (OSError, ValueError):
        return None
    return (sum(vals) - vals[3] - vals[4]) / os.sysconf("SC_CLK_TCK")  # all but idle and iowait


def _own_seconds() -> float:
    t = os.times()
    return t.user + t.system + t.children_user + t.children_system


class LoadMeter:
    """What other processes did to the machine between ``LoadMeter()`` and ``finish()``: load averages before
    and after, and the CPU time they took (the machine's busy time less this process's own)."""

    def __init__(self):
        self.load_start = os.getloadavg()[0] if hasattr(os, "getloadavg") else None
        self.busy, self.own, self.wall = _machine_busy_seconds(), _own_seconds(), time.perf_counter()
        self.result: dict = {}

    def finish(self) -> dict:
        wall = time.perf_counter() - self.wall
        busy = _machine_busy_seconds()
        others = None if busy is None or self.busy is None else max(0.0, busy - self.busy - (_own_seconds() - self.own))
        self.result = {
            "loadavg_1min_start": self.load_start,
            "loadavg_1min_end": os.getloadavg()[0] if hasattr(os, "getloadavg") else None,
            "other_processes_cpu_s": round(others, 1) if others is not None else None,
            "other_processes_cores": round(others / wall, 2) if others is not None and wall > 0 else None,
            "busy": bool(others is not None and wall > 0 and others / wall > BUSY_CORES),
        }
        return self.result

    def warning(self) -> str | None:
        r = self.result
        if not r["busy"]:
            return None
        return (
            f"the machine was busy: other processes took {r['other_processes_cores']:.2f} cores on average "
            f"during the run ({r['other_processes_cpu_s']:.0f} CPU s); its ratios are not to be quoted"
        )


@dataclass
class Measurement:
    latency_ms: dict  # median, p90, p99, min, std, iters
    peak_memory_mb: float
    memory_kind: str
    setup_s: float  # from t0 (the caller's start of setting up) to the end of the first call
    stopped: str | None = None  # why fewer than the timed calls asked were made (``until``'s reason)
    times_ms: list = field(default_factory=list)  # every timed call, in order


def measure(
    fn, x: np.ndarray, warmup: int, iters: int, cuda: bool, t0: float, events: bool = False, until: Until | None = None
) -> Measurement:
    """Time ``fn(x)``: its first call (compilation, allocation) ends the setup begun at ``t0``, then ``warmup``
    untimed and up to ``iters`` timed calls (fewer when ``until`` says why); by CUDA events when ``events``
    (torch on CUDA), else by the wall clock."""
    import torch

    if cuda:
        torch.cuda.reset_peak_memory_stats()
    with RssSampler() as rss:
        fn(x)
        setup_s = round(time.perf_counter() - t0, 2)
        if cuda and events:
            times, stopped = cuda_event_times(fn, x, warmup, iters, until)
        else:
            times, stopped = time_calls(fn, x, warmup, iters, cuda, until)
    if cuda:
        return Measurement(
            latency_stats(times),
            torch.cuda.max_memory_allocated() / 2**20,
            "CUDA peak (torch allocator)",
            setup_s,
            stopped,
            [t * 1000 for t in times],
        )
    return Measurement(
        latency_stats(times), rss.peak / 2**20, "process RSS peak", setup_s, stopped, [t * 1000 for t in times]
    )
