"""moto's S3 server for the tests that read and write object storage (test_storage.py, and the cluster's
namespace in ray_netns.py): started on 127.0.0.1, waited for, and the AWS variables that point at it."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
from pathlib import Path

MOTO = Path(sys.executable).parent / "moto_server"
KEYS = {"AWS_ACCESS_KEY_ID": "testing", "AWS_SECRET_ACCESS_KEY": "testing", "AWS_DEFAULT_REGION": "us-east-1"}


def aws_env(port: int) -> dict[str, str]:
    """The standard AWS variables for the server on ``port``."""
    return {"AWS_ENDPOINT_URL": f"http://127.0.0.1:{port}", **KEYS}


def start(port: int, timeout: float = 60, **env: str) -> subprocess.Popen:
    """moto's server on 127.0.0.1:``port`` (with ``env`` in its environment), once it accepts connections; the
    caller ends it (kill, by this PID)."""
    server = subprocess.Popen(
        [str(MOTO), "-H", "127.0.0.1", "-p", str(port)],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        env=dict(os.environ, **env),
    )
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            socket.create_connection(("127.0.0.1", port), timeout=1).close()
            return server
        except OSError:
            time.sleep(0.1)
    server.kill()
    raise RuntimeError(f"moto's server did not start within {timeout:.0f} s")
