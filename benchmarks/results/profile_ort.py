"""Where ONNX Runtime spends its time on ScaoedNet (CPU): its profiler, grouped by operator type.

    python benchmarks/results/profile_ort.py export/scaoednet_k5_t16_fp32.onnx export/scaoednet_k5_t16_int8_ortcpu.onnx

256 x 256, 2 threads, 3 profiled runs after one warm-up; prints a markdown table per model.
"""

from __future__ import annotations

import json
import sys
from collections import defaultdict
from pathlib import Path

import numpy as np
import onnxruntime as ort


def profile(path: str, threads: int = 2, runs: int = 3) -> dict[str, float]:
    options = ort.SessionOptions()
    options.intra_op_num_threads = threads
    options.enable_profiling = True
    options.profile_file_prefix = f"/tmp/ort_profile_{Path(path).stem}"
    session = ort.InferenceSession(path, options, providers=["CPUExecutionProvider"])
    x = np.random.default_rng(0).random((1, 3, 256, 256), dtype=np.float32)
    session.run(None, {"noisy": x})
    for _ in range(runs):
        session.run(None, {"noisy": x})
    events = json.loads(Path(session.end_profiling()).read_text())
    per_op: dict[str, float] = defaultdict(float)
    for e in events:
        if e.get("cat") == "Node" and e["name"].endswith("_kernel_time"):
            per_op[e["args"]["op_name"]] += e["dur"] / 1000 / (runs + 1)
    return dict(sorted(per_op.items(), key=lambda kv: -kv[1]))


def main() -> int:
    for path in sys.argv[1:]:
        ops = profile(path)
        total = sum(ops.values())
        print(f"\n### {Path(path).name}: {total:.0f} ms of kernel time per run\n")
        print("| operator | ms per run | share |\n|---|---:|---:|")
        for op, ms in list(ops.items())[:10]:
            print(f"| {op} | {ms:.1f} | {100 * ms / total:.1f}% |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
