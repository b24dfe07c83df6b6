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
process's resident set sampled while a row runs (CPU) or torch's CUDA peak.

Backends that cannot run here (no CUDA, no TensorRT, an ONNX Runtime without a
kernel) are listed as skipped with the reason, and so are, before any artifact is made,
the CPU rows this CPU would only emulate (bf16 without AVX-512 BF16 or AMX, ``cpu.py``);
``--backends`` naming one runs it with a warning. Ctrl-C ends the run with the rows
finished so far (``interrupted`` in the result), which the CLI writes before it exits.
"""

from __future__ import annotations

import functools
import os
import platform
import threading
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np

from .artifact import precision_filename
from .build import BuildRequest, build, made_from
from .checkpoint import Weights
from .cost import PAPER_LATENCY_S, model_cost
from .cpu import this_cpu
from .data import default_sidd_dir, load_samples
from .errors import ScaoedError, atomic_path, first_line
from .images import psnr_ssim, to_uint8
from .jsonio import dumps
from .runtime.base import RunOptions, cpu_threads
from .runtime.cpu_memory import keep_freed_memory, release_free_memory
from .runtime.registry import open_runner
from .runtime.tensorrt import ShapeProfile
from .runtime.torch_backend import pick_device

BACKENDS = ("torch", "torch-bf16", "torch-fp16", "torch-compile", "onnxruntime", "onnxruntime-fp16",
            "onnxruntime-bf16", "onnxruntime-int8", "openvino", "openvino-bf16", "openvino-int8", "tensorrt",
            "tensorrt-fp16", "tensorrt-int8")
CPU_DEFAULT = ("torch", "torch-bf16", "torch-compile", "onnxruntime", "onnxruntime-fp16", "onnxruntime-bf16",
               "onnxruntime-int8", "openvino", "openvino-bf16", "openvino-int8", "tensorrt-fp16", "tensorrt-int8")
GPU_DEFAULT = ("torch", "torch-fp16", "torch-bf16", "torch-compile", "onnxruntime", "onnxruntime-fp16",
               "tensorrt", "tensorrt-fp16", "tensorrt-int8")
BASELINE = "torch"
BENCH_CACHE = "bench"  # bench's own artifacts: a folder inside the export folder, out of build-engine's sight


class Skip(Exception):
    """This backend cannot run here; the message says why."""


@dataclass
class BenchConfig:
    resolutions: list[tuple[int, int]]
    stages: list[int]
    backends: list[str]
    device: str = "cpu"
    batch: int = 1
    warmup: int = 2
    iters: int = 10
    threads: int | None = None  # CPU: pinned thread count (default: the machine's cores)
    quality: bool = True  # PSNR on the SIDD crops per backend
    data: Path | None = None
    export_dir: Path = Path("export")
    calib_count: int = 32
    explicit: bool = False  # the user named the backends: run rows this CPU would emulate, with a warning


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
    ratio_to_eager: float | None = None
    paper_latency_s: float | None = None
    sidd_psnr: float | None = None
    dpsnr: float | None = None
    setup_s: float | None = None
    artifact: str | None = None
    runtime_precision: dict | None = None  # OpenVINO: the compiled model's inference precision, layers per precision


# ---------------------------------------------------------------------------- machine
def machine() -> dict:
    from importlib.metadata import PackageNotFoundError, version

    import torch

    cpu = this_cpu()
    versions = {}
    for pkg in ("scaoed-deploy", "torch", "onnx", "onnxruntime", "onnxruntime-gpu", "openvino", "nncf", "nvidia-modelopt",
                "tensorrt", "polygraphy"):
        try:
            versions[pkg] = version(pkg)
        except PackageNotFoundError:
            pass
    gpu = None
    if torch.cuda.is_available():
        major, minor = torch.cuda.get_device_capability(0)
        gpu = {"name": torch.cuda.get_device_name(0), "compute_capability": f"{major}.{minor}"}
    return {"cpu": cpu.name, "cores": os.cpu_count(), "isa": cpu.isa, "isa_class": cpu.isa_class,
            "isa_capped_by": cpu.capped_by, "gpu": gpu,
            "python": platform.python_version(), "platform": platform.platform(), "versions": versions}


# ---------------------------------------------------------------------------- memory
class _RssSampler:
    """Peak resident set size of this process while the block runs (Linux /proc; else ru_maxrss)."""

    def __init__(self, every_s: float = 0.005):
        self.every_s, self.peak = every_s, 0
        self._stop = threading.Event()

    @staticmethod
    def rss() -> int:
        try:
            for line in Path("/proc/self/status").read_text().splitlines():
                if line.startswith("VmRSS:"):
                    return int(line.split()[1]) * 1024
        except OSError:
            pass
        import resource

        return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024

    def _loop(self):
        while not self._stop.is_set():
            self.peak = max(self.peak, self.rss())
            time.sleep(self.every_s)

    def __enter__(self):
        release_free_memory()  # what earlier rows freed but malloc kept is not this row's
        self.peak = self.rss()
        self._thread = threading.Thread(target=self._loop, daemon=True)
        self._thread.start()
        return self

    def __exit__(self, *exc):
        self._stop.set()
        self._thread.join()
        self.peak = max(self.peak, self.rss())


# ---------------------------------------------------------------------------- backends
class Backends:
    """Makes a callable (float32 NCHW numpy -> numpy) per backend name, or raises Skip."""

    def __init__(self, weights: Weights, cfg: BenchConfig, step: Callable[[str], None]):
        self.weights, self.cfg, self.step = weights, cfg, step
        self._onnx: dict = {}

    def artifact(self, stages: int, precision: str, target: str = "tensorrt") -> Path:
        """The verified artifact for K: the user's in export/ when it was made from these weights, else bench's
        own in export/bench/ (made now if needed). Bench never adds files to export/ itself, where build-engine
        without --stages looks for the newest export."""
        key = (stages, precision, target)
        if key in self._onnx:
            return self._onnx[key]
        name = precision_filename(stages, self.weights.blocks, precision, target)
        cache = self.cfg.export_dir / BENCH_CACHE
        path = next((p for p in (self.cfg.export_dir / name, cache / name) if made_from(p, self.weights, stages)), None)
        if path is None:
            self.step(f"making {name} (in {cache})")
            fp32 = self.cfg.export_dir / precision_filename(stages, self.weights.blocks, "fp32")
            req = BuildRequest(precision, self.weights, stages, target=target, calib_count=self.cfg.calib_count,
                               onnx=fp32 if fp32.name != name and made_from(fp32, self.weights, stages) else None,
                               export_dir=cache, data=self.cfg.data, engine_step=False)
            try:
                out = build(req, self.step)
            except ScaoedError as e:
                raise Skip(f"could not make the {precision} artifact: {e}") from e
            path = out.precision_onnx
        self._onnx[key] = path
        return path

    def make(self, name: str, stages: int):
        """The registry's runner for this row: the code ``denoise`` runs, timed as users run it."""
        import torch

        cfg = self.cfg
        cuda = cfg.device == "cuda"
        if cuda and not torch.cuda.is_available():
            raise Skip("no CUDA GPU visible to torch")
        if name.startswith("tensorrt"):
            return self._tensorrt(name, stages)
        if name.startswith("onnxruntime"):
            return self._onnxruntime(name, stages)
        if name.startswith("openvino"):
            return self._openvino(name, stages)
        options = RunOptions(stages=stages, device="cuda" if cuda else "cpu", threads=cfg.threads, weights=self.weights,
                             amp={"torch-bf16": "bf16", "torch-fp16": "fp16"}.get(name),
                             compile=name == "torch-compile")
        try:
            return open_runner(None, "torch", options)
        except ScaoedError as e:  # torch.compile refused, say
            raise Skip(str(e)) from e

    def _onnxruntime(self, name: str, stages: int):
        import onnxruntime as ort

        precision = {"onnxruntime": "fp32", "onnxruntime-fp16": "fp16", "onnxruntime-bf16": "bf16",
                     "onnxruntime-int8": "int8"}[name]
        providers = ["CPUExecutionProvider"]
        if self.cfg.device == "cuda":
            if "CUDAExecutionProvider" not in ort.get_available_providers():
                raise Skip("this onnxruntime has no CUDA execution provider")
            providers = ["CUDAExecutionProvider", "CPUExecutionProvider"]
        target = "onnxruntime-cpu" if precision == "int8" and self.cfg.device == "cpu" else "tensorrt"
        missing = ort_kernel_missing(precision, tuple(providers))
        if missing:  # said before the artifact is made: minutes of conversion for a row that cannot run
            raise Skip(missing)
        path = self.artifact(stages, precision, target)
        try:  # the runner also refuses a CUDA provider that failed to load (a silent fallback to the CPU)
            runner = open_runner(path, "onnxruntime-cuda" if self.cfg.device == "cuda" else "onnxruntime",
                                 RunOptions(threads=self.cfg.threads))
        except ScaoedError as e:
            raise Skip(str(e)) from e  # names the file (so the precision) and ONNX Runtime's reason
        runner.artifact = str(path)
        return runner

    def _openvino(self, name: str, stages: int):
        import importlib.util

        if importlib.util.find_spec("openvino") is None:
            raise Skip("openvino is not installed (pip install openvino)")
        if self.cfg.device == "cuda":
            raise Skip("the OpenVINO rows run on the CPU (bench --device cpu)")
        precision = {"openvino": "fp32", "openvino-bf16": "bf16", "openvino-int8": "int8"}[name]
        path = self.artifact(stages, precision, "openvino")
        runner = open_runner(path, "openvino", RunOptions(threads=self.cfg.threads))
        runner.artifact = str(path)
        runner.runtime_precision = runner.precision_report()  # what the compiled model really runs
        return runner

    def _tensorrt(self, name: str, stages: int):
        import importlib.util
        if importlib.util.find_spec("tensorrt") is None:
            raise Skip("tensorrt is not installed (pip install tensorrt on a machine with an NVIDIA GPU)")
        if self.cfg.device != "cuda":
            raise Skip("TensorRT runs on CUDA: pass --device cuda")

        precision = {"tensorrt": "fp32", "tensorrt-fp16": "fp16", "tensorrt-int8": "int8"}[name]
        h, w = max(r[0] for r in self.cfg.resolutions), max(r[1] for r in self.cfg.resolutions)
        lo = (min(r[0] for r in self.cfg.resolutions), min(r[1] for r in self.cfg.resolutions))
        b = self.cfg.batch
        req = BuildRequest(precision, self.weights, stages, calib_count=self.cfg.calib_count,
                           export_dir=self.cfg.export_dir, data=self.cfg.data,
                           profile=ShapeProfile(lo, (h, w), (h, w), (b, b, b)),
                           engine=Path("engines") / f"bench_k{stages}_{precision}_{h}x{w}_b{b}.engine",
                           timing_cache=Path("engines/timing.cache"))
        try:
            out = build(req, self.step)
        except ScaoedError as e:
            raise Skip(f"engine build failed: {e}") from e
        return open_runner(out.plan.engine, "tensorrt")


#: The precision a row computes in, where the CPU may lack a native path for it.
ROW_PRECISION = {"torch-bf16": "bf16", "onnxruntime-bf16": "bf16", "openvino-bf16": "bf16"}


def not_native(name: str, cfg: BenchConfig) -> str | None:
    """Why this CPU would only emulate row ``name`` (said before any artifact is made), or None."""
    if cfg.device != "cpu" or name not in ROW_PRECISION:
        return None
    return this_cpu().not_native(ROW_PRECISION[name])


def emulated_rows(cfg: BenchConfig) -> list[str]:
    """A warning per row the user named (``cfg.explicit``) that this CPU would only emulate."""
    if not cfg.explicit:
        return []
    whys = {name: not_native(name, cfg) for name in dict.fromkeys(cfg.backends)}
    return [f"{name} runs although {why}; expect it to be slow and its ratio to mean little"
            for name, why in whys.items() if why]


@functools.cache
def ort_kernel_missing(precision: str, providers: tuple[str, ...]) -> str | None:
    """Why ONNX Runtime with ``providers`` cannot run a ``precision`` convolution, or None: asked of ONNX Runtime
    itself with a one-Conv model in that type (its CPU provider has no bfloat16 Conv, for one)."""
    import onnxruntime as ort
    from onnx import TensorProto, helper

    elem = {"fp16": TensorProto.FLOAT16, "bf16": TensorProto.BFLOAT16}.get(precision)
    if elem is None:
        return None
    x = helper.make_tensor_value_info("x", elem, [1, 1, 4, 4])
    y = helper.make_tensor_value_info("y", elem, [1, 1, 4, 4])
    w = helper.make_tensor("w", elem, [1, 1, 1, 1], [1.0])
    graph = helper.make_graph([helper.make_node("Conv", ["x", "w"], ["y"])], "probe", [x], [y], [w])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 22)])
    model.ir_version = 10
    try:
        ort.InferenceSession(model.SerializeToString(), providers=list(providers))
    except Exception as e:  # noqa: BLE001 - whatever ORT says is the reason
        return f"ONNX Runtime ({', '.join(providers)}) has no {precision} Conv kernel: {first_line(e, 160)}"
    return None


# ---------------------------------------------------------------------------- timing
def _time_calls(fn, x: np.ndarray, warmup: int, iters: int, cuda: bool) -> list[float]:
    import torch

    for _ in range(warmup):
        fn(x)
    times = []
    for _ in range(iters):
        if cuda:
            torch.cuda.synchronize()
        t0 = time.perf_counter()
        fn(x)
        if cuda:
            torch.cuda.synchronize()
        times.append(time.perf_counter() - t0)
    return times


def cuda_event_times(fn, x, warmup: int, iters: int) -> list[float]:
    """Seconds per call by CUDA events around each call, after ``warmup`` calls (whatever ``fn`` does with ``x``:
    bench's rows copy it to the device and back, the GPU latency script keeps it there)."""
    import torch

    for _ in range(warmup):
        fn(x)
    times = []
    for _ in range(iters):
        start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        start.record()
        fn(x)
        end.record()
        torch.cuda.synchronize()
        times.append(start.elapsed_time(end) / 1000)
    return times


def latency_stats(times: list[float]) -> dict:
    t = np.asarray(times) * 1000
    return {"median": float(np.median(t)), "p90": float(np.percentile(t, 90)), "p99": float(np.percentile(t, 99)),
            "min": float(t.min()), "std": float(t.std()), "iters": len(times)}


def _quality(fn, stages: int, pairs: list, eager_psnr: dict) -> tuple[float | None, float | None]:
    """Mean PSNR of ``fn`` on the real (noisy, clean) pairs, and its difference to eager's at this K."""
    if not pairs:
        return None, None
    psnrs = [psnr_ssim(to_uint8(fn(noisy[None].astype(np.float32))[0].transpose(1, 2, 0)),
                       to_uint8(clean.transpose(1, 2, 0)))[0] for noisy, clean in pairs]
    mean = float(np.mean(psnrs))
    base = eager_psnr.get(stages)
    return mean, (mean - base) if base is not None else None


# ---------------------------------------------------------------------------- machine load
BUSY_CORES = 0.25  # other processes using more than this many cores on average make a run's ratios unreliable


def _machine_busy_seconds() -> float | None:
    """CPU seconds the whole machine has been busy since boot (/proc/stat), or None where there is none."""
    try:
        with open("/proc/stat") as f:
            vals = [int(v) for v in f.readline().split()[1:9]]
    except (OSError, ValueError):
        return None
    return (sum(vals) - vals[3] - vals[4]) / os.sysconf("SC_CLK_TCK")  # all but idle and iowait


def _own_seconds() -> float:
    t = os.times()
    return t.user + t.system + t.children_user + t.children_system


class LoadMeter:
    """What other processes did to the machine between ``LoadMeter()`` and ``finish()``: load averages before
    and after, and the CPU time they took (the machine's busy time less this process's own)."""

    def __init__(self):
        self.load_start = os.getloadavg()[0] if hasattr(os, "getloadavg") else None
        self.busy, self.own, self.wall = _machine_busy_seconds(), _own_seconds(), time.perf_counter()
        self.result: dict = {}

    def finish(self) -> dict:
        wall = time.perf_counter() - self.wall
        busy = _machine_busy_seconds()
        others = None if busy is None or self.busy is None else max(0.0, busy - self.busy - (_own_seconds() - self.own))
        self.result = {
            "loadavg_1min_start": self.load_start,
            "loadavg_1min_end": os.getloadavg()[0] if hasattr(os, "getloadavg") else None,
            "other_processes_cpu_s": round(others, 1) if others is not None else None,
            "other_processes_cores": round(others / wall, 2) if others is not None and wall > 0 else None,
            "busy": bool(others is not None and wall > 0 and others / wall > BUSY_CORES),
        }
        return self.result

    def warning(self) -> str | None:
        r = self.result
        if not r["busy"]:
            return None
        return (f"the machine was busy: other processes took {r['other_processes_cores']:.2f} cores on average "
                f"during the run ({r['other_processes_cpu_s']:.0f} CPU s); its ratios are not to be quoted")


# ---------------------------------------------------------------------------- run
def run_bench(weights: Weights, cfg: BenchConfig, step: Callable[[str], None] = lambda s: None,
              advance: Callable[[], None] = lambda: None) -> dict:
    import torch

    unknown = [b for b in cfg.backends if b not in BACKENDS]
    if unknown:
        raise ScaoedError(f"unknown backend(s) {', '.join(unknown)}; choose from {', '.join(BACKENDS)}")
    pick_device(cfg.device)  # cuda without a GPU: the torch runner's one-line error
    threads = cpu_threads(cfg.threads)
    allocator = None
    if cfg.device == "cpu":
        torch.set_num_threads(threads)
        cfg.threads = threads
        allocator = keep_freed_memory()
    data = cfg.data if cfg.data else (default_sidd_dir() if cfg.quality else None)
    cfg.data = data
    pairs = [(p.noisy, p.clean) for p in load_samples(data) if p.clean is not None] if cfg.quality and data else []
    backends = Backends(weights, cfg, step)
    meter = LoadMeter()
    order = [BASELINE] + [b for b in cfg.backends if b != BASELINE]  # eager first: every ratio needs it
    rows: list[Row] = []
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
        "config": {**asdict(cfg), "resolutions": [list(r) for r in cfg.resolutions],
                   "data": str(cfg.data) if cfg.data else None, "export_dir": str(cfg.export_dir)},
        "weights": {"identity": weights.identity, "blocks": weights.blocks, "source": Path(weights.source).name},
        "timing": ("CUDA events (torch) / synchronised wall clock (ONNX Runtime, TensorRT) after warm-up, "
                   "host-to-device copies included"
                   if cfg.device == "cuda" else f"perf_counter per call after warm-up, {threads} threads pinned, {allocator}"),
        "rows": [asdict(r) for r in rows],
    }


def _run_rows(weights: Weights, cfg: BenchConfig, backends: Backends, order: list[str], pairs: list,
              rows: list[Row], step, advance) -> None:
    """Time every (resolution, K, backend) row into ``rows``, eager first at each (resolution, K)."""
    import torch

    eager_psnr: dict[int, float] = {}
    for (h, w) in cfg.resolutions:
        for k in cfg.stages:
            cost = model_cost(k, weights.blocks, h, w, cfg.batch)
            x = np.random.default_rng(0).random((cfg.batch, 3, h, w), dtype=np.float32)  # timing input, every backend
            eager_median = None
            for name in order:
                row = Row(name, k, h, w, cfg.batch, "ok", parameters=cost.parameters, gmacs=cost.total_macs / 1e9,
                          paper_gmacs=cost.paper_gmacs,
                          paper_latency_s=PAPER_LATENCY_S.get(k) if (h, w, cfg.batch, weights.blocks) == (512, 512, 1, 16) else None)
                step(f"{name}, K={k}, {h}x{w}: setting up")
                t0 = time.perf_counter()
                try:
                    why = not_native(name, cfg)
                    if why and not cfg.explicit:
                        raise Skip(f"{why} (--backends {name} runs it anyway)")
                    fn = backends.make(name, k)
                except Skip as e:
                    row.status, row.reason = "skipped", str(e)
                    rows.append(row)
                    advance()
                    continue
                try:
                    step(f"{name}, K={k}, {h}x{w}: warm-up and {cfg.iters} timed runs")
                    cuda = cfg.device == "cuda"
                    if cuda:
                        torch.cuda.reset_peak_memory_stats()
                    with _RssSampler() as rss:
                        fn(x)  # first call (compilation, allocation) belongs to setup
                        row.setup_s = round(time.perf_counter() - t0, 2)
                        if cuda and name.startswith("torch"):
                            times = cuda_event_times(fn, x, cfg.warmup, cfg.iters)
                        else:
                            times = _time_calls(fn, x, cfg.warmup, cfg.iters, cuda)
                    if cuda:
                        row.peak_memory_mb, row.memory_kind = torch.cuda.max_memory_allocated() / 2**20, "CUDA peak (torch allocator)"
                    else:
                        row.peak_memory_mb, row.memory_kind = rss.peak / 2**20, "process RSS peak"
                    row.artifact = getattr(fn, "artifact", None)
                    row.runtime_precision = getattr(fn, "runtime_precision", None)
                    if cfg.quality:
                        step(f"{name}, K={k}: PSNR on the real pairs")
                        row.sidd_psnr, row.dpsnr = _quality(fn, k, pairs, eager_psnr)
                        if name == BASELINE and row.sidd_psnr is not None:
                            eager_psnr[k] = row.sidd_psnr
                            row.dpsnr = 0.0
                except ScaoedError as e:  # NaN/Inf from this backend: the row fails, the run goes on
                    row.status, row.reason = "failed", str(e)
                    rows.append(row)
                    advance()
                    continue
                finally:
                    fn.close()  # the session, engine or model goes before the next row is timed
                stats = latency_stats(times)
                row.latency_ms = stats
                sec = stats["median"] / 1000
                row.images_per_s = cfg.batch / sec
                row.megapixels_per_s = cfg.batch * h * w / 1e6 / sec
                row.tflops = 2 * cost.total_macs / sec / 1e12
                if name == BASELINE:
                    eager_median = stats["median"]
                row.ratio_to_eager = stats["median"] / eager_median if eager_median else None
                rows.append(row)
                advance()


# ---------------------------------------------------------------------------- reports
def markdown(result: dict) -> str:
    m, c = result["machine"], result["config"]
    lines = [f"# ScaoedNet benchmark ({c['device']})", "",
             f"Command: `{result.get('command', '')}`", "",
             f"Machine: {m['cpu']}, {m['cores']} cores ({', '.join(m['isa'])}"
             + (f"; torch capped by {m['isa_capped_by']}" if m.get("isa_capped_by") else "") + ")"
             + (f"; GPU {m['gpu']['name']}" if m.get("gpu") else "; no GPU") + f". {result['timing']}.",
             f"Weights: `{result['weights']['source']}` (T={result['weights']['blocks']}). "
             f"Batch {c['batch']}, {c['warmup']} warm-up + {c['iters']} timed runs per row.", "",
             *(["**Interrupted** (Ctrl-C): the rows finished before it, no more.", ""] if result.get("interrupted") else []),
             "| res | K | backend | median ms | p90 ms | p99 ms | std ms | x eager | img/s | MP/s | TFLOP/s | "
             "peak MB | GMAC (paper) | paper RTX 3090 s | SIDD PSNR | dPSNR |",
             "|---|---:|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|"]

    def f(v, fmt):
        return format(v, fmt) if v is not None else "-"

    for r in result["rows"]:
        if r["status"] != "ok":
            continue
        lat = r["latency_ms"]
        paper = f" ({r['paper_gmacs']:.0f})" if r["paper_gmacs"] else ""
        lines.append(
            f"| {r['height']}x{r['width']} | {r['stages']} | {r['backend']} | {lat['median']:.1f} | {lat['p90']:.1f} | "
            f"{lat['p99']:.1f} | {lat['std']:.1f} | {f(r['ratio_to_eager'], '.2f')} | {r['images_per_s']:.2f} | "
            f"{r['megapixels_per_s']:.3f} | {r['tflops']:.3f} | {f(r['peak_memory_mb'], '.0f')} | "
            f"{r['gmacs']:.1f}{paper} | {f(r['paper_latency_s'], '.2f')} | {f(r['sidd_psnr'], '.2f')} | "
            f"{f(r['dpsnr'], '+.3f')} |")
    skipped = {}
    for r in result["rows"]:
        if r["status"] in ("skipped", "failed"):
            skipped.setdefault(r["backend"], ("failed: " if r["status"] == "failed" else "") + r["reason"])
    if skipped:
        lines += ["", "Skipped:", ""] + [f"- `{b}`: {why}" for b, why in skipped.items()]
    load = result.get("load")
    if load and load.get("other_processes_cores") is not None:
        lines += ["", f"Load: other processes took {load['other_processes_cores']:.2f} cores on average during "
                  f"the run (load average {load['loadavg_1min_start']:.2f} at the start, "
                  f"{load['loadavg_1min_end']:.2f} at the end)"
                  + ("; **busy: do not quote these ratios**" if load["busy"] else ".")]
    ran = {r["backend"]: r["runtime_precision"] for r in result["rows"] if r.get("runtime_precision")}
    if ran:
        lines += ["", "What OpenVINO compiled (from the compiled model): "] + [
            f"- `{b}`: inference precision {p['inference_precision']}, {p['threads']} threads; executed layers by "
            f"runtime precision: " + ", ".join(f"{k} {v}" for k, v in p["layers_by_runtime_precision"].items())
            for b, p in ran.items()]
    lines += ["", f"Threads: {c['threads']} for every CPU backend. x eager: median latency over torch eager fp32's "
              "in the same run (same resolution and K). "
              "The RTX 3090 column is the paper's figure at 512x512, not ours. dPSNR: mean PSNR on the SIDD crops "
              "minus eager's.", ""]
    return "\n".join(lines)


def plot(result: dict, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    ok = [r for r in result["rows"] if r["status"] == "ok"]
    resolutions = sorted({(r["height"], r["width"]) for r in ok})
    fig, axes = plt.subplots(1, max(1, len(resolutions)), figsize=(6 * max(1, len(resolutions)), 4.2), squeeze=False)
    for ax, (h, w) in zip(axes[0], resolutions):
        for backend in dict.fromkeys(r["backend"] for r in ok):
            pts = sorted((r["stages"], r["latency_ms"]["median"]) for r in ok
                         if r["backend"] == backend and (r["height"], r["width"]) == (h, w))
            if pts:
                ax.plot(*zip(*pts), marker="o", label=backend)
        ax.set(title=f"{h}x{w}, {result['config']['device']}", xlabel="stages K", ylabel="median latency (ms)")
        ax.set_yscale("log")
        ax.set_xticks(sorted({r["stages"] for r in ok}))  # K is a count: no 1.5-stage ticks
        ax.grid(alpha=0.3)
        ax.legend(fontsize=8)
    fig.tight_layout()
    with atomic_path(path) as tmp:
        fig.savefig(tmp, dpi=110)
    plt.close(fig)


def write_results(result: dict, out_dir: str | Path, name: str) -> list[Path]:
    out_dir = Path(out_dir)
    paths = [out_dir / f"{name}.json", out_dir / f"{name}.md", out_dir / f"{name}.png"]
    with atomic_path(paths[0]) as tmp:
        tmp.write_text(dumps(result) + "\n")
    with atomic_path(paths[1]) as tmp:
        tmp.write_text(markdown(result))
    plot(result, paths[2])
    return paths

