"""Run inside a private network and PID namespace (tests/test_cluster.py starts it with `unshare`): an S3 server
(moto) and a two-node Ray cluster on 127.0.0.1 started by the README's own cluster steps (a head and a second
node that joins with the head's token), the cluster scenarios against it (the last loses the second node),
then every other process of this PID namespace (all started here) killed by PID; leaving the namespace would end
anything left. Writes what each scenario saw as JSON for the tests to judge.

    python3 tests/ray_netns.py CASES.json RESULT.json
"""

from __future__ import annotations

import contextlib
import io
import json
import os
import re
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import s3_server  # beside this script

T0 = time.perf_counter()
PORT = 6379
ADDRESS = f"127.0.0.1:{PORT}"
BIN = Path(sys.executable).parent
RAY = str(BIN / "ray")
README = Path(__file__).resolve().parent.parent / "docs" / "denoise.md"
#: What the test adds to the README's `ray start` lines: one CPU and a small object store a node, loopback, no
#: dashboard.
NODE = ["--node-ip-address=127.0.0.1", "--num-cpus=1", "--object-store-memory=150000000"]
#: What the test adds to the environment of the README's lines: the head declares a node dead after 3 failed health
#: checks 1 s apart (Ray's defaults: 5, 3 s apart), so the lost-node case waits seconds for it, not 15.
HEALTH = {
    "RAY_health_check_period_ms": "1000",
    "RAY_health_check_failure_threshold": "3",
    "RAY_health_check_timeout_ms": "5000",
}


def readme_steps() -> list[tuple[str, str]]:
    """(machine, command) of each line of the README's cluster steps."""
    text = README.read_text()
    block = text[text.index("<!-- cluster-steps") : text.index("<!-- /cluster-steps -->")]
    return [(m.group(1), m.group(2)) for m in re.finditer(r"^machine-([ab])\$ (.*)$", block, re.M)]


def as_here(machine: str, command: str, homes: dict, files: dict) -> str:
    """A README line as it runs here: both machines on 127.0.0.1 with their own home folders, scp as a local copy,
    the test's node options on `ray start`, the test's files for /data."""
    command = command.replace("scp -p machine-a:.ray/auth_token", f"cp -p {homes['a']}/.ray/auth_token")
    command = command.replace("machine-a:", "127.0.0.1:")
    if command.startswith("ray start"):
        command += " " + " ".join(NODE + (["--include-dashboard=false"] if "--head" in command else []))
    for name, path in files.items():
        command = command.replace(name, path)
    command = re.sub(r"^ray ", f"{RAY} ", command).replace("(umask 077 && ray ", f"(umask 077 && {RAY} ")
    return re.sub(r"^scaoed-deploy ", f"{sys.executable} -m scaoed_deploy.cli ", command)


def start_cluster(case: dict) -> dict:
    """The README's steps, line by line: a token made private, a head and a second node that join with it, and the
    README's own denoise command; every line must succeed."""
    t = time.perf_counter()
    homes = {m: case["homes"][m] for m in "ab"}
    env = {m: dict(os.environ, HOME=homes[m], **HEALTH) for m in "ab"}
    ran = []
    for machine, command in readme_steps():
        if command.startswith("export "):
            key, _, value = command[len("export ") :].partition("=")
            env[machine][key] = value
            continue
        line = as_here(machine, command, homes, case["files"])
        proc = subprocess.run(["sh", "-c", line], env=env[machine], capture_output=True, text=True, timeout=600)
        ran.append(
            {
                "machine": machine,
                "command": command,
                "code": proc.returncode,
                "stderr": proc.stderr[-1500:],
                "stdout": proc.stdout[-3000:],
            }
        )
        if proc.returncode and not command.startswith("scaoed-deploy"):
            raise RuntimeError(f"README step on machine-{machine} failed: {command}: {proc.stderr[-800:]}")
    os.environ.update(HOME=homes["a"], **{k: v for k, v in env["a"].items() if k.startswith("RAY_")})
    import ray

    ray.init(address=ADDRESS, logging_level="ERROR", log_to_driver=False)
    nodes = [n for n in ray.nodes() if n["Alive"]]
    ray.shutdown()
    tokens = {m: oct(Path(homes[m], ".ray", "auth_token").stat().st_mode & 0o777) for m in "ab"}
    return {
        "nodes": len(nodes),
        "addresses": sorted({n["NodeManagerAddress"] for n in nodes}),
        "steps": ran,
        "token_modes": tokens,
        "seconds": round(time.perf_counter() - t, 1),
    }


def start_object_storage(case: dict) -> dict:
    """moto's S3 server on 127.0.0.1 inside the namespace, its variables set before any node starts (every worker
    inherits them), and the test's bucket filled with its files."""
    from pyarrow import fs

    server = s3_server.start(case["port"])
    os.environ.update(s3_server.aws_env(case["port"]))
    s3 = fs.S3FileSystem(endpoint_override=os.environ["AWS_ENDPOINT_URL"], allow_bucket_creation=True)
    s3.create_dir(case["bucket"])
    for name, path in case["upload"].items():
        with s3.open_output_stream(f"{case['bucket']}/{name}") as f:
            f.write(Path(path).read_bytes())
    return {"pid": server.pid}


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
    return {
        "first_code": first["code"],
        "first_stderr": first["stderr"][-2000:],
        "after_interrupt": after_interrupt,
        **second,
    }


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


def fetch(prefix: str, out: Path) -> dict:
    from pyarrow import fs

    s3 = fs.S3FileSystem(endpoint_override=os.environ["AWS_ENDPOINT_URL"])
    out.mkdir(parents=True, exist_ok=True)
    names = []
    for info in s3.get_file_info(fs.FileSelector(prefix, recursive=False)):
        with s3.open_input_stream(info.path) as f:
            (out / info.base_name).write_bytes(f.read())
        names.append(info.base_name)
    return {"names": sorted(names)}


def run_on_a_masked_node(case: dict, args: list[str]) -> dict:
    """A third node joins as a lesser CPU (its raylet, and so its workers, under ``--as-cpu``'s mask), the run goes
    over the three nodes, then that node's raylet is killed: the cluster has the nodes it had before."""
    from scaoed_deploy import cpumask

    env = cpumask.environment(case["mask"], dict(os.environ, HOME=case["home"], RAY_AUTH_MODE="token", **HEALTH))
    line = as_here("b", "ray start --address=machine-a:6379 --disable-usage-stats", {"a": "", "b": ""}, {})
    started = subprocess.run(["sh", "-c", line], env=env, capture_output=True, text=True, timeout=600)
    if started.returncode:
        raise RuntimeError(f"the masked node did not start: {started.stderr[-800:]}")
    try:
        return run_cli(args)
    finally:
        for environ in Path("/proc").glob("[0-9]*/environ"):
            with contextlib.suppress(OSError):
                if b"/raylet" in (environ.parent / "cmdline").read_bytes().split(b"\0")[0] and (
                    f"SCAOED_DEPLOY_AS_CPU={case['mask']}".encode() in environ.read_bytes().split(b"\0")
                ):
                    os.kill(int(environ.parent.name), signal.SIGKILL)


def lose_a_node_mid_run(args: list[str], out: Path) -> dict:
    """The run in a thread; once its first output is written, SIGKILL the second node's raylet (the one that is not
    the head), as a machine that dies would; then see how many nodes are left."""
    result: dict = {}
    thread = threading.Thread(target=lambda: result.update(run_cli(args)))
    thread.start()
    killed, deadline = None, time.monotonic() + 600
    while thread.is_alive() and time.monotonic() < deadline and killed is None:
        if complete_outputs(out):
            for cmdline in Path("/proc").glob("[0-9]*/cmdline"):
                with contextlib.suppress(OSError):
                    argv = cmdline.read_bytes().split(b"\0")
                    if argv[0].endswith(b"/raylet") and not any(b"__internal_head__" in a for a in argv):
                        os.kill(int(cmdline.parent.name), signal.SIGKILL)
                        killed = int(cmdline.parent.name)
        time.sleep(0.05)
    thread.join(600)
    return dict(result, killed=killed)


def main() -> int:
    cases = json.loads(Path(sys.argv[1]).read_text())
    result: dict = {}
    try:
        if "storage" in cases:
            result["storage"] = start_object_storage(cases.pop("storage"))
        result["cluster"] = start_cluster(cases.pop("cluster"))
        for name, case in cases.items():
            t = time.perf_counter()
            if case["kind"] == "run":
                result[name] = run_cli(case["args"])
            elif case["kind"] == "kill":
                result[name] = kill_a_worker_mid_run(case["args"], Path(case["out"]))
            elif case["kind"] == "interrupt":
                result[name] = interrupt_the_driver(case["args"], Path(case["out"]))
            elif case["kind"] == "fetch":  # what a run put in the bucket, copied out before the server ends
                result[name] = fetch(case["prefix"], Path(case["out"]))
            elif case["kind"] == "masked_node":
                result[name] = run_on_a_masked_node(case, case["args"])
            elif case["kind"] == "lose_node":
                result[name] = lose_a_node_mid_run(case["args"], Path(case["out"]))
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
