"""--as-cpu avx2: a child process whose every library sees an AVX2-only CPU (its CPUID masked).

The reference for "the libraries really run AVX2 kernels" is arithmetic: ONNX Runtime's U8S8 integer matrix
product sums u8 x s8 pairs in 16 bits without VNNI (vpmaddubsw), so all-255 activations times all-127 weights
saturate there and only there, while 7-bit weights (|w| <= 63) stay exact; numpy's int64 product is the truth.
"""

from __future__ import annotations

import json
import subprocess
import sys

import pytest
from references import one_error

from scaoed_deploy import cpumask
from scaoed_deploy.cli import main
from scaoed_deploy.cpu import AS_CPU_ENV, masked_as, read_cpu

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
    assert main(["--as-cpu", "avx512", "info"]) == 2
    assert "Invalid value for '--as-cpu': 'avx512'" in one_error(capsys.readouterr().err)


def test_the_marker_alone_masks_nothing(monkeypatch):
    monkeypatch.setenv(AS_CPU_ENV, "avx2")
    monkeypatch.delenv("LD_PRELOAD", raising=False)
    assert masked_as() is None  # a variable left in a shell is not a mask: the planner keeps the real CPU
    monkeypatch.setenv("LD_PRELOAD", "/x/scaoed-cpumask-0123.so")
    assert masked_as() == "avx2"
