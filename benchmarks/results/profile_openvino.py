"""Where OpenVINO spends its time on ScaoedNet (CPU), per layer type and the kernel it ran, with and without an
ISA cap: why an INT8 IR is (or is not) faster than the fp32 IR on a CPU without VNNI.

    python benchmarks/results/profile_openvino.py FP32.xml INT8.xml [--res 256] [--caps none,AVX2] > profile_openvino.md

For each cap (``none``: the CPU as it is; ``AVX2``: ONEDNN_MAX_CPU_ISA=AVX2, which OpenVINO's convolutions obey)
each IR is run in its own process with PERF_COUNT on, 2 threads, one warm-up then 3 profiled runs; the table
gives ms per run by (layer type, kernel), and the convolutions' multiply-accumulates per second against this
CPU's peak for the precision they ran in (threads x reported clock x MACs per cycle of the widest instruction).
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
from collections import defaultdict

RUNS = 3


def conv_macs(model) -> int:
    """Multiply-accumulates of every Convolution of an openvino.Model whose shapes are static."""
    total = 0
    for op in model.get_ordered_ops():
        if op.get_type_name() != "Convolution":
            continue
        out = op.output(0).get_shape()  # N, Cout, H, W
        w = op.input_value(1).get_shape()  # Cout, Cin, kh, kw
        total += out[0] * out[1] * out[2] * out[3] * w[1] * w[2] * w[3]
    return total


def profile(path: str, res: int, threads: int) -> dict:
    """One IR in this process: ms per run by (layer type, kernel), the convolutions' MACs and wall time."""
    import time

    import numpy as np
    import openvino as ov

    core = ov.Core()
    model = core.read_model(path)
    model.reshape([1, 3, res, res])
    macs = conv_macs(model)
    compiled = core.compile_model(
        model, "CPU", {"PERF_COUNT": "YES", "INFERENCE_NUM_THREADS": threads, "INFERENCE_PRECISION_HINT": "f32"}
    )
    request = compiled.create_infer_request()
    x = np.random.default_rng(0).random((1, 3, res, res), dtype=np.float32)
    request.infer({0: x})
    per: dict = defaultdict(float)
    walls = []
    for _ in range(RUNS):
        t0 = time.perf_counter()
        request.infer({0: x})
        walls.append(time.perf_counter() - t0)
        for p in request.profiling_info:
            if p.status == p.Status.EXECUTED:
                per[f"{p.node_type}|{p.exec_type}"] += p.real_time.total_seconds() * 1000 / RUNS
    return {"wall_ms": 1000 * sorted(walls)[len(walls) // 2], "conv_macs": macs, "per": dict(per)}


def child() -> int:
    path, res, threads = sys.argv[2], int(sys.argv[3]), int(sys.argv[4])
    print(json.dumps(profile(path, res, threads)))
    return 0


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("irs", nargs="+")
    ap.add_argument("--res", type=int, default=256)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--caps", default="none,AVX2")
    args = ap.parse_args()
    sys.path.insert(0, os.getcwd())
    from scaoed_deploy.cpu import read_cpu

    print(f"# OpenVINO CPU profile ({args.res} x {args.res}, {args.threads} threads, median of {RUNS} runs)\n")
    print(f"Command: `python benchmarks/results/profile_openvino.py {' '.join(sys.argv[1:])}`\n")
    for cap in args.caps.split(","):
        env = dict(os.environ)
        env.pop("ONEDNN_MAX_CPU_ISA", None)
        if cap != "none":
            env["ONEDNN_MAX_CPU_ISA"] = cap
        cpu = read_cpu(cap=None if cap == "none" else cap)
        peak = cpu.peak_gmacs(args.threads) or {}
        print(f"## {cpu.describe()}\n")
        for path in args.irs:
            out = subprocess.run(
                [sys.executable, __file__, "--child", path, str(args.res), str(args.threads)],
                capture_output=True,
                text=True,
                env=env,
                check=True,
            )
            r = json.loads(out.stdout.strip().splitlines()[-1])
            per = sorted(r["per"].items(), key=lambda kv: -kv[1])
            total = sum(ms for _, ms in per)
            conv_ms = sum(ms for k, ms in per if k.startswith("Convolution|"))
            kinds = {k.split("|")[1] for k, _ in per if k.startswith("Convolution|")}
            precision = "int8" if any(k.endswith("_I8") for k in kinds) else "fp32"
            rate = r["conv_macs"] / (conv_ms / 1000) / 1e9 if conv_ms else 0.0
            print(f"### {os.path.basename(path)}: {r['wall_ms']:.0f} ms per run\n")
            print(
                f"Convolutions: {conv_ms:.0f} ms ({100 * conv_ms / total:.0f} % of kernel time), "
                f"{r['conv_macs'] / 1e9:.1f} GMAC, {rate:.0f} GMAC/s"
                + (
                    f" = {100 * rate / peak[precision]:.0f} % of this CPU's {precision} peak "
                    f"({peak[precision]:.0f} GMAC/s)"
                    if precision in peak
                    else ""
                )
                + "\n"
            )
            print("| layer type | kernel | ms per run | share |\n|---|---|---:|---:|")
            for key, ms in per[:8]:
                kind, kernel = key.split("|")
                print(f"| {kind} | {kernel} | {ms:.1f} | {100 * ms / total:.1f}% |")
            print()
    return 0


if __name__ == "__main__":
    sys.exit(child() if sys.argv[1:2] == ["--child"] else main())
