"""``scaoed-deploy bench``: latency, throughput, memory and quality of every backend, in one run.

Per configuration (resolution x K x backend): parameters; MACs beside the paper's
212 / 640 / 1071 G; latency median, p90, p99, min and standard deviation;
images/s and megapixels/s; peak memory; achieved TFLOP/s (2 FLOP per MAC); the
ratio to torch eager fp32 **measured in the same run** at the same resolution
and K; and, where the SIDD crops are present, PSNR against the clean crops and
the difference to eager (dPSNR), so a fast artifact that denoises worse shows.
The paper's RTX 3090 latencies sit in their own column, labelled as the paper's.

Timing: CPU runs pin the thread count (torch and ONNX Runtime) and time each
call with ``perf_counter`` after warm-up; GPU runs use CUDA events (torch) or
synchronise around each call (ONNX Runtime, TensorRT). Peak memory is the
process's resident set sampled while a row runs (CPU) or torch's CUDA peak; beside it, the row's own
peak resident memory from making its artifact to closing its runner (``row_peak_rss_mb``, a build
step's child process counted) and each build step's (``build_peak_rss_mb``, where the row made one).

Backends that cannot run here (no CUDA, no TensorRT, an ONNX Runtime without a
kernel) are listed as skipped with the reason, and so are, before any artifact is made,
the CPU rows this CPU would only emulate (bf16 without AVX-512 BF16 or AMX, ``cpu.py``);
``--backends`` naming one runs it with a warning. Ctrl-C ends the run with the rows
finished so far (``interrupted`` in the result), which the CLI writes before it exits.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path

import numpy as np

from ..checkpoint import Weights
from ..cost import PAPER_LATENCY_S, model_cost, model_footprint
from ..cpu import this_cpu
from ..data import Sample, default_sidd_dir, load_samples
from ..errors import ScaoedError
from ..images import to_uint8
from ..isolate.memory import check_fits, peak_of
from ..quality import psnr_ssim
from ..runtime.base import cpu_threads
from ..runtime.cpu_memory import keep_freed_memory, release_free_memory
from ..runtime.variants import VARIANTS
from ..util.device import pick_device
from .candidates import BASELINE, Backends, BenchConfig, Skip, check_backends, emulated_rows, peak_precision
from .timing import LoadMeter, machine, measure


@dataclass
class Row:
    backend: str
    stages: int
    height: int
    width: int
    batch: int
    status: str  # "ok" or "skipped"
    reason: str = ""
    parameters: int | None = None
    gmacs: float | None = None
    paper_gmacs: float | None = None
    latency_ms: dict = field(default_factory=dict)  # median, p90, p99, min, std
    images_per_s: float | None = None
    megapixels_per_s: float | None = None
    peak_memory_mb: float | None = None
    memory_kind: str = ""
    tflops: float | None = None
    gmacs_per_s: float | None = None  # achieved multiply-accumulates (the model's count) per second
    peak_fraction: float | None = None  # of this CPU's peak for the row's precision (machine.peak); CPU rows only
    ratio_to_eager: float | None = None
    # eager fp32's achieved MACs/s over this CPU's peak for the row's precision: the x eager this row would reach
    # at that peak (at the reported clock: a boosting CPU lets a row go a little below it); CPU rows only
    ratio_at_peak: float | None = None
    paper_latency_s: float | None = None
    sidd_psnr: float | None = None
    dpsnr: float | None = None
    setup_s: float | None = None
    artifact: str | None = None
    runtime_precision: dict | None = None  # OpenVINO: the compiled model's inference precision, layers per precision
    row_peak_rss_mb: float | None = None  # the process's own peak during the row: its artifact made, opened, timed
    build_peak_rss_mb: dict | None = (
        None  # each build step's own peak (a child's included), where the row made its artifact
    )


def quality(fn, pairs: list) -> tuple[float, float]:
    """Mean PSNR and SSIM of ``fn``'s outputs against the clean images of the real (noisy, clean) pairs."""
    scores = [
        psnr_ssim(
            to_uint8(fn(noisy[None].astype(np.float32))[0].transpose(1, 2, 0)), to_uint8(clean.transpose(1, 2, 0))
        )
        for noisy, clean in pairs
    ]
    return float(np.mean([s[0] for s in scores])), float(np.mean([s[1] for s in scores]))


def mean_quality(fn, stages: int, pairs: list, eager_psnr: dict) -> tuple[float | None, float | None]:
    """Mean PSNR of ``fn`` on the real (noisy, clean) pairs, and its difference to eager's at this K."""
    if not pairs:
        return None, None
    mean = quality(fn, pairs)[0]
    base = eager_psnr.get(stages)
    return mean, (mean - base) if base is not None else None


def prepare(cfg: BenchConfig) -> tuple[BenchConfig, str, list[Sample]]:
    """Settle the run's device, threads (pinned on the CPU), allocator and evaluation data before any row; returns
    the config with them settled, how rows are timed (for the record) and the real noisy/clean samples for PSNR
    (those with a clean image)."""
    import torch

    check_backends(cfg.backends)
    pick_device(cfg.device)  # cuda without a GPU: the torch runner's one-line error
    threads = cpu_threads(cfg.threads)
    allocator = None
    if cfg.device == "cpu":
        torch.set_num_threads(threads)
        cfg = replace(cfg, threads=threads)
        allocator = keep_freed_memory()
    cfg = replace(cfg, data=cfg.data if cfg.data else (default_sidd_dir() if cfg.quality else None))
    samples = [s for s in load_samples(cfg.data) if s.clean is not None] if cfg.quality and cfg.data else []
    timing = (
        "CUDA events (torch) / synchronised wall clock (ONNX Runtime, TensorRT) after warm-up, "
        "host-to-device copies included"
        if cfg.device == "cuda"
        else f"perf_counter per call after warm-up, {threads} threads pinned, {allocator}"
    )
    return cfg, timing, samples


def check_inference_memory(cfg: BenchConfig, blocks: int) -> None:
    """Refuse, before any row, a run whose largest forward pass would not fit in the memory free now (from the
    model's footprint at each resolution and K); the calibration steps check their own when they start."""
    (h, w), k = max(cfg.resolutions, key=lambda r: r[0] * r[1]), max(cfg.stages)
    need = model_footprint(k, blocks, h, w, cfg.batch).inference_mb()
    check_fits(
        f"a forward pass at K={k}, {h}x{w}, batch {cfg.batch}", need, "a smaller --res or --batch, or free memory"
    )


def peak_fraction(name: str, gmacs_per_s: float | None, cfg: BenchConfig) -> float | None:
    """Achieved over this CPU's peak GMAC/s for the precision row ``name`` computes in (fp16 runs as fp32 here)."""
    if cfg.device != "cpu" or gmacs_per_s is None:
        return None
    peak = this_cpu().peak_gmacs(cfg.threads or cpu_threads())
    return gmacs_per_s / peak[peak_precision(name)] if peak else None


def run_bench(
    weights: Weights,
    cfg: BenchConfig,
    step: Callable[[str], None] = lambda s: None,
    advance: Callable[[], None] = lambda: None,
    rows: list | None = None,
) -> dict:
    """The rows of ``cfg`` (see the module doc); ``rows``: a list the finished rows are added to as they finish
    (the CLI keeps them on a forced stop)."""
    cfg, timing, samples = prepare(cfg)
    check_inference_memory(cfg, weights.blocks)
    pairs = [(s.noisy, s.clean) for s in samples]
    backends = Backends(weights, cfg, step)
    meter = LoadMeter()
    order = [BASELINE] + [b for b in cfg.backends if b != BASELINE]  # eager first: every ratio needs it
    rows = [] if rows is None else rows
    warnings = emulated_rows(cfg)
    try:
        _run_rows(weights, cfg, backends, order, pairs, rows, step, advance)
        interrupted = False
    except KeyboardInterrupt:  # the rows finished so far are the result; the CLI writes them, then exits 130
        interrupted = True
    meter.finish()
    return {
        "interrupted": interrupted,
        "load": meter.result,
        "warnings": warnings + [w for w in [meter.warning()] if w],
        "machine": machine(),
        "config": {
            **asdict(cfg),
            "resolutions": [list(r) for r in cfg.resolutions],
            "data": str(cfg.data) if cfg.data else None,
            "export_dir": str(cfg.export_dir),
        },
        "weights": {"identity": weights.identity, "blocks": weights.blocks, "source": Path(weights.source).name},
        "timing": timing,
        "rows": [asdict(r) for r in rows],
    }


def _run_rows(
    weights: Weights,
    cfg: BenchConfig,
    backends: Backends,
    order: list[str],
    pairs: list,
    rows: list[Row],
    step,
    advance,
) -> None:
    """Time every (resolution, K, backend) row into ``rows``, eager first at each (resolution, K)."""
    eager_psnr: dict[int, float] = {}
    for h, w in cfg.resolutions:
        for k in cfg.stages:
            cost = model_cost(k, weights.blocks, h, w, cfg.batch)
            x = np.random.default_rng(0).random((cfg.batch, 3, h, w), dtype=np.float32)  # timing input, every backend
            eager_median = eager_rate = None
            for name in order:
                release_free_memory()  # the last row's freed heap goes back first: the next row's peak is its own
                peaks: dict = {}
                with peak_of("row", peaks):
                    row = _run_row(
                        weights,
                        cfg,
                        backends,
                        name,
                        k,
                        h,
                        w,
                        cost,
                        x,
                        pairs,
                        eager_psnr,
                        eager_median,
                        eager_rate,
                        step,
                    )
                row.row_peak_rss_mb = peaks["row"]
                row.build_peak_rss_mb = dict(backends.build_peaks) or None
                backends.build_peaks.clear()
                if name == BASELINE and row.status == "ok":
                    eager_median, eager_rate = row.latency_ms["median"], row.gmacs_per_s
                rows.append(row)
                advance()


def _run_row(
    weights: Weights,
    cfg: BenchConfig,
    backends: Backends,
    name: str,
    k: int,
    h: int,
    w: int,
    cost,
    x,
    pairs: list,
    eager_psnr: dict,
    eager_median: float | None,
    eager_rate: float | None,
    step,
) -> Row:
    """One (resolution, K, backend) row: its runner made (Skip: a skipped row), timed, scored on the pairs."""
    row = Row(
        name,
        k,
        h,
        w,
        cfg.batch,
        "ok",
        parameters=cost.parameters,
        gmacs=cost.total_macs / 1e9,
        paper_gmacs=cost.paper_gmacs,
        paper_latency_s=PAPER_LATENCY_S.get(k) if (h, w, cfg.batch, weights.blocks) == (512, 512, 1, 16) else None,
    )
    step(f"{name}, K={k}, {h}x{w}: setting up")
    t0 = time.perf_counter()
    try:
        fn = backends.open(name, k)
    except Skip as e:
        row.status, row.reason = "skipped", str(e)
        return row
    try:
        step(f"{name}, K={k}, {h}x{w}: warm-up and {cfg.iters} timed runs")
        m = measure(fn, x, cfg.warmup, cfg.iters, cfg.device == "cuda", t0, events=VARIANTS[name].runtime == "torch")
        row.setup_s, row.peak_memory_mb, row.memory_kind = m.setup_s, m.peak_memory_mb, m.memory_kind
        row.artifact = getattr(fn, "artifact", None)
        row.runtime_precision = getattr(fn, "runtime_precision", None)
        if cfg.quality:
            step(f"{name}, K={k}: PSNR on the real pairs")
            row.sidd_psnr, row.dpsnr = mean_quality(fn, k, pairs, eager_psnr)
            if name == BASELINE and row.sidd_psnr is not None:
                eager_psnr[k] = row.sidd_psnr
                row.dpsnr = 0.0
    except ScaoedError as e:  # NaN/Inf from this backend: the row fails, the run goes on
        row.status, row.reason = "failed", str(e)
        return row
    finally:
        fn.close()  # the session, engine or model goes before the next row is timed
    stats = row.latency_ms = m.latency_ms
    sec = stats["median"] / 1000
    row.images_per_s = cfg.batch / sec
    row.megapixels_per_s = cfg.batch * h * w / 1e6 / sec
    row.tflops = 2 * cost.total_macs / sec / 1e12
    row.gmacs_per_s = cost.total_macs / sec / 1e9
    row.peak_fraction = peak_fraction(name, row.gmacs_per_s, cfg)
    if name == BASELINE:
        eager_median, eager_rate = stats["median"], row.gmacs_per_s
    row.ratio_to_eager = stats["median"] / eager_median if eager_median else None
    row.ratio_at_peak = peak_fraction(name, eager_rate, cfg) if eager_median else None
    return row
