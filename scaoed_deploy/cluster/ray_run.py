"""The Ray Data job behind ``denoise --ray``: an actor pool over paths, resumable, nothing lost.

- **Plan first**: ``plan_jobs`` decides inputs, outputs and references and skips outputs that
  exist, before Ray starts; a bad option or an unreadable model path fails in one line.
- **Workers**: ``DenoiseWorker`` opens the runner once (any artifact the registry opens: a
  checkpoint, an ONNX file, an OpenVINO IR, an engine), pinned to ``threads`` CPU threads (or one
  GPU with ``device="cuda"``), and runs ``denoise_file`` on each path it is given: 16-bit, alpha,
  ICC/EXIF and references as locally, the output written atomically beside its final name. A bad
  image is a failed row, not a failed task.
- **Faults**: actors restart (``max_restarts``) and their tasks are retried (``max_task_retries``),
  so the images of a worker killed mid-image are done again by its replacement; a killed write leaves
  only a temporary file, which the driver removes (it knows each output's name). A driver killed
  mid-run leaves complete files only: the same command skips them and does the rest.
"""

from __future__ import annotations

import contextlib
import os
import socket
import sys
import time
from collections import Counter
from pathlib import Path

from ..artifact import load_artifact
from ..checkpoint import read_checkpoint
from ..errors import ScaoedError, first_line
from ..runtime.denoiser import DEFAULT_OVERLAP, DEFAULT_TILE, Denoiser, denoise_file
from ..runtime.jobs import Plan, plan_jobs
from ..runtime.registry import CHECKPOINT_SUFFIXES
from ..seal import check_seal

INSTALL = "pip install 'scaoed-deploy[ray]' (Ray Data, pinned beside this project's other dependencies)"


def require_ray():
    """``ray`` with Ray Data, or one line saying how to install it."""
    try:
        import ray
        import ray.data  # noqa: F401 - Ray Data is its own extra
    except ImportError as e:
        raise ScaoedError(f"--ray needs Ray: {INSTALL} ({first_line(e)})") from e
    return ray


#: A local result's keys beyond the fixed ones, carried through the worker's rows (so --json is the same either way).
INT_KEYS = ("bit_depth_in", "channels_out", "peak_rss_mb")
TEXT_KEYS = ("metadata_kept", "warnings")


class DenoiseWorker:
    """One actor of the pool: a Denoiser opened once, then one image per row (see the module doc)."""

    def __init__(self, model: str | None, backend: str | None, stages: int | None, device: str,
                 threads: int | None, allow_unverified: bool, tile: int, overlap: int, tile_batch: int,
                 ensemble: bool, bit_depth: int | None):
        self.denoiser = Denoiser.open(model, backend=backend, stages=stages, device=device, threads=threads,
                                      allow_unverified=allow_unverified, tile=tile, overlap=overlap,
                                      tile_batch=tile_batch, ensemble=ensemble)
        self.bit_depth = bit_depth
        self.name = f"{socket.gethostname()}:{os.getpid()}"

    def __call__(self, batch: dict) -> dict:
        rows: dict[str, list] = {k: [] for k in ("src", "dst", "status", "error", "worker", "seconds", "width",
                                                 "height", "bit_depth_out", *INT_KEYS, *TEXT_KEYS, "psnr", "ssim",
                                                 "psnr_in", "ssim_in")}
        for src, dst, ref in zip(batch["src"], batch["dst"], batch["ref"]):
            t = time.perf_counter()
            r: dict = {}
            try:
                r = denoise_file(self.denoiser, str(src), str(dst), str(ref) or None, bit_depth=self.bit_depth)
                status, error = "done", ""
            except ScaoedError as e:  # a bad image: a failed row, the rest go on
                status, error = "failed", str(e)
            for key, value in (("src", str(src)), ("dst", str(dst)), ("status", status), ("error", error),
                               ("worker", self.name), ("seconds", time.perf_counter() - t),
                               ("width", r.get("width", 0)), ("height", r.get("height", 0)),
                               ("bit_depth_out", r.get("bit_depth_out", 0))):
                rows[key].append(value)
            for key in INT_KEYS:
                rows[key].append(int(r.get(key, 0)))
            for key in TEXT_KEYS:  # lists as one text column: Ray Data's blocks hold flat columns
                rows[key].append("\n".join(r.get(key, [])))
            for key in ("psnr", "ssim", "psnr_in", "ssim_in"):
                rows[key].append(float(r.get(key, float("nan"))))
        return rows


def check_model(model: str | Path, allow_unverified: bool = False) -> None:
    """The checks a worker's runner would make that the driver can make cheaply, so that a missing, corrupt or
    edited model is one line before Ray starts (an actor whose constructor fails is not restarted: Ray Data counts
    such deaths and then fails the whole job)."""
    path = Path(model)
    if not path.is_file():
        raise ScaoedError(f"model not found: {model}")
    if path.suffix.lower() in CHECKPOINT_SUFFIXES:
        read_checkpoint(path)
    else:
        art = load_artifact(path)
        check_seal(path, art.metadata, allow_unverified)


def _leftover_temporaries(plan: Plan) -> list[Path]:
    """Temporary files a killed write left beside this run's outputs (``atomic_path``'s names for them)."""
    found = []
    for job in plan.jobs:
        found.extend(job.dst.parent.glob(f".{job.dst.stem}.tmp-*{job.dst.suffix}"))
    return found


#: Seconds to wait for a TCP answer from a cluster's address before Ray is asked to connect (Ray itself retries a
#: GCS that does not answer for minutes, and ignores Ctrl-C while it does).
CONNECT_TIMEOUT_S = 5.0


def check_reachable(address: str, timeout: float = CONNECT_TIMEOUT_S) -> None:
    """One line, within ``timeout``, for a HOST:PORT or ray://HOST:PORT address where nothing answers."""
    if address in ("local", "auto"):
        return
    hostport = address.split("://", 1)[-1].rstrip("/")
    host, _, port = hostport.rpartition(":")
    if not port.isdigit():
        raise ScaoedError(f"--ray {address}: use local, auto, HOST:PORT or ray://HOST:PORT")
    try:
        with socket.create_connection((host.strip("[]") or "127.0.0.1", int(port)), timeout=timeout):
            pass
    except OSError as e:
        why = "timed out" if isinstance(e, TimeoutError) else (e.strerror or first_line(e))
        raise ScaoedError(f"cannot reach a Ray cluster at {address!r}: {why} (start one with `ray start --head`, "
                          "or use --ray local)") from e


def _init(ray, address: str) -> bool:
    """Connect (or start a local Ray for ``local``); True when this call started Ray in this process."""
    if ray.is_initialized():
        return False
    check_reachable(address)
    os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")  # what this project starts reports nothing home
    kwargs = dict(include_dashboard=False, log_to_driver=False, logging_level="ERROR")
    try:
        ray.init(address=None if address == "local" else address, **kwargs)
    except Exception as e:  # ConnectionError, RuntimeError, ValueError: the address is the user's to fix
        raise ScaoedError(f"cannot reach a Ray cluster at {address!r}: {first_line(e)} (start one with `ray start "
                          "--head`, or use --ray local)") from e
    token = Path.home() / ".ray" / "auth_token"
    if address == "local" and token.is_file():  # a token Ray wrote for the cluster it started: private
        with contextlib.suppress(OSError):
            token.chmod(0o600)
    return True


def denoise_on_ray(src, dst, model: str | None = None, *, address: str = "local", workers: int | None = None,
                   threads: int | None = None, backend: str | None = None, stages: int | None = None,
                   device: str = "auto", reference=None, tile: int = DEFAULT_TILE, overlap: int = DEFAULT_OVERLAP,
                   tile_batch: int = 4, ensemble: bool = False, bit_depth: int | None = None, overwrite: bool = False,
                   allow_unverified: bool = False, max_restarts: int = 4, max_task_retries: int = 4,
                   progress: bool = True) -> dict:
    """Denoise ``src`` (an image, a folder or a .txt list of paths) into ``dst`` on a Ray cluster; returns the
    summary (done / skipped / failed, images per second, per-worker counts, failures). See the module doc."""
    Denoiser.check_options(tile, overlap, tile_batch)
    if model is not None:
        check_model(model, allow_unverified)
    plan = plan_jobs(src, dst, reference, overwrite)
    ray = require_ray()
    # Ray's driver threads print what the cluster says (a retried task, a restarted actor) on stdout: they go to
    # stderr, so that stdout holds what the command prints (--json's summary) and nothing else.
    with contextlib.redirect_stdout(sys.stderr):
        started = _init(ray, address)
        try:
            return _run(ray, plan, dict(model=str(model) if model else None, backend=backend, stages=stages,
                                        device=device, allow_unverified=allow_unverified, tile=tile, overlap=overlap,
                                        tile_batch=tile_batch, ensemble=ensemble, bit_depth=bit_depth),
                        address, workers, threads, max_restarts, max_task_retries, progress)
        finally:
            if started:
                ray.shutdown()  # the job's actors go with the driver
            for leftover in _leftover_temporaries(plan):  # writes cut short (an interrupted run): never kept
                leftover.unlink(missing_ok=True)


def _pool_size(ray, workers: int | None, threads: int | None, cuda: bool) -> tuple[int, int]:
    """(workers, threads per worker): as asked, else as many workers as the cluster's CPUs (or GPUs) allow."""
    resources = ray.cluster_resources()
    cpus = int(resources.get("CPU", 1))
    if cuda:
        gpus = int(resources.get("GPU", 0))
        if gpus < 1:
            raise ScaoedError("--device cuda on Ray needs GPUs in the cluster; it has none")
        workers = workers or gpus
    threads = threads or (max(1, cpus // workers) if workers else 1)
    workers = workers or max(1, cpus // threads)
    return workers, threads


def _run(ray, plan: Plan, options: dict, address: str, workers, threads, max_restarts: int, max_task_retries: int,
         progress: bool) -> dict:
    import ray.data

    cuda = options["device"] == "cuda"
    workers, threads = _pool_size(ray, workers, threads, cuda)
    for leftover in _leftover_temporaries(plan):  # a write killed in an earlier run
        leftover.unlink(missing_ok=True)
    t0 = time.perf_counter()
    rows = []
    if plan.jobs:
        ray.data.DataContext.get_current().enable_progress_bars = progress
        items = [{"src": str(j.src), "dst": str(j.dst), "ref": str(j.ref) if j.ref else ""} for j in plan.jobs]
        for j in plan.jobs:
            j.dst.parent.mkdir(parents=True, exist_ok=True)
        ds = ray.data.from_items(items, override_num_blocks=len(items))  # one block an image: workers balance
        done = ds.map_batches(
            DenoiseWorker, fn_constructor_kwargs=dict(options, threads=threads), batch_size=1,
            compute=ray.data.ActorPoolStrategy(size=workers), num_cpus=0 if cuda else threads,
            num_gpus=1 if cuda else 0, max_restarts=max_restarts, max_task_retries=max_task_retries)
        try:
            rows = list(done.iter_rows())
        except Exception as e:  # a worker that cannot start (a bad model file) fails every task the same way
            raise ScaoedError(f"the Ray job failed: {_cause(e)}") from e
    seconds = time.perf_counter() - t0
    ok = [r for r in rows if r["status"] == "done"]
    failed = [{"input": r["src"], "error": r["error"]} for r in rows if r["status"] == "failed"]
    return {
        "address": address, "workers": workers, "threads_per_worker": threads, "device": options["device"],
        "model": options["model"] or "demo weights", "done": len(ok), "skipped": len(plan.skipped),
        "failed": len(failed), "seconds": round(seconds, 2),
        "images_per_s": round(len(ok) / seconds, 3) if ok and seconds > 0 else 0.0,
        "per_worker": dict(Counter(r["worker"] for r in ok)), "failures": failed, "skipped_existing": plan.skipped,
        "results": [_as_local(r) for r in ok],
    }


def _as_local(row: dict) -> dict:
    """A worker's row with the keys a local run's result has (input, output, ...; no metric without a reference)."""
    out = {"input": row["src"], "output": row["dst"], "worker": row["worker"], "seconds": round(row["seconds"], 3),
           "width": int(row["width"]), "height": int(row["height"]), "bit_depth_out": int(row["bit_depth_out"])}
    out.update({k: float(row[k]) for k in ("psnr", "ssim", "psnr_in", "ssim_in") if row[k] == row[k]})
    out.update({k: int(row[k]) for k in INT_KEYS})
    out["metadata_kept"] = [m for m in row["metadata_kept"].split("\n") if m]
    warnings = [w for w in row["warnings"].split("\n") if w]
    if warnings:
        out["warnings"] = warnings
    return out


def _cause(e: BaseException) -> str:
    """The innermost error of a Ray exception chain (a worker's own ScaoedError, when it is one)."""
    seen = e
    with contextlib.suppress(Exception):
        while getattr(seen, "cause", None) is not None or seen.__cause__ is not None:
            seen = getattr(seen, "cause", None) or seen.__cause__
    return first_line(seen, 300)
