"""TensorRT lint: does a (precision) ONNX obey TensorRT's rules? No GPU and no TensorRT needed.

The rules, as TensorRT's documentation states them:
- ONNX opsets 9 to 24 of the default domain; other domains need plugins;
- operators from the ONNX-TensorRT support matrix (``MATRIX``, the newest published:
  TensorRT 10.15; TensorRT 11 publishes none of its own yet); those it marks
  unsupported (ConvInteger, QLinearConv, DynamicQuantizeLinear, ...) are errors,
  operators missing from it are warnings; a supported operator computing in a type
  its row does not list (bfloat16 NonZero, say) is an error;
- explicit quantization: Q/DQ scales and zero points are initializers (or
  constants), zero points are 0 (TensorRT quantizes symmetrically) and signed
  8-bit for INT8, scales positive and finite; per-channel scales run along a
  valid axis whose length they match (axis 0, output channels, for conv weights);
- convolution weights are initializers (possibly through a DequantizeLinear);
- no float64 tensors (TensorRT has no DOUBLE type in strongly typed networks);
- every dynamic input dimension is covered by the optimisation profile, and the
  profile agrees with the static ones.

Each violation names the node (or tensor) it was found at.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

import numpy as np

from ..artifact import tensor_types, weight_tensors

#: The operator matrix this lint follows: onnx-tensorrt's docs/operators.md, the newest published one.
MATRIX = "onnx-tensorrt docs/operators.md for TensorRT 10.15"
#: "TensorRT 10.15 supports operators in the inclusive range of opset 9 to opset 24."
TRT_MIN_OPSET, TRT_MAX_OPSET = 9, 24

#: Operators the matrix marks supported (Y).
SUPPORTED_OPS = frozenset(
    """
Abs Acos Acosh Add And ArgMax ArgMin Asin Asinh Atan Atanh Attention AveragePool BatchNormalization BlackmanWindow Cast
CastLike Ceil Celu Clip Concat Constant ConstantOfShape Conv ConvTranspose Cos Cosh CumSum DeformConv DepthToSpace
DequantizeLinear Div Dropout Einsum Elu Equal Erf Exp Expand EyeLike Flatten Floor Gather GatherElements GatherND Gelu
Gemm GlobalAveragePool GlobalLpPool GlobalMaxPool Greater GreaterOrEqual GridSample GroupNormalization GRU
HammingWindow HannWindow HardSigmoid HardSwish Hardmax Identity If ImageScaler InstanceNormalization IsInf IsNaN
LayerNormalization LeakyRelu Less LessOrEqual Log LogSoftmax Loop LRN LSTM LpNormalization LpPool MatMul Max MaxPool
Mean MeanVarianceNormalization Min Mish Mod Mul Neg NonMaxSuppression NonZero Not OneHot Or Pad ParametricSoftplus Pow
PRelu QuantizeLinear RandomNormal RandomNormalLike RandomUniform RandomUniformLike Range Reciprocal ReduceL1 ReduceL2
ReduceLogSum ReduceLogSumExp ReduceMax ReduceMean ReduceMin ReduceProd ReduceSum ReduceSumSquare Relu Reshape Resize
ReverseSequence RMSNormalization RNN RoiAlign RotaryEmbedding Round STFT ScaledTanh Scan Scatter ScatterElements
ScatterND Selu Shape Shrink Sigmoid Sign Sin Sinh Size Slice Softmax Softplus Softsign SpaceToDepth Split Sqrt Squeeze
Sub Sum Tan Tanh TensorScatter ThresholdedRelu Tile TopK Transpose Trilu Unsqueeze Upsample Where Xor
""".split()
)

#: Supported operators whose matrix row lists no BF16 (and, for STFT, no FP16): a strongly typed network
#: cannot run them in that type.
NO_BF16 = frozenset(
    "BlackmanWindow DeformConv GridSample HammingWindow HannWindow Mish NonMaxSuppression NonZero RoiAlign STFT".split()
)
NO_FP16 = frozenset({"STFT"})

#: Operators the matrix marks unsupported (N).
UNSUPPORTED_OPS = frozenset(
    """
AffineGrid Bernoulli BitShift BitwiseAnd BitwiseNot BitwiseOr BitwiseXor Col2Im CenterCropPad Compress
ConcatFromSequence ConvInteger DFT Det DynamicQuantizeLinear ImageDecoder MatMulInteger MaxRoiPool MaxUnpool
MelWeightMatrix Multinomial NegativeLogLikelihoodLoss Optional OptionalGetElement OptionalHasElement QLinearConv
QLinearMatMul RegexFullMatch SequenceAt SequenceConstruct SequenceEmpty SequenceErase SequenceInsert SequenceLength
SequenceMap SoftmaxCrossEntropyLoss SplitToSequence StringConcat StringNormalizer StringSplit TfIdfVectorizer Unique
""".split()
)


@dataclass
class Violation:
    rule: str
    where: str  # node name, or tensor name
    message: str
    severity: str = "error"  # or "warning"

    def __str__(self) -> str:
        return f"[{self.severity}] {self.rule} at {self.where}: {self.message}"

    def to_dict(self) -> dict:
        return asdict(self)


def _constants(model) -> dict[str, np.ndarray]:
    from onnx import numpy_helper

    return {name: numpy_helper.to_array(t) for name, t in weight_tensors(model)}


def _attr(node, name, default=None):
    from onnx import helper

    for a in node.attribute:
        if a.name == name:
            return helper.get_attribute_value(a)
    return default


def _name(node) -> str:
    return node.name or f"{node.op_type}({', '.join(node.output)})"


def _lint_opsets(model) -> list[Violation]:
    out = []
    for imp in model.opset_import:
        if imp.domain in ("", "ai.onnx"):
            if not TRT_MIN_OPSET <= imp.version <= TRT_MAX_OPSET:
                out.append(
                    Violation(
                        "opset", "model", f"opset {imp.version} is outside {TRT_MIN_OPSET}-{TRT_MAX_OPSET} ({MATRIX})"
                    )
                )
        elif imp.domain not in ("ai.onnx.ml",):
            out.append(Violation("opset", "model", f"custom domain '{imp.domain}' needs a TensorRT plugin", "warning"))
    return out


def _lint_ops(model) -> list[Violation]:
    from onnx import TensorProto

    out = []
    types = tensor_types(model, strict=False)  # where inference fails, the type rule has less to go on
    for node in model.graph.node:
        if node.domain not in ("", "ai.onnx"):
            out.append(
                Violation(
                    "unsupported-op",
                    _name(node),
                    f"{node.domain}::{node.op_type} is not a standard ONNX op; TensorRT needs a plugin",
                )
            )
        elif node.op_type in UNSUPPORTED_OPS:
            out.append(Violation("unsupported-op", _name(node), f"{node.op_type} is marked unsupported ({MATRIX})"))
        elif node.op_type not in SUPPORTED_OPS:
            out.append(Violation("unsupported-op", _name(node), f"{node.op_type} is not in {MATRIX}", "warning"))
        else:
            computed = {types.get(o) for o in node.output}
            for type_, refused, name in (
                (TensorProto.BFLOAT16, NO_BF16, "BF16"),
                (TensorProto.FLOAT16, NO_FP16, "FP16"),
            ):
                if type_ in computed and node.op_type in refused:
                    out.append(
                        Violation("unsupported-type", _name(node), f"{node.op_type} has no {name} support ({MATRIX})")
                    )
    return out


def _lint_qdq(model) -> list[Violation]:
    out = []
    consts = _constants(model)
    consumers: dict[str, list] = {}
    for node in model.graph.node:
        for i, name in enumerate(node.input):
            consumers.setdefault(name, []).append((node, i))
    for node in model.graph.node:
        if node.op_type not in ("QuantizeLinear", "DequantizeLinear"):
            continue
        where = _name(node)
        scale_name = node.input[1] if len(node.input) > 1 else ""
        zp_name = node.input[2] if len(node.input) > 2 else ""
        if scale_name not in consts:
            out.append(Violation("qdq-constant", where, f"scale '{scale_name}' must be an initializer or constant"))
            continue
        scale = consts[scale_name].astype(np.float64)
        if not np.all(np.isfinite(scale)) or np.any(scale <= 0):
            out.append(
                Violation("qdq-scale", where, f"scales must be positive and finite (min {np.nanmin(scale):.3g})")
            )
        if zp_name:
            if zp_name not in consts:
                out.append(
                    Violation("qdq-constant", where, f"zero point '{zp_name}' must be an initializer or constant")
                )
            else:
                zp = consts[zp_name]
                if zp.dtype == np.uint8:
                    out.append(Violation("qdq-type", where, "uint8 (U8) quantization: TensorRT takes signed INT8 only"))
                if np.any(zp.astype(np.int64) != 0):
                    out.append(
                        Violation(
                            "qdq-zero-point",
                            where,
                            f"zero point {zp.reshape(-1)[:4].tolist()} must be 0: TensorRT quantizes symmetrically",
                        )
                    )
        if scale.size > 1:
            out += _lint_axis(node, where, scale, consts, consumers)
    return out


def _lint_axis(node, where, scale, consts, consumers) -> list[Violation]:
    axis = _attr(node, "axis", 1)
    data = consts.get(node.input[0])
    out = []
    if data is not None:
        ax = axis if axis >= 0 else axis + data.ndim
        if not 0 <= ax < data.ndim or data.shape[ax] != scale.size:
            out.append(
                Violation(
                    "qdq-axis",
                    where,
                    f"per-channel axis {axis} does not match {scale.size} scales for shape {list(data.shape)}",
                )
            )
        for consumer, idx in consumers.get(node.output[0], []):
            if (
                consumer.op_type in ("Conv", "ConvTranspose")
                and idx == 1
                and ax != (1 if consumer.op_type == "ConvTranspose" else 0)
            ):
                out.append(
                    Violation(
                        "qdq-axis", where, f"conv weights must be quantized along output channels, not axis {axis}"
                    )
                )
    elif node.op_type == "QuantizeLinear":
        out.append(
            Violation(
                "qdq-axis",
                where,
                "per-channel quantization of an activation: TensorRT expects per-tensor scales",
                "warning",
            )
        )
    return out


def _lint_conv_weights(model) -> list[Violation]:
    consts = _constants(model)
    producers = {o: n for n in model.graph.node for o in n.output}
    out = []
    for node in model.graph.node:
        if node.op_type in ("Conv", "ConvTranspose") and len(node.input) > 1:
            w = node.input[1]
            src = producers.get(w)
            dq_in = src.input[0] if src is not None and src.op_type == "DequantizeLinear" else None
            q = producers.get(dq_in) if dq_in else None
            # an initializer; a DequantizeLinear of an INT8 initializer; or a Q/DQ pair on an fp32 initializer,
            # which TensorRT folds into quantized weights at build time
            ok = (
                w in consts
                or dq_in in consts
                or (q is not None and q.op_type == "QuantizeLinear" and q.input[0] in consts)
            )
            if not ok:
                out.append(
                    Violation(
                        "conv-weights",
                        _name(node),
                        f"weights '{w}' must be an initializer "
                        "(or a DequantizeLinear of one, possibly through a QuantizeLinear)",
                    )
                )
    return out


def _lint_float64(model) -> list[Violation]:
    from onnx import TensorProto

    out = []
    for init in model.graph.initializer:
        if init.data_type == TensorProto.DOUBLE:
            out.append(Violation("float64", init.name, "float64 initializer: TensorRT has no DOUBLE type"))
    for v in (*model.graph.input, *model.graph.output, *model.graph.value_info):
        if v.type.tensor_type.elem_type == TensorProto.DOUBLE:
            out.append(Violation("float64", v.name, "float64 tensor: TensorRT has no DOUBLE type"))
    for node in model.graph.node:
        if node.op_type == "Cast" and _attr(node, "to") == TensorProto.DOUBLE:
            out.append(Violation("float64", _name(node), "Cast to float64"))
    return out


def _lint_profile(model, profile: dict | None) -> list[Violation]:
    """``profile``: {input name: {"min": shape, "opt": shape, "max": shape}}."""
    out = []
    for inp in model.graph.input:
        dims = [d.dim_value if d.HasField("dim_value") else None for d in inp.type.tensor_type.shape.dim]
        shapes = (profile or {}).get(inp.name)
        if shapes is None:
            if any(d is None for d in dims):
                out.append(
                    Violation("profile", inp.name, f"dynamic dims {dims} but no optimisation profile covers them")
                )
            continue
        for key in ("min", "opt", "max"):
            shape = list(shapes[key])
            if len(shape) != len(dims):
                out.append(
                    Violation(
                        "profile", inp.name, f"profile {key} {shape} has rank {len(shape)}, input has {len(dims)}"
                    )
                )
                continue
            for i, (d, s) in enumerate(zip(dims, shape)):
                if d is not None and d != s:
                    out.append(
                        Violation("profile", inp.name, f"profile {key} dim {i} = {s} but the input is static {d}")
                    )
        if not all(a <= b <= c for a, b, c in zip(shapes["min"], shapes["opt"], shapes["max"])):
            out.append(Violation("profile", inp.name, "profile shapes must satisfy min <= opt <= max"))
    return out


def lint(model, profile: dict | None = None) -> list[Violation]:
    """Every violation of TensorRT's rules (``MATRIX``) in ``model`` (an onnx.ModelProto)."""
    return (
        _lint_opsets(model)
        + _lint_ops(model)
        + _lint_qdq(model)
        + _lint_conv_weights(model)
        + _lint_float64(model)
        + _lint_profile(model, profile)
    )


def errors(violations: list[Violation]) -> list[Violation]:
    return [v for v in violations if v.severity == "error"]
