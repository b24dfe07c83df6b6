#!/usr/bin/env python3
"""Load run of a Triton server on loopback: the K = 1 demo-weights ONNX, 256 x 256 real noisy crops.

    python3 benchmarks/results/triton_load.py [--onnx export/scaoednet_k1_t16_fp32.onnx] [--requests 32]

Makes a python-backend model repository from the ONNX (scaoed-deploy triton-repo --python-backend),
starts the bundled tritonserver on loopback ports, and for 1, 4 and 16 concurrent clients sends a
fixed number of whole-image requests (HTTP, one 1 x 3 x 256 x 256 image each, through Denoiser with a
TritonRunner, as `denoise --server` does): throughput, p50/p99 latency, failed and lost requests, and
the server's resident memory (server and python stub) before and after. Then the same images, the
same count, through Denoiser over ONNX Runtime in this one process. Every served output is compared
with the in-process one. Bounded: --requests per setting, and --max-seconds per setting after which
no new request starts. Records triton_load_k1.json and .md beside this script.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import threading
import time
import urllib.request
from pathlib import Path

import numpy as np

from scaoed_deploy.bench import machine
from scaoed_deploy.images import read_image
from scaoed_deploy.runtime import Denoiser
from scaoed_deploy.runtime.triton_client import TritonRunner
from scaoed_deploy.serve import RepoOptions, TritonServer, free_port, make_repository

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent.parent
SIDD = ROOT.parent / "shared" / "data" / "sidd" / "noisy"


def percentile(values, q) -> float:
    return float(np.percentile(np.asarray(values) * 1000, q)) if values else float("nan")


def executions(server: TritonServer) -> tuple[float, float]:
    """(requests, model executions) so far, from the server's metrics: their ratio is the mean batch."""
    text = urllib.request.urlopen(server.metrics_url, timeout=10).read().decode()

    def total(name):
        return sum(float(line.rsplit(" ", 1)[1]) for line in text.splitlines() if line.startswith(name + "{"))

    return total("nv_inference_request_success"), total("nv_inference_exec_count")


def run_clients(make_denoiser, images, clients: int, requests: int, max_seconds: float) -> dict:
    """``requests`` whole-image calls shared by ``clients`` threads, each with its own Denoiser."""
    lock, state = threading.Lock(), {"next": 0}
    latencies, failures, outputs = [], [], {}
    deadline = time.monotonic() + max_seconds

    def client():
        denoiser = make_denoiser()
        try:
            while True:
                with lock:
                    i = state["next"]
                    if i >= requests or time.monotonic() > deadline:
                        return
                    state["next"] += 1
                t = time.perf_counter()
                try:
                    out = denoiser.denoise_array(images[i % len(images)])
                except Exception as e:  # every failure is counted and named, none stops the run
                    with lock:
                        failures.append(f"{type(e).__name__}: {str(e).splitlines()[0] if str(e) else ''}")
                    continue
                with lock:
                    latencies.append(time.perf_counter() - t)
                    outputs.setdefault(i % len(images), out)
        finally:
            denoiser.close()

    t0 = time.perf_counter()
    threads = [threading.Thread(target=client) for _ in range(clients)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    wall = time.perf_counter() - t0
    sent = state["next"]
    return {
        "clients": clients,
        "requested": requests,
        "sent": sent,
        "ok": len(latencies),
        "failed": len(failures),
        "lost": sent - len(latencies) - len(failures),
        "failures": failures[:5],
        "seconds": round(wall, 2),
        "throughput_img_s": round(len(latencies) / wall, 3),
        "p50_ms": round(percentile(latencies, 50), 1),
        "p99_ms": round(percentile(latencies, 99), 1),
        "_outputs": outputs,
    }


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[1])
    ap.add_argument("--onnx", default=str(ROOT / "export" / "scaoednet_k1_t16_fp32.onnx"))
    ap.add_argument("--clients", default="1,4,16")
    ap.add_argument("--requests", type=int, default=32)
    ap.add_argument("--max-seconds", type=float, default=180.0)
    ap.add_argument("--threads", type=int, default=len(os.sched_getaffinity(0)))
    ap.add_argument("--name", default="triton_load_k1")
    args = ap.parse_args()
    if not Path(args.onnx).is_file():
        sys.exit(f"error: {args.onnx} not found: make it with scaoed-deploy export --stages 1")
    if not SIDD.is_dir():
        sys.exit(f"error: {SIDD} not found: the load run sends the SIDD crops of ../shared/data")
    images = [read_image(p).rgb for p in sorted(SIDD.glob("*.png"))]
    clients = [int(c) for c in args.clients.split(",")]

    with tempfile.TemporaryDirectory(prefix="triton-load-") as tmp:
        repo = Path(tmp) / "repo"
        made = make_repository([args.onnx], repo, RepoOptions(python_backend=True, threads=args.threads))
        model = made["models"][0]["name"]
        server = TritonServer(
            repo, free_port(), free_port(), free_port(), address="127.0.0.1", log_path=Path(tmp) / "server.log"
        )
        t = time.perf_counter()
        server.start()
        start_s = time.perf_counter() - t
        try:
            rss_ready = server.rss_bytes()
            warm = Denoiser(TritonRunner(server.http_url, model), tile=None)
            warm.denoise_array(images[0])
            warm.close()
            rss_before = server.rss_bytes()
            served = []
            for c in clients:
                print(f"{c} client(s): {args.requests} requests", file=sys.stderr)
                before = executions(server)
                row = run_clients(
                    lambda: Denoiser(TritonRunner(server.http_url, model), tile=None),
                    images,
                    c,
                    args.requests,
                    args.max_seconds,
                )
                after = executions(server)
                row["server_executions"] = after[1] - before[1]
                row["mean_batch"] = round((after[0] - before[0]) / max(1.0, after[1] - before[1]), 2)
                served.append(row)
            rss_after = server.rss_bytes()
        finally:
            code = server.stop()
            server.cleanup()

    print("in process: Denoiser over ONNX Runtime", file=sys.stderr)
    local = run_clients(
        lambda: Denoiser.open(args.onnx, threads=args.threads, tile=None), images, 1, args.requests, args.max_seconds
    )
    for row in served:  # the server must compute what the process computes
        row["max_abs_vs_in_process"] = max(
            float(np.abs(out - local["_outputs"][k]).max())
            for k, out in row.pop("_outputs").items()
            if k in local["_outputs"]
        )
    local.pop("_outputs")
    record = {
        "command": " ".join(["python3 benchmarks/results/triton_load.py", *sys.argv[1:]]),
        "model": {
            "onnx": str(Path(args.onnx).relative_to(ROOT) if Path(args.onnx).is_relative_to(ROOT) else args.onnx),
            "sha256": made["models"][0]["parameters"]["sha256"],
            "served_as": model,
        },
        "images": f"{len(images)} SIDD noisy crops, 256 x 256, one per request, cycled",
        "server": {
            "tritonserver": "bundled in nvidia-pytriton 0.7.0 (python backend)",
            "instances": 1,
            "threads": args.threads,
            "max_batch": 8,
            "max_queue_delay_us": 2000,
            "start_seconds": round(start_s, 1),
            "rss_mib_ready": round(rss_ready / 2**20, 1),
            "rss_mib_before_load": round(rss_before / 2**20, 1),
            "rss_mib_after_load": round(rss_after / 2**20, 1),
            "exit_code": code,
        },
        "served": served,
        "in_process": local,
        "machine": dict(machine(), load_average_at_end=round(os.getloadavg()[0], 2)),
    }
    (HERE / f"{args.name}.json").write_text(json.dumps(record, indent=2) + "\n")
    lines = [
        f"# Triton load run: {record['model']['onnx']} at 256 x 256",
        "",
        f"`{record['command']}`",
        "",
        f"Server: {record['server']['tritonserver']}, 1 instance, {args.threads} threads, max batch 8, "
        f"started in {record['server']['start_seconds']} s; resident memory (server + python stub) "
        f"{record['server']['rss_mib_before_load']} MiB before the load, {record['server']['rss_mib_after_load']} "
        f"MiB after.",
        "",
        f"Machine: {record['machine'].get('cpu')}, {args.threads} threads.",
        "",
        "| path | clients | requests ok / failed / lost | img/s | p50 ms | p99 ms | mean batch "
        "| max abs vs in-process |",
        "|---|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for r in served:
        lines.append(
            f"| Triton HTTP | {r['clients']} | {r['ok']} / {r['failed']} / {r['lost']} | {r['throughput_img_s']} "
            f"| {r['p50_ms']} | {r['p99_ms']} | {r['mean_batch']} | {r['max_abs_vs_in_process']:.1e} |"
        )
    lines.append(
        f"| Denoiser in process (ONNX Runtime) | 1 | {local['ok']} / {local['failed']} / {local['lost']} | "
        f"{local['throughput_img_s']} | {local['p50_ms']} | {local['p99_ms']} | 1 | - |"
    )
    lines += [
        "",
        "Latency counts from the client's call to its answer, queueing included; one instance computes one "
        "batch at a time on the machine's cores. Memory after the load includes ONNX Runtime's arena, which grows "
        "to the largest batch the dynamic batcher formed (up to max batch 8 at 256 x 256).",
    ]
    (HERE / f"{args.name}.md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))
    return 0 if all(r["failed"] == 0 and r["lost"] == 0 for r in served) else 1


if __name__ == "__main__":
    sys.exit(main())
