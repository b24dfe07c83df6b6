"""Precision ONNX writers (AutoCast FP16/BF16 with islands; INT8 for TensorRT and for ONNX Runtime CPU)
and the calibration set, on a small K=1, T=1 export with calibration images made here."""

from __future__ import annotations

import json

import numpy as np
import onnx
import pytest
from conftest import DATA, needs_data
from onnx import TensorProto, numpy_helper

from scaoed_deploy.artifact import count_nfae_epsilons
from scaoed_deploy.compare import psnr_against
from scaoed_deploy.errors import ScaoedError, VerificationError
from scaoed_deploy.images import Image, write_image
from scaoed_deploy.precision.calibration import calibration_set, describe
from scaoed_deploy.precision.convert import mixed_precision, quantize_int8
from scaoed_deploy.precision.emulate import emulate
from scaoed_deploy.precision.lint import errors, lint
from scaoed_deploy.runtime.onnxruntime_backend import OnnxRuntimeRunner


@pytest.fixture(scope="module")
def setup(tmp_path_factory, random_k1_onnx):
    root = tmp_path_factory.mktemp("convert")
    path = random_k1_onnx
    noisy = root / "noisy_photos"
    rng = np.random.default_rng(0)
    for i in range(3):  # smooth images plus noise: stand-ins for real noisy photos
        yy, xx = np.mgrid[0:96, 0:112] / 96.0
        base = np.stack([np.sin(3 * xx + i), np.cos(2 * yy - i), xx * yy], axis=2) * 0.4 + 0.5
        write_image(
            noisy / f"p{i}.png", Image(rgb=np.clip(base + rng.normal(0, 0.05, base.shape), 0, 1).astype(np.float32))
        )
    calib = calibration_set([str(noisy)], count=8, sizes=(48, 64), seed=0)
    return path, calib


def _probe():
    rng = np.random.default_rng(5)
    return [rng.random((1, 3, 48, 64), dtype=np.float32), np.zeros((1, 3, 32, 32), np.float32)]


def test_calibration_set_is_seeded_sized_and_refuses_sidd(setup, tmp_path):
    _, calib = setup
    assert len(calib) == 8 and {c.x.shape[2] for c in calib} == {48, 64}
    assert all(c.x.dtype == np.float32 and 0 <= c.x.min() and c.x.max() <= 1 for c in calib)
    assert describe(calib)["sizes"] == [48, 64]
    (tmp_path / "sidd" / "noisy").mkdir(parents=True)
    with pytest.raises(ScaoedError, match="evaluation data"):
        calibration_set([str(tmp_path / "sidd")], count=4)


@needs_data
def test_default_calibration_mixes_real_and_synthetic_noise():
    calib = calibration_set(count=6, sizes=(64,))
    sources = describe(calib)["sources"]
    assert "RNI15" in sources and any("synthetic" in s for s in sources)
    assert not any("sidd" in c.name.lower() for c in calib)
    assert DATA.is_dir()


def test_fp16_keeps_nfae_in_fp32_and_stays_finite(setup):
    path, calib = setup
    result = mixed_precision(path, "fp16", calib)
    m = result.proto
    kept_modules = {k["module"] for k in result.kept_fp32}
    assert "u_ini.nfae" in kept_modules
    assert any(i.data_type == TensorProto.FLOAT16 for i in m.graph.initializer)  # it did convert the convs
    assert m.graph.input[0].type.tensor_type.elem_type == TensorProto.FLOAT  # fp32 I/O
    assert count_nfae_epsilons(m) == 2  # the epsilon survives, in fp32
    meta = {p.key: p.value for p in m.metadata_props}
    assert meta["scaoed.precision"] == "fp16" and meta["scaoed.stages"] == "1"
    fp32 = OnnxRuntimeRunner(str(path))
    runner = OnnxRuntimeRunner(emulate(m).SerializeToString())
    for x in _probe():
        got, ref = runner(x), fp32(x)
        assert np.isfinite(got).all()
        assert psnr_against(ref, got) > 50
    assert lint(m) == [] or not errors(
        lint(m, {"noisy": {"min": (1, 3, 8, 8), "opt": (1, 3, 8, 8), "max": (1, 3, 8, 8)}})
    )


def test_int8_for_tensorrt_is_symmetric_s8_and_lints_clean(setup):
    path, calib = setup
    result = quantize_int8(path, calib, target="tensorrt", method="max")
    m = result.proto
    consts = {i.name: numpy_helper.to_array(i) for i in m.graph.initializer}
    qs = [n for n in m.graph.node if n.op_type == "QuantizeLinear"]
    assert qs
    for q in qs:
        if len(q.input) > 2:
            zp = consts[q.input[2]]
            assert zp.dtype == np.int8 and not zp.any()
    profile = {"noisy": {"min": (1, 3, 32, 32), "opt": (1, 3, 64, 64), "max": (1, 3, 128, 128)}}
    assert errors(lint(m, profile)) == []
    assert result.check_psnr is not None and result.check_psnr > 30
    assert count_nfae_epsilons(m) == 2


def test_int8_for_onnxruntime_cpu_is_u8_and_not_for_tensorrt(setup):
    # Runs after the TensorRT flavour: ModelOpt patches onnxruntime.quantization, and must not break it here.
    path, calib = setup
    result = quantize_int8(path, calib, target="onnxruntime-cpu", method="max")
    m = result.proto
    consts = {i.name: numpy_helper.to_array(i) for i in m.graph.initializer}
    zps = [consts[n.input[2]] for n in m.graph.node if n.op_type == "QuantizeLinear" and len(n.input) > 2]
    assert any(z.dtype == np.uint8 for z in zps)
    assert any(v.rule == "qdq-type" for v in errors(lint(m)))
    x = _probe()[0]
    assert psnr_against(OnnxRuntimeRunner(str(path))(x), OnnxRuntimeRunner(m.SerializeToString())(x)) > 30


def test_int8_keeps_sensitive_convs_in_fp32_when_the_check_fails(setup):
    path, calib = setup
    result = quantize_int8(path, calib, target="onnxruntime-cpu", method="max", min_psnr=1000.0, rounds=1)
    kept = [k["node"] for k in result.kept_fp32]
    assert kept and result.notes  # an unreachable bar: one round of exclusions, then it says so
    m = result.proto
    producers = {o: n for n in m.graph.node for o in n.output}
    for node in m.graph.node:
        if node.name in kept:
            src = producers.get(node.input[1])
            assert src is None or src.op_type != "DequantizeLinear"  # weights left in fp32


def test_bad_requests_are_refused(setup):
    path, calib = setup
    with pytest.raises(ScaoedError, match="target"):
        quantize_int8(path, calib, target="tflite")
    with pytest.raises(ScaoedError, match="calibration method"):
        quantize_int8(path, calib, method="percentile")
    with pytest.raises(ScaoedError, match="at least 4"):
        quantize_int8(path, calib[:3])
    assert onnx.load(str(path)).graph.input[0].name == "noisy"


def test_onnxruntime_cpu_int8_uses_a_7_bit_range_where_the_cpu_has_no_vnni(setup, monkeypatch):
    """Without VNNI, ONNX Runtime's U8S8 kernels saturate: the build picks reduce_range there, records the format
    and the CPU it was checked on, and the file still holds its quality (here, on this machine's kernels)."""
    import scaoed_deploy.precision.int8 as conv
    from scaoed_deploy.cpu import read_cpu

    path, calib = setup
    monkeypatch.setattr(conv, "this_cpu", lambda: read_cpu("model name\t: test\nflags\t\t: avx2\n"))
    result = quantize_int8(path, calib, target="onnxruntime-cpu", method="max")
    assert result.int8_format["reduce_range"] is True and result.int8_format["checked_on"]["isa_class"] == "avx2"
    detail = json.loads({p.key: p.value for p in result.proto.metadata_props}["scaoed.precision_detail"])
    assert detail["int8_format"]["reduce_range"] is True
    weights = [numpy_helper.to_array(i) for i in result.proto.graph.initializer if i.data_type == onnx.TensorProto.INT8]
    assert weights and max(int(np.abs(w.astype(np.int16)).max()) for w in weights) <= 64  # 7 bits: [-64, 64]
    x = _probe()[0]
    assert psnr_against(OnnxRuntimeRunner(str(path))(x), OnnxRuntimeRunner(result.proto.SerializeToString())(x)) > 30


def test_an_int8_file_verified_with_vnni_warns_once_where_the_cpu_has_none(setup, monkeypatch, tmp_path):
    """Verified on a VNNI CPU (this file's U8S8 needs it): opened where VNNI is missing, the runner says so in one
    line naming the check; opened on a CPU like the one it was checked on, it says nothing."""
    import scaoed_deploy.precision.int8 as conv
    import scaoed_deploy.runtime.base as base
    from scaoed_deploy.cpu import read_cpu
    from scaoed_deploy.runtime.registry import open_runner

    path, calib = setup
    vnni = read_cpu("model name\t: Xeon (test)\nflags\t\t: avx2 avx512f avx512_vnni\n")
    monkeypatch.setattr(conv, "this_cpu", lambda: vnni)
    result = quantize_int8(path, calib, target="onnxruntime-cpu", method="max")
    int8 = tmp_path / "int8.onnx"
    onnx.save(result.proto, str(int8))
    monkeypatch.setattr(base, "this_cpu", lambda: vnni)
    assert open_runner(int8).warnings == []
    monkeypatch.setattr(base, "this_cpu", lambda: read_cpu("model name\t: EPYC (test)\nflags\t\t: avx2\n"))
    (warning,) = open_runner(int8).warnings
    assert "verified on Xeon (test) (avx512-vnni)" in warning and "no VNNI" in warning
    assert f"scaoed-deploy parity {int8}" in warning
    assert open_runner(path).warnings == []  # an fp32 file depends on neither


def test_an_int8_file_below_the_floor_fails_its_own_check_and_nothing_is_returned(setup):
    path, calib = setup
    with pytest.raises(VerificationError, match="below the floor"):
        quantize_int8(path, calib, target="onnxruntime-cpu", method="max", min_psnr=1000.0, rounds=0, floor=999.0)


@pytest.mark.parametrize("method, rtol", [("entropy", 0.1), ("max", 1e-6)])
def test_calibration_holds_one_image_at_a_time_and_matches_all_at_once(tmp_path, method, rtol):
    """ONNX Runtime's calibrators, fed one image a pass, against the same calibrator holding every image at once
    (its own behaviour): MinMax's ranges exactly, the entropy histograms' to within their re-binning, and the
    quantized models' outputs to within a quantization step."""
    import onnx
    import onnxruntime as ort
    from onnxruntime.quantization import calibrate
    from references import tiny_conv_onnx

    from scaoed_deploy.precision import ort_int8
    from scaoed_deploy.precision.calibration import CalibSample

    src = tiny_conv_onnx(tmp_path / "tiny.onnx")
    rng = np.random.default_rng(3)
    calib = [CalibSample(f"c{i}", rng.random((1, 3, 24, 24), dtype=np.float32)) for i in range(6)]
    ort_int8.quantize_onnxruntime(src, tmp_path / "chunked.onnx", calib, method, [], "noisy")
    assert ort_int8.HELD_AT_ONCE == [1] * 6
    owner = calibrate.HistogramCalibrater if method == "entropy" else calibrate.MinMaxCalibrater
    original = owner.collect_data
    assert original.__name__ == "collect_data"  # ORT's own again after the run
    held = []

    def all_at_once(self, reader):  # ORT's own, recording how many images it held
        original(self, reader)
        held.append("all")

    owner.collect_data = all_at_once
    try:
        from onnxruntime.quantization import CalibrationMethod, QuantFormat, QuantType, quantize_static

        class Reader(calibrate.CalibrationDataReader):
            def __init__(self):
                self.it = iter([{"noisy": c.x} for c in calib])

            def get_next(self):
                return next(self.it, None)

        quantize_static(
            str(src),
            str(tmp_path / "whole.onnx"),
            Reader(),
            quant_format=QuantFormat.QDQ,
            activation_type=QuantType.QUInt8,
            weight_type=QuantType.QInt8,
            per_channel=True,
            op_types_to_quantize=["Conv"],
            calibrate_method=CalibrationMethod.Entropy if method == "entropy" else CalibrationMethod.MinMax,
            extra_options={"CalibTensorRangeSymmetric": False, "ActivationSymmetric": False},
        )
    finally:
        owner.collect_data = original
    assert held == ["all"]

    def scales(path):
        return {
            i.name: onnx.numpy_helper.to_array(i)
            for i in onnx.load(str(path)).graph.initializer
            if i.name.endswith("_scale")
        }

    chunked, whole = scales(tmp_path / "chunked.onnx"), scales(tmp_path / "whole.onnx")
    assert chunked.keys() == whole.keys() and chunked
    for name in chunked:
        np.testing.assert_allclose(chunked[name], whole[name], rtol=rtol, err_msg=name)
    x = calib[0].x
    run = [
        ort.InferenceSession(str(tmp_path / f"{n}.onnx"), providers=["CPUExecutionProvider"]).run(None, {"noisy": x})[0]
        for n in ("chunked", "whole")
    ]
    step = max(float(v.max()) for k, v in whole.items() if "denoised" in k or "noisy" in k)
    assert np.abs(run[0] - run[1]).max() <= 2 * step
