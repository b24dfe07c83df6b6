"""build-engine end to end on CPU: steps 1-4 run, the precision ONNX and build plan are written, and
without TensorRT the exit code is 4; bad requests exit 2 with one line."""

from __future__ import annotations

import hashlib
import importlib.util
import json
import os
import shutil
import time

import pytest
from references import one_error

from scaoed_deploy.artifact import META_PREFIX, read_metadata
from scaoed_deploy.cli import main

HAS_TRT = importlib.util.find_spec("tensorrt") is not None


@pytest.mark.slow
@pytest.mark.skipif(HAS_TRT, reason="tensorrt is importable here")
def test_fp16_build_without_tensorrt(tmp_path, tiny_checkpoint, tiny_k1_onnx, calib_dir, capsys):
    (tmp_path / "export").mkdir()
    shutil.copyfile(tiny_k1_onnx, tmp_path / "export" / tiny_k1_onnx.name)  # `export --stages 1` made it
    args = [
        "build-engine",
        "--fp16",
        "--stages",
        "1",
        "-c",
        str(tiny_checkpoint),
        "--calib",
        str(calib_dir),
        "--calib-count",
        "4",
        "--export-dir",
        str(tmp_path / "export"),
        "-o",
        str(tmp_path / "engines" / "m.engine"),
        "--timing-cache",
        str(tmp_path / "engines" / "t.cache"),
        "--json",
    ]
    code = main(args)
    out, err = capsys.readouterr()
    assert code == 4, err
    last = err.strip().splitlines()[-1]  # a result with next steps, not an error
    assert last.startswith("engine not built: TensorRT is not installed") and "exit 4" in last
    result = json.loads(out)
    assert result["tensorrt_missing"] and result["parity"]["passed"]
    fp16 = tmp_path / "export" / "scaoednet_k1_t2_fp16.onnx"
    assert fp16.is_file() and read_metadata(fp16)["precision"] == "fp16"
    record = json.loads((tmp_path / "export" / "scaoednet_k1_t2_fp16.parity.json").read_text())
    assert record["sha256"] == hashlib.sha256(fp16.read_bytes()).hexdigest()  # the parity that kept this very file
    assert record["mean_dpsnr_db"] == result["parity"]["mean_dpsnr"]
    assert (tmp_path / "export" / "scaoednet_k1_t2_fp32.onnx").is_file()
    plan = json.loads((tmp_path / "engines" / "m.json").read_text())
    assert plan["built"] is False and plan["trtexec"].startswith("trtexec --onnx=")
    assert not (tmp_path / "engines" / "m.engine").exists()
    assert not list((tmp_path / "export").glob(".*tmp*"))  # nothing half-written
    fp32_args = [a if a != "--fp16" else "--fp32" for a in args[:-1]]  # no conversion: the same outcome, sooner
    assert main(fp32_args) == 4  # as a person reads it: what was written, and what to run next
    out = capsys.readouterr().out
    fp32 = tmp_path / "export" / "scaoednet_k1_t2_fp32.onnx"
    assert "Next, on a machine with an NVIDIA GPU" in out and "trtexec --onnx=" in out and str(fp32) in out
    # The fp32 export is reused on the next build, found without --stages (`export`, then `build-engine --int8`).
    code = main(
        [
            "build-engine",
            "--int8",
            "--target",
            "onnxruntime-cpu",
            "-c",
            str(tiny_checkpoint),
            "--calib",
            str(calib_dir),
            "--calib-count",
            "6",
            "--calib-method",
            "max",
            "--export-dir",
            str(tmp_path / "export"),
            "--json",
        ]
    )
    out, _ = capsys.readouterr()
    assert code == 0
    result = json.loads(out)
    assert result["fp32_reused"] and result["engine"] is None and result["parity"]["passed"]
    assert result["conversion"]["peak_rss_mb"]["int8 round 1"] > 50  # the quantizing child's own peak, in MB
    peaks = result["peak_rss_mb"]  # each step's own: the conversion's counts its quantizing child on top
    assert {"fp32_onnx", "precision_onnx", "lint", "parity"} <= set(peaks)
    assert peaks["precision_onnx"] > result["conversion"]["peak_rss_mb"]["int8 round 1"]
    assert (tmp_path / "export" / "scaoednet_k1_t2_int8_ortcpu.onnx").is_file()


@pytest.mark.parametrize(
    "args, message",
    [
        (["build-engine", "--stages", "1"], "choose a precision"),
        (["build-engine", "--fp16", "--stages", "1", "--target", "onnxruntime-cpu"], "INT8 flavour"),
        (["build-engine", "--fp16", "--stages", "1", "--min", "255"], "even"),
    ],
)
def test_bad_requests_exit_2(args, message, capsys):
    assert main(args) == 2
    assert message in one_error(capsys.readouterr().err)


def test_sidd_is_refused_for_calibration(tmp_path, tiny_checkpoint, capsys):
    sidd = tmp_path / "sidd"
    (sidd / "noisy").mkdir(parents=True)
    code = main(
        [
            "build-engine",
            "--int8",
            "--stages",
            "1",
            "-c",
            str(tiny_checkpoint),
            "--calib",
            str(sidd),
            "--export-dir",
            str(tmp_path / "export"),
        ]
    )
    assert code == 1
    assert "evaluation data" in capsys.readouterr().err
    assert not (tmp_path / "export").exists()  # refused before the export, not after it


def _fake_export(path, identity, stages):
    """A minimal ONNX file carrying export's metadata (what newest_export reads)."""
    import onnx
    from onnx import TensorProto, helper

    x = helper.make_tensor_value_info("x", TensorProto.FLOAT, [1])
    model = helper.make_model(
        helper.make_graph(
            [helper.make_node("Identity", ["x"], ["y"])],
            "g",
            [x],
            [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1])],
        )
    )
    helper.set_model_props(model, {META_PREFIX + "weights": identity, META_PREFIX + "stages": str(stages)})
    onnx.save(model, str(path))


def test_without_stages_the_newest_export_of_the_weights_is_built(tmp_path, tiny_checkpoint):
    import os

    from scaoed_deploy.build import newest_export
    from scaoed_deploy.checkpoint import read_checkpoint

    weights = read_checkpoint(tiny_checkpoint)
    d = tmp_path / "export"
    d.mkdir()
    assert newest_export(d, weights) is None
    _fake_export(d / "scaoednet_k3_t2_fp32.onnx", weights.identity, 3)
    _fake_export(d / "scaoednet_k5_t2_fp32.onnx", weights.identity, 5)
    _fake_export(d / "scaoednet_k4_t2_fp32.onnx", "other weights", 4)  # newest, but not these weights
    (d / "scaoednet_k2_t2_fp32.onnx").write_bytes(b"not onnx")  # damaged: passed over
    _fake_export(
        d / "scaoednet_k1_t2_fp32_s256x256.onnx", weights.identity, 1
    )  # a static variant: not export's default
    for age, name in enumerate(["k4", "k2", "k1", "k5", "k3"]):
        path = next(d.glob(f"scaoednet_{name}_t2_fp32*.onnx"))
        os.utime(path, (1e9 - age * 100, 1e9 - age * 100))
    assert newest_export(d, weights) == (d / "scaoednet_k5_t2_fp32.onnx", 5)
    os.utime(d / "scaoednet_k3_t2_fp32.onnx", (2e9, 2e9))
    assert newest_export(d, weights) == (d / "scaoednet_k3_t2_fp32.onnx", 3)


@pytest.mark.slow
def test_without_stages_or_an_export_the_weights_default_k_is_exported(tmp_path, tiny_checkpoint, capsys, monkeypatch):
    from scaoed_deploy import build as build_module
    from scaoed_deploy.checkpoint import DEFAULT_STAGES

    assert build_module.DEFAULT_STAGES == DEFAULT_STAGES == 5  # the authors' K
    DEFAULT_STAGES = 2  # the same fallback with a default that exports in half the time
    monkeypatch.setattr(build_module, "DEFAULT_STAGES", DEFAULT_STAGES)
    code = main(
        [
            "build-engine",
            "--fp32",
            "-c",
            str(tiny_checkpoint),
            "--export-dir",
            str(tmp_path / "export"),
            "-o",
            str(tmp_path / "engines" / "m.engine"),
            "--timing-cache",
            str(tmp_path / "engines" / "t.cache"),
        ]
    )
    out, err = capsys.readouterr()
    assert code == (0 if HAS_TRT else 4), err
    assert f"exporting their default K={DEFAULT_STAGES}" in " ".join(
        (out + err).split()
    )  # the authors' layout has no K
    path = tmp_path / "export" / f"scaoednet_k{DEFAULT_STAGES}_t2_fp32.onnx"
    assert read_metadata(path)["stages"] == str(DEFAULT_STAGES)


def _descendants(pid: int) -> set[int]:
    """Every process below ``pid`` (from /proc's parent links)."""
    children: dict[int, list[int]] = {}
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                with open(f"/proc/{entry}/stat") as f:
                    ppid = int(f.read().rsplit(")", 1)[1].split()[1])
            except (OSError, IndexError, ValueError):
                continue
            children.setdefault(ppid, []).append(int(entry))
    found, todo = set(), [pid]
    while todo:
        for c in children.get(todo.pop(), []):
            found.add(c)
            todo.append(c)
    return found


def test_sigterm_inside_an_int8_calibration_ends_it_within_10_s_and_leaves_nothing(tmp_path, k2_maps_onnx, calib_dir):
    """A real SIGTERM while ONNX Runtime calibrates a K = 2 model in the step's child process: exit 143 within 10 s,
    one error line, no process of the command left, no INT8 file, no temporary file."""
    import signal
    import subprocess
    import sys

    work, tmp = tmp_path / "export", tmp_path / "tmp"
    tmp.mkdir()
    cmd = [
        sys.executable,
        "-m",
        "scaoed_deploy.cli",
        "build-engine",
        "--int8",
        "--target",
        "onnxruntime-cpu",
        "--onnx",
        str(k2_maps_onnx),
        "--calib",
        str(calib_dir),
        "--calib-count",
        "400",
        "--export-dir",
        str(work),
        "-o",
        str(tmp_path / "m.engine"),
    ]
    proc = subprocess.Popen(cmd, stderr=subprocess.PIPE, text=True, env={**os.environ, "TMPDIR": str(tmp)})
    deadline, step_pids = time.monotonic() + 120, set()
    while time.monotonic() < deadline and proc.poll() is None:
        below = _descendants(proc.pid)
        grandchildren = below - {p for p in below if _parent(p) == proc.pid}
        if grandchildren:  # the forkserver's child: the quantization step is running
            step_pids = grandchildren
            break
        time.sleep(0.05)
    assert step_pids, "the calibration step never started in a child process"
    time.sleep(1.0)
    assert all(os.path.exists(f"/proc/{p}") for p in step_pids)  # still calibrating when the signal comes
    tree = _descendants(proc.pid)  # the forkserver and the step's child
    t0 = time.monotonic()
    proc.send_signal(signal.SIGTERM)
    _, err = proc.communicate(timeout=30)
    assert time.monotonic() - t0 < 10 and proc.returncode == 143, err
    assert one_error(err) == "error: terminated"
    time.sleep(0.5)
    assert not [p for p in step_pids | tree if _running(p)], [_state(p) for p in step_pids | tree]
    assert not list(work.glob("*int8*")) and not list(tmp.iterdir())


def _state(pid: int) -> str:
    """A process's state letter (R, S, D, Z: a zombie has ended), or '' where it is gone."""
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().rsplit(")", 1)[1].split()[0]
    except (OSError, IndexError):
        return ""


def _running(pid: int) -> bool:
    return _state(pid) not in ("", "Z", "X")


def _parent(pid: int) -> int | None:
    try:
        with open(f"/proc/{pid}/stat") as f:
            return int(f.read().rsplit(")", 1)[1].split()[1])
    except (OSError, IndexError, ValueError):
        return None
