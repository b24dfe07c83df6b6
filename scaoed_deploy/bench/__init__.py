"""``scaoed-deploy bench``: latency, throughput, memory and quality of every backend, in one run.

The measurement core ``optimize`` shares: ``candidates`` (which backends can run here, and the runner for
each), ``timing`` (timing a runner, the machine and its load), ``run`` (bench's rows) and ``report`` (its
table and plot).
"""

from .candidates import (
    BACKEND_PRECISION,
    BACKENDS,
    BASELINE,
    BENCH_CACHE,
    CPU_DEFAULT,
    GPU_DEFAULT,
    Backends,
    BenchConfig,
    Skip,
    check_backends,
    default_backends,
    emulated_rows,
    not_native,
    ort_kernel_missing,
)
from .report import markdown, plot, write_results
from .run import Row, check_inference_memory, mean_quality, prepare, quality, run_bench
from .timing import LoadMeter, Measurement, RssSampler, cuda_event_times, latency_stats, machine, measure, time_calls

__all__ = [
    "BACKENDS",
    "BACKEND_PRECISION",
    "BASELINE",
    "BENCH_CACHE",
    "CPU_DEFAULT",
    "GPU_DEFAULT",
    "Backends",
    "BenchConfig",
    "LoadMeter",
    "Measurement",
    "Row",
    "RssSampler",
    "Skip",
    "check_backends",
    "check_inference_memory",
    "cuda_event_times",
    "default_backends",
    "emulated_rows",
    "latency_stats",
    "machine",
    "markdown",
    "mean_quality",
    "measure",
    "not_native",
    "ort_kernel_missing",
    "plot",
    "prepare",
    "quality",
    "run_bench",
    "time_calls",
    "write_results",
]
