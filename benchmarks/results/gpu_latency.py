"""GPU latency of the paper's configurations (K = 1, 3, 5 at 512 x 512, batch 1) through torch.

    python benchmarks/results/gpu_latency.py --out benchmarks/results/gpu_h200.json [--budget-s 180]

Writes the JSON and a markdown table beside it (``--render`` redraws the table from the JSON).

Rows per K: eager fp32 (TF32 off), eager TF32, fp16 and bf16 autocast, bf16 autocast replayed
from a CUDA graph, and torch.compile (default mode, and ``reduce-overhead``, which adds CUDA
graphs) while the time budget lasts: a compile that would start past it is recorded as skipped.
Timing: the input already on the GPU, CUDA events around each call after warm-up (copies to
and from the host are not in these numbers; ``scaoed-deploy bench`` includes them). Beside each
median: achieved TFLOP/s (2 FLOP per MAC of ``scaoed_deploy.cost``), the paper's RTX 3090
latency, and the compute floor, the FLOPs over this GPU's bf16 matrix-product rate measured in
the same run. Where the SIDD crops are found (``--sidd``), the mean PSNR of each row's numerics on
them, and its difference to eager fp32.
"""

from __future__ import annotations

import argparse
import json
import platform
import time
from pathlib import Path

import numpy as np
import torch

from scaoed_deploy.bench import cuda_event_times
from scaoed_deploy.checkpoint import build_model, read_checkpoint
from scaoed_deploy.cost import PAPER_LATENCY_S, model_cost
from scaoed_deploy.data import load_samples
from scaoed_deploy.images import to_uint8
from scaoed_deploy.quality import psnr_ssim
from scaoed_deploy.util.files import atomic_path
from scaoed_deploy.weights import DEMO_PATH

VARIANTS = (
    "eager-fp32",
    "eager-tf32",
    "eager-fp16",
    "eager-bf16",
    "cudagraph-bf16",
    "compile-fp32",
    "compile-bf16",
    "compile-bf16-cudagraphs",
)


def set_tf32(on: bool) -> None:
    torch.backends.cuda.matmul.allow_tf32 = on
    torch.backends.cudnn.allow_tf32 = on


def matmul_peak_tflops() -> float:
    a = torch.randn(8192, 8192, device="cuda", dtype=torch.bfloat16)
    b = torch.randn(8192, 8192, device="cuda", dtype=torch.bfloat16)
    for _ in range(3):
        a @ b
    start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
    start.record()
    for _ in range(10):
        a @ b
    end.record()
    torch.cuda.synchronize()
    return 2 * 8192**3 * 10 / (start.elapsed_time(end) / 1000) / 1e12


def make(variant: str, model: torch.nn.Module, x: torch.Tensor):
    """A callable for ``variant`` (its first call, compiling or capturing, is made here)."""
    set_tf32(variant == "eager-tf32")
    dtype = torch.float16 if "fp16" in variant else torch.bfloat16 if "bf16" in variant else None
    net = model
    if variant.startswith("compile"):
        mode = "reduce-overhead" if variant.endswith("cudagraphs") else None
        net = torch.compile(model, mode=mode)

    def call(inp):
        with torch.autocast("cuda", dtype=dtype or torch.float32, enabled=dtype is not None):
            return net(inp)

    if variant == "cudagraph-bf16":
        static_in = x.clone()
        s = torch.cuda.Stream()
        s.wait_stream(torch.cuda.current_stream())
        with torch.cuda.stream(s):
            for _ in range(2):
                call(static_in)
        torch.cuda.current_stream().wait_stream(s)
        graph = torch.cuda.CUDAGraph()
        with torch.cuda.graph(graph):
            static_out = call(static_in)

        def replay(inp):
            static_in.copy_(inp)
            graph.replay()
            return static_out

        return replay
    call(x)
    if variant.endswith("cudagraphs"):
        call(x)  # reduce-overhead records its graph on a later call
    return call


def sidd_psnr(fn, samples) -> float | None:
    if not samples:
        return None
    out = []
    for s in samples:
        x = torch.from_numpy(np.ascontiguousarray(s.noisy[None])).cuda()
        y = fn(x).float().clamp(0, 1)[0].permute(1, 2, 0).cpu().numpy()
        if not np.isfinite(y).all():
            return float("nan")
        out.append(psnr_ssim(to_uint8(y), to_uint8(s.clean.transpose(1, 2, 0)))[0])
    return float(np.mean(out))


def measure(variant, k, model, x, flop, peak, samples, eager_psnr, args, t_start) -> dict:
    row = {
        "stages": k,
        "variant": variant,
        "res": args.res,
        "gflop": flop / 1e9,
        "paper_latency_s": PAPER_LATENCY_S.get(k) if args.res == 512 else None,
        "compute_floor_ms": flop / (peak * 1e12) * 1000,
    }
    elapsed = time.perf_counter() - t_start
    if variant.startswith("compile") and elapsed > args.budget_s:
        return {**row, "status": "skipped", "reason": f"time budget ({elapsed:.0f} s > {args.budget_s:.0f} s)"}
    try:
        torch.compiler.reset()
        torch.cuda.reset_peak_memory_stats()
        t0 = time.perf_counter()
        with torch.no_grad():
            fn = make(variant, model, x)
            torch.cuda.synchronize()
            setup = time.perf_counter() - t0
            times = [t * 1000 for t in cuda_event_times(fn, x, args.warmup, args.iters)[0]]  # ms
            # eager numerics only: a captured graph holds the 512 input, a compile would recompile at 256
            psnr = sidd_psnr(fn, samples) if variant.startswith("eager") else None
    except Exception as e:  # noqa: BLE001 - a failed variant is recorded with its reason
        return {**row, "status": "failed", "reason": f"{type(e).__name__}: {str(e).splitlines()[0][:300]}"}
    med = float(np.median(times))
    if variant == "eager-fp32":
        eager_psnr[k] = psnr
    base = eager_psnr.get(k)
    return {
        **row,
        "status": "ok",
        "setup_s": round(setup, 2),
        "median_ms": med,
        "min_ms": float(np.min(times)),
        "p90_ms": float(np.percentile(times, 90)),
        "iters": len(times),
        "tflops": flop / (med / 1000) / 1e12,
        "peak_memory_mb": torch.cuda.max_memory_allocated() / 2**20,
        "sidd_psnr": psnr,
        "dpsnr": psnr - base if psnr is not None and base is not None else None,
    }


def markdown(result: dict) -> str:
    lines = [
        f"# ScaoedNet latency on {result['gpu']} (torch {result['torch']}, CUDA {result['cuda']})",
        "",
        f"Command: `{result['command']}`",
        "",
        f"{result['timing']}; batch 1. Weights `{result['weights']}`. Compute floor: the model's FLOPs over "
        f"this GPU's bf16 matrix-product rate measured in the same run ({result['bf16_matmul_tflops']:.0f} "
        "TFLOP/s, 8192^3). The RTX 3090 column is the paper's figure, not ours.",
        "",
        "| K | GFLOP | variant | median ms | p90 ms | x eager fp32 | TFLOP/s | setup s | peak MB | SIDD PSNR | dPSNR "
        "| paper RTX 3090 ms | floor ms |",
        "|---:|---:|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]

    def f(v, fmt):
        return format(v, fmt) if v is not None else "-"

    eager = {
        r["stages"]: r["median_ms"] for r in result["rows"] if r["variant"] == "eager-fp32" and r["status"] == "ok"
    }
    for r in sorted(result["rows"], key=lambda r: r["stages"]):
        if r["status"] != "ok":
            continue
        paper = r["paper_latency_s"] * 1000 if r["paper_latency_s"] else None
        ratio = r["median_ms"] / eager[r["stages"]] if r["stages"] in eager else None
        lines.append(
            f"| {r['stages']} | {r['gflop']:.0f} | {r['variant']} | {r['median_ms']:.1f} | {r['p90_ms']:.1f} | "
            f"{f(ratio, '.2f')} | {r['tflops']:.1f} | {r['setup_s']:.1f} | {r['peak_memory_mb']:.0f} | "
            f"{f(r['sidd_psnr'], '.3f')} | {f(r['dpsnr'], '+.4f')} | {f(paper, '.0f')} | "
            f"{r['compute_floor_ms']:.2f} |"
        )
    rest = [r for r in result["rows"] if r["status"] != "ok"]
    if rest:
        lines += ["", "Not measured:", ""] + [
            f"- K={r['stages']} {r['variant']}: {r['status']}, {r['reason']}" for r in rest
        ]
    lines += [
        "",
        "SIDD PSNR: mean over the 4 SIDD crops (256 x 256, 8-bit output) of the eager rows' numerics; "
        "dPSNR against eager fp32 at the same K. CUDA-graph and compiled rows compute what their eager "
        "precision computes and were not re-scored.",
        "",
    ]
    return "\n".join(lines)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", type=Path, required=True)
    ap.add_argument("--weights", type=Path, default=DEMO_PATH)
    ap.add_argument("--stages", default="1,3,5")
    ap.add_argument("--res", type=int, default=512)
    ap.add_argument("--warmup", type=int, default=5)
    ap.add_argument("--iters", type=int, default=20)
    ap.add_argument("--budget-s", type=float, default=180.0, help="no compile starts after this many seconds")
    ap.add_argument("--sidd", type=Path, default=None, help="folder of SIDD noisy/clean pairs")
    ap.add_argument("--variants", default=",".join(VARIANTS))
    ap.add_argument("--render", action="store_true", help="only (re)write the .md beside --out from its JSON")
    args = ap.parse_args()
    if args.render:
        md = args.out.with_suffix(".md")
        with atomic_path(md) as tmp:
            tmp.write_text(markdown(json.loads(args.out.read_text())))
        print(f"wrote {md}")
        return 0
    t_start = time.perf_counter()
    if not torch.cuda.is_available():
        raise SystemExit("error: no CUDA GPU visible to torch")
    torch.backends.cudnn.benchmark = True
    weights = read_checkpoint(args.weights)
    samples = [s for s in load_samples(args.sidd) if s.clean is not None] if args.sidd else []
    peak = matmul_peak_tflops()
    gpu = torch.cuda.get_device_name(0)
    print(f"{gpu}: bf16 8192^3 matrix product {peak:.0f} TFLOP/s; torch {torch.__version__}", flush=True)
    rows = []
    eager_psnr: dict[int, float | None] = {}
    stages = [int(s) for s in args.stages.split(",")]
    variants = args.variants.split(",")
    header = {
        "gpu": gpu,
        "compute_capability": ".".join(map(str, torch.cuda.get_device_capability(0))),
        "torch": torch.__version__,
        "cuda": torch.version.cuda,
        "cudnn": torch.backends.cudnn.version(),
        "python": platform.python_version(),
        "bf16_matmul_tflops": peak,
        "weights": Path(args.weights).name,
        "timing": "CUDA events per call, input on the GPU, after warm-up",
        "command": "python benchmarks/results/gpu_latency.py "
        + " ".join(f"--{k.replace('_', '-')} {v}" for k, v in vars(args).items() if v is not None and k != "out"),
    }

    def save() -> None:  # after every row, so a run stopped by its time limit keeps what it measured
        args.out.parent.mkdir(parents=True, exist_ok=True)
        result = {**header, "rows": rows, "wall_s": round(time.perf_counter() - t_start, 1)}
        with atomic_path(args.out) as tmp:
            tmp.write_text(json.dumps(result, indent=1) + "\n")
        with atomic_path(args.out.with_suffix(".md")) as tmp:
            tmp.write_text(markdown(result))

    # every eager row of every K first, then the compiles, which take minutes and may meet the budget
    for phase in (
        [v for v in variants if not v.startswith("compile")],
        [v for v in variants if v.startswith("compile")],
    ):
        for k in stages:
            if not phase:
                continue
            model = build_model(weights, k).cuda().eval()
            flop = 2 * model_cost(k, weights.blocks, args.res, args.res, 1).total_macs
            x = torch.rand(1, 3, args.res, args.res, device="cuda")
            for variant in phase:
                rows.append(measure(variant, k, model, x, flop, peak, samples, eager_psnr, args, t_start))
                print(json.dumps(rows[-1]), flush=True)
                save()
            del model
            torch.cuda.empty_cache()
    save()
    print(f"wrote {args.out} in {time.perf_counter() - t_start:.0f} s")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
