"""The CLI: summaries, --json, exit codes and one-line errors."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image as PILImage
from references import official_forward, one_error

from scaoed_deploy.cli import main
from scaoed_deploy.images import to_uint8
from scaoed_deploy.quality import psnr_ssim


def run(capsys, *argv):
    code = main(list(argv))
    out, err = capsys.readouterr()
    return code, out, err


def assert_one_line_error(err: str, *needles: str):
    line = one_error(err)
    for n in needles:
        assert n in line


def _save(path, arr):
    PILImage.fromarray(arr).save(path)
    return path


@pytest.fixture
def noisy(tmp_path):
    rng = np.random.default_rng(1)
    return _save(tmp_path / "noisy.png", rng.integers(0, 256, size=(21, 30, 3), dtype=np.uint8))


def test_info_json_matches_the_paper_within_3_percent(capsys):
    code, out, _ = run(capsys, "info", "--res", "512", "--stages", "1,3,5", "--json")
    assert code == 0
    data = json.loads(out)
    assert data["parameters"] == 3_371_750
    by_k = {r["stages"]: r for r in data["rows"]}
    for k, paper in {1: 212, 3: 640, 5: 1071}.items():
        assert abs(by_k[k]["total_macs"] / (paper * 1e9) - 1) <= 0.03


def test_info_table(capsys):
    code, out, _ = run(capsys, "info", "--stages", "1")
    assert code == 0 and "3,371,750" in out and "212" in out
    assert "This CPU: " in out and "ship on this CPU kind: openvino-int8" in out


def _flags() -> set[str]:
    """This machine's CPU flags, read here from /proc/cpuinfo (not through scaoed_deploy.cpu)."""
    from pathlib import Path

    text = Path("/proc/cpuinfo").read_text() if Path("/proc/cpuinfo").is_file() else ""
    line = next((ln for ln in text.splitlines() if ln.startswith("flags")), "flags :")
    return set(line.split(":", 1)[1].split())


@pytest.mark.parametrize("cap", [None, "AVX2"])
def test_info_says_what_this_cpu_runs_natively_and_which_int8_format_a_build_here_picks(capsys, monkeypatch, cap):
    from scaoed_deploy.cpu import this_cpu

    flags = _flags() & ({"avx2"} if cap else _flags())  # the cap leaves AVX2 and nothing above it
    if cap:
        monkeypatch.setenv("ONEDNN_MAX_CPU_ISA", cap)
    this_cpu.cache_clear()
    try:
        code, out, _ = run(capsys, "info", "--stages", "1", "--json")
    finally:
        this_cpu.cache_clear()
    assert code == 0
    c = json.loads(out)["cpu"]
    vnni = bool(flags & {"avx512_vnni", "avx_vnni"})
    bf16 = bool(flags & {"avx512_bf16", "amx_bf16"})
    assert c["precisions"]["int8"]["dot_product"].startswith("VNNI" if vnni else "vpmaddubsw")
    assert c["int8_formats"]["onnxruntime"]["reduce_range"] is (not vnni)  # 16-bit sums: 7-bit weights
    assert c["int8_formats"]["openvino"]["overflow_fix"] == ("first_layer_only" if vnni else "enable")
    assert c["precisions"]["bf16"]["native"] is bf16 and ("why_not" in c["precisions"]["bf16"]) is (not bf16)
    assert c["ship"] == ["openvino-int8"] + (["openvino-bf16"] if bf16 else [])
    assert (c.get("capped_by") == "ONEDNN_MAX_CPU_ISA=AVX2") is bool(cap)


@pytest.mark.parametrize(
    "argv,needle",
    [
        (["info", "--stages", "9"], "stage counts must be 1 to 8"),
        (["info", "--res", "511"], "even"),
        (["info", "--frobnicate"], "No such option"),
        (["denoise-everything"], "No such command"),
    ],
)
def test_usage_errors_are_one_line_with_exit_2(capsys, argv, needle):
    code, _, err = run(capsys, *argv)
    assert code == 2
    assert_one_line_error(err, needle)


def test_help_exits_0(capsys):
    code, out, _ = run(capsys, "--help")
    assert code == 0 and "denoise" in out


def test_denoise_without_checkpoint_or_demo_weights_refuses(capsys, noisy, tmp_path, monkeypatch):
    import scaoed_deploy.weights as demo

    monkeypatch.setattr(demo, "DEMO_PATH", tmp_path / "absent.safetensors")
    code, _, err = run(capsys, "denoise", str(noisy), str(tmp_path / "o.png"))
    assert code == 1
    assert_one_line_error(err, "--checkpoint", "no demo weights")
    assert not (tmp_path / "o.png").exists()


def test_denoise_without_checkpoint_uses_the_demo_weights_and_says_so(
    capsys, noisy, tmp_path, tiny_checkpoint, monkeypatch
):
    import scaoed_deploy.weights as demo
    from scaoed_deploy.checkpoint import convert

    convert(tiny_checkpoint, tmp_path / "demo.safetensors", stages=1)
    monkeypatch.setattr(demo, "DEMO_PATH", tmp_path / "demo.safetensors")
    code, out, err = run(capsys, "denoise", str(noisy), str(tmp_path / "o.png"))
    assert code == 0 and (tmp_path / "o.png").is_file() and "K=1" in out
    assert demo.DEMO_NOTICE in err.splitlines() and "error:" not in err and "Traceback" not in err


def test_denoise_with_corrupt_checkpoint(capsys, noisy, tmp_path):
    bad = tmp_path / "bad.pth"
    bad.write_bytes(b"PK\x03\x04 definitely not a checkpoint")
    code, _, err = run(capsys, "denoise", str(noisy), str(tmp_path / "o.png"), "-c", str(bad))
    assert code == 1
    assert_one_line_error(err, "bad.pth")


def test_denoise_odd_size_matches_the_reference_on_a_padded_input(
    capsys, noisy, tmp_path, tiny_checkpoint, official_sd_t2
):
    out_path = tmp_path / "out.png"
    code, out, _ = run(
        capsys, "denoise", str(noisy), str(out_path), "-c", str(tiny_checkpoint), "--stages", "2", "--device", "cpu"
    )
    assert code == 0 and "K=2" in out
    got = np.asarray(PILImage.open(out_path))
    assert got.shape == (21, 30, 3)
    # independent reference: edge-pad to even size, authors'-layout forward, crop, clamp, 8-bit
    x = np.asarray(PILImage.open(noisy)).astype(np.float32) / 255
    padded = np.pad(x, ((0, 1), (0, 0), (0, 0)), mode="edge")
    y, _ = official_forward(official_sd_t2, torch.from_numpy(padded.transpose(2, 0, 1))[None], 2)
    expected = to_uint8(y[0].numpy().transpose(1, 2, 0)[:21])
    assert np.abs(got.astype(int) - expected).max() <= 1


def test_denoise_reference_prints_the_papers_metrics(capsys, noisy, tmp_path, tiny_checkpoint):
    clean = _save(tmp_path / "clean.png", np.full((21, 30, 3), 128, np.uint8))
    code, out, _ = run(
        capsys,
        "denoise",
        str(noisy),
        str(tmp_path / "o.png"),
        "-c",
        str(tiny_checkpoint),
        "--stages",
        "1",
        "-r",
        str(clean),
        "--json",
    )
    assert code == 0
    r = json.loads(out)["results"][0]
    psnr, ssim = psnr_ssim(np.asarray(PILImage.open(tmp_path / "o.png")), np.asarray(PILImage.open(clean)))
    assert r["psnr"] == pytest.approx(psnr) and r["ssim"] == pytest.approx(ssim)
    assert r["psnr_in"] == pytest.approx(
        psnr_ssim(np.asarray(PILImage.open(noisy)), np.asarray(PILImage.open(clean)))[0]
    )
    import resource

    assert 0 < r["peak_rss_mb"] <= resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024 + 1  # this image's own


@pytest.mark.parametrize(
    "mode,shape,dtype,out_mode",
    [("L", (10, 12), np.uint8, "L"), ("RGBA", (10, 12, 4), np.uint8, "RGBA"), ("I;16", (10, 12), np.uint16, "I;16")],
)
def test_denoise_keeps_channels_and_depth(capsys, tmp_path, tiny_checkpoint, mode, shape, dtype, out_mode):
    rng = np.random.default_rng(2)
    arr = rng.integers(0, np.iinfo(dtype).max, size=shape, dtype=dtype)
    src = tmp_path / "in.png"
    PILImage.fromarray(arr, mode if mode != "I;16" else None).save(src)
    code, _, _ = run(capsys, "denoise", str(src), str(tmp_path / "o.png"), "-c", str(tiny_checkpoint), "--stages", "1")
    assert code == 0
    out = PILImage.open(tmp_path / "o.png")
    assert out.mode == out_mode and out.size == (12, 10)
    if mode == "RGBA":
        np.testing.assert_array_equal(np.asarray(out)[..., 3], arr[..., 3])


def test_denoise_folder_reports_a_corrupt_image_and_writes_the_rest(capsys, tmp_path, tiny_checkpoint):
    src, dst = tmp_path / "in", tmp_path / "out"
    src.mkdir()
    rng = np.random.default_rng(3)
    for name in ("a.png", "c.png"):
        _save(src / name, rng.integers(0, 256, size=(8, 8, 3), dtype=np.uint8))
    (src / "b.png").write_bytes(b"\x89PNG\r\n\x1a\n broken")
    code, _, err = run(capsys, "denoise", str(src), str(dst), "-c", str(tiny_checkpoint), "--stages", "1")
    assert code == 1
    assert sorted(p.name for p in dst.iterdir()) == ["a.png", "c.png"]
    assert "b.png" in err and "1 of 3 image(s) failed" in err and "Traceback" not in err
    assert "[3/3]" in err and "c.png" in err  # a progress line per image where stderr is a log, not a terminal


def test_convert_round_trip_from_the_cli(capsys, tmp_path, tiny_checkpoint):
    code, out, _ = run(
        capsys, "convert", str(tiny_checkpoint), str(tmp_path / "m.safetensors"), "--stages", "3", "--json"
    )
    assert code == 0 and json.loads(out)["parameters"] > 0
    code, _, _ = run(capsys, "convert", str(tmp_path / "m.safetensors"), str(tmp_path / "back.pth"))
    assert code == 0
    code, _, err = run(capsys, "convert", str(tiny_checkpoint), str(tmp_path / "m.onnx"))
    assert code == 1
    assert_one_line_error(err, "unknown output format")


def test_an_existing_output_is_replaced_only_with_overwrite(capsys, noisy, tmp_path, tiny_checkpoint):
    out_path = tmp_path / "o.png"
    out_path.write_bytes(b"keep me")
    code, _, err = run(capsys, "denoise", str(noisy), str(out_path), "-c", str(tiny_checkpoint), "--stages", "1")
    assert code == 1 and "exists; --overwrite to replace it" in err and out_path.read_bytes() == b"keep me"
    code, _, _ = run(
        capsys, "denoise", str(noisy), str(out_path), "-c", str(tiny_checkpoint), "--stages", "1", "--overwrite"
    )
    assert code == 0 and np.asarray(PILImage.open(out_path)).shape == (21, 30, 3)


def test_progress_lines_in_a_log_are_never_wrapped(capsys):
    from scaoed_deploy.cli.common import progress_steps

    message = "reading the file back: " + "precision per node, weights; " * 8
    with progress_steps() as step:
        step(message)
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and message.strip() in err


def test_one_large_image_shows_progress_over_its_tiles_with_the_time_left(capsys, tmp_path, tiny_checkpoint):
    from scaoed_deploy.images import Image, write_image

    src = tmp_path / "big.png"
    write_image(src, Image(rgb=np.random.default_rng(0).random((100, 80, 3), dtype=np.float32)))
    code = main(
        [
            "denoise",
            str(src),
            str(tmp_path / "out.png"),
            "-m",
            str(tiny_checkpoint),
            "--stages",
            "1",
            "--tile",
            "32",
            "--overlap",
            "4",
            "--tile-batch",
            "4",
        ]
    )
    err = capsys.readouterr().err
    assert code == 0, err
    # 100 rows: tiles at 0, 28, 56, 68; 80 columns: at 0, 28, 48 -> 12 tiles in batches of 4
    lines = [ln.strip() for ln in err.splitlines() if "tiles, about" in ln]
    assert [ln.split(" tiles")[0] for ln in lines] == ["4/12", "8/12", "12/12"] and lines[-1].endswith("0 s left")


def _slow_onnx(path, iterations: int):
    """A model of the denoiser contract (denoised = noisy + 0 x max(loop)) whose one ONNX Runtime call runs a Loop
    of ``iterations`` 256 x 256 MatMuls: a long native call, as a large model's forward pass is."""
    import numpy as np
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    w = numpy_helper.from_array(np.eye(256, dtype=np.float32), "w")
    body = helper.make_graph(
        [
            helper.make_node("Identity", ["cond_in"], ["cond_out"]),
            helper.make_node("MatMul", ["acc_in", "w"], ["acc_out"]),
        ],
        "body",
        [
            helper.make_tensor_value_info("i", TensorProto.INT64, []),
            helper.make_tensor_value_info("cond_in", TensorProto.BOOL, []),
            helper.make_tensor_value_info("acc_in", TensorProto.FLOAT, [256, 256]),
        ],
        [
            helper.make_tensor_value_info("cond_out", TensorProto.BOOL, []),
            helper.make_tensor_value_info("acc_out", TensorProto.FLOAT, [256, 256]),
        ],
        [w],
    )
    consts = [
        numpy_helper.from_array(np.array(iterations, np.int64), "trip"),
        numpy_helper.from_array(np.array(True), "cond"),
        numpy_helper.from_array(np.ones((256, 256), np.float32), "acc0"),
        numpy_helper.from_array(np.array(0.0, np.float32), "zero"),
    ]
    nodes = [
        helper.make_node("Loop", ["trip", "cond", "acc0"], ["acc"], body=body),
        helper.make_node("ReduceMax", ["acc"], ["m"], keepdims=0),
        helper.make_node("Mul", ["m", "zero"], ["z"]),
        helper.make_node("Add", ["noisy", "z"], ["denoised"]),
    ]
    graph = helper.make_graph(
        nodes,
        "slow",
        [helper.make_tensor_value_info("noisy", TensorProto.FLOAT, ["N", 3, "H", "W"])],
        [helper.make_tensor_value_info("denoised", TensorProto.FLOAT, ["N", 3, "H", "W"])],
        consts,
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    onnx.save(model, str(path))
    return path


def _default_sigint():
    """A command started from a background job inherits SIGINT ignored (and Python then keeps it so): as from a
    terminal, the command gets the default disposition."""
    import signal

    signal.signal(signal.SIGINT, signal.SIG_DFL)


@pytest.mark.slow  # a process of its own, ended by a signal
@pytest.mark.parametrize("signame,as_cpu", [("SIGTERM", None), ("SIGINT", None), ("SIGTERM", "avx2")])
def test_a_signal_inside_a_long_native_call_ends_the_command_within_10_s(tmp_path, signame, as_cpu):
    """SIGTERM or SIGINT while ONNX Runtime is inside one call of a minute: Python cannot take the signal until
    the call returns, so the watchdog ends the command: its one line, its exit code, no output, no temporary.
    Under ``--as-cpu`` the signal goes to the wrapper, which passes it on to the masked command."""
    import contextlib
    import signal
    import subprocess
    import sys
    import time

    import numpy as np
    from references import one_error

    from scaoed_deploy import cpumask
    from scaoed_deploy.images import Image, write_image

    why = as_cpu and cpumask.unsupported()
    if why:
        pytest.skip(why)
    model = _slow_onnx(tmp_path / "slow.onnx", 200_000)
    write_image(tmp_path / "in.png", Image(rgb=np.zeros((8, 8, 3), np.float32)))
    out = tmp_path / "out"
    out.mkdir()
    proc = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "scaoed_deploy.cli",
            *(["--as-cpu", as_cpu] if as_cpu else []),
            "denoise",
            str(tmp_path / "in.png"),
            str(out / "o.png"),
            "-m",
            str(model),
        ],
        stderr=subprocess.PIPE,
        text=True,
        preexec_fn=_default_sigint,
    )
    deadline = time.monotonic() + 120
    runs = proc.pid  # the command itself; under --as-cpu, the wrapper's child that runs it (not the mask's build)
    while as_cpu and runs == proc.pid and time.monotonic() < deadline:
        for kid in Path(f"/proc/{proc.pid}/task/{proc.pid}/children").read_text().split():
            with contextlib.suppress(OSError):
                if b"scaoed_deploy.cli" in Path(f"/proc/{kid}/cmdline").read_bytes():
                    runs = int(kid)
        time.sleep(0.1)
    while time.monotonic() < deadline and "onnxruntime_pybind" not in Path(f"/proc/{runs}/maps").read_text():
        time.sleep(0.2)  # until ONNX Runtime is loaded: the model's first call (of minutes) follows at once
    time.sleep(2)
    assert proc.poll() is None
    t0 = time.monotonic()
    proc.send_signal(getattr(signal, signame))
    _, err = proc.communicate(timeout=60)
    assert time.monotonic() - t0 < 10
    assert proc.returncode == (143 if signame == "SIGTERM" else 130), err
    assert one_error(err) == ("error: terminated" if signame == "SIGTERM" else "error: interrupted")
    assert list(out.iterdir()) == []
    assert not Path(f"/proc/{runs}").exists() or "zombie" in Path(f"/proc/{runs}/status").read_text()
