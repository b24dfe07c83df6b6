"""bench: result schema, ratios against the same run's eager row, skipped backends listed with a reason."""

from __future__ import annotations

import json
import shutil
import time
from pathlib import Path

import numpy as np
import pytest
import torch
from references import one_error

from scaoed_deploy import checkpoint as ckpt
from scaoed_deploy.bench import BenchConfig, latency_stats, markdown, run_bench
from scaoed_deploy.cli import main
from scaoed_deploy.cpu import this_cpu
from scaoed_deploy.errors import ScaoedError
from scaoed_deploy.images import Image, write_image


@pytest.fixture(scope="module")
def result(tmp_path_factory, random_k1_onnx):
    export_dir = tmp_path_factory.mktemp("bench_export")
    shutil.copyfile(random_k1_onnx, export_dir / "scaoednet_k1_t1_fp32.onnx")  # reused: made from the same weights
    cfg = BenchConfig(
        [(32, 32)],
        [1],
        ["onnxruntime", "tensorrt-fp16", "torch-fp16"],
        device="cpu",
        warmup=1,
        iters=3,
        threads=1,
        quality=False,
        export_dir=export_dir,
    )
    return run_bench(ckpt.random_weights(blocks=1, seed=0), cfg)


def test_schema(result):
    assert {"machine", "config", "weights", "timing", "rows"} <= set(result)
    assert {"cpu", "cores", "versions"} <= set(result["machine"])
    assert "1 threads pinned" in result["timing"]
    from scaoed_deploy.runtime.cpu_memory import keep_freed_memory

    assert result["timing"].endswith(keep_freed_memory())  # the malloc settings the times were taken under
    ok = [r for r in result["rows"] if r["status"] == "ok"]
    assert {r["backend"] for r in ok} >= {"torch", "onnxruntime"}
    for r in ok:
        lat = r["latency_ms"]
        assert lat["min"] <= lat["median"] <= lat["p90"] <= lat["p99"] and lat["iters"] == 3
        assert r["images_per_s"] == pytest.approx(1000 / lat["median"])
        assert r["megapixels_per_s"] == pytest.approx(32 * 32 / 1e6 * 1000 / lat["median"])
        assert r["tflops"] == pytest.approx(2 * r["gmacs"] * 1e9 / (lat["median"] / 1000) / 1e12)
        peak = this_cpu().peak_gmacs(1)  # 1 thread: the run's
        if peak:  # the clock is known: the row's MACs per second over the fp32 peak (these rows compute fp32)
            assert r["peak_fraction"] == pytest.approx(r["gmacs"] / (lat["median"] / 1000) / peak["fp32"])
        assert r["peak_memory_mb"] > 0 and r["memory_kind"] == "process RSS peak"
        assert r["row_peak_rss_mb"] >= r["peak_memory_mb"] - 1  # the row's own peak covers its timing's samples
        assert r["paper_latency_s"] is None  # the paper's figure is for 512x512, T=16 only
    json.dumps(result)  # serialisable as written


def test_ratios_are_against_the_same_runs_eager_row(result):
    rows = {r["backend"]: r for r in result["rows"]}
    eager = rows["torch"]["latency_ms"]["median"]
    assert rows["torch"]["ratio_to_eager"] == 1.0
    assert rows["onnxruntime"]["ratio_to_eager"] == pytest.approx(rows["onnxruntime"]["latency_ms"]["median"] / eager)
    peak = this_cpu().peak_gmacs(1)
    if peak:  # at the fp32 peak a row would take eager's time x eager's share of that peak
        for r in rows.values():
            if r["status"] == "ok":
                assert r["ratio_at_peak"] == pytest.approx(rows["torch"]["peak_fraction"])
        assert "At peak: " in markdown(dict(result, command="x"))


def test_unavailable_backends_are_listed_as_skipped(result):
    rows = {r["backend"]: r for r in result["rows"]}
    trt = rows["tensorrt-fp16"]
    assert trt["status"] == "skipped" and trt["reason"] and trt["ratio_to_eager"] is None
    assert "Skipped:" in markdown(dict(result, command="x"))


def test_a_backend_that_cannot_run_is_skipped_before_its_artifact_is_made(tmp_path):
    from scaoed_deploy.bench import ort_kernel_missing

    if ort_kernel_missing("bf16", ("CPUExecutionProvider",)) is None:
        pytest.skip("this ONNX Runtime runs bfloat16 Conv on the CPU")
    made = []
    cfg = BenchConfig(
        [(32, 32)],
        [1],
        ["onnxruntime-bf16", "tensorrt-int8"],
        device="cpu",
        warmup=0,
        iters=1,
        threads=1,
        quality=False,
        export_dir=tmp_path,
    )
    result = run_bench(ckpt.random_weights(blocks=1, seed=0), cfg, step=made.append)
    rows = {r["backend"]: r for r in result["rows"]}
    why = rows["onnxruntime-bf16"]["reason"]  # ONNX Runtime's missing kernel, or (said first) a CPU without bf16
    assert rows["onnxruntime-bf16"]["status"] == "skipped" and ("no bf16 Conv kernel" in why or "no native bf16" in why)
    assert rows["tensorrt-int8"]["status"] == "skipped"
    assert not any(s.startswith("making") for s in made)  # no conversion was started for either
    assert list(tmp_path.iterdir()) == []


def test_latency_stats():
    s = latency_stats([0.001, 0.002, 0.003, 0.004])
    assert s["median"] == pytest.approx(2.5) and s["min"] == pytest.approx(1.0) and s["iters"] == 4


def test_unknown_backend_and_cuda_without_gpu_are_refused(capsys):
    with pytest.raises(ScaoedError, match="unknown backend"):
        run_bench(ckpt.random_weights(blocks=1, seed=0), BenchConfig([(32, 32)], [1], ["onnxruntime-int4"]))
    assert main(["bench", "--backends", "tflite", "--random-seed", "0"]) == 2
    capsys.readouterr()
    if not torch.cuda.is_available():
        assert main(["bench", "--device", "cuda", "--random-seed", "0", "--blocks", "1"]) == 1
        assert "torch sees no CUDA GPU" in one_error(capsys.readouterr().err)


def test_cli_writes_json_markdown_and_plot_with_the_command(tmp_path, capsys):
    code = main(
        [
            "bench",
            "--res",
            "32",
            "--stages",
            "1",
            "--random-seed",
            "0",
            "--blocks",
            "1",
            "--backends",
            "torch",
            "--iters",
            "2",
            "--warmup",
            "0",
            "--threads",
            "1",
            "--no-quality",
            "-o",
            str(tmp_path),
            "--json",
        ]
    )
    assert code == 0
    out = json.loads(capsys.readouterr().out)
    assert out["command"].startswith("scaoed-deploy bench --res 32")
    for suffix in ("json", "md", "png"):
        assert (tmp_path / f"cpu_32.{suffix}").stat().st_size > 0
    assert "scaoed-deploy bench --res 32" in (tmp_path / "cpu_32.md").read_text()
    # Without --json and with stderr not a terminal (a log), progress comes as lines, not a bar drawn at the end.
    code = main(
        [
            "bench",
            "--res",
            "32",
            "--stages",
            "1",
            "--random-seed",
            "0",
            "--blocks",
            "1",
            "--backends",
            "torch",
            "--iters",
            "1",
            "--warmup",
            "0",
            "--threads",
            "1",
            "--no-quality",
            "-o",
            str(tmp_path),
        ]
    )
    err = capsys.readouterr().err
    assert code == 0 and "[1/1] torch, K=1, 32x32: warm-up and 1 timed runs" in err and "━" not in err


def test_an_unnamed_run_changes_no_record(tmp_path, capsys, monkeypatch):
    monkeypatch.chdir(tmp_path)
    args = [
        "bench",
        "--res",
        "32",
        "--stages",
        "1",
        "--random-seed",
        "0",
        "--blocks",
        "1",
        "--backends",
        "torch",
        "--iters",
        "1",
        "--warmup",
        "0",
        "--threads",
        "1",
        "--no-quality",
        "--json",
    ]
    assert main(args) == 0
    files = [Path(f) for f in json.loads(capsys.readouterr().out)["files"]]
    assert files[0].parent.parent == Path("benchmarks/runs") and not (tmp_path / "benchmarks" / "results").exists()
    assert main([*args, "--name", "mine"]) == 0
    capsys.readouterr()
    assert (tmp_path / "benchmarks" / "results" / "mine.json").is_file()


def test_a_busy_machine_is_recorded_and_flagged():
    import subprocess
    import sys

    burner = subprocess.Popen([sys.executable, "-c", "while True: pass"])
    try:
        time.sleep(0.3)
        cfg = BenchConfig([(32, 32)], [1], ["torch"], warmup=1, iters=120, threads=1, quality=False)
        result = run_bench(ckpt.random_weights(blocks=1, seed=0), cfg)
    finally:
        burner.kill()
    load = result["load"]
    assert load["other_processes_cores"] > 0.5 and load["busy"]  # the burner took a core for the whole run
    assert "busy" in result["warnings"][0] and "do not quote" in markdown(result)


AVX2_ONLY = "model name\t: AMD EPYC (test)\nflags\t\t: fpu sse2 avx avx2 fma\n"


@pytest.fixture
def avx2_only(monkeypatch):
    """bench sees an AVX2-only CPU (no AVX-512, VNNI or bf16), whatever this machine is."""
    from scaoed_deploy.bench import candidates, timing
    from scaoed_deploy.cpu import read_cpu

    for module in (candidates, timing):  # which rows run; what the record names
        monkeypatch.setattr(module, "this_cpu", lambda: read_cpu(AVX2_ONLY))


def test_rows_this_cpu_would_emulate_are_skipped_before_any_work_unless_named(avx2_only, tmp_path, monkeypatch):
    from scaoed_deploy.bench import Backends

    made, real = [], Backends.make
    monkeypatch.setattr(Backends, "make", lambda self, name, k: made.append(name) or real(self, name, k))
    cfg = BenchConfig(
        [(16, 16)],
        [1],
        ["torch-bf16", "openvino-bf16"],
        device="cpu",
        warmup=0,
        iters=1,
        threads=1,
        quality=False,
        export_dir=tmp_path,
    )
    result = run_bench(ckpt.random_weights(blocks=1, seed=0), cfg)
    rows = {r["backend"]: r for r in result["rows"]}
    for name in ("torch-bf16", "openvino-bf16"):
        assert rows[name]["status"] == "skipped" and "no native bf16" in rows[name]["reason"], rows[name]
    assert made == ["torch"] and list(tmp_path.iterdir()) == [] and result["machine"]["isa"] == ["avx2"]
    # Named explicitly: it runs, with a warning said in the result.
    cfg = BenchConfig(
        [(16, 16)],
        [1],
        ["torch-bf16"],
        device="cpu",
        warmup=0,
        iters=1,
        threads=1,
        quality=False,
        export_dir=tmp_path,
        explicit=True,
    )
    result = run_bench(ckpt.random_weights(blocks=1, seed=0), cfg)
    assert {r["backend"]: r["status"] for r in result["rows"]} == {"torch": "ok", "torch-bf16": "ok"}
    assert any("torch-bf16 runs although" in w for w in result["warnings"])


def test_ctrl_c_writes_the_rows_already_finished_and_changes_no_record(tmp_path, monkeypatch, capsys):
    import scaoed_deploy.cli.bench as bench_cli
    from scaoed_deploy.bench import Backends

    real = Backends.make

    def interrupted_on_the_second_row(self, name, k):
        if name != "torch":
            raise KeyboardInterrupt
        return real(self, name, k)

    monkeypatch.setattr(Backends, "make", interrupted_on_the_second_row)
    monkeypatch.setattr(bench_cli, "RECORDS", tmp_path / "records")
    monkeypatch.setattr(bench_cli, "RUNS", tmp_path / "runs")
    code = main(
        [
            "bench",
            "--res",
            "16",
            "--stages",
            "1",
            "--backends",
            "torch,onnxruntime",
            "--random-seed",
            "0",
            "--blocks",
            "1",
            "--iters",
            "1",
            "--warmup",
            "0",
            "--threads",
            "1",
            "--no-quality",
            "--name",
            "rec",
            "--export-dir",
            str(tmp_path / "export"),
        ]
    )
    err = capsys.readouterr().err
    assert code == 130 and one_error(err) == "error: interrupted" and "wrote the 1 row(s)" in err
    assert not (tmp_path / "records").exists()  # a record is never replaced by a run cut short
    written = json.loads(next((tmp_path / "runs").rglob("rec.json")).read_text())
    assert written["interrupted"] is True and [r["backend"] for r in written["rows"]] == ["torch"]


def test_an_int8_file_verified_with_vnni_is_remade_not_reused_on_a_cpu_without_it(
    random_k1_onnx, tmp_path, monkeypatch
):
    """A shared export folder: bench made its INT8 file on a VNNI CPU. On an AVX2-only CPU bench (and optimize, which
    gets its artifacts the same way) makes one for that CPU (7-bit weights) instead of timing the other silently;
    back on a VNNI CPU the AVX2 file is reused (it needs nothing that CPU lacks)."""
    import scaoed_deploy.precision.int8 as conv
    import scaoed_deploy.runtime.base as base
    from scaoed_deploy.artifact import read_metadata
    from scaoed_deploy.bench import Backends
    from scaoed_deploy.cpu import read_cpu

    def on(cpuinfo):
        for module in (conv, base):  # the format a build picks; the CPU a reuse is judged on
            monkeypatch.setattr(module, "this_cpu", lambda: read_cpu(cpuinfo))

    shutil.copyfile(random_k1_onnx, tmp_path / "scaoednet_k1_t1_fp32.onnx")
    weights = ckpt.random_weights(blocks=1, seed=0)
    pairs = tmp_path / "pairs"  # one small real-looking pair for the builds' parity (not the four SIDD crops)
    rng = np.random.default_rng(0)
    clean = rng.random((32, 32, 3), dtype=np.float32)
    write_image(pairs / "clean" / "a.png", Image(rgb=clean))
    write_image(pairs / "noisy" / "a.png", Image(rgb=np.clip(clean + rng.normal(0, 0.05, clean.shape), 0, 1)))
    cfg = BenchConfig(
        [(16, 16)],
        [1],
        ["onnxruntime-int8"],
        device="cpu",
        threads=1,
        quality=False,
        export_dir=tmp_path,
        calib_count=4,
        data=pairs,
    )

    def artifact():
        steps: list[str] = []
        path = Backends(weights, cfg, steps.append).artifact(1, "int8", "onnxruntime-cpu")
        detail = json.loads(read_metadata(path)["precision_detail"])
        return path, detail["int8_format"], any(s.startswith("making ") for s in steps)

    on("model name\t: Xeon (test)\nflags\t\t: avx2 avx512f avx512_vnni\n")
    path, fmt, made = artifact()
    assert made and fmt["reduce_range"] is False and fmt["checked_on"]["isa_class"] == "avx512-vnni"
    on(AVX2_ONLY)
    again, fmt, made = artifact()
    assert made and again == path and fmt["reduce_range"] is True and fmt["checked_on"]["isa_class"] == "avx2"
    on("model name\t: Xeon (test)\nflags\t\t: avx2 avx512f avx512_vnni\n")
    assert artifact()[1:] == (fmt, False)  # 7-bit weights hold with VNNI too: reused
