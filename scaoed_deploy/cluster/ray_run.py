"""The Ray Data job behind ``denoise --ray``: an actor pool over paths, resumable, a lost node survived.

- **Plan first**: ``plan_jobs`` decides inputs, outputs and references (local paths or ``s3://``
  URLs) and skips outputs that exist, before Ray starts; a bad option, an unreadable model, a
  missing bucket fail in one line.
- **Workers** (``worker.py``): an actor pool (``ActorPoolStrategy``, from one actor up to what the
  live nodes hold) maps blocks of many paths; each actor opens the runner once and runs
  ``denoise_file`` per path, writing its outputs itself, atomically.
- **Faults**: Ray Data restarts actors and retries their tasks (its defaults: no limit), so a
  killed worker's images are done by its replacement. Where Ray still gives up (a node lost while
  its tasks could not be moved), the driver re-plans what is neither returned nor written and runs
  it on the nodes left, one round per node lost. A driver killed mid-run leaves complete files only:
  the same command skips them and does the rest.
- **Records**: rows stream back as images finish: ``progress`` is told done / failed / total as
  they do, and each image gets a line in the run's manifest (``manifest.py``).
"""

from __future__ import annotations

import contextlib
import math
import os
import sys
import time
from collections import Counter
from dataclasses import replace
from pathlib import Path

from ..artifact import load_artifact
from ..checkpoint import read_checkpoint
from ..errors import ScaoedError, first_line
from ..fleet import entries, is_package, read_package
from ..runtime.denoiser import DenoiseOptions
from ..runtime.jobs import Plan, base_name, names_at, parent_of, plan_jobs
from ..runtime.registry import CHECKPOINT_SUFFIXES
from ..seal import check_seal
from ..storage import is_url
from ..util.files import temporary_name_parts
from .connect import alive_nodes, connect, pool_size, require_ray
from .manifest import Manifest
from .worker import DenoiseWorker, as_local

#: The AWS variables a worker needs to reach the same object storage as the driver (not the keys: every node
#: has its own credentials, as an instance role, ~/.aws or its environment).
PASSED_ENV = ("AWS_ENDPOINT_URL", "AWS_ENDPOINT_URL_S3", "AWS_REGION", "AWS_DEFAULT_REGION")
MAX_PATHS_PER_BLOCK = 256


def check_model(model: str | Path, allow_unverified: bool = False) -> None:
    """The checks a worker's runner would make that the driver can make cheaply, so that a missing, corrupt or
    edited model is one line before Ray starts (an actor whose constructor fails is not restarted)."""
    path = Path(model)
    if is_package(path):  # each worker takes its own CPU's entry: every entry is checked here
        for entry in entries(read_package(path)).values():
            run = entry.get("run") or {}
            if run.get("artifact"):
                check_model(path / run["artifact"], allow_unverified)
        return
    if not path.is_file():
        raise ScaoedError(f"model not found: {model}")
    if path.suffix.lower() in CHECKPOINT_SUFFIXES:
        read_checkpoint(path)
    else:
        art = load_artifact(path)
        check_seal(path, art.metadata, allow_unverified)


def _leftover_temporaries(plan: Plan) -> list[Path]:
    """Temporary files a killed write left beside this run's local outputs (``atomic_path``'s names for them):
    each output folder listed once, however many outputs it holds."""
    wanted: dict[Path, set[tuple[str, str]]] = {}
    for job in plan.jobs:
        if not is_url(job.dst):
            wanted.setdefault(job.dst.parent, set()).add((job.dst.stem, job.dst.suffix))
    found = []
    for folder, names in wanted.items():
        for p in folder.iterdir() if folder.is_dir() else ():
            named = temporary_name_parts(p)
            if named and (named[0], p.suffix) in names:
                found.append(p)
    return found


def denoise_on_ray(
    src,
    dst,
    options: DenoiseOptions | None = None,
    *,
    address: str = "local",
    workers: int | None = None,
    reference=None,
    overwrite: bool = False,
    progress=None,
) -> dict:
    """Denoise ``src`` (an image, a folder, a .txt list of paths, or their s3:// URLs) into ``dst`` on a Ray
    cluster; returns the summary (done / skipped / failed, images per second, per-worker counts, failures, the
    time each part took). ``progress(done, failed, total, note)`` is called as images finish and when a node is
    lost. See the module doc."""
    options = options or DenoiseOptions()
    options.check()
    if options.model is not None:
        check_model(options.model, options.allow_unverified)
    t0 = time.perf_counter()
    plan = plan_jobs(src, dst, reference, overwrite)
    timings = {"plan_s": time.perf_counter() - t0}
    ray = require_ray()
    # Ray's driver threads print what the cluster says (a retried task, a restarted actor) on stdout: they go to
    # stderr, so that stdout holds what the command prints (--json's summary) and nothing else.
    with contextlib.redirect_stdout(sys.stderr):
        t = time.perf_counter()
        started = connect(ray, address)
        timings["connect_s"] = time.perf_counter() - t
        manifest = _manifest_for(plan)
        try:
            summary = _run(ray, plan, options, workers, manifest, progress or (lambda *a: None), timings)
        finally:
            if manifest is not None:
                manifest.close()
            if started:
                ray.shutdown()  # the job's actors go with the driver
            for leftover in _leftover_temporaries(plan):  # writes cut short (an interrupted run): never kept
                leftover.unlink(missing_ok=True)
    summary["address"] = address
    summary["timings"] = {k: round(v, 2) for k, v in timings.items()}
    return summary


def _manifest_for(plan: Plan) -> Manifest | None:
    """The run's manifest beside its outputs: a folder's run has one, a single image none."""
    if plan.single or not plan.jobs:
        return None
    return Manifest(parent_of(plan.jobs[0].dst))


def paths_per_block(jobs: int, workers: int) -> int:
    """Blocks of many paths (Ray Data plans and tracks each block, not each image), small enough that every
    worker gets several: progress and a lost node's redo come in blocks."""
    return max(1, min(MAX_PATHS_PER_BLOCK, math.ceil(jobs / (workers * 16))))


def _run(ray, plan: Plan, options: DenoiseOptions, workers, manifest, progress, timings: dict) -> dict:
    cuda, threads = options.device == "cuda", options.threads
    nodes = alive_nodes(ray)
    pool = pool_size(nodes, workers, threads, cuda)
    ctx = ray.data.DataContext.get_current()
    ctx.enable_progress_bars = False  # progress is the run's own: done / failed / left as images finish
    env = {k: os.environ[k] for k in PASSED_ENV if os.environ.get(k)}
    rows: dict[str, dict] = {}
    counts: Counter = Counter()
    total, pending, rounds, lost, notes = len(plan.jobs), list(plan.jobs), 0, [], []
    if manifest is not None:
        manifest.add_existing(plan.skipped_inputs, plan.skipped)
    retried = sorted(manifest.failed_before.keys() & {str(j.src) for j in plan.jobs}) if manifest else []
    if retried:
        notes.append(f"retrying {len(retried)} image(s) the manifest lists as failed in an earlier run")
        progress(0, 0, total, notes[-1])
    for leftover in _leftover_temporaries(plan):  # a write killed in an earlier run
        leftover.unlink(missing_ok=True)
    t_run = time.perf_counter()
    while pending:
        rounds += 1
        size = pool_size(nodes, workers, threads, cuda) if rounds > 1 else pool
        items = [{"src": str(j.src), "dst": str(j.dst), "ref": str(j.ref) if j.ref else ""} for j in pending]
        per_block = paths_per_block(len(items), size["workers"])
        ds = ray.data.from_items(items, override_num_blocks=math.ceil(len(items) / per_block))
        mapped = ds.map_batches(
            DenoiseWorker,
            fn_constructor_kwargs={"options": replace(options, threads=size["threads"])},
            batch_size=per_block,
            compute=ray.data.ActorPoolStrategy(
                min_size=1, max_size=size["workers"], initial_size=size["workers"]
            ),  # all start now; 1 is enough to go
            num_cpus=0 if cuda else size["threads"],
            num_gpus=1 if cuda else 0,
            runtime_env={"env_vars": env} if env else None,
        )
        before = len(rows)
        try:
            for row in mapped.iter_rows():
                if "first_result_s" not in timings:
                    timings["first_result_s"] = time.perf_counter() - t_run
                if row["src"] not in rows:
                    counts[row["status"]] += 1
                rows[row["src"]] = row
                if manifest is not None:
                    manifest.add({"input": row["src"], "output": row["dst"], **row})
                progress(counts["done"], counts["failed"], total, None)
            pending = []
        except Exception as e:  # noqa: BLE001 - Ray's errors have no common base; a lost node among them
            now = alive_nodes(ray)
            gone = {n["id"] for n in nodes} - {n["id"] for n in now}
            if not now or rounds > len(nodes) or not (gone or len(rows) > before):
                raise ScaoedError(f"the Ray job failed: {_cause(e)}") from e
            written = _written([j for j in pending if str(j.src) not in rows])
            pending = [j for j in pending if str(j.src) not in rows and str(j.dst) not in written]
            lost.extend(sorted(gone))
            note = (
                f"{'a node was lost' if gone else 'the Ray job stopped'} ({first_line(_cause(e), 120)}): "
                f"{len(pending)} image(s) left, going on with {len(now)} node(s)"
            )
            notes.append(note)
            counts["done"] += len(written)
            progress(counts["done"], counts["failed"], total, note)
            nodes = now
    timings["run_s"] = time.perf_counter() - t_run
    gone = sorted({n["id"] for n in nodes} - {n["id"] for n in alive_nodes(ray)})
    if gone:  # lost while Ray moved its work to the nodes left (no round of the driver's was needed)
        lost.extend(gone)
        notes.append(f"{len(gone)} node(s) lost during the run; their images were done on the nodes left")
    return _summary(plan, rows, pool, options, notes, lost, timings["run_s"])


def _written(jobs) -> set[str]:
    """The outputs of ``jobs`` that exist (one listing per output folder or prefix)."""
    folders: dict = {}
    out = set()
    for j in jobs:
        folder = parent_of(j.dst)
        if folder not in folders:
            folders[folder] = names_at(folder)
        if base_name(j.dst) in folders[folder]:
            out.add(str(j.dst))
    return out


def _summary(
    plan: Plan, rows: dict, pool: dict, options: DenoiseOptions, notes: list, lost: list, seconds: float
) -> dict:
    ok = [r for r in rows.values() if r["status"] == "done"]
    failed = [{"input": r["src"], "error": r["error"]} for r in rows.values() if r["status"] == "failed"]
    unreported = sorted(str(j.dst) for j in plan.jobs if str(j.src) not in rows)  # written on a node then lost
    per_worker = Counter(r["worker"] for r in ok)
    return {
        "workers": pool["workers"],
        "workers_asked": pool["asked"],
        "workers_ran": len(per_worker),
        "threads_per_worker": pool["threads"],
        "device": options.device,
        "model": options.model or "demo weights",
        "done": len(ok) + len(unreported),
        "skipped": len(plan.skipped),
        "failed": len(failed),
        "seconds": round(seconds, 2),
        "images_per_s": round(len(ok) / seconds, 3) if ok and seconds > 0 else 0.0,
        "per_worker": dict(per_worker),
        "per_node": dict(Counter(r["node"] for r in ok)),
        "per_cpu_class": dict(Counter(r["cpu_class"] for r in ok)),
        "failures": failed,
        "skipped_existing": plan.skipped,
        "written_before_a_node_was_lost": unreported,
        "nodes_lost": lost,
        "notes": notes + ([pool["warning"]] if pool["warning"] else []),
        "results": [as_local(r) for r in ok],
    }


def _cause(e: BaseException) -> str:
    """The innermost error of a Ray exception chain (a worker's own ScaoedError, when it is one)."""
    seen = e
    with contextlib.suppress(Exception):
        while getattr(seen, "cause", None) is not None or seen.__cause__ is not None:
            seen = getattr(seen, "cause", None) or seen.__cause__
    return first_line(seen, 300)
