"""OpenVINO target: IR from the verified fp32 ONNX (fp32, bf16, INT8 by NNCF), its runner, audit and CLI."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys

import numpy as np
import pytest
from references import one_error

from scaoed_deploy.artifact import load_artifact, read_metadata
from scaoed_deploy.audit import audit_ir
from scaoed_deploy.cli import main
from scaoed_deploy.errors import ScaoedError
from scaoed_deploy.images import Image, read_image, write_image
from scaoed_deploy.runtime import OnnxRuntimeRunner, RunOptions, open_runner

ov = pytest.importorskip("openvino")
from scaoed_deploy.precision.openvino import atomic_ir, make_openvino_ir, save_ir  # noqa: E402

HAS_BF16 = "BF16" in ov.Core().get_property("CPU", "OPTIMIZATION_CAPABILITIES")


@pytest.fixture(scope="module")
def irs(random_k1_onnx, tmp_path_factory):
    root = tmp_path_factory.mktemp("ir")
    out = {}
    for precision in ("fp32", "bf16"):
        path = root / f"k1_{precision}.xml"
        save_ir(make_openvino_ir(random_k1_onnx, precision), path)
        out[precision] = path
    return out


def test_fp32_ir_matches_onnxruntime_at_two_sizes_and_batch_2(irs, random_k1_onnx):
    ort = OnnxRuntimeRunner(random_k1_onnx)
    with open_runner(irs["fp32"], options=RunOptions(threads=1)) as runner:
        assert runner.name == "openvino" and runner.limits.min_hw is None  # dynamic H and W
        rng = np.random.default_rng(0)
        for shape in [(1, 3, 32, 32), (2, 3, 40, 56)]:
            x = rng.random(shape, dtype=np.float32)
            got = runner(x)
            assert got.shape == shape and np.abs(got - ort(x)).max() <= 1e-4
        assert runner.precision_report()["inference_precision"] == "f32"
        black = runner(np.zeros((1, 3, 32, 32), np.float32))  # NFAE's 0/0 case
        assert np.isfinite(black).all()


def test_ir_keeps_the_export_metadata(irs, random_k1_onnx):
    src, meta = read_metadata(random_k1_onnx), read_metadata(irs["bf16"])
    assert meta["weights"] == src["weights"] and meta["stages"] == src["stages"] == "1"
    assert meta["precision"] == "bf16" and meta["precision_target"] == "openvino"
    art = load_artifact(irs["bf16"])
    assert art.kind == "openvino" and art.precision == "bf16" and art.output_names[0] == "denoised"
    assert art.static_hw is None and art.stages == 1


def test_bf16_is_an_explicit_inference_precision(irs, random_k1_onnx):
    ort = OnnxRuntimeRunner(random_k1_onnx)
    with open_runner(irs["bf16"]) as runner:
        report = runner.precision_report()
        want = "bf16" if HAS_BF16 else "f32"  # the plugin falls back to f32 where the CPU has no bf16
        assert report["inference_precision"] == want
        if HAS_BF16:
            assert "bf16" in report["layers_by_runtime_precision"]
        x = np.random.default_rng(1).random((1, 3, 48, 48), dtype=np.float32)
        ref, got = ort(x), runner(x)
        assert np.isfinite(got).all() and 10 * np.log10(1 / np.mean((got - ref) ** 2)) > 35
        for flat in (np.zeros((1, 3, 32, 32), np.float32), np.full((1, 3, 32, 32), 0.5, np.float32)):
            assert np.isfinite(runner(flat)).all()


def test_audit_reads_precision_from_the_files(irs):
    a = audit_ir(irs["fp32"])
    assert "int8" not in a.compute and a.compute["float32"]["Convolution"] > 0 and a.quantize == 0
    assert a.file_bytes > irs["fp32"].with_suffix(".bin").stat().st_size and not a.duplicated_weights


def test_missing_weights_and_corrupt_ir_give_one_line(irs, tmp_path):
    lone = tmp_path / "lone.xml"
    shutil.copyfile(irs["fp32"], lone)
    with pytest.raises(ScaoedError, match="lone.bin is missing"):
        load_artifact(lone)
    bad = tmp_path / "bad.xml"
    bad.write_text("<net>")
    bad.with_suffix(".bin").write_bytes(b"")
    with pytest.raises(ScaoedError, match=r"not an OpenVINO IR \(truncated or not XML"):
        load_artifact(bad)


def test_a_failed_write_leaves_no_ir(tmp_path):
    final = tmp_path / "m.xml"
    with pytest.raises(RuntimeError), atomic_ir(final) as tmp:
        tmp.write_text("half")
        tmp.with_suffix(".bin").write_bytes(b"half")
        raise RuntimeError("parity failed")
    assert list(tmp_path.iterdir()) == []


def test_bf16_build_summary(tmp_path, tiny_checkpoint, tiny_k1_onnx, capsys):
    shutil.copyfile(tiny_k1_onnx, tmp_path / tiny_k1_onnx.name)
    code = main(
        [
            "build-engine",
            "--bf16",
            "--target",
            "openvino",
            "-c",
            str(tiny_checkpoint),
            "--stages",
            "1",
            "--export-dir",
            str(tmp_path),
        ]
    )
    out, err = capsys.readouterr()
    assert code == 0, err
    assert "2. bf16 OpenVINO IR (openvino.convert_model (bf16 inference precision))" in out
    assert "4. parity: pass" in out and (tmp_path / "scaoednet_k1_t2_bf16_openvino.xml").is_file()


def test_fp16_is_refused_for_openvino(capsys):
    assert main(["build-engine", "--fp16", "--stages", "1", "--target", "openvino"]) == 2
    assert "no fp16 inference" in one_error(capsys.readouterr().err)


def _cli_capped_at_avx2(*commands: list[str]) -> subprocess.CompletedProcess:
    """CLI commands, one after the other, in one process whose oneDNN (torch's and OpenVINO's convolutions) stops
    at AVX2: no VNNI. Stops at the first that fails."""
    script = (
        "import sys; from scaoed_deploy.cli import main; "
        "sys.exit(next((c for c in map(main, __import__('json').loads(sys.argv[1])) if c), 0))"
    )
    env = dict(os.environ, ONEDNN_MAX_CPU_ISA="AVX2")
    return subprocess.run(
        [sys.executable, "-c", script, json.dumps(commands)],
        capture_output=True,
        text=True,
        env=env,
        timeout=600,
        check=False,
    )


def test_int8_build_keeps_nfae_in_float_and_runs_everywhere(tmp_path, tiny_checkpoint, tiny_k1_onnx, calib_dir, capsys):
    """Built and run as on an AVX2-only CPU (oneDNN capped at AVX2: parity ran on AVX2's int8 kernels, which sum
    u8 x s8 pairs in 16 bits): 7-bit weights everywhere, and then the same pixels with and without VNNI."""
    export = tmp_path / "export"
    export.mkdir()
    shutil.copyfile(tiny_k1_onnx, export / tiny_k1_onnx.name)
    xml = export / "scaoednet_k1_t2_int8_openvino.xml"
    noisy = tmp_path / "in.png"
    write_image(noisy, Image(rgb=np.random.default_rng(3).random((37, 50, 3), dtype=np.float32)))
    capped = _cli_capped_at_avx2(
        [
            "build-engine",
            "--int8",
            "--target",
            "openvino",
            "-c",
            str(tiny_checkpoint),
            "--stages",
            "1",
            "--calib",
            str(calib_dir),
            "--calib-count",
            "4",
            "--int8-rounds",
            "1",
            "--export-dir",
            str(export),
            "--json",
        ],
        ["denoise", str(noisy), str(tmp_path / "avx2.png"), "-m", str(xml), "--bit-depth", "16"],
    )
    assert capped.returncode == 0, capped.stderr[-2000:]
    result, _ = json.JSONDecoder().raw_decode(capped.stdout)  # the build's JSON, then denoise's line
    assert result["target"] == "openvino" and result["precision_onnx"] == str(xml) and result["parity"]["passed"]
    assert xml.is_file() and xml.with_suffix(".bin").is_file() and not list(export.glob(".*tmp*"))
    rounds = [n for n in result["conversion"]["notes"] if n.startswith("round ")]
    assert len(rounds) <= 1  # --int8-rounds 1 (this tiny model stays below 40 dB: it takes its one round)
    a = audit_ir(xml)
    assert a.compute["int8"]["Convolution"] > 0 and a.quantize > 0
    kept = result["conversion"]["kept_fp32_nodes"]
    nfae = {k["node"] for k in kept if k["module"].endswith("nfae")}
    assert nfae and not nfae & {n for n, _, p in a.nodes if p == "int8"}
    float_convs = {n for n, op, p in a.nodes if op == "Convolution" and p == "float32"}
    assert float_convs == {k["node"] for k in kept if k["op_type"] == "Convolution"}  # the round's, no other
    assert len(float_convs) == (1 if rounds else 0)
    # the audit's int8 convolutions are the ones OpenVINO's CPU plugin runs on 8-bit data and weights
    runtime = ov.Core().compile_model(str(xml), "CPU").get_runtime_model()
    executed = [
        tuple(op.input(i).get_element_type().get_type_name() for i in range(2))
        for op in runtime.get_ordered_ops()
        if op.get_rt_info()["layerType"].astype(str) == "Convolution"
    ]
    assert len(executed) == len(float_convs) + a.compute["int8"]["Convolution"]
    assert sum(e in {("u8", "i8"), ("i8", "i8")} for e in executed) == a.compute["int8"]["Convolution"]

    detail = json.loads(read_metadata(xml)["precision_detail"])
    assert detail["int8_format"]["overflow_fix"] == "enable"
    assert detail["checked_on"]["isa_class"] == "avx2" and "avx512_vnni" not in detail["checked_on"]["isa"]

    assert main(["denoise", str(noisy), str(tmp_path / "out16.png"), "-m", str(xml), "--bit-depth", "16"]) == 0
    capsys.readouterr()
    here = read_image(tmp_path / "out16.png")
    assert here.rgb.shape == (37, 50, 3)  # odd size: padded and cropped back
    # integer sums agree exactly; only the float epilogue's order may differ (a 16-bit step or two, not the 6e-2
    # that sums saturating in 16 bits gave with full-range weights)
    assert np.abs(read_image(tmp_path / "avx2.png").rgb - here.rgb).max() < 2e-4
    load_artifact(xml)  # and parity reads it (run inside the build above, on the temporary copy)


def test_bench_rows_report_what_openvino_compiled(random_k1_onnx, tmp_path):
    from scaoed_deploy import checkpoint as ckpt
    from scaoed_deploy.bench import BenchConfig, markdown, run_bench
    from scaoed_deploy.build import newest_export

    shutil.copyfile(random_k1_onnx, tmp_path / "scaoednet_k1_t1_fp32.onnx")  # made from the same weights
    cfg = BenchConfig(
        [(32, 32)], [1], ["openvino", "openvino-bf16"], warmup=1, iters=2, threads=1, quality=False, export_dir=tmp_path
    )
    weights = ckpt.random_weights(blocks=1, seed=0)
    result = run_bench(weights, cfg)
    rows = {r["backend"]: r for r in result["rows"]}
    assert rows["openvino"]["status"] == "ok" and rows["openvino"]["ratio_to_eager"] > 0
    assert rows["openvino"]["runtime_precision"] == {
        **rows["openvino"]["runtime_precision"],
        "inference_precision": "f32",
        "threads": 1,
    }
    assert rows["openvino-bf16"]["runtime_precision"]["inference_precision"] == ("bf16" if HAS_BF16 else "f32")
    assert (tmp_path / "bench" / "scaoednet_k1_t1_bf16_openvino.xml").is_file()  # bench's own, out of export/'s top
    assert not list(tmp_path.glob("*.xml"))
    # build-engine without --stages still finds the user's export, not anything bench made
    assert newest_export(tmp_path, weights) == (tmp_path / "scaoednet_k1_t1_fp32.onnx", 1)
    assert sorted(p.name for p in tmp_path.glob("*.onnx")) == ["scaoednet_k1_t1_fp32.onnx"]
    assert "What OpenVINO compiled" in markdown(result) and result["config"]["threads"] == 1
