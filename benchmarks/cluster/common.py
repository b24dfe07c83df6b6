"""What the cluster benchmarks share: a command timed in this process (``timed_cli``); loopback only (the
script run again inside a private network and PID namespace, `unshare` as root, with a Ray token made for the run
and none written to ~/.ray; every Ray process the script starts ends with the namespace); and a record written as
NAME.json and NAME.md beside the scripts."""

from __future__ import annotations

import contextlib
import io
import json
import os
import secrets
import subprocess
import sys
import time
from pathlib import Path

INSIDE = "SCAOED_BENCH_IN_NAMESPACE"


def inside() -> bool:
    return os.environ.get(INSIDE) == "1"


def rerun_inside(script: str | Path, argv: list[str]) -> int:
    """Run ``script argv`` in a namespace of its own with lo up; its exit code."""
    line = f"ip link set lo up && exec {sys.executable} {Path(script).resolve()} " + " ".join(argv)
    token = {"RAY_AUTH_MODE": "token", "RAY_AUTH_TOKEN": secrets.token_hex(32)}
    return subprocess.run(
        ["unshare", "--net", "--pid", "--fork", "--mount-proc", "--", "sh", "-c", line],
        env=dict(os.environ, **token, **{INSIDE: "1"}),
    ).returncode


def write_record(name: str, result: dict, markdown: str) -> None:
    here = Path(__file__).resolve().parent
    (here / f"{name}.json").write_text(json.dumps(result, indent=2) + "\n")
    (here / f"{name}.md").write_text(markdown)
    print(markdown)


def timed_cli(args: list[str]) -> tuple[float, dict | None, str]:
    """(seconds, --json's output or None, stderr) of one scaoed-deploy command run in this process; a failed one
    ends the script with its error."""
    from scaoed_deploy.cli import main

    out, err = io.StringIO(), io.StringIO()
    t = time.perf_counter()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        code = main(args)
    seconds = time.perf_counter() - t
    if code != 0:
        raise SystemExit(f"error: {' '.join(args)} exited {code}: {err.getvalue()[-1000:]}")
    with contextlib.suppress(ValueError):
        return seconds, json.loads(out.getvalue()), err.getvalue()
    return seconds, None, err.getvalue()
