"""TensorRT's build half, beside the other builders: the shape profile, the build plan (with the equivalent
``trtexec`` command), the sidecar JSON every engine has, and the engine build through polygraphy's loaders
(``NetworkFromOnnxPath(strongly_typed=True)``, ``CreateConfig``, ``EngineBytesFromNetwork``). TensorRT 11
networks are always strongly typed: the precision is the ONNX's own, no precision flag is set. Without
``tensorrt`` the plan and sidecar are still written (``"built": false``); the build raises ``TensorRTMissing``
(exit code 4). The runner and the load-time check are ``runtime/tensorrt.py``."""

from __future__ import annotations

import json
import shlex
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from ..artifact import quiet_polygraphy
from ..errors import ScaoedError
from ..runtime.tensorrt import gpu_description, require_tensorrt
from ..util.files import atomic_path, sha256_of

DEFAULT_MIN, DEFAULT_OPT, DEFAULT_MAX = (256, 256), (512, 512), (1024, 1024)


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
