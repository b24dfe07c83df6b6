"""Throughput over tiles with OpenVINO: one request at a time (the runner today) against a static-shape compile and
two CPU streams fed asynchronously, on the same 512 x 512 tiles.

    python benchmarks/runtime/openvino_streams.py IR.xml [TILES] > benchmarks/runtime/openvino_streams.md

Each configuration compiles the IR, runs one warm-up tile (two for the async queue), then times TILES tiles (default
8); every configuration uses all of this machine's cores (INFERENCE_NUM_THREADS = cores, split among the streams).
"""

from __future__ import annotations

import os
import sys
import time

import numpy as np
import openvino as ov


def main() -> int:
    path, n = sys.argv[1], int(sys.argv[2]) if len(sys.argv) > 2 else 8
    threads = str(len(os.sched_getaffinity(0)))
    core = ov.Core()
    tiles = [np.random.default_rng(i).random((1, 3, 512, 512), dtype=np.float32) for i in range(n)]

    def one_at_a_time(model, config):
        request = core.compile_model(model, "CPU", config).create_infer_request()
        request.infer({0: tiles[0]})
        t0 = time.perf_counter()
        for x in tiles:
            request.infer({0: x})
        return time.perf_counter() - t0

    def queued(model, config, jobs):
        queue = ov.AsyncInferQueue(core.compile_model(model, "CPU", config), jobs)
        for x in tiles[:jobs]:
            queue.start_async({0: x})
        queue.wait_all()
        t0 = time.perf_counter()
        for x in tiles:
            queue.start_async({0: x})
        queue.wait_all()
        return time.perf_counter() - t0

    dynamic = core.read_model(path)
    static = core.read_model(path)
    static.reshape([1, 3, 512, 512])
    latency = {
        "INFERENCE_PRECISION_HINT": "f32",
        "PERFORMANCE_HINT": "LATENCY",
        "NUM_STREAMS": "1",
        "INFERENCE_NUM_THREADS": threads,
    }
    streams = {"INFERENCE_PRECISION_HINT": "f32", "NUM_STREAMS": "2", "INFERENCE_NUM_THREADS": threads}
    rows = [
        ("dynamic shape, 1 stream, one request at a time (the runner)", one_at_a_time(dynamic, latency)),
        ("static 1 x 3 x 512 x 512, 1 stream, one request at a time", one_at_a_time(static, latency)),
        ("static, 2 streams, 2 requests in flight", queued(static, streams, 2)),
        ("dynamic, 2 streams, 2 requests in flight", queued(dynamic, streams, 2)),
    ]
    print(
        f"Command: `python benchmarks/runtime/openvino_streams.py {' '.join(sys.argv[1:])}`, {threads} cores, "
        f"{n} tiles of 512 x 512\n"
    )
    print("| configuration | seconds | against the first |\n|---|---:|---:|")
    for name, seconds in rows:
        print(f"| {name} | {seconds:.2f} | {seconds / rows[0][1]:.2f} |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
