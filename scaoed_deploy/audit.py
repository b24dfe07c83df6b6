"""Read-back audit of an ONNX artifact: what the file really computes, in which precision, with which weights.

Nothing here trusts what a conversion said it did. From the file alone:

- every compute node by the precision it computes in, and op type: ``int8`` for a
  node whose float inputs all come through DequantizeLinear (what TensorRT fuses
  into an INT8 kernel; Q/DQ nodes themselves are counted apart), else the element
  type of its float output (``float32``, ``float16``, ``bfloat16``);
- the float32 compute nodes by name and by module (the ``scaoed.module`` tag);
- Cast and Q/DQ counts; nodes that only move or reshape data are not compute;
- the weights: initializers (and Constant tensors), unique by content, with values
  and bytes, and every group of tensors that store the same values more than once;
- the file size.

``check_islands`` compares the float32 compute nodes with the islands a conversion
chose; ``check_weights`` refuses a weight stored twice. ``dedupe_weights`` is the
repair that conversions apply before they write: consumers of identical tensors
are pointed at one of them.
"""

from __future__ import annotations

import hashlib
import math
import re
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np

from .artifact import module_of, tensor_types, weight_tensors
from .errors import VerificationError
from .ir import read_ir

#: Ops that move, reshape or describe data rather than compute on it.
NON_COMPUTE = frozenset(
    """
Cast Constant ConstantOfShape Shape Size Reshape Flatten Squeeze Unsqueeze Transpose Concat Split Slice Gather
Identity DepthToSpace SpaceToDepth Expand Tile Pad QuantizeLinear DequantizeLinear
""".split()
)
#: Weights smaller than this many values (scalars, Q/DQ scales, shapes) are not counted as duplicates.
DUPLICATE_MIN_VALUES = 16
_WEIGHTED = frozenset({"Conv", "ConvTranspose", "Gemm", "MatMul"})  # (data, weight[, bias])
_FLOAT_NAMES = {1: "float32", 10: "float16", 16: "bfloat16", 11: "float64"}
#: The same for an OpenVINO IR (FakeQuantize and Convert are counted apart, as Q/DQ and Cast are).
IR_NON_COMPUTE = frozenset(
    """
Parameter Result Constant Convert FakeQuantize ShapeOf Reshape Squeeze Unsqueeze Transpose Concat Split VariadicSplit
StridedSlice Slice Gather DepthToSpace SpaceToDepth Broadcast Tile Pad Range
""".split()
)
_IR_FLOAT = {"f32": "float32", "f16": "float16", "bf16": "bfloat16", "f64": "float64"}


def exact_patterns(names: list[str]) -> list[str]:
    """Regular expressions that match exactly ``names``: ModelOpt reads ``nodes_to_exclude`` entries as
    patterns with ``re.match`` (a prefix match), so a bare ``node_mean`` would also take ``node_mean_1``."""
    return [f"^{re.escape(n)}$" for n in names]


def _tensor_key(tensor) -> tuple:
    from onnx import numpy_helper

    arr = numpy_helper.to_array(tensor)
    return tensor.data_type, tuple(tensor.dims), hashlib.sha256(arr.tobytes()).hexdigest()


def dedupe_weights(proto) -> int:
    """Point every consumer of an initializer whose values another initializer already holds at that one,
    and drop the copies. Returns the number of initializers removed."""
    keep: dict[tuple, str] = {}
    rename: dict[str, str] = {}
    graph_inputs = {i.name for i in proto.graph.input}
    for init in proto.graph.initializer:
        if init.name in graph_inputs:
            continue  # an overridable input, not a plain weight
        key = _tensor_key(init)
        if key in keep:
            rename[init.name] = keep[key]
        else:
            keep[key] = init.name
    if not rename:
        return 0
    for node in proto.graph.node:
        for i, name in enumerate(node.input):
            if name in rename:
                node.input[i] = rename[name]
    outputs = {o.name for o in proto.graph.output}
    kept = [i for i in proto.graph.initializer if i.name not in rename or i.name in outputs]
    del proto.graph.initializer[:]
    proto.graph.initializer.extend(kept)
    drop = set(rename)
    vi = [v for v in proto.graph.value_info if v.name not in drop]
    del proto.graph.value_info[:]
    proto.graph.value_info.extend(vi)
    return len(rename)


@dataclass
class Audit:
    compute: dict[str, dict[str, int]] = field(default_factory=dict)  # precision -> {op_type: count}
    float32_nodes: list[str] = field(default_factory=list)
    float32_by_module: dict[str, int] = field(default_factory=dict)
    casts: int = 0
    quantize: int = 0
    dequantize: int = 0
    weights: dict = field(default_factory=dict)  # tensors, unique, values, bytes
    duplicated_weights: list[list[str]] = field(default_factory=list)
    file_bytes: int | None = None
    nodes: list[tuple[str, str, str]] = field(default_factory=list, repr=False)  # (name, op_type, precision)

    def totals(self) -> dict[str, int]:
        return {p: sum(ops.values()) for p, ops in self.compute.items()}

    def to_dict(self) -> dict:
        d = asdict(self)
        d.pop("nodes")  # thousands of rows: the counts above say the same
        return {**d, "totals": self.totals()}

    def line(self) -> str:
        return audit_line(self.to_dict())


def audit_line(d: dict) -> str:
    """One line from an audit's dict: compute nodes per precision, casts, Q/DQ, unique weights, file size."""
    t = ", ".join(f"{n} {p}" for p, n in d["totals"].items())
    w = d["weights"]
    dup = f", {len(d['duplicated_weights'])} stored more than once" if d["duplicated_weights"] else ""
    size = f"; file {d['file_bytes'] / 1e6:.2f} MB" if d.get("file_bytes") is not None else ""
    fp32 = d["totals"].get("float32", 0)
    modules = sorted(d["float32_by_module"].items(), key=lambda kv: -kv[1])
    where = (
        (
            " (float32 in "
            + ", ".join(f"{m} {n}" for m, n in modules[:3])
            + (f", {len(modules) - 3} more modules" if len(modules) > 3 else "")
            + ")"
        )
        if fp32 and modules
        else ""
    )
    return (
        f"compute nodes {t}{where}; {d['casts']} Cast, {d['quantize']} Q / {d['dequantize']} DQ; "
        f"{w['unique']} unique weights ({w['values'] / 1e6:.2f} M values, {w['bytes'] / 1e6:.2f} MB){dup}{size}"
    )


def audit(model: str | Path | object) -> Audit:
    """The audit of an ONNX file (or ModelProto: then no file size)."""
    import onnx

    file_bytes = None
    if isinstance(model, (str, Path)):
        file_bytes = Path(model).stat().st_size
        proto = onnx.load(str(model))
    else:
        proto = model
    types = tensor_types(proto)
    producer = {o: n for n in proto.graph.node for o in n.output}
    a = Audit(file_bytes=file_bytes)
    for node in proto.graph.node:
        op = node.op_type
        if op == "Cast":
            a.casts += 1
        elif op == "QuantizeLinear":
            a.quantize += 1
        elif op == "DequantizeLinear":
            a.dequantize += 1
        if op in NON_COMPUTE:
            continue
        float_inputs = [i for i in node.input if i and types.get(i) in _FLOAT_NAMES]
        operands = float_inputs[:2] if op in _WEIGHTED else float_inputs  # a bias stays in float
        if operands and all(
            producer.get(i) is not None and producer[i].op_type == "DequantizeLinear" for i in operands
        ):
            precision = "int8"
        else:
            out_type = next((types[o] for o in node.output if types.get(o) in _FLOAT_NAMES), None)
            if out_type is None:  # a comparison or shape computation: judge by its float inputs
                out_type = next((types[i] for i in float_inputs), None)
            if out_type is None:
                continue
            precision = _FLOAT_NAMES[out_type]
        a.nodes.append((node.name, op, precision))
        a.compute.setdefault(precision, {})
        a.compute[precision][op] = a.compute[precision].get(op, 0) + 1
        if precision == "float32":
            a.float32_nodes.append(node.name)
            module = module_of(node) or "(untagged)"
            a.float32_by_module[module] = a.float32_by_module.get(module, 0) + 1
    _count_weights(
        a,
        (
            (name, _tensor_key(t), math.prod(t.dims), onnx.helper.tensor_dtype_to_np_dtype(t.data_type).itemsize)
            for name, t in weight_tensors(proto)
        ),
    )
    return a


def _count_weights(a: Audit, tensors, stored_at: Callable[[str], object] = lambda name: name) -> None:
    """Fill ``a.weights`` and ``a.duplicated_weights`` from (name, content key, values, bytes per value) rows.
    ``stored_at``: where a tensor lies in the file, so that equal tensors stored once are not duplicates."""
    groups: dict[tuple, list[str]] = {}
    sizes: dict[tuple, int] = {}
    values = nbytes = 0
    for name, key, n, itemsize in tensors:
        if key not in groups:
            values += n
            nbytes += n * itemsize
            sizes[key] = n
        groups.setdefault(key, []).append(name)
    a.weights = {
        "tensors": sum(len(g) for g in groups.values()),
        "unique": len(groups),
        "values": values,
        "bytes": nbytes,
    }
    a.duplicated_weights = [
        g
        for k, g in groups.items()
        if len(g) > 1 and sizes[k] >= DUPLICATE_MIN_VALUES and len({stored_at(n) for n in g}) > 1
    ]


# Ops whose outputs are some of their input values (moved, reshaped, or the largest/smallest of them): a
# quantized input stays on its 8-bit grid, and OpenVINO runs the consumer in int8 (a spatial attention conv reads
# concat(FakeQuantize(mean), ReduceMax(...)) and runs u8 x i8).
_IR_MOVES = frozenset(
    "Reshape Transpose Squeeze Unsqueeze DepthToSpace SpaceToDepth StridedSlice Slice Pad "
    "ReduceMax ReduceMin MaxPool".split()
)
_IR_DECOMPRESS = frozenset({"Convert", "Multiply", "Subtract"})  # an 8-bit weight widened and scaled


def _ir_int8_operand(value, weight: bool, depth: int = 0) -> bool:
    """Whether a tensor reaches its consumer through FakeQuantize (then maybe moved, reshaped or concatenated),
    or, for a ``weight``, is an 8-bit constant widened and scaled (NNCF's compressed weights)."""
    node = value.get_node()
    kind = node.get_type_name()
    if kind == "FakeQuantize":
        return True
    if kind == "Constant":
        return weight and node.get_element_type().get_type_name() in ("i8", "u8")
    if depth > 8 or not node.get_input_size():
        return False
    if kind == "Concat":
        return all(_ir_int8_operand(node.input_value(i), weight, depth + 1) for i in range(node.get_input_size()))
    if kind in _IR_MOVES or (weight and kind in _IR_DECOMPRESS):
        return _ir_int8_operand(node.input_value(0), weight, depth + 1)
    return False


def audit_ir(path: str | Path) -> Audit:
    """The audit of an OpenVINO IR, read back from its files (see ``audit_ov_model``), with the .xml + .bin size."""
    import xml.etree.ElementTree as ET

    path = Path(path)
    # Where each constant lies in the .bin: OpenVINO's serializer stores equal constants once, so a tensor
    # is "stored more than once" only when equal values sit at two offsets.
    offsets = {
        layer.get("name"): (data.get("offset"), data.get("size"))
        for layer in ET.parse(path).getroot().iter("layer")
        if layer.get("type") == "Const"
        for data in layer.iter("data")
    }
    a = audit_ov_model(read_ir(path), offsets)
    a.file_bytes = path.stat().st_size + path.with_suffix(".bin").stat().st_size
    return a


def audit_ov_model(model, offsets: dict[str, tuple] | None = None) -> Audit:
    """An ``openvino.Model``'s compute layers by precision (``int8`` for a layer whose data and weights both
    arrive through FakeQuantize or as 8-bit constants), FakeQuantize and Convert counts, constants (unique
    by content; ``offsets``: where each lies in the .bin, so that equal constants stored once count once)."""
    a = Audit()
    constants = []
    for op in model.get_ordered_ops():
        kind, name = op.get_type_name(), op.get_friendly_name()
        if kind == "Convert":
            a.casts += 1
        elif kind == "FakeQuantize":
            a.quantize += 1
        if kind == "Constant":
            data = op.get_data()
            if data.size >= DUPLICATE_MIN_VALUES:
                key = (str(data.dtype), data.shape, hashlib.sha256(np.ascontiguousarray(data).tobytes()).hexdigest())
                constants.append((name, key, data.size, data.itemsize))
            continue
        if kind in IR_NON_COMPUTE:
            continue
        weighted = kind in ("Convolution", "GroupConvolution", "MatMul")
        operands = [op.input_value(i) for i in range(min(op.get_input_size(), 2 if weighted else op.get_input_size()))]
        if weighted and all(_ir_int8_operand(v, weight=i == 1) for i, v in enumerate(operands)):
            precision = "int8"
        else:
            precision = _IR_FLOAT.get(op.get_output_element_type(0).get_type_name(), "")
            if not precision:
                continue
        a.nodes.append((name, kind, precision))
        a.compute.setdefault(precision, {})
        a.compute[precision][kind] = a.compute[precision].get(kind, 0) + 1
        if precision == "float32":
            a.float32_nodes.append(name)
    _count_weights(a, constants, lambda n: (offsets or {}).get(n, n))
    return a


def check_weights(a: Audit, what: str) -> None:
    if a.duplicated_weights:
        g = a.duplicated_weights[0]
        raise VerificationError(
            f"{what} stores {len(a.duplicated_weights)} weight tensor(s) more than once "
            f"(first: {', '.join(g[:3])}{' ...' if len(g) > 3 else ''})"
        )


def _require_same(got: set[str], want: set[str], what: str, extra: str, missing: str) -> None:
    surplus, lacking = sorted(got - want), sorted(want - got)
    parts = [
        f"{len(names)} {label} (first: {', '.join(names[:3])})"
        for names, label in ((surplus, extra), (lacking, missing))
        if names
    ]
    if parts:
        raise VerificationError(f"{what}: " + "; ".join(parts))


def check_islands(a: Audit, islands: list[dict], what: str) -> None:
    """The float32 compute nodes must be exactly the compute nodes among ``islands`` ({node, op_type, ...})."""
    _require_same(
        set(a.float32_nodes),
        {i["node"] for i in islands if i.get("op_type") not in NON_COMPUTE},
        what,
        "float32 node(s) not among the islands",
        "island(s) not computed in float32",
    )


def check_int8_convs(a: Audit, kept: list[dict], what: str) -> None:
    """INT8: the convolutions computed in float32 must be exactly the ones kept in FP32 on purpose."""
    _require_same(
        {n for n, op, p in a.nodes if op in ("Conv", "Convolution") and p == "float32"},
        {k["node"] for k in kept if k.get("op_type") in (None, "", "Conv", "Convolution")},
        what,
        "convolution(s) left in float32 unasked",
        "kept convolution(s) quantized anyway",
    )
