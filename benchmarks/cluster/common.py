"""What the cluster benchmarks share: loopback only (the script run again inside a private network and PID
namespace, `unshare` as root, with a Ray token made for the run and none written to ~/.ray; every Ray process the
script starts ends with the namespace), and a record written as NAME.json and NAME.md beside the scripts."""

from __future__ import annotations

import json
import os
import secrets
import subprocess
import sys
from pathlib import Path

INSIDE = "SCAOED_BENCH_IN_NAMESPACE"


def inside() -> bool:
    return os.environ.get(INSIDE) == "1"


def rerun_inside(script: str | Path, argv: list[str]) -> int:
    """Run ``script argv`` in a namespace of its own with lo up; its exit code."""
    line = f"ip link set lo up && exec {sys.executable} {Path(script).resolve()} " + " ".join(argv)
    token = {"RAY_AUTH_MODE": "token", "RAY_AUTH_TOKEN": secrets.token_hex(32)}
    return subprocess.run(["unshare", "--net", "--pid", "--fork", "--mount-proc", "--", "sh", "-c", line],
                          env=dict(os.environ, **token, **{INSIDE: "1"})).returncode


def write_record(name: str, result: dict, markdown: str) -> None:
    here = Path(__file__).resolve().parent
    (here / f"{name}.json").write_text(json.dumps(result, indent=2) + "\n")
    (here / f"{name}.md").write_text(markdown)
    print(markdown)
