"""TensorRT 11 engines from precision ONNX files: build plan, build, sidecar, load-time check, and the runner.

TensorRT 11 networks are always strongly typed: the precision is the ONNX's own
(``precision/convert.py``), and no precision flag is set here. The build goes
through polygraphy's loaders (``NetworkFromOnnxPath(strongly_typed=True)``,
``CreateConfig(profiles=..., load_timing_cache=..., memory_pool_limits=...)``,
``EngineBytesFromNetwork(save_timing_cache=...)``); ``tensorrt`` is imported only
when an engine is built or run.

Every engine has a JSON sidecar (``NAME.json`` beside ``NAME.engine``): TensorRT
version, GPU name and compute capability, precision, profile, the ONNX's sha256,
K and T, and the equivalent ``trtexec`` command. Without TensorRT the sidecar is
still written, as the build plan (``"built": false``). Loading an engine checks
its sidecar against the running TensorRT and GPU and refuses a mismatch.

``TensorRTRunner`` runs an engine through polygraphy's ``TrtRunner`` (engine I/O through
polygraphy's own CUDA wrapper, no pycuda). Without ``tensorrt`` everything here raises
``TensorRTMissing`` (exit code 4) with one line saying how to get it.
"""

from __future__ import annotations

import json
import shlex
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from ..artifact import Artifact, quiet_polygraphy
from ..errors import ScaoedError
from ..util.files import atomic_path, read_json_object, sha256_of
from ..util.optional import optional_import
from .base import BaseRunner, Limits, RunOptions

DEFAULT_MIN, DEFAULT_OPT, DEFAULT_MAX = (256, 256), (512, 512), (1024, 1024)


class TensorRTMissing(ScaoedError):
    """TensorRT is needed for this step but cannot be imported."""

    exit_code = 4


def require_tensorrt(what: str):
    """The tensorrt module, or TensorRTMissing saying what needed it."""
    return optional_import(
        "tensorrt",
        f"TensorRT is not installed, so {what} is not possible here: install it on a machine with an NVIDIA GPU "
        "(pip install tensorrt, or NVIDIA's TensorRT container)",
        TensorRTMissing,
        detail=False,
    )


@dataclass(frozen=True)
class ShapeProfile:
    """One optimisation profile over (N, 3, H, W)."""

    min_hw: tuple[int, int] = DEFAULT_MIN
    opt_hw: tuple[int, int] = DEFAULT_OPT
    max_hw: tuple[int, int] = DEFAULT_MAX
    batch: tuple[int, int, int] = (1, 1, 1)  # min, opt, max

    def __post_init__(self):
        for name, (h, w) in (("min", self.min_hw), ("opt", self.opt_hw), ("max", self.max_hw)):
            if h <= 0 or w <= 0 or h % 2 or w % 2:
                raise ScaoedError(f"--{name} {h}x{w}: ScaoedNet needs positive, even heights and widths")
        if not (
            self.min_hw[0] <= self.opt_hw[0] <= self.max_hw[0] and self.min_hw[1] <= self.opt_hw[1] <= self.max_hw[1]
        ):
            raise ScaoedError(f"profile must satisfy min <= opt <= max, got {self.describe()}")
        b = self.batch
        if not (1 <= b[0] <= b[1] <= b[2]):
            raise ScaoedError(f"--batch must be MIN:OPT:MAX with 1 <= MIN <= OPT <= MAX, got {b[0]}:{b[1]}:{b[2]}")

    def shapes(self) -> dict[str, tuple[int, int, int, int]]:
        return {
            "min": (self.batch[0], 3, *self.min_hw),
            "opt": (self.batch[1], 3, *self.opt_hw),
            "max": (self.batch[2], 3, *self.max_hw),
        }

    def describe(self) -> str:
        return ", ".join(f"{k} {'x'.join(map(str, v))}" for k, v in self.shapes().items())

    def lint_profile(self, input_name: str) -> dict:
        """The form precision/lint.py checks dynamic dims against."""
        return {input_name: self.shapes()}


def parse_batch(value: str | None) -> tuple[int, int, int]:
    if not value:
        return (1, 1, 1)
    try:
        parts = [int(v) for v in value.split(":")]
    except ValueError:
        raise ScaoedError(f"--batch expects MIN:OPT:MAX, got {value!r}") from None
    if len(parts) == 1:
        parts = parts * 3
    if len(parts) != 3:
        raise ScaoedError(f"--batch expects MIN:OPT:MAX, got {value!r}")
    return tuple(parts)


@dataclass
class BuildPlan:
    onnx: Path
    engine: Path
    precision: str
    stages: int | None
    blocks: int | None
    profile: ShapeProfile = field(default_factory=ShapeProfile)
    input_name: str = "noisy"
    timing_cache: Path | None = None
    workspace_mib: int | None = None

    @property
    def sidecar_path(self) -> Path:
        return self.engine.with_suffix(".json")

    def trtexec(self) -> str:
        """The equivalent trtexec command line (TensorRT 11: no precision flags, strong typing always on)."""
        s = self.profile.shapes()
        args = ["trtexec", f"--onnx={self.onnx}", f"--saveEngine={self.engine}"]
        for key, flag in (("min", "--minShapes"), ("opt", "--optShapes"), ("max", "--maxShapes")):
            args.append(f"{flag}={self.input_name}:{'x'.join(map(str, s[key]))}")
        if self.timing_cache:
            args.append(f"--timingCacheFile={self.timing_cache}")
        if self.workspace_mib:
            args.append(f"--memPoolSize=workspace:{self.workspace_mib}M")
        return " ".join(shlex.quote(a) for a in args)

    def sidecar(self, built: dict | None = None) -> dict:
        return {
            "built": built is not None,
            "engine": str(self.engine),
            "onnx": str(self.onnx),
            "onnx_sha256": sha256_of(self.onnx),
            "precision": self.precision,
            "stages": self.stages,
            "blocks": self.blocks,
            "input": self.input_name,
            "profile": {k: list(v) for k, v in self.profile.shapes().items()},
            "timing_cache": str(self.timing_cache) if self.timing_cache else None,
            "workspace_mib": self.workspace_mib,
            "trtexec": self.trtexec(),
            **(built or {}),
        }


def write_sidecar(plan: BuildPlan, built: dict | None = None) -> Path:
    with atomic_path(plan.sidecar_path) as tmp:
        tmp.write_text(json.dumps(plan.sidecar(built), indent=2) + "\n")
    return plan.sidecar_path


def gpu_description() -> dict:
    """Name and compute capability of CUDA device 0 (through torch, already a dependency)."""
    import torch

    if not torch.cuda.is_available():
        raise ScaoedError("no CUDA GPU is visible: TensorRT engines are built and run on an NVIDIA GPU")
    major, minor = torch.cuda.get_device_capability(0)
    return {"gpu": torch.cuda.get_device_name(0), "compute_capability": f"{major}.{minor}"}


def build_engine(plan: BuildPlan, step: Callable[[str], None] = lambda s: None) -> dict:
    """Build ``plan.engine`` and its sidecar; returns the sidecar. Needs tensorrt and a GPU."""
    trt = require_tensorrt(f"building {plan.engine}")
    gpu = gpu_description()
    from polygraphy.backend.trt import CreateConfig, EngineBytesFromNetwork, NetworkFromOnnxPath, Profile

    quiet_polygraphy()
    s = plan.profile.shapes()
    profile = Profile().add(plan.input_name, min=s["min"], opt=s["opt"], max=s["max"])
    kwargs = {"profiles": [profile]}
    if plan.timing_cache and plan.timing_cache.is_file():
        kwargs["load_timing_cache"] = str(plan.timing_cache)
    if plan.workspace_mib:
        kwargs["memory_pool_limits"] = {trt.MemoryPoolType.WORKSPACE: plan.workspace_mib << 20}
    step(f"building the TensorRT {trt.__version__} engine on {gpu['gpu']} ({plan.profile.describe()})")
    t0 = time.perf_counter()
    network = NetworkFromOnnxPath(str(plan.onnx), strongly_typed=True)
    try:
        engine_bytes = EngineBytesFromNetwork(
            network, CreateConfig(**kwargs), save_timing_cache=str(plan.timing_cache) if plan.timing_cache else None
        )()
    except Exception as e:  # polygraphy raises PolygraphyException with TensorRT's own message
        raise ScaoedError(f"TensorRT could not build {plan.onnx}: {str(e).strip().splitlines()[-1][:200]}") from e
    with atomic_path(plan.engine) as tmp:
        tmp.write_bytes(bytes(engine_bytes))
    built = {
        "tensorrt": trt.__version__,
        **gpu,
        "build_seconds": round(time.perf_counter() - t0, 1),
        "engine_sha256": sha256_of(plan.engine),
    }
    write_sidecar(plan, built)
    return plan.sidecar(built)


def check_engine_sidecar(engine_path: str | Path, trt_version: str | None = None, gpu: dict | None = None) -> dict:
    """Refuse an engine whose file is not the one its sidecar describes (checked without TensorRT), or, given
    ``trt_version`` and ``gpu``, one built for another TensorRT or GPU (TensorRT plans are not portable)."""
    meta = _engine_sidecar(Path(engine_path))
    if trt_version is not None:
        _check_engine_target(Path(engine_path), meta, trt_version, gpu)
    return meta


def _engine_sidecar(engine_path: Path) -> dict:
    """The sidecar of a built engine whose file is the one it describes (no TensorRT needed)."""
    sidecar = engine_path.with_suffix(".json")
    if not sidecar.is_file():
        raise ScaoedError(f"{engine_path}: no sidecar {sidecar.name}; rebuild it with scaoed-deploy build-engine")
    meta = read_json_object(sidecar, "engine sidecar")
    if not meta.get("built"):
        raise ScaoedError(
            f"{engine_path}: its sidecar is a build plan; the engine was never built ({meta.get('trtexec')})"
        )
    if meta.get("engine_sha256") and sha256_of(engine_path) != meta["engine_sha256"]:
        raise ScaoedError(
            f"{engine_path}: the file is not the engine its sidecar {sidecar.name} describes (sha256 "
            "differs: changed or replaced after the build); rebuild it"
        )
    return meta


def _check_engine_target(engine_path: Path, meta: dict, trt_version: str, gpu: dict) -> None:
    if meta.get("tensorrt") != trt_version:
        raise ScaoedError(
            f"{engine_path} was built with TensorRT {meta.get('tensorrt')}, this is {trt_version}: rebuild it"
        )
    if meta.get("compute_capability") != gpu.get("compute_capability"):
        raise ScaoedError(
            f"{engine_path} was built for {meta.get('gpu')} (sm {meta.get('compute_capability')}), "
            f"this GPU is {gpu.get('gpu')} (sm {gpu.get('compute_capability')}): rebuild it"
        )


class TensorRTRunner(BaseRunner):
    """Runs a built engine; ``run`` returns every output in engine order (denoised first)."""

    name = "tensorrt"
    on_cpu = False

    @classmethod
    def open(cls, path: Path, options: RunOptions, artifact: Artifact | None = None) -> TensorRTRunner:
        return cls(path)

    def __init__(self, engine_path: str | Path):
        super().__init__()
        self.engine_path = Path(engine_path)
        self.sidecar = _engine_sidecar(self.engine_path)  # a tampered or never-built engine: refused before TensorRT
        _check_engine_target(
            self.engine_path, self.sidecar, require_tensorrt(f"running {engine_path}").__version__, gpu_description()
        )
        prof = self.sidecar.get("profile", {})
        lo, hi = prof.get("min"), prof.get("max")
        self.limits = Limits(
            tuple(lo[2:]) if lo else None,
            tuple(hi[2:]) if hi else None,
            hi[0] if lo and hi and lo[0] == hi[0] else None,
            hi[0] if hi else None,
        )
        self.description = f"{engine_path} on TensorRT ({self.sidecar.get('precision')})"
        self._runner = None

    def _activate(self) -> None:
        """Deserialize the engine and make its execution context (polygraphy's TrtRunner)."""
        trt = require_tensorrt(f"running {self.engine_path}")
        from polygraphy.backend.common import BytesFromPath
        from polygraphy.backend.trt import EngineFromBytes, TrtRunner

        quiet_polygraphy()
        self._runner = TrtRunner(EngineFromBytes(BytesFromPath(str(self.engine_path))))
        self._runner.activate()
        engine = self._runner.engine
        names = [engine.get_tensor_name(i) for i in range(engine.num_io_tensors)]
        self.input_name = next(n for n in names if engine.get_tensor_mode(n) == trt.TensorIOMode.INPUT)
        self.output_names = [n for n in names if engine.get_tensor_mode(n) == trt.TensorIOMode.OUTPUT]

    def _run(self, batch: np.ndarray) -> list[np.ndarray]:
        self.activate()
        outputs = self._runner.infer({self.input_name: np.ascontiguousarray(batch, dtype=np.float32)})
        return [np.asarray(outputs[n], dtype=np.float32) for n in self.output_names]

    def _deactivate(self) -> None:
        if self._runner is not None and self._runner.is_active:
            self._runner.deactivate()
        self._runner = None
