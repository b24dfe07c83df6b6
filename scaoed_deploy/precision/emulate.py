"""Run a float16/bfloat16 ONNX on a CPU as a GPU would: every low-precision tensor rounded where it is made.

ONNX Runtime's CPU provider has almost no float16 kernels on x86 (it silently
inserts casts and computes in float32, so only the weights' rounding shows) and
no bfloat16 convolution at all. ``emulate(model)`` rewrites the graph into one
that runs in float32 everywhere but rounds each float16/bfloat16 tensor, as it is
produced, through a Cast to that type and back: storage rounding, overflow to
Inf and underflow to 0 behave as in the low-precision engine, while arithmetic
inside each op is float32 (as TensorRT's tensor-core kernels accumulate).
The parity harness uses it for fp16/bf16 artifacts on CPU.
"""

from __future__ import annotations

import numpy as np

LOW = {"fp16": 10, "bf16": 16}  # onnx.TensorProto.FLOAT16, BFLOAT16
ROUND_SUFFIX, BACK_SUFFIX = "__emulated_round", "__emulated_back"


def original_node(name: str) -> str:
    """The node an emulation cast belongs to ('conv_3__emulated_back0' -> 'conv_3')."""
    for suffix in (ROUND_SUFFIX, BACK_SUFFIX):
        if suffix in name:
            return name.split(suffix)[0]
    return name


def low_precision_tensors(model) -> dict[str, int]:
    """Name -> elem type of every float16/bfloat16 tensor (after ONNX type inference)."""
    import onnx

    inferred = onnx.shape_inference.infer_shapes(model)
    g = inferred.graph
    types = {v.name: v.type.tensor_type.elem_type for v in (*g.value_info, *g.input, *g.output)}
    types.update({i.name: i.data_type for i in g.initializer})
    for n in g.node:  # Cast outputs are typed by their attribute even where inference stops
        if n.op_type == "Cast":
            to = next(a.i for a in n.attribute if a.name == "to")
            types[n.output[0]] = to
    return {k: v for k, v in types.items() if v in LOW.values()}


def emulate(model):
    """A float32 copy of ``model`` that rounds every low-precision tensor where it is produced."""
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    low = low_precision_tensors(model)
    out = onnx.ModelProto()
    out.CopyFrom(model)
    g = out.graph
    for init in g.initializer:
        if init.data_type in LOW.values():
            init.CopyFrom(numpy_helper.from_array(numpy_helper.to_array(init).astype(np.float32), init.name))
    nodes = []
    for n in g.node:
        if n.op_type == "Constant":
            for a in n.attribute:
                if a.name == "value" and a.t.data_type in LOW.values():
                    a.t.CopyFrom(numpy_helper.from_array(numpy_helper.to_array(a.t).astype(np.float32)))
            nodes.append(n)
            continue
        renamed = []
        for i, o in enumerate(n.output):
            if o in low:
                raw = f"{o}__emulated_raw"
                n.output[i] = raw
                renamed.append((i, raw, o, low[o]))
        if n.op_type == "Cast":
            for a in n.attribute:
                if a.name == "to" and a.i in LOW.values():
                    a.i = TensorProto.FLOAT  # the rounding follows as its own pair of casts
        nodes.append(n)
        for i, raw, name, lp in renamed:  # named after the node, so localisation can name the original
            nodes.append(
                helper.make_node("Cast", [raw], [f"{name}__emulated_lp"], to=lp, name=f"{n.name}{ROUND_SUFFIX}{i}")
            )
            nodes.append(
                helper.make_node(
                    "Cast", [f"{name}__emulated_lp"], [name], to=TensorProto.FLOAT, name=f"{n.name}{BACK_SUFFIX}{i}"
                )
            )
    del g.node[:]
    g.node.extend(nodes)
    for v in (*g.value_info, *g.input, *g.output):
        if v.type.tensor_type.elem_type in LOW.values():
            v.type.tensor_type.elem_type = TensorProto.FLOAT
    return out


def emulated_bytes(path) -> bytes:
    import onnx

    return emulate(onnx.load(str(path))).SerializeToString()
