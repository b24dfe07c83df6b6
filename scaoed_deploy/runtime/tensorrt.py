"""TensorRT 11 engines at run time: the load-time check of an engine's sidecar, and the runner. Their build (the
plan, the sidecar, the engine) is ``build/tensorrt.py``.

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

from pathlib import Path

import numpy as np

from ..artifact import Artifact, quiet_polygraphy
from ..errors import ScaoedError
from ..util.files import read_json_object, sha256_of
from ..util.optional import optional_import
from .base import BaseRunner, Limits, RunOptions


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


def gpu_description() -> dict:
    """Name and compute capability of CUDA device 0 (through torch, already a dependency)."""
    import torch

    if not torch.cuda.is_available():
        raise ScaoedError("no CUDA GPU is visible: TensorRT engines are built and run on an NVIDIA GPU")
    major, minor = torch.cuda.get_device_capability(0)
    return {"gpu": torch.cuda.get_device_name(0), "compute_capability": f"{major}.{minor}"}


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
