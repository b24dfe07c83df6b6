"""Reaching a Ray cluster: Ray installed, the address answering, the connection made, what the cluster has.

A wrong ``HOST:PORT`` is one line within ``CONNECT_TIMEOUT_S`` (Ray itself retries a GCS that does
not answer for minutes and ignores Ctrl-C while it does). What this project starts reports no
usage statistics, and a token Ray writes for a cluster it starts is made private (0600).
"""

from __future__ import annotations

import contextlib
import logging
import os
import socket
from pathlib import Path

from ..errors import ScaoedError, first_line
from ..util.optional import optional_import

INSTALL = "pip install 'scaoed-deploy[ray]' (Ray Data, pinned beside this project's other dependencies)"

#: Seconds to wait for a TCP answer from a cluster's address before Ray is asked to connect.
CONNECT_TIMEOUT_S = 5.0
#: The start of every HTTP/2 connection (RFC 9113, 3.4), then an empty SETTINGS frame: a Ray head (gRPC) answers it
#: with a SETTINGS frame of its own; another service does not.
H2_PREFACE = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n" + b"\x00\x00\x00\x04\x00\x00\x00\x00\x00"


def require_ray():
    """``ray`` with Ray Data, or one line saying how to install it."""
    optional_import("ray.data", f"--ray needs Ray: {INSTALL}")  # Ray Data is its own extra
    return optional_import("ray", f"--ray needs Ray: {INSTALL}")


def dialled(host: str, port: int) -> str:
    """The host Ray will dial for ``host``: it replaces 127.0.0.1 and localhost with the machine's own address."""
    with contextlib.suppress(Exception):  # Ray's helper for it is internal: where it moves, the host as given
        from ray._private.services import canonicalize_bootstrap_address

        return canonicalize_bootstrap_address(f"{host}:{port}").rpartition(":")[0].strip("[]")
    return host


START_ONE = "start one with `ray start --head`, or use --ray local"


def _unreachable(address: str, why: str, way_out: str, via: str = "") -> ScaoedError:
    """The one line for a cluster that cannot be reached (``via``: what Ray dials for the address, if not it)."""
    return ScaoedError(f"cannot reach a Ray cluster at {address!r}{via}: {why} ({way_out})")


def check_reachable(address: str, timeout: float = CONNECT_TIMEOUT_S) -> None:
    """One line, within ``timeout`` (twice it at most), for a HOST:PORT or ray://HOST:PORT address where no Ray
    head answers: nothing listening at the address Ray will dial, or something that is not gRPC (ray.init would
    retry either without end, deaf to Ctrl-C for long stretches)."""
    if address in ("local", "auto"):
        return
    hostport = address.split("://", 1)[-1].rstrip("/")
    host, _, port = hostport.rpartition(":")
    if not port.isdigit():
        raise ScaoedError(f"--ray {address}: use local, auto, HOST:PORT or ray://HOST:PORT")
    host = host.strip("[]") or "127.0.0.1"
    target = host if "://" in address else dialled(host, int(port))
    via = f" (Ray dials {target} for {host})" if target != host else ""
    try:
        conn = socket.create_connection((target, int(port)), timeout=timeout)
    except OSError as e:
        why = "timed out" if isinstance(e, TimeoutError) else (e.strerror or first_line(e))
        raise _unreachable(address, why, START_ONE, via) from e
    with conn:
        if os.environ.get("RAY_USE_TLS", "0") not in ("0", ""):
            return  # a TLS head answers nothing to plain HTTP/2
        try:
            conn.sendall(H2_PREFACE)
            answer = conn.recv(9)
        except OSError:
            answer = b""
        if len(answer) < 9 or answer[3] != 0x04:
            raise _unreachable(
                address,
                "what answers there is not a Ray head (no gRPC answer)",
                "check the port (`ray start --head` prints it)",
                via,
            )


def connect(ray, address: str) -> bool:
    """Connect (or start a local Ray for ``local``); True when this call started Ray in this process."""
    if ray.is_initialized():
        return False
    check_reachable(address)
    os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")  # what this project starts reports nothing home
    kwargs = dict(include_dashboard=False, log_to_driver=False, logging_level="ERROR")
    try:
        ray.init(address=None if address == "local" else address, **kwargs)
    except Exception as e:  # ConnectionError, RuntimeError, ValueError: the address is the user's to fix
        raise _unreachable(address, first_line(e), START_ONE) from e
    logging.getLogger("ray.data").setLevel(logging.WARNING)  # the run's own progress replaces Ray Data's lines
    token = Path.home() / ".ray" / "auth_token"
    if address == "local" and token.is_file():  # a token Ray wrote for the cluster it started: private
        with contextlib.suppress(OSError):
            token.chmod(0o600)
    return True


def alive_nodes(ray) -> list[dict]:
    """The cluster's live nodes: id, address and CPUs / GPUs of each."""
    return [
        {
            "id": n["NodeID"],
            "address": n["NodeManagerAddress"],
            "cpus": int(n["Resources"].get("CPU", 0)),
            "gpus": int(n["Resources"].get("GPU", 0)),
        }
        for n in ray.nodes()
        if n.get("Alive")
    ]


def pool_size(nodes: list[dict], workers: int | None, threads: int | None, cuda: bool) -> dict:
    """How many workers of how many threads this cluster runs at once: as asked, else as many as its CPUs (or
    GPUs) allow; ``fits`` is what the live nodes can hold together (each worker on one node), and a warning
    says where the asked pool is larger (the rest would only wait)."""
    if cuda:
        gpus = sum(n["gpus"] for n in nodes)
        if gpus < 1:
            raise ScaoedError("--device cuda on Ray needs GPUs in the cluster; it has none")
        threads = threads or 1
        fits = gpus
    else:
        cpus = sum(n["cpus"] for n in nodes)
        threads = threads or (max(1, cpus // workers) if workers else 1)
        fits = sum(n["cpus"] // threads for n in nodes)
        if fits < 1:
            raise ScaoedError(
                f"--threads {threads}: no node of this cluster has {threads} CPUs (the largest has "
                f"{max((n['cpus'] for n in nodes), default=0)})"
            )
    asked = workers or fits
    warning = None
    if asked > fits:
        warning = (
            f"asked for {asked} workers x {threads} thread(s); the cluster's {len(nodes)} node(s) hold "
            f"{fits} at once, so {fits} run"
        )
    return {"workers": min(asked, fits), "threads": threads, "asked": asked, "warning": warning}
