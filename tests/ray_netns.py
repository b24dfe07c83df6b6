"""Run inside a private network and PID namespace (tests/test_cluster.py starts it with `unshare`): a two-node Ray
cluster on 127.0.0.1 (a head and a second raylet), the cluster scenarios against it, then every other process of
this PID namespace (all started here) killed by PID; leaving the namespace would end anything left. Writes what each scenario saw
as JSON for the tests to judge.

    python3 tests/ray_netns.py CASES.json RESULT.json
"""

from __future__ import annotations

import contextlib
import io
import json
import os
import secrets
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

T0 = time.perf_counter()
PORT = 6379
ADDRESS = f"127.0.0.1:{PORT}"
RAY = str(Path(sys.executable).with_name("ray"))
NODE = ["--node-ip-address=127.0.0.1", "--num-cpus=1", "--object-store-memory=150000000", "--disable-usage-stats"]


def start_cluster() -> dict:
    t = time.perf_counter()
    subprocess.run([RAY, "start", "--head", f"--port={PORT}", "--include-dashboard=false", *NODE], check=True,
                   capture_output=True)
    subprocess.run([RAY, "start", f"--address={ADDRESS}", *NODE], check=True, capture_output=True)
    import ray

    ray.init(address=ADDRESS, logging_level="ERROR", log_to_driver=False)
    nodes = [n for n in ray.nodes() if n["Alive"]]
    ray.shutdown()
    return {"nodes": len(nodes), "addresses": sorted({n["NodeManagerAddress"] for n in nodes}),
            "seconds": round(time.perf_counter() - t, 1)}


def run_cli(args: list[str]) -> dict:
    from scaoed_deploy.cli import main

    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        code = main(args)
    return {"code": code, "stdout": out.getvalue(), "stderr": err.getvalue()}


def worker_pids() -> list[int]:
    pids = []
    for cmdline in Path("/proc").glob("[0-9]*/cmdline"):
        with contextlib.suppress(OSError):
            if b"DenoiseWorker" in cmdline.read_bytes():
                pids.append(int(cmdline.parent.name))
    return pids


def complete_outputs(out: Path) -> list[Path]:
    """Outputs written whole (a write in progress is a hidden temporary file beside its final name)."""
    return [p for p in out.iterdir() if not p.name.startswith(".")] if out.is_dir() else []


def kill_a_worker_mid_run(args: list[str], out: Path) -> dict:
    """The run in a thread; once the first output is written, SIGKILL one worker process mid-run."""
    result: dict = {}
    thread = threading.Thread(target=lambda: result.update(run_cli(args)))
    thread.start()
    killed, deadline = None, time.monotonic() + 600  # a busy machine starts actors slowly
    while thread.is_alive() and time.monotonic() < deadline and killed is None:
        if complete_outputs(out):
            pids = worker_pids()
            if pids:
                os.kill(pids[0], signal.SIGKILL)
                killed = pids[0]
        time.sleep(0.05)
    thread.join(300)
    return dict(result, killed=killed)


def interrupt_the_driver(args: list[str], out: Path) -> dict:
    """The run in this (main) thread; once its first output exists, a real SIGINT to this process, as Ctrl-C
    sends it; then the same command again."""
    def watch():
        deadline = time.monotonic() + 600  # a busy machine starts actors slowly
        while time.monotonic() < deadline and not complete_outputs(out):
            time.sleep(0.05)
        os.kill(os.getpid(), signal.SIGINT)

    # Ctrl-C in a terminal raises KeyboardInterrupt; a suite started in the background (nohup, &) inherits SIGINT
    # ignored, and Python then leaves it ignored: restore what a terminal gives.
    signal.signal(signal.SIGINT, signal.default_int_handler)
    threading.Thread(target=watch, daemon=True).start()
    first = run_cli(args)
    after_interrupt = sorted(p.name for p in out.iterdir())
    second = run_cli(args)
    return {"first_code": first["code"], "first_stderr": first["stderr"][-2000:], "after_interrupt": after_interrupt,
            **second}


def stop_everything_else() -> int:
    """SIGKILL every other process of this PID namespace: all were started here (raylets, GCS, workers), so this
    is the cluster and nothing else (`ray stop --force` took 23 s to do the same)."""
    me, count = os.getpid(), 0
    for entry in Path("/proc").glob("[0-9]*"):
        pid = int(entry.name)
        if pid != me:
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.kill(pid, signal.SIGKILL)
                count += 1
    return count


def main() -> int:
    # Ray 2.60 turns token authentication on for a cluster started with `ray start --head`: every process of
    # this one (raylets, driver, workers) shares a token made for this run, and none is written to ~/.ray.
    os.environ.update(RAY_AUTH_MODE="token", RAY_AUTH_TOKEN=secrets.token_hex(32))
    cases = json.loads(Path(sys.argv[1]).read_text())
    result: dict = {}
    try:
        result["cluster"] = start_cluster()
        for name, case in cases.items():
            t = time.perf_counter()
            if case["kind"] == "run":
                result[name] = run_cli(case["args"])
            elif case["kind"] == "kill":
                result[name] = kill_a_worker_mid_run(case["args"], Path(case["out"]))
            elif case["kind"] == "interrupt":
                result[name] = interrupt_the_driver(case["args"], Path(case["out"]))
            result[name]["seconds"] = round(time.perf_counter() - t, 1)
    except Exception as e:  # noqa: BLE001 - reported to the test, which fails with it
        result["error"] = f"{type(e).__name__}: {e}"
    finally:
        t = time.perf_counter()
        result["stopped"] = stop_everything_else()
        result["stop_seconds"] = round(time.perf_counter() - t, 1)
        result["script_seconds"] = round(time.perf_counter() - T0, 1)
        Path(sys.argv[2]).write_text(json.dumps(result, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
