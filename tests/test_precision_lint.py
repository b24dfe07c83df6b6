"""TensorRT lint: planted violations are caught and named; a clean export passes."""

from __future__ import annotations

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper

from scaoed_deploy.precision.lint import errors, lint

PROFILE = {"x": {"min": (1, 4, 8, 8), "opt": (1, 4, 16, 16), "max": (2, 4, 32, 32)}}


def qdq_conv(zero_point=0, zp_dtype=np.int8, scale=None, axis=0, weight_dtype=np.float32, opset=18, extra_nodes=()):
    """x -> Q/DQ (per tensor) -> Conv(DQ(per-channel weights)) -> y."""
    w = np.random.default_rng(0).standard_normal((4, 4, 3, 3)).astype(weight_dtype)
    scale = np.full(4, 0.02, np.float32) if scale is None else np.asarray(scale, np.float32)
    inits = [
        numpy_helper.from_array(np.round(w / 0.02).clip(-127, 127).astype(np.int8), "w_q"),
        numpy_helper.from_array(scale, "w_scale"),
        numpy_helper.from_array(np.full(scale.shape, zero_point, zp_dtype), "w_zp"),
        numpy_helper.from_array(np.array(0.05, np.float32), "x_scale"),
        numpy_helper.from_array(np.array(0, np.int8), "x_zp"),
    ]
    nodes = [
        helper.make_node("QuantizeLinear", ["x", "x_scale", "x_zp"], ["xq"], name="q_x"),
        helper.make_node("DequantizeLinear", ["xq", "x_scale", "x_zp"], ["xdq"], name="dq_x"),
        helper.make_node("DequantizeLinear", ["w_q", "w_scale", "w_zp"], ["w"], name="dq_w", axis=axis),
        helper.make_node("Conv", ["xdq", "w"], ["y"], name="conv", pads=[1, 1, 1, 1]),
        *extra_nodes,
    ]
    x = helper.make_tensor_value_info("x", TensorProto.FLOAT, ["n", 4, "h", "w"])
    y = helper.make_tensor_value_info("y", TensorProto.FLOAT, ["n", 4, "h", "w"])
    return helper.make_model(
        helper.make_graph(nodes, "g", [x], [y], inits), opset_imports=[helper.make_opsetid("", opset)]
    )


def rules(model, profile=PROFILE):
    return {(v.rule, v.where) for v in errors(lint(model, profile))}


def test_a_clean_qdq_graph_passes():
    model = qdq_conv()
    onnx.checker.check_model(model)
    assert errors(lint(model, PROFILE)) == []


def test_non_zero_zero_point_is_caught():
    assert ("qdq-zero-point", "dq_w") in rules(qdq_conv(zero_point=3))


def test_unsigned_quantization_is_caught():
    assert ("qdq-type", "dq_w") in rules(qdq_conv(zp_dtype=np.uint8))


def test_bad_scales_are_caught():
    assert ("qdq-scale", "dq_w") in rules(qdq_conv(scale=[0.02, -0.01, 0.02, 0.02]))
    assert ("qdq-scale", "dq_w") in rules(qdq_conv(scale=[0.02, np.inf, 0.02, 0.02]))


def test_per_channel_axis_must_follow_output_channels():
    found = {v.message for v in errors(lint(qdq_conv(axis=1), PROFILE)) if v.rule == "qdq-axis"}
    assert any("output channels" in m for m in found)
    assert ("qdq-axis", "dq_w") in rules(qdq_conv(scale=[0.02] * 3))  # 3 scales for 4 channels


def test_float64_initializer_is_caught():
    model = qdq_conv()
    model.graph.initializer.append(numpy_helper.from_array(np.zeros(3, np.float64), "unused_f64"))
    assert ("float64", "unused_f64") in rules(model)


def _unary(op, name, **attrs):
    return helper.make_node(op, ["y"], [name + "_out"], name=name, **attrs)


@pytest.mark.parametrize(
    "op",
    ["ConvInteger", "MatMulInteger", "QLinearConv", "DynamicQuantizeLinear", "Unique", "BitShift", "Compress", "Det"],
)
def test_ops_the_matrix_refuses_are_errors(op):
    node = helper.make_node(op, ["xq", "w_q"], [f"{op}_out"], name=f"{op.lower()}_node")
    found = [v for v in errors(lint(qdq_conv(extra_nodes=[node]), PROFILE)) if v.where == f"{op.lower()}_node"]
    assert [v.rule for v in found] == ["unsupported-op"]
    assert "TensorRT 10.15" in found[0].message  # the matrix is named


@pytest.mark.parametrize(
    "op",
    [
        "Reciprocal",
        "NonZero",
        "OneHot",
        "Mod",
        "IsInf",
        "Hardmax",
        "Shrink",
        "MeanVarianceNormalization",
        "RoiAlign",
        "RandomNormal",
    ],
)
def test_ops_the_current_matrix_allows_are_not_refused(op):
    # refused by TensorRT 8.4's matrix, supported since: no error and no warning at the node
    node = helper.make_node(op, ["y"], [f"{op}_out"], name=f"{op.lower()}_node")
    assert not [v for v in lint(qdq_conv(extra_nodes=[node]), PROFILE) if v.where == f"{op.lower()}_node"]


def test_an_op_outside_the_matrix_is_a_warning():
    node = helper.make_node("MadeUpOp", ["y"], ["m"], name="made_up")
    found = [v for v in lint(qdq_conv(extra_nodes=[node]), PROFILE) if v.where == "made_up"]
    assert [(v.rule, v.severity) for v in found] == [("unsupported-op", "warning")]


def _mish_model(dtype):
    x = helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 4])
    m = helper.make_tensor_value_info("m", dtype, [1, 4])
    nodes = [
        helper.make_node("Cast", ["x"], ["xc"], name="cast", to=dtype),
        helper.make_node("Mish", ["xc"], ["m"], name="mish"),
    ]
    return helper.make_model(helper.make_graph(nodes, "g", [x], [m]), opset_imports=[helper.make_opsetid("", 22)])


def test_an_op_in_a_type_its_row_does_not_list_is_an_error():
    # Mish's row lists FP32 and FP16, not BF16
    assert ("unsupported-type", "mish") in rules(_mish_model(TensorProto.BFLOAT16), profile={})
    assert ("unsupported-type", "mish") not in rules(_mish_model(TensorProto.FLOAT16), profile={})


def test_opset_outside_tensorrts_range():
    assert ("opset", "model") in rules(qdq_conv(opset=25))  # the matrix stops at 24
    assert ("opset", "model") not in rules(qdq_conv(opset=24))


def test_dynamic_dims_need_a_profile_that_fits():
    assert ("profile", "x") in rules(qdq_conv(), profile=None)
    wrong = {"x": {"min": (1, 3, 8, 8), "opt": (1, 3, 16, 16), "max": (1, 3, 32, 32)}}  # channel dim is 4
    assert ("profile", "x") in rules(qdq_conv(), profile=wrong)
    unordered = {"x": {"min": (1, 4, 64, 64), "opt": (1, 4, 16, 16), "max": (1, 4, 32, 32)}}
    assert ("profile", "x") in rules(qdq_conv(), profile=unordered)


def test_our_fp32_export_is_tensorrt_clean(random_k1_onnx):
    profile = {"noisy": {"min": (1, 3, 256, 256), "opt": (1, 3, 512, 512), "max": (1, 3, 1024, 1024)}}
    assert lint(onnx.load(str(random_k1_onnx)), profile) == []
