"""Artifacts the harness checks: ONNX files (any precision) and TensorRT engines."""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path

from ..errors import ScaoedError, first_line

ONNX_SUFFIXES = {".onnx"}
ENGINE_SUFFIXES = {".engine", ".plan", ".trt"}
PRECISIONS = ("fp32", "fp16", "bf16", "int8")


@dataclass
class Artifact:
    path: Path
    kind: str  # "onnx" or "engine"
    precision: str
    metadata: dict[str, str] = field(default_factory=dict)  # scaoed.* (ONNX) or the engine's JSON sidecar
    input_dims: list = field(default_factory=list)  # ints, or names for dynamic dims
    output_names: list[str] = field(default_factory=list)

    @property
    def stages(self) -> int | None:
        return int(self.metadata["stages"]) if "stages" in self.metadata else None

    @property
    def blocks(self) -> int | None:
        return int(self.metadata["blocks"]) if "blocks" in self.metadata else None

    @property
    def static_hw(self) -> tuple[int, int] | None:
        h, w = self.input_dims[2:4] if len(self.input_dims) == 4 else (None, None)
        return (h, w) if isinstance(h, int) and isinstance(w, int) and h > 0 and w > 0 else None

    @property
    def static_batch(self) -> int | None:
        b = self.input_dims[0] if self.input_dims else None
        return b if isinstance(b, int) and b > 0 else None

    @property
    def noise_map_outputs(self) -> list[str]:
        return [n for n in self.output_names if n.startswith("noise_map_")]

    def runner(self, providers: list[str] | None = None):
        if self.kind == "engine":
            from ..runtime.tensorrt_backend import TensorRTRunner

            return TensorRTRunner(self.path)
        from ..runtime.onnxruntime_backend import OnnxRuntimeRunner

        if self.emulated(providers):
            from ..precision.emulate import emulated_bytes

            return OnnxRuntimeRunner(emulated_bytes(self.path), providers=providers)
        return OnnxRuntimeRunner(self.path, providers=providers)

    def emulated(self, providers: list[str] | None = None) -> bool:
        """fp16/bf16 ONNX on the CPU provider runs emulated: ORT would compute it in float32 (or not at all)."""
        cpu_only = not providers or list(providers) == ["CPUExecutionProvider"]
        return self.kind == "onnx" and self.precision in ("fp16", "bf16") and cpu_only


def infer_onnx_precision(model) -> str:
    """int8 when the graph quantizes, fp16/bf16 when it holds such tensors, else fp32."""
    from onnx import TensorProto

    ops = {n.op_type for n in model.graph.node}
    if ops & {"QuantizeLinear", "DequantizeLinear", "QLinearConv", "ConvInteger", "DynamicQuantizeLinear"}:
        return "int8"
    types = {i.data_type for i in model.graph.initializer}
    types |= {v.type.tensor_type.elem_type for v in (*model.graph.value_info, *model.graph.input, *model.graph.output)}
    types |= {a.i for n in model.graph.node if n.op_type == "Cast" for a in n.attribute if a.name == "to"}
    if TensorProto.FLOAT16 in types:
        return "fp16"
    if TensorProto.BFLOAT16 in types:
        return "bf16"
    return "fp32"


def load_artifact(path: str | Path, precision: str | None = None) -> Artifact:
    """Open an artifact, with one clear error for a missing, corrupt or unknown file."""
    path = Path(path)
    if not path.is_file():
        raise ScaoedError(f"artifact not found: {path}")
    suffix = path.suffix.lower()
    if suffix in ONNX_SUFFIXES:
        import onnx
        from google.protobuf.message import DecodeError

        try:
            model = onnx.load(str(path))
            onnx.checker.check_model(model)
        except (DecodeError, onnx.checker.ValidationError, ValueError, OSError) as e:
            first = first_line(e)
            raise ScaoedError(f"{path}: not a valid ONNX model (truncated or corrupt?): {first}") from e
        meta = {p.key[len("scaoed."):]: p.value for p in model.metadata_props if p.key.startswith("scaoed.")}
        dims = [d.dim_value if d.HasField("dim_value") else (d.dim_param or "?")
                for d in model.graph.input[0].type.tensor_type.shape.dim]
        outputs = [o.name for o in model.graph.output]
        found = precision or meta.get("precision") or infer_onnx_precision(model)
        return Artifact(path, "onnx", found, meta, dims, outputs)
    if suffix in ENGINE_SUFFIXES:
        if path.stat().st_size == 0:
            raise ScaoedError(f"{path}: empty engine file")
        sidecar = path.with_suffix(".json")
        meta = {}
        if sidecar.is_file():
            try:
                meta = {k: str(v) for k, v in json.loads(sidecar.read_text()).items() if not isinstance(v, (dict, list))}
            except json.JSONDecodeError as e:
                raise ScaoedError(f"{sidecar}: engine sidecar is not valid JSON ({e})") from e
        return Artifact(path, "engine", precision or meta.get("precision", "fp32"), meta, [], [])
    raise ScaoedError(f"{path}: unknown artifact type {suffix or '(no extension)'}; expected .onnx or .engine/.plan")
