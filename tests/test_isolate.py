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
    block = bytearray(mb << 20)
    for i in range(0, len(block), 4096):  # touch every page: resident, not just reserved
        block[i] = 1
    return len(block)


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

    timer = threading.Timer(1.0, os.kill, (os.getpid(), signal.SIGINT))
    timer.start()
    t0 = time.monotonic()
    with pytest.raises(KeyboardInterrupt):
        run_step(_sleep, 60, name="sleep")
    assert time.monotonic() - t0 < 1.0 + GRACE_S + 2
    assert not [p for p in multiprocessing.active_children() if p.name.startswith("scaoed-step:")]
