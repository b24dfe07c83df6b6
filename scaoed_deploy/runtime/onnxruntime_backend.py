"""ONNX Runtime backend: runs an ONNX file (or serialized model bytes) on CPU, or CUDA when present.

Sessions take their thread count from the one CPU policy (``base.cpu_threads``) and do not
spin between calls; the session is called directly to keep per-call overhead out of timings.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from ..artifact import Artifact, load_artifact
from ..contract import Tensor, check_signature
from ..errors import ScaoedError, first_line
from ..seal import check_seal
from .base import BaseRunner, Limits, RunOptions, cpu_threads, verified_elsewhere

CPU = ["CPUExecutionProvider"]
CUDA = ["CUDAExecutionProvider", "CPUExecutionProvider"]


class OnnxRuntimeRunner(BaseRunner):
    """``run`` returns every output in graph order; ``__call__`` the first (the denoised image)."""

    name = "onnxruntime"

    @classmethod
    def open(
        cls, path: Path, options: RunOptions, artifact: Artifact | None = None, providers: list[str] | None = None
    ) -> OnnxRuntimeRunner:
        art = artifact or load_artifact(path)  # one clear line for a corrupt file, before ONNX Runtime's
        check_seal(path, art.metadata, options.allow_unverified)  # edited after verification: refused
        runner = cls(path, providers=providers, threads=options.threads)
        runner.activate()  # a file ONNX Runtime cannot load is one line here, before any output is planned
        runner.description = f"{path} on ONNX Runtime ({'CUDA' if providers is CUDA else 'CPU'}, {art.precision})"
        if providers is not CUDA:
            runner.warnings += verified_elsewhere(art)
        return runner

    def __init__(self, model: str | Path | bytes, providers: list[str] | None = None, threads: int | None = None):
        """Cheap: the session is made by ``activate`` (``open`` and the first ``run`` call it)."""
        super().__init__()
        self.providers = providers or ["CPUExecutionProvider"]
        self.source = model if isinstance(model, bytes) else str(model)
        self.where = "the model" if isinstance(model, bytes) else str(model)
        self.threads = cpu_threads(threads)
        self.on_cpu = "CUDAExecutionProvider" not in self.providers
        self._session = None
        self.description = (
            f"{self.where} on ONNX Runtime ({'CUDA' if 'CUDAExecutionProvider' in self.providers else 'CPU'})"
        )

    def _activate(self) -> None:
        import onnxruntime as ort

        providers, source = self.providers, self.source
        try:
            options = ort.SessionOptions()
            options.intra_op_num_threads = self.threads
            options.inter_op_num_threads = 1
            options.log_severity_level = 3
            # Idle worker threads otherwise spin for tens of ms after each call, taking the cores from whatever
            # runs next (another backend's timed call, the rest of an imaging pipeline).
            options.add_session_config_entry("session.intra_op.allow_spinning", "0")
            self._session = session = ort.InferenceSession(source, options, providers=providers)
        except Exception as e:  # onnxruntime raises its own Fail/InvalidGraph/NoSuchFile types
            raise ScaoedError(f"ONNX Runtime cannot load {self.where}: {first_line(e)}") from e
        # ONNX Runtime drops a provider whose libraries fail to load with only a log line; a CUDA run
        # that silently became a CPU run would time and check the wrong thing.
        lost = [p for p in providers if p != "CPUExecutionProvider" and p not in session.get_providers()]
        if lost:
            raise ScaoedError(
                f"ONNX Runtime could not use {', '.join(lost)} here (it would have fallen back to the "
                f"CPU): onnxruntime-gpu and the CUDA/cuDNN libraries it was built for are needed"
            )
        self.on_cpu = "CUDAExecutionProvider" not in session.get_providers()
        check_signature(
            self.where, [_tensor(i) for i in session.get_inputs()], [_tensor(o) for o in session.get_outputs()]
        )
        first = session.get_inputs()[0]
        self.input_name = first.name
        # Reduced-precision artifacts may take float16 input; outputs always come back as float32.
        self.input_dtype = np.float16 if first.type == "tensor(float16)" else np.float32
        self.output_names = [o.name for o in session.get_outputs()]
        dims = first.shape
        static = dims[2:4] if len(dims) == 4 and all(isinstance(d, int) and d > 0 for d in dims[2:4]) else None
        batch = dims[0] if dims and isinstance(dims[0], int) and dims[0] > 0 else None
        self.limits = Limits(tuple(static) if static else None, tuple(static) if static else None, batch)

    @property
    def session(self):
        """The ONNX Runtime session (made on first use)."""
        self.activate()
        return self._session

    def _run(self, batch: np.ndarray) -> list[np.ndarray]:
        feed = {self.input_name: np.ascontiguousarray(batch, dtype=self.input_dtype)}
        return [np.asarray(o, dtype=np.float32) for o in self._session.run(None, feed)]

    def _deactivate(self) -> None:
        self._session = None


def _tensor(arg) -> Tensor:
    """An ONNX Runtime NodeArg as the contract reads it ('tensor(float)' is float32)."""
    kind = arg.type[len("tensor(") : -1] if arg.type.startswith("tensor(") else arg.type
    dims = [d if isinstance(d, (int, str)) and d != "" else None for d in arg.shape] if arg.shape is not None else None
    return Tensor(arg.name, {"float": "float32", "double": "float64"}.get(kind, kind), dims)
