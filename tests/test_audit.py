"""Read-back audit: exact exclusions for ModelOpt, one copy of each weight, and FP32 compute that matches the
islands."""

from __future__ import annotations

import numpy as np
import onnx
import onnxruntime as ort
import pytest
from onnx import TensorProto, helper, numpy_helper

from scaoed_deploy.audit import audit, check_int8_convs, check_islands, check_weights, dedupe_weights, exact_patterns
from scaoed_deploy.errors import VerificationError


def prefix_graph(shared_weight: bool = False):
    """x -> conv (node_conv) -> mean (node_mean) ... conv (node_conv_1) -> mean (node_mean_1) -> y.
    Node names share prefixes, as the exporter's do; with ``shared_weight`` both convs read one weight
    through two initializers holding the same values (what AutoCast and PTQ made of ScaoedNet's shared stages)."""
    rng = np.random.default_rng(0)
    w = rng.standard_normal((16, 16, 3, 3)).astype(np.float32) * 0.1
    inits = [
        numpy_helper.from_array(w, "w0"),
        numpy_helper.from_array(w if shared_weight else w * 0.5, "w1"),
        numpy_helper.from_array(np.array([2, 3], np.int64), "axes"),
    ]
    nodes = [
        helper.make_node("Conv", ["x", "w0"], ["c0"], name="node_conv", pads=[1, 1, 1, 1]),
        helper.make_node("ReduceMean", ["c0", "axes"], ["m0"], name="node_mean", keepdims=1),
        helper.make_node("Sub", ["c0", "m0"], ["s0"], name="node_sub"),
        helper.make_node("Conv", ["s0", "w1"], ["c1"], name="node_conv_1", pads=[1, 1, 1, 1]),
        helper.make_node("ReduceMean", ["c1", "axes"], ["m1"], name="node_mean_1", keepdims=1),
        helper.make_node("Sub", ["c1", "m1"], ["y"], name="node_sub_1"),
    ]
    x = helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 16, 8, 8])
    y = helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 16, 8, 8])
    model = helper.make_model(
        helper.make_graph(nodes, "g", [x], [y], inits), opset_imports=[helper.make_opsetid("", 19)]
    )
    model.ir_version = 9
    onnx.checker.check_model(model)
    return model


def run(model, x):
    sess = ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"])
    return sess.run(None, {"x": x})[0]


def precision_of(a, name):
    return next(p for n, _, p in a.nodes if n == name)


def test_exact_patterns_match_only_the_named_node():
    import re

    (pattern,) = exact_patterns(["node_mean"])
    assert re.match(pattern, "node_mean")
    assert not re.match(pattern, "node_mean_1")
    assert re.match(exact_patterns(["a.b[0]"])[0], "a.b[0]") and not re.match(exact_patterns(["a.b[0]"])[0], "axb[0]")


def test_autocast_keeps_only_the_named_island(tmp_path):
    pytest.importorskip("modelopt.onnx.autocast")
    from modelopt.onnx.autocast import convert_to_mixed_precision

    src = tmp_path / "g.onnx"
    onnx.save(prefix_graph(), src)
    out = convert_to_mixed_precision(
        onnx_path=str(src),
        low_precision_type="fp16",
        keep_io_types=True,
        nodes_to_exclude=exact_patterns(["node_mean"]),
        providers=["cpu"],
    )
    a = audit(out)
    assert precision_of(a, "node_mean") == "float32"
    assert precision_of(a, "node_mean_1") == "float16"  # a bare "node_mean" pattern would have taken it too
    assert set(a.float32_nodes) == {"node_mean"}
    check_islands(a, [{"node": "node_mean", "op_type": "ReduceMean"}], "fp16")
    with pytest.raises(VerificationError, match="not among the islands.*node_mean"):
        check_islands(a, [], "fp16")
    with pytest.raises(VerificationError, match="island.*not computed in float32.*node_sub"):
        check_islands(
            a, [{"node": "node_mean", "op_type": "ReduceMean"}, {"node": "node_sub", "op_type": "Sub"}], "fp16"
        )


def test_modelopt_int8_excludes_only_the_named_conv(tmp_path):
    pytest.importorskip("modelopt.onnx.quantization")
    from scaoed_deploy.precision.calibration import CalibSample
    from scaoed_deploy.precision.int8 import _quantize_modelopt

    src, dst = tmp_path / "g.onnx", tmp_path / "q.onnx"
    onnx.save(prefix_graph(), src)
    rng = np.random.default_rng(1)
    calib = [CalibSample(f"c{i}", rng.random((1, 16, 8, 8), dtype=np.float32)) for i in range(4)]
    _quantize_modelopt(src, dst, calib, "max", ["node_conv"], "x")
    a = audit(dst)
    assert precision_of(a, "node_conv") == "float32"
    assert precision_of(a, "node_conv_1") == "int8"  # "node_conv" as a bare pattern would have kept it in FP32
    check_int8_convs(a, [{"node": "node_conv"}], "int8")
    with pytest.raises(VerificationError, match="left in float32 unasked.*node_conv"):
        check_int8_convs(a, [], "int8")


def test_a_weight_stored_twice_fails_the_audit_and_dedupe_merges_it():
    model = prefix_graph(shared_weight=True)
    x = np.random.default_rng(2).random((1, 16, 8, 8), dtype=np.float32)
    before = run(model, x)
    a = audit(model)
    assert a.duplicated_weights == [["w0", "w1"]]
    assert a.weights["tensors"] == 3 and a.weights["unique"] == 2
    with pytest.raises(VerificationError, match="more than once.*w0, w1"):
        check_weights(a, "fp16 ONNX")
    assert dedupe_weights(model) == 1
    assert [i.name for i in model.graph.initializer] == ["w0", "axes"]
    onnx.checker.check_model(model)
    np.testing.assert_array_equal(run(model, x), before)  # the same computation, one copy
    check_weights(audit(model), "fp16 ONNX")


def test_audit_reads_precision_sizes_and_modules_from_the_file(tmp_path):
    model = prefix_graph()
    for node in model.graph.node:
        entry = node.metadata_props.add()
        entry.key, entry.value = "scaoed.module", "stage.nfae" if "mean" in node.name else "stage.body"
    path = tmp_path / "g.onnx"
    onnx.save(model, path)
    a = audit(path)
    assert a.file_bytes == path.stat().st_size
    assert a.compute == {"float32": {"Conv": 2, "ReduceMean": 2, "Sub": 2}}
    assert a.float32_by_module == {"stage.body": 4, "stage.nfae": 2}
    assert a.weights["values"] == 2 * 16 * 16 * 9 + 2 and a.weights["bytes"] == 2 * 16 * 16 * 9 * 4 + 2 * 8
    assert a.casts == 0 and a.quantize == 0


def test_value_info_is_pruned_to_one_entry_per_tensor_a_node_makes():
    from scaoed_deploy.artifact import prune_value_info

    model = prefix_graph()
    inferred = onnx.shape_inference.infer_shapes(model)
    entries = list(inferred.graph.value_info)
    stale = helper.make_tensor_value_info("gone", TensorProto.FLOAT, [1])
    model.graph.value_info.extend(entries + entries[:2] + [stale])  # repeated entries and one for no tensor
    assert prune_value_info(model) == 3
    assert sorted(v.name for v in model.graph.value_info) == sorted(v.name for v in entries)
    onnx.checker.check_model(model)


def test_asking_modelopt_which_convs_it_skips_prints_nothing(capfd):
    pytest.importorskip("modelopt.onnx.quantization")
    from scaoed_deploy.precision.int8 import modelopt_unquantized_convs

    model = prefix_graph()
    # 4 output channels and a 1x3 kernel: ModelOpt has no INT8 TensorRT kernel shape for it and leaves it in float
    model.graph.initializer[1].CopyFrom(numpy_helper.from_array(np.zeros((4, 16, 1, 3), np.float32), "w1"))
    conv = model.graph.node[3]
    del conv.attribute[:]
    conv.attribute.extend([helper.make_attribute("kernel_shape", [1, 3]), helper.make_attribute("pads", [0, 1, 0, 1])])
    skipped = modelopt_unquantized_convs(model)
    assert [s["node"] for s in skipped] == ["node_conv_1"]
    out, err = capfd.readouterr()
    assert out == ""  # --json needs stdout clean: ModelOpt's INFO lines once came out here
