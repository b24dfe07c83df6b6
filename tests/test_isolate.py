"""Long steps in a child process: the value or the exception comes back, the peak memory is the step's own, a
signal to the parent ends the child at once, and a child the kernel kills is one error line."""

from __future__ import annotations

import os
import signal
import threading
import time

import pytest

from scaoed_deploy.errors import ScaoedError
from scaoed_deploy.isolate import GRACE_S, run_step


def _allocate(mb: int) -> int:
    """``mb`` MB made resident, then given back to the system (an anonymous mapping: no allocator keeps it)."""
    import mmap

    block = mmap.mmap(-1, mb << 20)
    for i in range(0, len(block), 4096):  # touch every page: resident, not just reserved
        block[i] = 1
    size = len(block)
    block.close()
    return size


def _fail() -> None:
    raise ScaoedError("the step's own error")


def _sleep(seconds: float) -> None:
    time.sleep(seconds)


def _die() -> None:
    os.kill(os.getpid(), signal.SIGKILL)


def test_the_value_and_the_steps_own_peak_come_back():
    import resource

    before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    got = run_step(_allocate, 300, name="allocate")
    assert got.value == 300 << 20 and got.peak_rss_mb >= 300
    assert resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - before < 100 << 10  # KiB: not in this process


def test_an_error_keeps_its_type_and_a_killed_child_is_one_line():
    with pytest.raises(ScaoedError, match="the step's own error"):
        run_step(_fail, name="fail")
    with pytest.raises(ScaoedError, match=r"die: the step's process died without an answer \(killed by the kernel"):
        run_step(_die, name="die")


def test_an_interrupt_in_the_parent_ends_the_child_within_the_grace_period():
    import multiprocessing

    old = signal.signal(signal.SIGINT, signal.default_int_handler)  # Ctrl-C as from a terminal, whatever was inherited
    timer = threading.Timer(1.0, os.kill, (os.getpid(), signal.SIGINT))
    timer.start()
    t0 = time.monotonic()
    try:
        with pytest.raises(KeyboardInterrupt):
            run_step(_sleep, 60, name="sleep")
    finally:
        signal.signal(signal.SIGINT, old)
    assert time.monotonic() - t0 < 1.0 + GRACE_S + 2
    assert not [p for p in multiprocessing.active_children() if p.name.startswith("scaoed-step:")]


# ---------------------------------------------------------------------------- memory
def test_a_blocks_peak_is_its_own_and_nested_blocks_each_get_theirs():
    from scaoed_deploy.isolate.memory import peak_of, rss_mb

    peaks: dict = {}
    base = rss_mb()
    with peak_of("outer", peaks):
        with peak_of("inner", peaks):
            _allocate(200)
        run_step(_allocate, 300, name="child")  # a child's peak counts, on top of this process's memory
    with peak_of("after", peaks):
        pass
    assert peaks["inner"] >= base + 190 and peaks["outer"] >= base + 290
    assert peaks["after"] < peaks["inner"] - 150  # the high-water mark was reset: not the process's peak so far


def test_rlimit_as_bounds_what_is_available():
    import subprocess
    import sys

    code = (
        "import resource\nfrom scaoed_deploy.isolate.memory import available_mb, _status_kb\n"
        "size = _status_kb('VmSize') * 1024\n"
        "resource.setrlimit(resource.RLIMIT_AS, (size + (300 << 20), resource.RLIM_INFINITY))\n"
        "print(*available_mb(), sep='|')\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout.strip()
    free, source = out.split("|")
    assert source == "under RLIMIT_AS" and 200 < float(free) <= 300


def _memory_cgroup(name: str, limit_bytes: int):
    """A memory cgroup of its own with a hard limit (v1 or v2), or a skip where none can be made."""
    from pathlib import Path

    for base, limit_file in (
        (Path("/sys/fs/cgroup/memory"), "memory.limit_in_bytes"),
        (Path("/sys/fs/cgroup"), "memory.max"),
    ):
        if not (base / limit_file).exists() and not (base / "cgroup.controllers").exists():
            continue
        group = base / f"{name}-{os.getpid()}"
        try:
            group.mkdir()
            (group / limit_file).write_text(str(limit_bytes))
        except OSError:
            if group.exists():
                group.rmdir()
            continue
        return group
    pytest.skip("no memory cgroup can be made here (needs root and a writable cgroup tree)")


def test_a_calibration_that_would_not_fit_is_refused_before_it_starts_under_a_real_cgroup_limit(tmp_path, k2_maps_onnx):
    """build-engine --int8 of a K = 2 model on 160 px crops, in a memory cgroup of 600 MB: one error line that names
    the step, what it needs and what is free, exit 1, nothing written."""
    import subprocess
    import sys

    import numpy as np
    from references import one_error

    from scaoed_deploy.images import Image, write_image

    calib = tmp_path / "calib"
    calib.mkdir()
    rng = np.random.default_rng(0)
    for i in range(3):
        write_image(calib / f"c{i}.png", Image(rgb=rng.random((200, 200, 3), dtype=np.float32)))
    group = _memory_cgroup("scaoed-test", 600 << 20)
    procs = group / "cgroup.procs"
    cmd = [
        sys.executable,
        "-m",
        "scaoed_deploy.cli",
        "build-engine",
        "--int8",
        "--target",
        "onnxruntime-cpu",
        "--onnx",
        str(k2_maps_onnx),
        "--calib",
        str(calib),
        "--calib-count",
        "6",
        "--export-dir",
        str(tmp_path / "export"),
    ]
    try:
        done = subprocess.run(
            cmd, capture_output=True, text=True, timeout=300, preexec_fn=lambda: procs.write_text(str(os.getpid()))
        )
    finally:
        time.sleep(0.2)
        group.rmdir()
    line = one_error(done.stderr)
    assert done.returncode == 1, done.stderr
    assert (
        "INT8 calibration (onnxruntime-cpu) needs about" in line and "under this process's memory cgroup limit" in line
    )
    assert "fewer --stages" in line and "nothing was written" in line
    assert not (tmp_path / "export").exists() or not list((tmp_path / "export").iterdir())


def _talk(n: int, step) -> int:
    step("making")
    step.tick("making: 1 s spent")
    return n + 1


def test_a_childs_progress_reaches_the_parents_step_function_as_it_is_said():
    said: list[tuple[str, str]] = []

    def step(message):
        said.append(("step", message))

    step.tick = lambda message: said.append(("tick", message))
    assert run_step(_talk, 41, name="talk", progress=step).value == 42
    assert said == [("step", "making"), ("tick", "making: 1 s spent")]
