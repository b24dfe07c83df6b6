"""FP32 island selection: NFAE is found where it matters, plain layers are left alone."""

from __future__ import annotations

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper

from scaoed_deploy.precision.islands import select_islands


@pytest.fixture(scope="module")
def k2_export(k2_maps_onnx):
    """K = 2 (two NFAEs: u_ini's and the u-Net stage's), the session's shared export."""
    return onnx.load(str(k2_maps_onnx))


def test_nfae_becomes_an_fp32_island(k2_export):
    x = [np.random.default_rng(0).random((1, 3, 64, 64), dtype=np.float32)]
    islands = select_islands(k2_export, x, "fp16")
    modules = {i.module for i in islands}
    assert {"u_ini.nfae", "u_net.nfae"} <= modules
    nfae_ops = {i.op_type for i in islands if i.module == "u_ini.nfae"}
    assert {"Div", "Add", "Sigmoid", "ReduceMean"} <= nfae_ops  # the whole layer, not half of it
    eps_adds = [i for i in islands if i.op_type == "Add" and "underflows" in i.reason]
    assert len(eps_adds) == 4  # 1e-16 is 0 in float16: two per NFAE, two NFAEs
    # Nothing outside NFAE is flagged by its constants.
    assert all(i.module.endswith("nfae") for i in islands if "constant" in i.reason)


def test_bf16_keeps_the_epsilon_but_not_the_range_problem(k2_export):
    x = [np.random.default_rng(0).random((1, 3, 64, 64), dtype=np.float32)]
    islands = select_islands(k2_export, x, "bf16", data_max=float("inf"))
    assert not any("underflows" in i.reason for i in islands)


def test_a_model_without_trouble_has_no_islands():
    w = numpy_helper.from_array(np.random.default_rng(1).standard_normal((4, 3, 3, 3)).astype(np.float32) * 0.1, "w")
    graph = helper.make_graph(
        [
            helper.make_node("Conv", ["x", "w"], ["h"], name="conv", pads=[1, 1, 1, 1]),
            helper.make_node("Relu", ["h"], ["y"], name="relu"),
        ],
        "g",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 3, 8, 8])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 4, 8, 8])],
        [w],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 18)])
    assert select_islands(model, [np.random.default_rng(2).random((1, 3, 8, 8), dtype=np.float32)]) == []


def test_one_negligible_weight_does_not_make_an_island():
    from scaoed_deploy.precision.islands import FP16_MAX, FP16_SMALLEST, _constant_problem

    w = np.full(1000, 0.1, np.float32)
    w[0] = 1e-9
    assert _constant_problem(w, FP16_MAX, FP16_SMALLEST) is None
    w[:20] = 1e-9
    assert "underflows" in _constant_problem(w, FP16_MAX, FP16_SMALLEST)
    assert "underflows" in _constant_problem(np.array(1e-16, np.float32), FP16_MAX, FP16_SMALLEST)
