"""Long native steps in a child process: stoppable within seconds, their peak memory measured.

A step that spends minutes inside one native call (ONNX Runtime's calibration runs, ModelOpt's
quantizer, NNCF, OpenVINO's compile) does not come back to Python until it is done, so a signal
handler of the process that makes the call runs only then, if ever: SIGTERM did not end an INT8
calibration that was growing by 1.4 GB every 10 s. ``run_step`` makes the call in a child process
(forked from a server process that has imported nothing heavy, so no thread or lock of the parent
is inherited) while the parent waits in short polls: SIGINT or SIGTERM reach the parent's Python at
once, and it ends the child (SIGTERM, then SIGKILL after a grace period) before it re-raises. The
child writes only into paths the parent chose (a temporary folder the parent removes), so a stopped
step leaves nothing behind.

The child reports its peak resident memory (``ru_maxrss``) with its result: ``StepResult.peak_rss_mb``
is the step's own peak, which a process-wide peak cannot give. A child the kernel kills (out of
memory) is one ``ScaoedError`` naming the step instead of a silent death of the whole command.
"""

from __future__ import annotations

import contextlib
import multiprocessing
import pickle
import signal
import time
from dataclasses import dataclass
from typing import Any, Callable

from ..errors import ScaoedError, first_line
from .memory import add_child_peak

GRACE_S = 3.0  # from SIGTERM to SIGKILL for a child being stopped
POLL_S = 0.1


@dataclass
class StepResult:
    value: Any
    peak_rss_mb: float
    seconds: float


def _peak_rss_mb() -> float:
    import resource

    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0  # KiB on Linux


def _portable(e: BaseException) -> BaseException:
    """The exception as it is where it pickles (a ScaoedError keeps its type and exit code), else one line."""
    try:
        pickle.loads(pickle.dumps(e))
        return e
    except Exception:  # noqa: BLE001 - any exception a library raises
        return ScaoedError(f"{type(e).__name__}: {first_line(e)}")


class _Progress:
    """The child's ``step`` callable: each message goes to the parent's (``tick`` too, for ``long_step``)."""

    def __init__(self, conn):
        import threading

        self.conn, self.lock = conn, threading.Lock()

    def __call__(self, message: str) -> None:
        self._send("step", message)

    def tick(self, message: str) -> None:
        self._send("tick", message)

    def _send(self, kind: str, message: str) -> None:
        with self.lock, contextlib.suppress(OSError):
            self.conn.send((kind, message))


def _child(conn) -> None:
    """The step's process: takes (fn, args, kwargs, progress) from the parent, sends back ("ok" | "error", value,
    peak), and ("step" | "tick", message) as it goes when the parent wants progress. The work comes over the
    pipe, not as the process's own arguments, so a parent interrupted while sending leaves a child that sees
    the pipe end and exits quietly (no unpickling traceback)."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # a terminal's Ctrl-C reaches the whole group: the parent decides
    signal.signal(signal.SIGTERM, signal.SIG_DFL)
    try:
        fn, args, kwargs, progress = conn.recv()
    except (EOFError, OSError, pickle.UnpicklingError):
        return
    lock = None
    try:
        if progress:
            kwargs = {**kwargs, "step": _Progress(conn)}
            lock = kwargs["step"].lock
        value = fn(*args, **kwargs)
        with lock or contextlib.nullcontext():
            conn.send(("ok", value, _peak_rss_mb()))
    except BaseException as e:  # noqa: BLE001 - every failure goes back to the parent
        with lock or contextlib.nullcontext():
            conn.send(("error", _portable(e), _peak_rss_mb()))
    finally:
        conn.close()


def _context():
    return multiprocessing.get_context("forkserver")


def stop(process) -> None:
    """End a child: SIGTERM, then SIGKILL after the grace period; reaped either way (a child that never
    started is left as it is)."""
    if process.pid is None:
        return
    with contextlib.suppress(Exception):
        if process.is_alive():
            process.terminate()
            process.join(GRACE_S)
        if process.is_alive():
            process.kill()
        process.join()


def run_step(fn: Callable, *args, name: str, progress: Callable[[str], None] | None = None, **kwargs) -> StepResult:
    """``fn(*args, **kwargs)`` in a child process (``fn`` and its arguments must pickle); its value, or its
    exception re-raised here. With ``progress``, ``fn`` is also given ``step=``, a callable whose messages (and
    ``step.tick``'s) reach ``progress`` (and ``progress.tick``) here as they are said. KeyboardInterrupt (Ctrl-C,
    or SIGTERM through the CLI's handler) ends the child within ``GRACE_S`` seconds and propagates."""
    ctx = _context()
    conn, child_end = ctx.Pipe(duplex=True)
    process = ctx.Process(target=_child, args=(child_end,), name=f"scaoed-step:{name}", daemon=True)
    t0 = time.perf_counter()
    try:
        process.start()
        child_end.close()
        conn.send((fn, args, kwargs, progress is not None))
        try:
            while True:
                while not conn.poll(POLL_S):
                    if not process.is_alive() and not conn.poll(0):
                        raise EOFError
                message = conn.recv()
                if message[0] == "step":
                    progress(message[1])
                elif message[0] == "tick":
                    getattr(progress, "tick", progress)(message[1])
                else:
                    status, value, peak = message
                    break
        except EOFError:
            process.join()
            code = process.exitcode
            why = "killed by the kernel (out of memory?)" if code == -signal.SIGKILL else f"exit status {code}"
            raise ScaoedError(f"{name}: the step's process died without an answer ({why})") from None
    except BaseException:
        stop(process)
        raise
    finally:
        conn.close()
    process.join()
    add_child_peak(peak)  # the blocks being measured (memory.peak_of) count the child's memory as theirs
    if status == "error":
        raise value
    return StepResult(value, peak, time.perf_counter() - t0)


__all__ = ["StepResult", "run_step", "stop", "GRACE_S"]
