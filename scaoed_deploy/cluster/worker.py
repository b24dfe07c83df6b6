"""One actor of a cluster run's pool: the runner opened once, then one image per row, rows of text and numbers
(Ray Data's blocks hold flat columns)."""

from __future__ import annotations

import os
import socket
import time

from ..cpu import this_cpu
from ..errors import ScaoedError
from ..runtime.denoiser import DenoiseOptions, Denoiser, denoise_file

#: A local result's keys beyond the fixed ones, carried through the worker's rows (so --json is the same either way).
INT_KEYS = ("bit_depth_in", "channels_out", "peak_rss_mb")
TEXT_KEYS = ("metadata_kept", "warnings")
METRICS = ("psnr", "ssim", "psnr_in", "ssim_in")
COLUMNS = (
    "src",
    "dst",
    "ref",
    "status",
    "error",
    "worker",
    "node",
    "cpu_class",
    "artifact",
    "seconds",
    "width",
    "height",
    "bit_depth_out",
    *INT_KEYS,
    *TEXT_KEYS,
    *METRICS,
)


class DenoiseWorker:
    """A Denoiser opened once (any artifact the registry opens), then ``denoise_file`` on each row's paths or
    URLs: a bad image is a failed row, not a failed task."""

    def __init__(self, options: DenoiseOptions):
        self.denoiser = Denoiser.from_options(options)
        self.bit_depth = options.bit_depth
        self.name = f"{socket.gethostname()}:{os.getpid()}"
        self.node = _node_id()
        picked = self.denoiser.runner.package_pick  # -m PACKAGE: the entry this worker's CPU took
        self.cpu_class = this_cpu().isa_class
        self.artifact = str(picked.artifact) if picked else ""

    def __call__(self, batch: dict) -> dict:
        rows: dict[str, list] = {k: [] for k in COLUMNS}
        for src, dst, ref in zip(batch["src"], batch["dst"], batch["ref"]):
            t = time.perf_counter()
            r: dict = {}
            try:
                r = denoise_file(self.denoiser, str(src), str(dst), str(ref) or None, bit_depth=self.bit_depth)
                status, error = "done", ""
            except ScaoedError as e:  # a bad image: a failed row, the rest go on
                status, error = "failed", str(e)
            for key, value in (
                ("src", str(src)),
                ("dst", str(dst)),
                ("ref", str(ref)),
                ("status", status),
                ("error", error),
                ("worker", self.name),
                ("node", self.node),
                ("cpu_class", self.cpu_class),
                ("artifact", self.artifact),
                ("seconds", time.perf_counter() - t),
                ("width", r.get("width", 0)),
                ("height", r.get("height", 0)),
                ("bit_depth_out", r.get("bit_depth_out", 0)),
            ):
                rows[key].append(value)
            for key in INT_KEYS:
                rows[key].append(int(r.get(key, 0)))
            for key in TEXT_KEYS:  # lists as one text column
                rows[key].append("\n".join(r.get(key, [])))
            for key in METRICS:
                rows[key].append(float(r.get(key, float("nan"))))
        return rows


def _node_id() -> str:
    import ray

    return ray.get_runtime_context().get_node_id()[:12]


def as_local(row: dict) -> dict:
    """A worker's row with the keys a local run's result has (input, output, ...; no metric without a reference)."""
    out = {
        "input": row["src"],
        "output": row["dst"],
        "worker": row["worker"],
        "node": row["node"],
        "cpu_class": row["cpu_class"],
        **({"artifact": row["artifact"]} if row["artifact"] else {}),
        "seconds": round(row["seconds"], 3),
        "width": int(row["width"]),
        "height": int(row["height"]),
        "bit_depth_out": int(row["bit_depth_out"]),
    }
    if row["ref"]:
        out["reference"] = row["ref"]
    out.update({k: float(row[k]) for k in METRICS if row[k] == row[k]})
    out.update({k: int(row[k]) for k in INT_KEYS})
    out["metadata_kept"] = [m for m in row["metadata_kept"].split("\n") if m]
    warnings = [w for w in row["warnings"].split("\n") if w]
    if warnings:
        out["warnings"] = warnings
    return out
