"""Low-precision emulation on CPU: rounding where tensors are made, and the naive-FP16 NaN it must expose."""

from __future__ import annotations

import numpy as np
import onnx
import onnxruntime as ort
import pytest
from onnx import TensorProto, helper

from scaoed_deploy.precision.emulate import emulate, low_precision_tensors, original_node


def _run(model, x):
    sess = ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"])
    return sess.run(None, {"x": x})[0]


def _cast_graph(lp: int):
    """x (fp32) -> Cast(lp) -> Mul by itself (in lp) -> Cast(fp32)."""
    nodes = [
        helper.make_node("Cast", ["x"], ["a"], to=lp, name="to_lp"),
        helper.make_node("Mul", ["a", "a"], ["b"], name="square"),
        helper.make_node("Cast", ["b"], ["y"], to=TensorProto.FLOAT, name="to_fp32"),
    ]
    g = helper.make_graph(
        nodes,
        "g",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [4])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [4])],
    )
    return helper.make_model(g, opset_imports=[helper.make_opsetid("", 18)])


@pytest.mark.parametrize("lp, dtype", [(TensorProto.FLOAT16, np.float16), (TensorProto.BFLOAT16, "bfloat16")])
def test_rounds_like_numpy_at_every_low_precision_tensor(lp, dtype):
    import ml_dtypes

    np_dtype = np.dtype(ml_dtypes.bfloat16) if dtype == "bfloat16" else np.dtype(dtype)
    model = _cast_graph(lp)
    assert set(low_precision_tensors(model)) == {"a", "b"}
    x = np.array([300.0, 1e-4, 1.0009765625, 3.3], np.float32)
    got = _run(emulate(model), x)
    a = x.astype(np_dtype)
    with np.errstate(over="ignore"):
        expected = (a.astype(np.float32) * a.astype(np.float32)).astype(np_dtype).astype(np.float32)
    np.testing.assert_array_equal(got, expected)
    if lp == TensorProto.FLOAT16:
        assert np.isinf(got[0]) and got[1] == 0.0  # 90000 overflows float16, 1e-8 underflows
    emulated = emulate(model)
    assert all(v.type.tensor_type.elem_type == TensorProto.FLOAT for v in emulated.graph.output)
    assert {original_node(n.name) for n in emulated.graph.node} == {"to_lp", "square", "to_fp32"}


@pytest.fixture(scope="module")
def k1_export(random_k1_onnx):
    return onnx.load(str(random_k1_onnx))


def test_naive_fp16_gives_nan_in_nfae_under_emulation(k1_export):
    """The pitfall: NFAE's 1e-16 is 0 in float16, so a flat channel divides 0 by 0."""
    from onnxconverter_common import float16

    naive = float16.convert_float_to_float16(k1_export, keep_io_types=True, min_positive_val=0, max_finite_val=65504)
    sess = ort.InferenceSession(emulate(naive).SerializeToString(), providers=["CPUExecutionProvider"])
    black = np.zeros((1, 3, 32, 32), np.float32)
    assert not np.isfinite(sess.run(None, {"noisy": black})[0]).all()
