#!/usr/bin/env python3
"""Throughput of `denoise --ray` against local `denoise` on one machine: what Ray costs.

    python3 benchmarks/cluster/ray_throughput.py [--onnx export/scaoednet_k1_t16_fp32.onnx] [--small 64] [--large 8]

Inputs, made once under a temporary folder from the real SIDD noisy crops: --small images of 256 x 256
(the crops, flipped and rotated) and --large images of 2000 x 1500 (mosaics of the crops, so the noise is
real camera noise), through the K = 1 demo ONNX on ONNX Runtime: local `denoise` with 1 and with 2
threads, and `--ray local` with 1 worker x 1 thread and 2 workers x 1 thread, each on the small set; the
large set with the two 2-thread configurations (local 2 threads, 2 workers x 1 thread) unless --large-all
(each 1-thread pass over the large set takes about 15 minutes on a 2-core machine). Times are whole commands in this
process (model loads, and for Ray its actors' start, included;
Ray's own start, `ray.init`, reported apart). Ray runs on loopback only: the script re-executes itself
inside a private network and PID namespace (`unshare`, as root), which also ends every Ray process with
it. Records ray_throughput.json and .md beside this script.
"""

from __future__ import annotations

import argparse
import os
import shutil
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
from common import inside, rerun_inside, timed_cli, write_record

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent.parent
SIDD = ROOT.parent / "shared" / "data" / "sidd" / "noisy"


def make_inputs(root: Path, small: int, large: int) -> dict[str, Path]:
    from scaoed_deploy.images import Image, read_image, write_image

    crops = [read_image(p).rgb for p in sorted(SIDD.glob("*.png"))]
    if not crops:
        raise SystemExit(f"error: no SIDD crops in {SIDD}")
    out = {"small": root / "small", "large": root / "large"}
    for d in out.values():
        d.mkdir(parents=True)
    for i in range(small):
        c = np.rot90(crops[i % len(crops)], k=(i // len(crops)) % 4)
        c = c[:, ::-1] if (i // (4 * len(crops))) % 2 else c
        write_image(out["small"] / f"s{i:03d}.png", Image(rgb=np.ascontiguousarray(c[:256, :256])))
    rng = np.random.default_rng(0)
    for i in range(large):
        rows = []
        for _ in range(6):  # 6 x 8 tiles of 250 x 250 from the crops: 1500 x 2000
            rows.append(
                np.concatenate(
                    [np.rot90(crops[rng.integers(len(crops))], k=int(rng.integers(4)))[:250, :250] for _ in range(8)],
                    axis=1,
                )
            )
        write_image(out["large"] / f"l{i:02d}.png", Image(rgb=np.ascontiguousarray(np.concatenate(rows, axis=0))))
    return out


def run(args) -> dict:
    import ray

    from scaoed_deploy.bench import machine

    onnx = Path(args.onnx).resolve()
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        inputs = make_inputs(Path(tmp), args.small, args.large)
        t = time.perf_counter()
        ray.init(num_cpus=os.cpu_count(), include_dashboard=False, log_to_driver=False, logging_level="ERROR")
        ray_start = time.perf_counter() - t
        configs = [("local", 1, None), ("local", 2, None), ("ray", 1, 1), ("ray", 1, 2)]
        for kind, threads, workers in configs:
            for name, folder in inputs.items():
                if name == "large" and threads * (workers or 1) < 2 and not args.large_all:
                    continue
                out = Path(tmp) / f"out_{kind}_{threads}_{workers}_{name}"
                cmd = ["denoise", str(folder), str(out), "-m", str(onnx), "--threads", str(threads), "--json"]
                if kind == "ray":
                    cmd += ["--ray", "local", "--workers", str(workers)]
                seconds, summary, _ = timed_cli(cmd)
                count = len(list(folder.iterdir()))
                rows.append(
                    {
                        "path": kind,
                        "threads": threads,
                        "workers": workers,
                        "set": name,
                        "images": count,
                        "seconds": round(seconds, 2),
                        "images_per_s": round(count / seconds, 3),
                        "per_worker": (summary or {}).get("per_worker"),
                    }
                )
                print(f"{kind} threads={threads} workers={workers} {name}: {seconds:.1f} s", file=sys.stderr)
                shutil.rmtree(out)
        ray.shutdown()
    for r in rows:  # each Ray row against local with the same total threads
        if r["path"] == "ray":
            local = next(
                x
                for x in rows
                if x["path"] == "local" and x["set"] == r["set"] and x["threads"] == r["threads"] * r["workers"]
            )
            r["vs_local_same_threads"] = round(r["images_per_s"] / local["images_per_s"], 3)
    return {
        "command": "python3 benchmarks/cluster/ray_throughput.py " + " ".join(sys.argv[1:]),
        "created": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        "machine": machine(),
        "artifact": onnx.name,
        "ray": ray.__version__,
        "ray_init_seconds": round(ray_start, 2),
        "rows": rows,
    }


def markdown(r: dict) -> str:
    m = r["machine"]
    lines = [
        f"# denoise --ray against local denoise: {r['artifact']}",
        "",
        f"`{r['command'].strip()}`",
        "",
        f"Machine: {m['cpu']} ({', '.join(m['isa'])}), {m['cores']} cores; Ray {r['ray']} on one node "
        f"(`--ray local`), started in {r['ray_init_seconds']} s (not in the times below).",
        "",
        "| images | path | threads x workers | seconds | img/s | x local, same total threads | per worker |",
        "|---|---|---|---:|---:|---:|---|",
    ]
    for x in r["rows"]:
        who = f"{x['threads']} thread(s)" if x["path"] == "local" else f"{x['threads']} x {x['workers']}"
        per = ", ".join(str(n) for n in (x["per_worker"] or {}).values()) if x["per_worker"] else "-"
        lines.append(
            f"| {x['images']} x {'256 x 256' if x['set'] == 'small' else '2000 x 1500'} | {x['path']} | "
            f"{who} | {x['seconds']} | {x['images_per_s']} | {x.get('vs_local_same_threads', '-')} | {per} |"
        )
    lines += ["", "Times are whole commands (model loads and Ray's actor start included).", ""]
    return "\n".join(lines)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--onnx", default=str(ROOT / "export" / "scaoednet_k1_t16_fp32.onnx"))
    ap.add_argument("--small", type=int, default=64)
    ap.add_argument("--large", type=int, default=8)
    ap.add_argument("--large-all", action="store_true", help="The 1-thread configurations on the large set too.")
    args = ap.parse_args()
    if not Path(args.onnx).is_file():
        print(f"error: {args.onnx} not found: make it with `scaoed-deploy export --stages 1`", file=sys.stderr)
        return 1
    if not inside():  # loopback only: a private network (and PID) namespace of its own
        return rerun_inside(__file__, sys.argv[1:])
    result = run(args)
    write_record("ray_throughput", result, markdown(result))
    return 0


if __name__ == "__main__":
    sys.exit(main())
