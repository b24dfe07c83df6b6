"""Choosing candidates: the backend names, which of them can run on this machine, and the runner for each.

A backend name (``onnxruntime-int8``, ``openvino-bf16``, ...) is a runtime and a precision. ``Backends.make``
gives the registry's runner for one at a K, making its verified artifact with build-engine's steps when none
made from the same weights and verified on a CPU like this one exists (the user's in ``export/``, else a cache
inside it), or raises ``Skip`` with the reason it cannot run here. Rows this CPU would only emulate are said
before any artifact is made.
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from ..artifact import load_artifact, precision_filename
from ..build import BuildRequest, build, made_from
from ..build.tensorrt import ShapeProfile
from ..checkpoint import Weights
from ..cpu import masked_as, this_cpu
from ..errors import ScaoedError, first_line
from ..runtime.base import RunOptions, verified_elsewhere
from ..runtime.registry import open_runner
from ..runtime.variants import VARIANTS, Variant, default_variants

#: Every variant's name, and the default sets (all from the one model, runtime/variants.py).
BACKENDS = tuple(VARIANTS)
CPU_DEFAULT = tuple(default_variants("cpu"))
GPU_DEFAULT = tuple(default_variants("cuda"))
BASELINE = "torch"
#: bench's and optimize's own artifacts: a folder inside the export folder, out of build-engine's sight
BENCH_CACHE = "bench"


def bench_cache(export_dir: Path) -> Path:
    """The folder of bench's own artifacts: ``BENCH_CACHE``, or ``BENCH_CACHE/as-CLASS`` under ``--as-cpu CLASS``
    (its INT8 files and IRs are made and verified for that class, and must not replace this CPU's own)."""
    masked = masked_as()
    return Path(export_dir) / BENCH_CACHE / (f"as-{masked}" if masked else "")


class Skip(Exception):
    """This backend cannot run here; the message says why."""


@dataclass(frozen=True)
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


def default_backends(device: str) -> list[str]:
    return default_variants(device)


def check_backends(names: list[str]) -> None:
    unknown = [b for b in names if b not in BACKENDS]
    if unknown:
        raise ScaoedError(f"unknown backend(s) {', '.join(unknown)}; choose from {', '.join(BACKENDS)}")


#: The precision each backend computes in.
BACKEND_PRECISION = {name: v.precision for name, v in VARIANTS.items()}


def peak_precision(backend: str) -> str:
    """The precision whose CPU peak a backend's row is measured against: int8, bf16, else fp32 (fp16 runs as fp32
    on a CPU without native fp16)."""
    return VARIANTS[backend].peak_precision


class Backends:
    """Makes a callable (float32 NCHW numpy -> numpy) per backend name, or raises Skip."""

    def __init__(self, weights: Weights, cfg: BenchConfig, step: Callable[[str], None]):
        self.weights, self.cfg, self.step = weights, cfg, step
        self._onnx: dict = {}
        self.build_peaks: dict = {}  # build step: its own peak memory (MB), for the artifacts made here

    def artifact(self, stages: int, precision: str, target: str = "tensorrt") -> Path:
        """The verified artifact for K: the user's in export/ when it was made from these weights, else bench's
        own in export/bench/ (made now if needed). Bench never adds files to export/ itself, where build-engine
        without --stages looks for the newest export."""
        key = (stages, precision, target)
        if key in self._onnx:
            return self._onnx[key]
        name = precision_filename(stages, self.weights.blocks, precision, target)
        cache = bench_cache(self.cfg.export_dir)
        path = next((p for p in (self.cfg.export_dir / name, cache / name) if self._fits(p, stages)), None)
        if path is None:
            self.step(f"making {name} (in {cache})")
            fp32 = self.cfg.export_dir / precision_filename(stages, self.weights.blocks, "fp32")
            req = BuildRequest(
                precision,
                self.weights,
                stages,
                target=target,
                calib_count=self.cfg.calib_count,
                onnx=fp32 if fp32.name != name and made_from(fp32, self.weights, stages) else None,
                export_dir=cache,
                data=self.cfg.data,
                engine_step=False,
            )
            try:
                out = build(req, self.step)
            except ScaoedError as e:
                raise Skip(f"could not make the {precision} artifact: {e}") from e
            self.build_peaks.update(out.peak_rss_mb)
            path = out.precision_onnx
        self._onnx[key] = path
        return path

    def _fits(self, path: Path, stages: int) -> bool:
        """Reusable here: made from these weights at this K, and verified on a CPU with nothing this one lacks for
        its precision (an INT8 file checked with VNNI is remade on a CPU without it, never reused silently; a
        user's file in export/ is left as it is, bench's own copy is remade)."""
        if not made_from(path, self.weights, stages):
            return False
        if verified_elsewhere(load_artifact(path)):
            self.step(f"{path.name} was verified on a CPU with what this one lacks: not reused")
            return False
        return True

    def open(self, name: str, stages: int):
        """``make``, after refusing (Skip) a row this CPU would only emulate unless the user named it."""
        why = not_native(name, self.cfg)
        if why and not self.cfg.explicit:
            raise Skip(f"{why} (--backends {name} runs it anyway)")
        return self.make(name, stages)

    def make(self, name: str, stages: int):
        """The registry's runner for this row: the code ``denoise`` runs, timed as users run it."""
        import torch

        cfg = self.cfg
        cuda = cfg.device == "cuda"
        if cuda and not torch.cuda.is_available():
            raise Skip("no CUDA GPU visible to torch")
        v = VARIANTS[name]
        if v.runtime != "torch":
            return {"tensorrt": self._tensorrt, "onnxruntime": self._onnxruntime, "openvino": self._openvino}[
                v.runtime
            ](v, stages)
        options = RunOptions(
            stages=stages,
            device="cuda" if cuda else "cpu",
            threads=cfg.threads,
            weights=self.weights,
            amp=v.amp,
            compile=v.compile,
        )
        try:
            return open_runner(None, "torch", options)
        except ScaoedError as e:  # torch.compile refused, say
            raise Skip(str(e)) from e

    def _onnxruntime(self, v: Variant, stages: int):
        import onnxruntime as ort

        precision = v.precision
        providers = ["CPUExecutionProvider"]
        if self.cfg.device == "cuda":
            if "CUDAExecutionProvider" not in ort.get_available_providers():
                raise Skip("this onnxruntime has no CUDA execution provider")
            providers = ["CUDAExecutionProvider", "CPUExecutionProvider"]
        target = v.artifact_target(self.cfg.device)
        missing = ort_kernel_missing(precision, tuple(providers))
        if missing:  # said before the artifact is made: minutes of conversion for a row that cannot run
            raise Skip(missing)
        path = self.artifact(stages, precision, target)
        try:  # the runner also refuses a CUDA provider that failed to load (a silent fallback to the CPU)
            runner = open_runner(path, v.registry_name(self.cfg.device), RunOptions(threads=self.cfg.threads))
        except ScaoedError as e:
            raise Skip(str(e)) from e  # names the file (so the precision) and ONNX Runtime's reason
        runner.artifact = str(path)
        return runner

    def _openvino(self, v: Variant, stages: int):
        import importlib.util

        if importlib.util.find_spec("openvino") is None:
            raise Skip("openvino is not installed (pip install openvino)")
        if self.cfg.device not in v.devices:
            raise Skip("the OpenVINO rows run on the CPU (bench --device cpu)")
        path = self.artifact(stages, v.precision, v.artifact_target(self.cfg.device))
        runner = open_runner(path, v.registry_name(self.cfg.device), RunOptions(threads=self.cfg.threads))
        runner.artifact = str(path)
        runner.runtime_precision = runner.precision_report()  # what the compiled model really runs
        return runner

    def _tensorrt(self, v: Variant, stages: int):
        import importlib.util

        if importlib.util.find_spec("tensorrt") is None:
            raise Skip("tensorrt is not installed (pip install tensorrt on a machine with an NVIDIA GPU)")
        if self.cfg.device not in v.devices:
            raise Skip("TensorRT runs on CUDA: pass --device cuda")

        precision = v.precision
        h, w = max(r[0] for r in self.cfg.resolutions), max(r[1] for r in self.cfg.resolutions)
        lo = (min(r[0] for r in self.cfg.resolutions), min(r[1] for r in self.cfg.resolutions))
        b = self.cfg.batch
        req = BuildRequest(
            precision,
            self.weights,
            stages,
            calib_count=self.cfg.calib_count,
            export_dir=self.cfg.export_dir,
            data=self.cfg.data,
            profile=ShapeProfile(lo, (h, w), (h, w), (b, b, b)),
            engine=Path("engines") / f"bench_k{stages}_{precision}_{h}x{w}_b{b}.engine",
            timing_cache=Path("engines/timing.cache"),
        )
        try:
            out = build(req, self.step)
        except ScaoedError as e:
            raise Skip(f"engine build failed: {e}") from e
        runner = open_runner(out.plan.engine, "tensorrt")
        runner.artifact = str(out.plan.engine)  # optimize checks the engine itself with the parity harness
        return runner


def not_native(name: str, cfg: BenchConfig) -> str | None:
    """Why this CPU would only emulate row ``name`` (said before any artifact is made), or None."""
    if cfg.device != "cpu":
        return None
    return VARIANTS[name].not_native(this_cpu())


def emulated_rows(cfg: BenchConfig) -> list[str]:
    """A warning per row the user named (``cfg.explicit``) that this CPU would only emulate."""
    if not cfg.explicit:
        return []
    whys = {name: not_native(name, cfg) for name in dict.fromkeys(cfg.backends)}
    return [
        f"{name} runs although {why}; expect it to be slow and its ratio to mean little"
        for name, why in whys.items()
        if why
    ]


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
