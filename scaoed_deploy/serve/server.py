"""Start, watch and stop a ``tritonserver`` on a model repository (``scaoed-deploy serve``).

The default server is the one bundled in the ``nvidia-pytriton`` wheel (installed with
``--no-deps``: only its ``tritonserver`` binary and python backend are used, not its Python API).
That build has the python backend only, so it serves repositories made with
``triton-repo --python-backend``; a full Triton install (NVIDIA's container) is named with
``tritonserver=``/``backend_dir=`` and serves every backend.

What the bundled server needs, and gets here:

- a backend folder holding the python backend and the stub built for this interpreter's
  Python version (the wheel ships one stub per version, none in place);
- ``LD_LIBRARY_PATH`` with this interpreter's own ``libpython`` first (the stub would otherwise
  load the system's, then fail on this interpreter's standard library) and the wheel's
  ``nvidia_pytriton.libs``;
- ``PATH`` with this interpreter's folder first: the stub finds its packages (this project,
  ONNX Runtime, ...) through the ``python3`` it finds there, not through ``PYTHONPATH``.

A stub that fails to start leaves the server waiting, not exiting: readiness is always awaited
under a timeout, the server's log is watched for a model that failed to load, and a server that
is not ready in time is killed with its whole process group.

The HTTP port is a request guard's (``guard.py``): Triton's own HTTP endpoint listens on a loopback
port behind it, its inference API open only to requests that carry the guard's per-run header, so
that no infer request reaches Triton's frontend with a shape it would allocate the server to death
for. The server dies with the process that started it (``processes.py``), and what a killed one
left behind is removed at the next start; the log is removed after a clean stop unless it was named.
"""

from __future__ import annotations

import contextlib
import importlib.util
import os
import re
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import sysconfig
import tempfile
import time
import urllib.error
import urllib.request
from pathlib import Path

from ..errors import ScaoedError
from .config import model_limits, repository_configs
from .guard import GUARD_HEADER, RequestGuard
from .processes import OWNER_FILE, WORKDIR_PREFIX, clean_stale, die_with_parent, process_tree_rss, shm_regions

BUNDLED_BACKENDS = {"python"}
READY_TIMEOUT_S = 120.0
EXIT_TIMEOUT_S = 10


# ---------------------------------------------------------------------------- the bundled server
def bundled_server() -> Path:
    """The folder of the ``tritonserver`` bundled in the nvidia-pytriton wheel (found without importing it)."""
    spec = importlib.util.find_spec("pytriton")
    if spec is None or not spec.submodule_search_locations:
        raise ScaoedError(
            "serving needs a tritonserver: pip install --no-deps nvidia-pytriton==0.7.0 (its bundled "
            "server), or name one with --tritonserver"
        )
    root = Path(list(spec.submodule_search_locations)[0]) / "tritonserver"
    if not (root / "bin" / "tritonserver").is_file():
        raise ScaoedError(f"{root}: the nvidia-pytriton install holds no tritonserver binary; reinstall it")
    return root


def _stub(root: Path) -> Path:
    version = f"{sys.version_info[0]}.{sys.version_info[1]}"
    stub = root / "python_backend_stubs" / version / "triton_python_backend_stub"
    if not stub.is_file():
        have = (
            sorted(p.name for p in (root / "python_backend_stubs").iterdir())
            if (root / "python_backend_stubs").is_dir()
            else []
        )
        raise ScaoedError(
            f"the bundled tritonserver has no python backend stub for Python {version} "
            f"(it has {', '.join(have) or 'none'})"
        )
    return stub


def prepare_backends(root: Path, into: Path) -> Path:
    """A backend folder for the bundled server: its python backend, with this Python's stub in place."""
    python = into / "python"
    python.mkdir(parents=True, exist_ok=True)
    for name in ("libtriton_python.so", "triton_python_backend_utils.py"):
        link = python / name
        if not link.exists():
            link.symlink_to(root / "backends" / "python" / name)
    shutil.copy2(_stub(root), python / "triton_python_backend_stub")
    return into


def server_env(root: Path | None = None) -> dict[str, str]:
    """The environment the server and its python stubs need (see the module doc)."""
    env = os.environ.copy()
    libs = []
    if sysconfig.get_config_var("Py_ENABLE_SHARED"):
        libs.append(sysconfig.get_config_var("LIBDIR"))
    if root is not None:
        libs.append(str(root.parent.parent / "nvidia_pytriton.libs"))
    if env.get("LD_LIBRARY_PATH"):
        libs.append(env["LD_LIBRARY_PATH"])
    env["LD_LIBRARY_PATH"] = ":".join(p for p in libs if p)
    env["PATH"] = os.pathsep.join([str(Path(sys.executable).parent), env.get("PATH", "")])
    return env


def port_free(port: int, address: str = "127.0.0.1") -> bool:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            s.bind((address if address != "0.0.0.0" else "", port))
        except OSError:
            return False
    return True


def free_port(address: str = "127.0.0.1") -> int:
    """A port nothing listens on now (the system picks it), for a server started next."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind((address, 0))
        return s.getsockname()[1]


# ---------------------------------------------------------------------------- the server
class TritonServer:
    """A ``tritonserver`` process on ``repo``: ``start()`` (waits until ready), ``stop()``; a context manager."""

    def __init__(
        self,
        repo: str | Path,
        http_port: int = 8000,
        grpc_port: int = 8001,
        metrics_port: int = 8002,
        address: str = "0.0.0.0",
        tritonserver: str | Path | None = None,
        backend_dir: str | Path | None = None,
        log_path: str | Path | None = None,
        ready_timeout: float = READY_TIMEOUT_S,
        guard: bool = True,
    ):
        self.repo = Path(repo)
        self.http_port, self.grpc_port, self.metrics_port = http_port, grpc_port, metrics_port
        self.address, self.ready_timeout = address, ready_timeout
        self.binary = Path(tritonserver) if tritonserver else None
        self.backend_dir = Path(backend_dir) if backend_dir else None
        self.log_path = Path(log_path) if log_path else None
        self.log_named = log_path is not None  # a log the user named is theirs to keep
        self.use_guard = guard
        self.guard: RequestGuard | None = None
        self.triton_http_port = http_port  # Triton's own HTTP port: a loopback one behind the guard
        self._guard_token = secrets.token_hex(16)
        self.process: subprocess.Popen | None = None
        self.models: dict[str, str] = {}
        self.bundled = self.binary is None  # the tritonserver of the nvidia-pytriton wheel (python backend only)
        self._workdir: tempfile.TemporaryDirectory | None = None
        self._log = None
        self._regions: set[str] = set()

    # -------------------------------------------------------------- endpoints
    @property
    def host(self) -> str:
        return "127.0.0.1" if self.address in ("0.0.0.0", "") else self.address

    @property
    def http_url(self) -> str:
        return f"http://{self.host}:{self.http_port}"

    @property
    def grpc_url(self) -> str:
        return f"grpc://{self.host}:{self.grpc_port}"

    @property
    def metrics_url(self) -> str:
        return f"http://{self.host}:{self.metrics_port}/metrics"

    # -------------------------------------------------------------- lifecycle
    def command(self) -> list[str]:
        http = (
            [
                "--http-address=127.0.0.1",
                f"--http-port={self.triton_http_port}",
                f"--http-restricted-api=inference:{GUARD_HEADER}={self._guard_token}",
            ]
            if self.use_guard
            else [f"--http-address={self.address}", f"--http-port={self.http_port}"]
        )
        return [
            str(self.binary),
            f"--model-repository={self.repo.resolve()}",
            f"--backend-directory={self.backend_dir}",
            *http,
            f"--grpc-address={self.address}",
            f"--grpc-port={self.grpc_port}",
            f"--metrics-address={self.address}",
            f"--metrics-port={self.metrics_port}",
            f"--exit-timeout-secs={EXIT_TIMEOUT_S}",
            "--exit-on-error=true",
            "--disable-auto-complete-config",
            "--log-verbose=0",
        ] + (["--allow-gpu-metrics=false"] if self.bundled else [])

    def start(self, step=lambda s: None) -> TritonServer:
        """Check the repository and ports, start the server, and wait until it and every model are ready."""
        configs = repository_configs(self.repo)
        self.models = {name: cfg.backend or cfg.platform for name, cfg in configs.items()}
        bundled = self.bundled = self.binary is None
        root = bundled_server() if bundled else None
        if bundled:
            self.binary = root / "bin" / "tritonserver"
            need = {m: b for m, b in self.models.items() if b not in BUNDLED_BACKENDS}
            if need:
                model, backend = next(iter(need.items()))
                raise ScaoedError(
                    f"model {model!r} needs Triton's {backend} backend, which the bundled tritonserver "
                    "lacks (python backend only): make the repository with triton-repo --python-backend, "
                    "or serve it with a full Triton (--tritonserver, --backend-directory)"
                )
        elif not self.binary.is_file():
            raise ScaoedError(f"tritonserver not found: {self.binary}")
        for name, port in (
            ("--http-port", self.http_port),
            ("--grpc-port", self.grpc_port),
            ("--metrics-port", self.metrics_port),
        ):
            if not port_free(port, self.address):
                raise ScaoedError(f"port {port} ({name}) is in use: stop what holds it or choose another {name}")
        clean_stale()  # what servers killed before left: their shared memory and temporary folders
        self._workdir = tempfile.TemporaryDirectory(prefix=WORKDIR_PREFIX)
        work = Path(self._workdir.name)
        (work / OWNER_FILE).write_text(str(os.getpid()))
        if bundled:
            self.backend_dir = prepare_backends(root, work / "backends")
        elif self.backend_dir is None:
            self.backend_dir = self.binary.parent.parent / "backends"
        # The log outlives the server (the errors below point to it): a named file, else one in the temp folder.
        self.log_path = (
            self.log_path or Path(tempfile.gettempdir()) / f"scaoed-tritonserver-{os.getpid()}-{self.http_port}.log"
        )
        try:
            self._log = open(self.log_path, "wb")  # noqa: SIM115 - closed in stop()
        except OSError as e:
            raise ScaoedError(f"cannot write the server's log {self.log_path}: {e.strerror}") from e
        step(f"starting tritonserver on {self.repo} ({len(self.models)} model(s))")
        try:
            if self.use_guard:  # the public HTTP port is the guard's; Triton's own is a loopback one behind it
                ours = {self.http_port, self.grpc_port, self.metrics_port}
                self.triton_http_port = next(p for p in iter(lambda: free_port("127.0.0.1"), None) if p not in ours)
                self.guard = RequestGuard(
                    self.address,
                    self.http_port,
                    self.triton_http_port,
                    {name: model_limits(cfg) for name, cfg in configs.items()},
                    self._guard_token,
                ).start()
            self.process = subprocess.Popen(
                self.command(),
                stdout=self._log,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
                env=server_env(root),
                start_new_session=True,
                preexec_fn=die_with_parent,
            )
            self.wait_ready(step)
        except BaseException:
            self.stop()
            raise
        self._regions = shm_regions(self.process.pid)  # known now, while the stubs run: a killed server leaves them
        return self

    def _log_failure(self, exited: bool = False) -> str | None:
        """A model that failed to load, from the server's log; once it has exited, else its last error line.
        (A running server logs harmless errors too: no CUDA driver on a CPU machine, for one.)"""
        try:
            lines = self.log_path.read_text(errors="replace").splitlines()
        except OSError:
            return None
        for line in lines:
            m = re.search(r"failed to load '([^']+)' version \d+: (.*?)\"?$", line)
            if m:
                why = m.group(2).split("\\n")[0]  # the log escapes the stub's traceback onto the same line
                return f"model {m.group(1)!r} failed to load: {why}"
        errors = [line.split("] ", 1)[-1].strip('"') for line in lines if line.startswith("E")]
        return errors[-1] if exited and errors else None

    def wait_ready(self, step=lambda s: None) -> None:
        """Until ``/v2/health/ready`` answers 200 (server and every model ready); one line when it exits, logs a
        model that failed to load, or is not ready within ``ready_timeout``."""
        deadline = time.monotonic() + self.ready_timeout
        step("waiting for the server and its models to be ready")
        while True:
            if self.process.poll() is not None:
                why = self._log_failure(exited=True) or f"exit code {self.process.returncode}"
                raise ScaoedError(f"tritonserver exited while starting: {why} (log: {self.log_path})")
            failure = self._log_failure()
            if failure:
                raise ScaoedError(f"tritonserver did not start: {failure} (log: {self.log_path})")
            if self.ready():
                return
            if time.monotonic() > deadline:
                raise ScaoedError(
                    f"tritonserver was not ready after {self.ready_timeout:.0f} s; stopped it (log: {self.log_path})"
                )
            time.sleep(0.25)

    def ready(self) -> bool:
        try:
            with urllib.request.urlopen(f"{self.http_url}/v2/health/ready", timeout=2) as r:
                return r.status == 200
        except (urllib.error.URLError, OSError):
            return False

    def running(self) -> bool:
        return self.process is not None and self.process.poll() is None

    def rss_bytes(self) -> int:
        """Resident memory of the server and its python stubs."""
        return process_tree_rss(self.process.pid) if self.running() else 0

    def wait(self) -> int:
        """Block until the server exits; its exit code."""
        return self.process.wait()

    def stop(self, timeout: float = EXIT_TIMEOUT_S + 5) -> int | None:
        """SIGINT (Triton unloads its models and exits), then SIGKILL to the whole group after ``timeout``."""
        code = None
        if self.process is not None:
            self._regions |= shm_regions(self.process.pid)
            if self.process.poll() is None:
                with contextlib.suppress(ProcessLookupError):
                    self.process.send_signal(signal.SIGINT)
                try:
                    self.process.wait(timeout)
                except subprocess.TimeoutExpired:
                    pass
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.killpg(self.process.pid, signal.SIGKILL)  # stubs left behind by a server that hung
            code = self.process.wait()
        if self.guard is not None:
            self.guard.stop()
            self.guard = None
        for name in self._regions:  # a server that exits cleanly removed them; a killed one did not
            with contextlib.suppress(OSError):
                (Path("/dev/shm") / name).unlink(missing_ok=True)
        self._regions = set()
        if self._log is not None:
            self._log.close()
            self._log = None
            if code == 0 and not self.log_named:  # a clean stop: nothing in the log to point to
                with contextlib.suppress(OSError):
                    self.log_path.unlink()
        return code

    def cleanup(self) -> None:
        if self._workdir is not None:
            self._workdir.cleanup()
            self._workdir = None

    def __enter__(self) -> TritonServer:
        if self.process is None:
            self.start()
        return self

    def __exit__(self, *exc) -> None:
        self.stop()
        self.cleanup()
