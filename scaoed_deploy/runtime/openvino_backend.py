"""OpenVINO backend: runs an OpenVINO IR (``.xml`` + ``.bin``) on the CPU.

The IR is compiled with an explicit inference precision, never the CPU's default
(which is bf16 on CPUs with AVX-512 BF16 or AMX, f32 elsewhere): ``f32`` for fp32
and int8 artifacts (the layers NNCF left unquantized, NFAE among them, stay f32),
``bf16`` for bf16 ones. ``precision_report()`` reads back from the compiled model
what OpenVINO really runs: its inference precision and the count of executed
layers per runtime precision (``runtimePrecision`` of the execution graph).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from ..artifact import Artifact, load_artifact
from ..contract import Tensor, check_signature
from ..errors import ScaoedError
from ..ir import ov_reason, read_ir, require_openvino
from ..seal import check_seal
from .base import BaseRunner, Limits, RunOptions, cpu_threads, verified_elsewhere

#: scaoed.precision -> the INFERENCE_PRECISION_HINT it is compiled with
INFERENCE_PRECISION = {"fp32": "f32", "int8": "f32", "bf16": "bf16"}


class OpenVINORunner(BaseRunner):
    """``run`` returns every output in model order (denoised first)."""

    name = "openvino"

    @classmethod
    def open(cls, path: Path, options: RunOptions, artifact: Artifact | None = None) -> OpenVINORunner:
        art = artifact or load_artifact(path)
        check_seal(path, art.metadata, options.allow_unverified)  # edited after verification: refused
        runner = cls(path, precision=art.precision, threads=options.threads)
        runner.warnings += verified_elsewhere(art)
        return runner

    def __init__(
        self,
        model: str | Path,
        precision: str = "fp32",
        threads: int | None = None,
        inference_precision: str | None = None,
    ):
        super().__init__()
        self.path = Path(model)
        self.precision = precision
        self.inference_precision = inference_precision or INFERENCE_PRECISION.get(precision, "f32")
        self.threads = cpu_threads(threads)
        self._compiled = None
        self._request = None
        self.description = (
            f"{self.path} on OpenVINO (CPU, a {precision} file, run at {self.inference_precision} inference precision)"
        )

    def _activate(self) -> None:
        ov = require_openvino(f"running {self.path}")
        model = read_ir(self.path)
        check_signature(str(self.path), [_tensor(p) for p in model.inputs], [_tensor(p) for p in model.outputs])
        config = {
            "INFERENCE_PRECISION_HINT": self.inference_precision,
            "PERFORMANCE_HINT": "LATENCY",
            "NUM_STREAMS": "1",
            "INFERENCE_NUM_THREADS": str(self.threads),
        }
        try:
            self._compiled = ov.Core().compile_model(model, "CPU", config)
        except Exception as e:  # OpenVINO raises RuntimeError with a multi-line message
            raise ScaoedError(f"OpenVINO cannot load {self.path}: {ov_reason(e)}") from e
        self._request = self._compiled.create_infer_request()
        first = self._compiled.inputs[0]
        self.input_name = first.get_any_name()
        self.output_names = [o.get_any_name() for o in self._compiled.outputs]
        shape = first.get_partial_shape()
        static = [shape[i].get_length() if shape[i].is_static else None for i in range(shape.rank.get_length())]
        hw = tuple(static[2:4]) if len(static) == 4 and None not in static[2:4] else None
        self.limits = Limits(hw, hw, static[0] if static and static[0] else None)

    def _run(self, batch: np.ndarray) -> list[np.ndarray]:
        self._request.infer({0: np.ascontiguousarray(batch, dtype=np.float32)})
        return [
            np.array(self._request.get_output_tensor(i).data, dtype=np.float32)
            for i in range(len(self._compiled.outputs))
        ]

    def precision_report(self) -> dict:
        """What the compiled model runs: its inference precision and executed layers per runtime precision."""
        self.activate()
        counts: dict[str, int] = {}
        for op in self._compiled.get_runtime_model().get_ops():
            info = op.get_rt_info()
            if "runtimePrecision" in info and op.get_type_name() not in ("Parameter", "Result", "Constant"):
                p = str(info["runtimePrecision"].astype(str)).lower()
                counts[p] = counts.get(p, 0) + 1
        hint = self._compiled.get_property("INFERENCE_PRECISION_HINT")
        return {
            "inference_precision": hint.get_type_name() if hasattr(hint, "get_type_name") else str(hint),
            "threads": int(self._compiled.get_property("INFERENCE_NUM_THREADS")),
            "layers_by_runtime_precision": dict(sorted(counts.items(), key=lambda kv: -kv[1])),
        }

    def _deactivate(self) -> None:
        self._request = None
        self._compiled = None


def _tensor(port) -> Tensor:
    """An OpenVINO port as the contract reads it (f32 is float32; dynamic dims are None)."""
    shape = port.get_partial_shape()
    dims = None if shape.rank.is_dynamic else [d.get_length() if d.is_static else None for d in shape]
    kind = port.get_element_type().get_type_name()
    return Tensor(port.get_any_name(), {"f32": "float32", "f16": "float16"}.get(kind, kind), dims)
