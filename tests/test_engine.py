"""Engine build plan, sidecar and its load-time check; the TensorRT build itself where tensorrt imports."""

from __future__ import annotations

import importlib.util
import json

import numpy as np
import pytest

from scaoed_deploy.build.tensorrt import BuildPlan, ShapeProfile, build_engine, parse_batch, write_sidecar
from scaoed_deploy.errors import ScaoedError
from scaoed_deploy.runtime.tensorrt import check_engine_sidecar

HAS_TRT = importlib.util.find_spec("tensorrt") is not None


def _gpu_ok() -> bool:
    import torch

    return torch.cuda.is_available()


needs_tensorrt = pytest.mark.skipif(not (HAS_TRT and _gpu_ok()), reason="tensorrt and a CUDA GPU are needed")


@pytest.fixture(scope="module")
def k1_onnx(random_k1_onnx):
    return random_k1_onnx


def test_profile_defaults_cover_256_to_1024_and_validate():
    p = ShapeProfile()
    assert p.shapes() == {"min": (1, 3, 256, 256), "opt": (1, 3, 512, 512), "max": (1, 3, 1024, 1024)}
    assert parse_batch("1:4:8") == (1, 4, 8) and parse_batch("2") == (2, 2, 2)
    with pytest.raises(ScaoedError, match="even"):
        ShapeProfile(min_hw=(255, 256))
    with pytest.raises(ScaoedError, match="min <= opt <= max"):
        ShapeProfile(min_hw=(512, 512), opt_hw=(256, 256))
    with pytest.raises(ScaoedError, match="MIN:OPT:MAX"):
        ShapeProfile(batch=parse_batch("4:2:8"))
    with pytest.raises(ScaoedError, match="MIN:OPT:MAX"):
        parse_batch("a:b")


def test_plan_sidecar_and_trtexec_line(k1_onnx, tmp_path):
    plan = BuildPlan(
        k1_onnx,
        tmp_path / "e.engine",
        "fp16",
        1,
        1,
        ShapeProfile(batch=(1, 2, 4)),
        timing_cache=tmp_path / "t.cache",
        workspace_mib=2048,
    )
    line = plan.trtexec()
    assert "--minShapes=noisy:1x3x256x256" in line and "--maxShapes=noisy:4x3x1024x1024" in line
    assert "--timingCacheFile=" in line and "--memPoolSize=workspace:2048M" in line
    assert not any(flag in line for flag in ("--fp16", "--int8", "--bf16", "--best"))  # gone in TensorRT 11
    side = json.loads(write_sidecar(plan).read_text())
    assert side["built"] is False and side["stages"] == 1 and side["precision"] == "fp16"
    assert len(side["onnx_sha256"]) == 64 and side["profile"]["opt"] == [2, 3, 512, 512]


def test_sidecar_check_refuses_mismatches(k1_onnx, tmp_path):
    engine = tmp_path / "e.engine"
    engine.write_bytes(b"plan")
    plan = BuildPlan(k1_onnx, engine, "fp16", 1, 1)
    gpu = {"gpu": "NVIDIA H100", "compute_capability": "9.0"}
    with pytest.raises(ScaoedError, match="no sidecar"):
        check_engine_sidecar(engine, "11.0.0", gpu)
    write_sidecar(plan)
    with pytest.raises(ScaoedError, match="build plan"):
        check_engine_sidecar(engine, "11.0.0", gpu)
    write_sidecar(plan, {"tensorrt": "11.0.0", **gpu})
    assert check_engine_sidecar(engine, "11.0.0", gpu)["built"] is True
    with pytest.raises(ScaoedError, match="TensorRT 11.0.0, this is 11.1.0"):
        check_engine_sidecar(engine, "11.1.0", gpu)
    with pytest.raises(ScaoedError, match="rebuild"):
        check_engine_sidecar(engine, "11.0.0", {"gpu": "NVIDIA A100", "compute_capability": "8.0"})


@pytest.mark.skipif(HAS_TRT, reason="tensorrt is importable here")
def test_build_without_tensorrt_raises_exit_code_4(k1_onnx, tmp_path):
    from scaoed_deploy.runtime.tensorrt import TensorRTMissing

    with pytest.raises(TensorRTMissing) as e:
        build_engine(BuildPlan(k1_onnx, tmp_path / "e.engine", "fp32", 1, 1))
    assert e.value.exit_code == 4 and not (tmp_path / "e.engine").exists()


@needs_tensorrt
def test_tensorrt_engine_builds_runs_and_matches_onnxruntime(k1_onnx, tmp_path):
    from scaoed_deploy.runtime.onnxruntime_backend import OnnxRuntimeRunner
    from scaoed_deploy.runtime.tensorrt import TensorRTRunner

    plan = BuildPlan(
        k1_onnx,
        tmp_path / "e.engine",
        "fp32",
        1,
        1,
        ShapeProfile((64, 64), (64, 64), (128, 128)),
        timing_cache=tmp_path / "t.cache",
    )
    side = build_engine(plan)
    assert side["built"] and (tmp_path / "e.engine").stat().st_size > 0 and (tmp_path / "t.cache").is_file()
    x = np.random.default_rng(0).random((1, 3, 64, 64), dtype=np.float32)
    runner = TensorRTRunner(tmp_path / "e.engine")
    try:
        np.testing.assert_allclose(runner(x), OnnxRuntimeRunner(str(k1_onnx))(x), atol=2e-3)
    finally:
        runner.close()
