"""The ONNX artifact's conventions, shared by every pipeline step (export, precision, parity, engine, bench).

- metadata: ``scaoed.*`` keys in ``metadata_props`` (``read_metadata``, ``write_metadata``);
- module tags: ``scaoed.module`` on each node, the module of the paper's network that made it
  (``module_paths``, ``carry_module_tags``), for localisation and the read-back audit;
- file names in ``export/`` per K, T and precision, and the precision list;
- NFAE's ``+ 1e-16``: counted and required (``check_nfae_epsilon``);
- the all-tensors reference run (every tensor of a graph on one input);
- ``Artifact``/``load_artifact``: a file opened with one clear error for a missing,
  corrupt or unknown one.

Nothing here imports another step of the pipeline: they all import this.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from .errors import ScaoedError, VerificationError, first_line
from .ir import ir_metadata, read_ir
from .model.scaoednet import NFAE_EPS
from .util.files import read_json_object

META_PREFIX = "scaoed."
MODULE_KEY = "scaoed.module"  # per node: the module that made it ('u_ini.nfae')
PRECISIONS = ("fp32", "fp16", "bf16", "int8")
INT8_TARGETS = ("tensorrt", "onnxruntime-cpu")
TARGETS = ("tensorrt", "onnxruntime-cpu", "openvino")  # what build-engine makes a precision artifact for
OPENVINO_PRECISIONS = ("fp32", "bf16", "int8")  # OpenVINO's CPU plugin has no fp16 inference
ONNX_SUFFIXES = {".onnx"}
ENGINE_SUFFIXES = {".engine", ".plan", ".trt"}
OPENVINO_SUFFIXES = {".xml"}  # an OpenVINO IR: the .xml, with its weights in the .bin beside it


# ---------------------------------------------------------------------------- file names
def default_filename(
    stages: int,
    blocks: int,
    static_hw: tuple[int, int] | None = None,
    batch: int | None = None,
    noise_maps: bool = False,
    precision: str = "fp32",
) -> str:
    """export/'s name for an export of K stages and T blocks (and its static shape, batch and extra outputs)."""
    name = f"scaoednet_k{stages}_t{blocks}_{precision}"
    if static_hw:
        name += f"_s{static_hw[0]}x{static_hw[1]}"
    if batch is not None:
        name += f"_b{batch}"
    if noise_maps:
        name += "_maps"
    return name + ".onnx"


def precision_filename(stages: int, blocks: int, precision: str, target: str = "tensorrt") -> str:
    """export/'s name for K, T and precision (fp32: the name `export` gives a dynamic-shape file)."""
    if target == "openvino":
        return f"scaoednet_k{stages}_t{blocks}_{precision}_openvino.xml"
    suffix = precision + ("_ortcpu" if precision == "int8" and target == "onnxruntime-cpu" else "")
    return f"scaoednet_k{stages}_t{blocks}_{suffix}.onnx"


# ---------------------------------------------------------------------------- metadata
def metadata_of(proto) -> dict[str, str]:
    """The scaoed.* metadata of a ModelProto, without the prefix."""
    return {p.key[len(META_PREFIX) :]: p.value for p in proto.metadata_props if p.key.startswith(META_PREFIX)}


def read_metadata(path: str | Path) -> dict[str, str]:
    """The scaoed.* metadata of a file, without the prefix (the weights of an ONNX file are not read)."""
    import onnx

    if Path(path).suffix.lower() in OPENVINO_SUFFIXES:
        return ir_metadata(read_ir(path))
    return metadata_of(onnx.load(str(path), load_external_data=False))


def write_metadata(proto, meta: dict[str, str]) -> None:
    """Replace ``proto``'s metadata by ``meta`` (keys without the prefix); the producer is scaoed-deploy."""
    del proto.metadata_props[:]
    for k, v in meta.items():
        entry = proto.metadata_props.add()
        entry.key, entry.value = META_PREFIX + k, v
    proto.producer_name = "scaoed-deploy"
    if "stages" in meta and "blocks" in meta:
        proto.doc_string = f"ScaoedNet K={meta['stages']} T={meta['blocks']}: {meta.get('input', '')}"


def stages_of(proto) -> int | None:
    v = metadata_of(proto).get("stages")
    return int(v) if v else None


# ---------------------------------------------------------------------------- module tags
def module_paths(proto) -> dict[str, str]:
    """{output tensor name: module path} for every tagged node."""
    paths = {}
    for node in proto.graph.node:
        tag = module_of(node)
        if tag:
            for out in node.output:
                paths[out] = tag
    return paths


def module_of(node) -> str:
    return next((p.value for p in node.metadata_props if p.key == MODULE_KEY), "")


def _tag(node, module: str) -> None:
    entry = node.metadata_props.add()
    entry.key, entry.value = MODULE_KEY, module


def carry_module_tags(before, after, by: str = "node") -> int:
    """Tools drop node metadata: tag each untagged node of ``after`` with the module of its counterpart in
    ``before``, matched by node name (``by="node"``: converters keep names) or by output tensor name
    (``by="tensor"``: simplifiers keep tensor names). Returns the number of nodes tagged."""
    if by == "node":
        tags = {n.name: module_of(n) for n in before.graph.node if module_of(n)}
    else:
        tags = module_paths(before)
    done = 0
    for node in after.graph.node:
        if module_of(node):
            continue
        tag = tags.get(node.name) if by == "node" else next((tags[o] for o in node.output if o in tags), None)
        if tag:
            _tag(node, tag)
            done += 1
    return done


def tag_module_paths(proto, wrapper: str = "") -> None:
    """Replace torch.onnx's bulky per-node metadata by one tag: the module that made the node.

    The exporter records cumulative scopes (['', 'u_ini', 'u_ini.nfae', 'div_3']); the deepest module's name
    is kept ('u_ini.nfae'), without the name of an export wrapper module.
    """
    import ast
    import contextlib

    for node in proto.graph.node:
        scopes = []
        for p in node.metadata_props:
            if p.key == "pkg.torch.onnx.name_scopes":
                with contextlib.suppress(ValueError, SyntaxError):
                    scopes = [s for s in ast.literal_eval(p.value)[:-1] if s]  # the last scope is the op itself
        del node.metadata_props[:]
        module = scopes[-1] if scopes else ""
        if wrapper and (module == wrapper or module.startswith(wrapper + ".")):
            module = module[len(wrapper) + 1 :]
        _tag(node, module or "scaoednet")


def prune_value_info(proto) -> int:
    """Keep one ``value_info`` entry per tensor a node makes (converters leave entries for tensors that no
    longer exist, and repeat others; at K = 5 they added 0.8 MB to a 7 MB file). Returns how many went."""
    made = {o for n in proto.graph.node for o in n.output}
    graph_io = {v.name for v in (*proto.graph.input, *proto.graph.output)}
    seen, keep = set(), []
    for v in proto.graph.value_info:
        if v.name in made and v.name not in graph_io and v.name not in seen:
            seen.add(v.name)
            keep.append(v)
    dropped = len(proto.graph.value_info) - len(keep)
    del proto.graph.value_info[:]
    proto.graph.value_info.extend(keep)
    return dropped


# ---------------------------------------------------------------------------- NFAE's epsilon
def weight_tensors(proto) -> list:
    """(name, TensorProto) for every initializer and Constant-node tensor of the main graph."""
    out = [(i.name, i) for i in proto.graph.initializer]
    for node in proto.graph.node:
        if node.op_type == "Constant":
            for a in node.attribute:
                if a.name == "value" and a.HasField("t"):
                    out.append((node.output[0], a.t))
    return out


def tensor_types(proto, strict: bool = True) -> dict[str, int]:
    """The element type of every tensor of the graph: inputs, outputs and node outputs as ONNX shape
    inference finds them, and the weights. ``strict=False``: where inference fails, the types the graph
    itself records."""
    import onnx

    try:
        inferred = onnx.shape_inference.infer_shapes(proto)
    except Exception:
        if strict:
            raise
        inferred = proto
    types = {
        v.name: v.type.tensor_type.elem_type
        for v in (*inferred.graph.input, *inferred.graph.output, *inferred.graph.value_info)
    }
    types.update((name, t.data_type) for name, t in weight_tensors(proto))
    return types


def count_nfae_epsilons(proto) -> int:
    """Add nodes that add NFAE's 1e-16 (two per NFAE: one per sigmoid gate)."""
    from onnx import numpy_helper

    eps32 = float(np.float32(NFAE_EPS))
    consts = {
        name: float(numpy_helper.to_array(t).reshape(-1)[0])
        for name, t in weight_tensors(proto)
        if math.prod(t.dims) == 1
    }
    return sum(
        1
        for node in proto.graph.node
        if node.op_type == "Add" and any(math.isclose(consts.get(i, 0.0), eps32, rel_tol=1e-6) for i in node.input)
    )


def check_nfae_epsilon(proto, stages: int) -> None:
    found, expected = count_nfae_epsilons(proto), 2 * stages  # u_ini's NFAE + one per u-Net stage
    if found < expected:
        raise VerificationError(
            f"NFAE's '+ 1e-16' is missing from the graph ({found} of {expected} found): an optimiser removed it, "
            "and a constant channel would give NaN"
        )


# ---------------------------------------------------------------------------- reference runs
def quiet_polygraphy() -> None:
    """polygraphy logs every session and graph edit it makes; our commands print their own summaries."""
    from polygraphy.logger import G_LOGGER

    G_LOGGER.module_severity = G_LOGGER.ERROR


def all_tensors(proto, x: np.ndarray) -> dict[str, np.ndarray]:
    """Every tensor of ``proto`` on input ``x`` (ONNX Runtime CPU, all tensors marked as outputs by polygraphy's
    ``ModifyOutputs``), as float32 arrays by name."""
    import onnxruntime as ort
    from polygraphy import constants
    from polygraphy.backend.onnx import ModifyOutputs

    quiet_polygraphy()
    marked = ModifyOutputs(proto, outputs=constants.MARK_ALL, copy=True)()
    options = ort.SessionOptions()
    options.log_severity_level = 3
    session = ort.InferenceSession(marked.SerializeToString(), options, providers=["CPUExecutionProvider"])
    first = session.get_inputs()[0]
    dtype = np.float16 if first.type == "tensor(float16)" else np.float32
    names = [o.name for o in session.get_outputs()]
    outs = session.run(None, {first.name: np.ascontiguousarray(x, dtype=dtype)})
    return {
        n: np.asarray(o, dtype=np.float32) if np.issubdtype(np.asarray(o).dtype, np.floating) else np.asarray(o)
        for n, o in zip(names, outs)
    }


# ---------------------------------------------------------------------------- artifacts
@dataclass
class Artifact:
    path: Path
    kind: str  # "onnx", "engine" or "openvino"
    precision: str
    metadata: dict[str, str] = field(default_factory=dict)  # scaoed.* (ONNX, IR rt_info) or the engine's sidecar
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
        meta = metadata_of(model)
        dims = [
            d.dim_value if d.HasField("dim_value") else (d.dim_param or "?")
            for d in model.graph.input[0].type.tensor_type.shape.dim
        ]
        outputs = [o.name for o in model.graph.output]
        found = precision or meta.get("precision") or infer_onnx_precision(model)
        return Artifact(path, "onnx", found, meta, dims, outputs)
    if suffix in ENGINE_SUFFIXES:
        if path.stat().st_size == 0:
            raise ScaoedError(f"{path}: empty engine file")
        sidecar = path.with_suffix(".json")
        meta = {}
        if sidecar.is_file():
            meta = {
                k: str(v)
                for k, v in read_json_object(sidecar, "engine sidecar").items()
                if not isinstance(v, (dict, list))
            }
        return Artifact(path, "engine", precision or meta.get("precision", "fp32"), meta, [], [])
    if suffix in OPENVINO_SUFFIXES:
        model = read_ir(path)
        meta = ir_metadata(model)
        shape = model.inputs[0].get_partial_shape()
        dims = [shape[i].get_length() if shape[i].is_static else "?" for i in range(shape.rank.get_length())]
        outputs = [o.get_any_name() for o in model.outputs]
        return Artifact(path, "openvino", precision or meta.get("precision", "fp32"), meta, dims, outputs)
    raise ScaoedError(
        f"{path}: unknown artifact type {suffix or '(no extension)'}; expected .onnx, .engine/.plan or an OpenVINO .xml"
    )
