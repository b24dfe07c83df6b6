"""--as-cpu CLASS: a child process whose every library sees a lesser CPU (its CPUID masked): avx512-vnni (AMX
hidden), avx512 (VNNI, BF16, FP16 hidden too), avx2 (every AVX-512 hidden).

The reference for "the libraries really run that class's kernels" is arithmetic and the kernels they pick: ONNX
Runtime's U8S8 integer matrix product sums u8 x s8 pairs in 16 bits without VNNI (vpmaddubsw), so all-255
activations times all-127 weights saturate there and only there, while 7-bit weights (|w| <= 63) stay exact
(numpy's int64 product is the truth); OpenVINO's convolution is a brgconv_avx512 kernel where AVX-512 is seen
and a brgconv_avx2 one where it is not.
"""

from __future__ import annotations

import json
import subprocess
import sys

import pytest
from references import one_error

from scaoed_deploy import cpumask
from scaoed_deploy.cli import main
from scaoed_deploy.cpu import AS_CPU_CAPS, AS_CPU_ENV, mask_refusal, masked_as, read_cpu

needs_mask = pytest.mark.skipif(cpumask.unsupported() is not None, reason=str(cpumask.unsupported()))

MATMUL = """
import json, numpy as np, onnxruntime as ort
from onnx import TensorProto, helper, numpy_helper
out = {}
a = np.full((16, 64), 255, np.uint8)
for wmax in (127, 63):
    w = np.full((64, 16), wmax, np.int8)
    g = helper.make_graph([helper.make_node("MatMulInteger", ["a", "w"], ["y"])], "g",
                          [helper.make_tensor_value_info("a", TensorProto.UINT8, [16, 64])],
                          [helper.make_tensor_value_info("y", TensorProto.INT32, [16, 16])],
                          [numpy_helper.from_array(w, "w")])
    m = helper.make_model(g, opset_imports=[helper.make_opsetid("", 13)]).SerializeToString()
    y = ort.InferenceSession(m, providers=["CPUExecutionProvider"]).run(None, {"a": a})[0]
    out[wmax] = bool((y == a.astype(np.int64) @ w.astype(np.int64)).all())
print(json.dumps(out))
"""


def _child(code: str, env: dict) -> dict:
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, timeout=300)
    assert r.returncode == 0, r.stderr[-2000:]
    return json.loads(r.stdout.strip().splitlines()[-1])


@needs_mask
def test_onnx_runtime_sums_in_16_bits_under_the_mask_and_7_bit_weights_stay_exact():
    masked = _child(MATMUL, cpumask.environment("avx2"))
    assert masked == {"127": False, "63": True}  # saturated like an AVX2-only CPU; reduce_range's weights exact
    env = {k: v for k, v in cpumask.environment("avx2").items() if k not in ("LD_PRELOAD", AS_CPU_ENV)}
    plain = _child(MATMUL, env)
    if read_cpu().vnni:  # this CPU's own VNNI sums in 32 bits: the mask is what made the difference
        assert plain == {"127": True, "63": True}


@pytest.mark.slow
@needs_mask
def test_torch_openvino_and_the_planner_see_avx2_in_the_child():
    code = """
import json, torch, openvino as ov
from scaoed_deploy.cpu import this_cpu
c = this_cpu()
print(json.dumps({"torch": torch.backends.cpu.get_cpu_capability(), "class": c.isa_class, "capped_by": c.capped_by,
                  "ov": ov.Core().get_property("CPU", "OPTIMIZATION_CAPABILITIES")}))
"""
    seen = _child(code, cpumask.environment("avx2"))
    assert seen["torch"] == "AVX2" and seen["class"] == "avx2" and "BF16" not in seen["ov"]
    assert seen["capped_by"].startswith("--as-cpu avx2")


@pytest.mark.slow
@needs_mask
def test_the_cli_runs_the_command_in_a_masked_child_and_passes_its_exit_code(capfd):
    assert main(["--as-cpu=avx2", "denoise", "missing.png", "out.png"]) == 2  # the child's usage error and code
    assert "missing.png" in one_error(capfd.readouterr().err)
    assert main(["--as-cpu", "avx2", "info", "--json"]) == 0
    out = json.loads(capfd.readouterr().out)
    assert out["cpu"]["isa_class"] == "avx2" and out["cpu"]["capped_by"].startswith("--as-cpu avx2")


def test_where_the_mask_cannot_work_it_is_one_line(monkeypatch, capsys):
    monkeypatch.setattr(cpumask, "unsupported", lambda: "--as-cpu needs CPUID faulting, which this CPU ... offer")
    assert main(["--as-cpu", "avx2", "info"]) == 1
    assert one_error(capsys.readouterr().err) == "error: --as-cpu needs CPUID faulting, which this CPU ... offer"
    assert main(["--as-cpu", "amx", "info"]) == 2  # a mask hides; there is no class above the machine's to ask for
    assert "Invalid value for '--as-cpu': 'amx'" in one_error(capsys.readouterr().err)


def test_a_mask_cannot_add_what_the_cpu_lacks(monkeypatch, capsys):
    avx2_only = read_cpu("model name\t: AVX2 EPYC\nflags\t\t: sse4_2 avx avx2 fma\n")
    zen4 = read_cpu("model name\t: EPYC\nflags\t\t: avx2 avx512f avx512bw avx512_vnni avx512_bf16\n")
    assert [t for t in AS_CPU_CAPS if mask_refusal(t, avx2_only)] == ["avx512-vnni", "avx512"]
    assert [t for t in AS_CPU_CAPS if mask_refusal(t, zen4)] == []
    assert "lacks" in mask_refusal("avx512", avx2_only) and "avx512f" in mask_refusal("avx512", avx2_only)
    monkeypatch.setattr(cpumask, "unsupported", lambda: None)
    monkeypatch.setattr(cpumask, "mask_refusal", lambda target: mask_refusal(target, avx2_only))
    assert main(["--as-cpu", "avx512", "info"]) == 1
    err = one_error(capsys.readouterr().err)
    assert err.startswith("error: --as-cpu avx512 needs avx512f") and "AVX2 EPYC, class avx2" in err


PROBE = (
    MATMUL
    + """
import openvino as ov, torch
from onnx import TensorProto, helper, numpy_helper
from scaoed_deploy.cpu import this_cpu
w = np.random.default_rng(0).standard_normal((16, 16, 3, 3)).astype(np.float32)
g = helper.make_graph([helper.make_node("Conv", ["x", "w"], ["y"], pads=[1, 1, 1, 1])], "g",
                      [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 16, 32, 32])],
                      [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 16, 32, 32])],
                      [numpy_helper.from_array(w, "w")])
core = ov.Core()
model = core.read_model(helper.make_model(g, opset_imports=[helper.make_opsetid("", 13)]).SerializeToString(), b"")
compiled = core.compile_model(model, "CPU", {"INFERENCE_PRECISION_HINT": "f32"})
conv = [op.get_rt_info()["primitiveType"].astype(str) for op in compiled.get_runtime_model().get_ordered_ops()
        if op.get_rt_info()["layerType"].astype(str) == "Convolution"]
print(json.dumps({"exact": out, "conv": conv[0], "torch": torch.backends.cpu.get_cpu_capability(),
                  "class": this_cpu().isa_class, "amx": this_cpu().amx}))
"""
)


@pytest.mark.slow
@needs_mask
@pytest.mark.parametrize("target", list(AS_CPU_CAPS))
def test_each_class_runs_its_own_kernels_in_every_library(target):
    if mask_refusal(target):
        pytest.skip(mask_refusal(target))
    seen = _child(PROBE, cpumask.environment(target))
    vnni = target == "avx512-vnni"
    assert seen["class"] == target and not seen["amx"]
    assert seen["exact"] == {"127": vnni, "63": True}  # 32-bit VNNI sums, or 16-bit sums that saturate
    assert ("avx512" in seen["conv"]) == (target != "avx2") and ("avx2" in seen["conv"]) == (target == "avx2")
    assert seen["torch"] == ("AVX2" if target == "avx2" else "AVX512")


def test_the_marker_alone_masks_nothing(monkeypatch):
    monkeypatch.setenv(AS_CPU_ENV, "avx2")
    monkeypatch.delenv("LD_PRELOAD", raising=False)
    assert masked_as() is None  # a variable left in a shell is not a mask: the planner keeps the real CPU
    monkeypatch.setenv("LD_PRELOAD", "/x/scaoed-cpumask-0123.so")
    assert masked_as() == "avx2"
