"""TensorRT backend: runs a serialized engine through polygraphy's loaders and runner.

``tensorrt`` is imported only when an engine is run; without it the runner
raises ``TensorRTMissing`` (exit code 4) with one line saying how to get it.
Engine I/O goes through polygraphy's own CUDA wrapper (no pycuda).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from ..errors import ScaoedError


class TensorRTMissing(ScaoedError):
    """TensorRT is needed for this step but cannot be imported."""

    exit_code = 4


def require_tensorrt(what: str):
    """The tensorrt module, or TensorRTMissing saying what needed it."""
    try:
        import tensorrt
    except ImportError as e:
        raise TensorRTMissing(
            f"TensorRT is not installed, so {what} is not possible here: install it on a machine with an NVIDIA GPU "
            "(pip install tensorrt, or NVIDIA's TensorRT container)"
        ) from e
    return tensorrt


class TensorRTRunner:
    """``run`` returns every output in engine order (denoised first); ``__call__`` the first."""

    name = "tensorrt"

    def __init__(self, engine_path: str | Path):
        trt = require_tensorrt(f"running {engine_path}")
        from ..engine import check_engine_sidecar, gpu_description

        self.sidecar = check_engine_sidecar(engine_path, trt.__version__, gpu_description())
        from polygraphy.backend.common import BytesFromPath
        from polygraphy.backend.trt import EngineFromBytes, TrtRunner

        self._runner = TrtRunner(EngineFromBytes(BytesFromPath(str(engine_path))))
        self._runner.activate()
        engine = self._runner.engine
        names = [engine.get_tensor_name(i) for i in range(engine.num_io_tensors)]
        self.input_name = next(n for n in names if engine.get_tensor_mode(n) == trt.TensorIOMode.INPUT)
        self.output_names = [n for n in names if engine.get_tensor_mode(n) == trt.TensorIOMode.OUTPUT]

    def run(self, batch: np.ndarray) -> list[np.ndarray]:
        outputs = self._runner.infer({self.input_name: np.ascontiguousarray(batch, dtype=np.float32)})
        return [np.asarray(outputs[n], dtype=np.float32) for n in self.output_names]

    def __call__(self, batch: np.ndarray) -> np.ndarray:
        return self.run(batch)[0]

    def close(self) -> None:
        if self._runner.is_active:
            self._runner.deactivate()
