"""ONNX Runtime backend: runs an ONNX file (or serialized model bytes) on CPU, or CUDA when present."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from ..errors import ScaoedError


def available_providers() -> list[str]:
    import onnxruntime as ort

    return ort.get_available_providers()


class OnnxRuntimeRunner:
    """``run`` returns every output in graph order; ``__call__`` the first (the denoised image)."""

    name = "onnxruntime"

    def __init__(self, model: str | Path | bytes, providers: list[str] | None = None, threads: int | None = None):
        import onnxruntime as ort

        options = ort.SessionOptions()
        if threads:
            options.intra_op_num_threads = threads
        options.log_severity_level = 3
        providers = providers or ["CPUExecutionProvider"]
        source = model if isinstance(model, bytes) else str(model)
        try:
            self.session = ort.InferenceSession(source, options, providers=providers)
        except Exception as e:  # onnxruntime raises its own Fail/InvalidGraph/NoSuchFile types
            where = "the model" if isinstance(model, bytes) else str(model)
            first = (str(e).strip().splitlines() or [type(e).__name__])[0][:200]
            raise ScaoedError(f"ONNX Runtime cannot load {where}: {first}") from e
        self.input_name = self.session.get_inputs()[0].name
        self.output_names = [o.name for o in self.session.get_outputs()]

    def run(self, batch: np.ndarray) -> list[np.ndarray]:
        feed = {self.input_name: np.ascontiguousarray(batch, dtype=np.float32)}
        return self.session.run(None, feed)

    def __call__(self, batch: np.ndarray) -> np.ndarray:
        return self.run(batch)[0]
