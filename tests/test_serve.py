"""Serving: the Triton model repository (configs read back with Triton's own ModelConfig protobuf), and a
real tritonserver (the one bundled in nvidia-pytriton) on a tiny generated ONNX with the artifact's
input/output names and dynamic N/H/W, checked against ONNX Runtime."""

from __future__ import annotations

import hashlib
import json
import os
import signal
import subprocess
import sys
import threading
import time
import urllib.request
from pathlib import Path

import numpy as np
import pytest
from google.protobuf import json_format
from references import tiny_conv_onnx

from scaoed_deploy.build.tensorrt import BuildPlan, ShapeProfile, write_sidecar
from scaoed_deploy.cli import main
from scaoed_deploy.errors import ScaoedError
from scaoed_deploy.images import read_image
from scaoed_deploy.runtime import Denoiser
from scaoed_deploy.runtime.base import Limits
from scaoed_deploy.runtime.triton_client import TritonRunner, config_limits, parse_url
from scaoed_deploy.serve import RepoOptions, TritonServer, bundled_server, free_port, make_repository, read_config
from scaoed_deploy.serve.repository import default_max_side
from scaoed_deploy.serve.server import process_tree_rss, shm_regions
from scaoed_deploy.util.files import sha256_of

pb = pytest.importorskip("tritonclient.grpc.model_config_pb2")


def _ort(path: Path, x: np.ndarray) -> np.ndarray:
    import onnxruntime as ort

    return ort.InferenceSession(str(path), providers=["CPUExecutionProvider"]).run(None, {"noisy": x})[0]


@pytest.fixture(scope="module")
def tiny(tmp_path_factory) -> Path:
    return tiny_conv_onnx(tmp_path_factory.mktemp("tiny") / "tiny.onnx")


# ---------------------------------------------------------------------------- the repository (no server)
def test_native_onnx_config_reads_back_with_the_artifacts_io(tiny, tmp_path):
    out = make_repository([tiny], tmp_path / "repo", RepoOptions(allow_unverified=True, max_batch=4))
    cfg = read_config(tmp_path / "repo" / "tiny" / "config.pbtxt")
    assert out["models"][0]["name"] == "tiny" == cfg.name
    assert cfg.backend == "onnxruntime" and cfg.max_batch_size == 4
    assert [(i.name, pb.DataType.Name(i.data_type), list(i.dims)) for i in cfg.input] == [
        ("noisy", "TYPE_FP32", [3, -1, -1])
    ]
    assert [o.name for o in cfg.output] == ["denoised"]
    assert list(cfg.dynamic_batching.preferred_batch_size) == [2, 4]
    assert cfg.instance_group[0].kind == pb.ModelInstanceGroup.KIND_GPU
    assert cfg.parameters["sha256"].string_value == hashlib.sha256(tiny.read_bytes()).hexdigest()
    assert (tmp_path / "repo" / "tiny" / "1" / "model.onnx").read_bytes() == tiny.read_bytes()


def test_unverified_artifacts_are_refused_unless_allowed(tiny, tmp_path):
    with pytest.raises(ScaoedError, match="records no verification.*--allow-unverified"):
        make_repository([tiny], tmp_path / "repo")
    assert not (tmp_path / "repo" / "tiny").exists()


def test_python_backend_variant_and_overwrite_rule(tiny, tmp_path):
    repo = tmp_path / "repo"
    opts = RepoOptions(python_backend=True, allow_unverified=True, threads=1)
    make_repository([tiny], repo, opts)
    cfg = read_config(repo / "tiny" / "config.pbtxt")
    assert cfg.backend == "python" and cfg.instance_group[0].kind == pb.ModelInstanceGroup.KIND_CPU
    assert {k: cfg.parameters[k].string_value for k in ("artifact", "backend", "threads")} == {
        "artifact": "tiny.onnx",
        "backend": "onnxruntime",
        "threads": "1",
    }
    assert sorted(p.name for p in (repo / "tiny" / "1").iterdir()) == ["model.py", "tiny.onnx"]
    with pytest.raises(ScaoedError, match="exists; --overwrite"):
        make_repository([tiny], repo, opts)
    make_repository([tiny], repo, RepoOptions(python_backend=True, allow_unverified=True, overwrite=True))
    assert "threads" not in read_config(repo / "tiny" / "config.pbtxt").parameters
    assert [p.name for p in repo.iterdir()] == ["tiny"] and sorted(p.name for p in tmp_path.iterdir()) == ["repo"]
    (repo / ".left-over").mkdir()  # what a killed run could leave: Triton would take it for a model
    with pytest.raises(ScaoedError, match=r"\.left-over: a folder without config.pbtxt in the repository"):
        TritonServer(repo).start()


def test_engine_config_comes_from_its_profile(tiny, tmp_path):
    engine = tmp_path / "k1_fp16.engine"
    engine.write_bytes(b"a serialized plan")
    plan = BuildPlan(
        tiny, engine, "fp16", 1, 2, ShapeProfile(min_hw=(64, 64), opt_hw=(256, 256), max_hw=(512, 512), batch=(1, 2, 4))
    )
    write_sidecar(
        plan,
        {"tensorrt": "11.0.0", "gpu": "NVIDIA H100", "compute_capability": "9.0", "engine_sha256": sha256_of(engine)},
    )
    make_repository([engine], tmp_path / "repo")
    cfg = read_config(tmp_path / "repo" / "k1_fp16" / "config.pbtxt")
    assert cfg.platform == "tensorrt_plan" and cfg.default_model_filename == "model.plan"
    assert cfg.max_batch_size == 4 and list(cfg.input[0].dims) == [3, -1, -1]
    assert cfg.parameters["profile_max"].string_value == "4x3x512x512"
    assert cfg.parameters["tensorrt"].string_value == "11.0.0"
    # what a client makes of it: tiles within the profile's H/W, batches up to its max N
    served = json_format.MessageToDict(cfg, preserving_proto_field_name=True)
    assert config_limits(served) == Limits((64, 64), (512, 512), None, 4)
    engine.write_bytes(b"another plan")  # no longer the engine its sidecar describes
    with pytest.raises(ScaoedError, match="sha256 differs"):
        make_repository([engine], tmp_path / "repo2")


def test_openvino_ir_config(tiny, tmp_path):
    import openvino as ov

    xml = tmp_path / "tiny_openvino.xml"
    ov.save_model(ov.convert_model(str(tiny)), str(xml))
    make_repository([xml], tmp_path / "repo", RepoOptions(allow_unverified=True, threads=2))
    cfg = read_config(tmp_path / "repo" / "tiny_openvino" / "config.pbtxt")
    assert cfg.backend == "openvino" and cfg.instance_group[0].kind == pb.ModelInstanceGroup.KIND_CPU
    assert cfg.parameters["INFERENCE_NUM_THREADS"].string_value == "2"
    # unbatched, N dynamic: that backend would pin the batch at max_batch_size
    assert (
        cfg.max_batch_size == 0 and list(cfg.input[0].dims) == [-1, 3, -1, -1] and not cfg.HasField("dynamic_batching")
    )
    assert sorted(p.name for p in (tmp_path / "repo" / "tiny_openvino" / "1").iterdir()) == ["model.bin", "model.xml"]


def test_bad_configs_and_repositories_get_one_line(tiny, tmp_path):
    (tmp_path / "m").mkdir()
    (tmp_path / "m" / "config.pbtxt").write_text("max_batch_size: lots\n")
    with pytest.raises(ScaoedError, match="not a valid Triton model config"):
        read_config(tmp_path / "m" / "config.pbtxt")
    repo = tmp_path / "native"
    make_repository([tiny], repo, RepoOptions(allow_unverified=True))
    with pytest.raises(ScaoedError, match="needs Triton's onnxruntime backend.*--python-backend"):
        TritonServer(repo).start()
    with pytest.raises(ScaoedError, match="model repository not found"):
        TritonServer(tmp_path / "nowhere").start()
    with pytest.raises(ScaoedError, match="grpc://HOST:PORT"):
        parse_url("ftp://x:1")
    assert parse_url("localhost:9000") == ("http", "localhost:9000") and parse_url("grpc://h")[1] == "h:8001"


# ---------------------------------------------------------------------------- a real server
def _server_or_skip():
    try:
        bundled_server()
    except ScaoedError as e:
        pytest.skip(str(e))


def _python_repo(tiny: Path, root: Path, delay_us: int = 200_000) -> Path:
    repo = root / "repo"
    make_repository(
        [tiny],
        repo,
        RepoOptions(python_backend=True, allow_unverified=True, max_batch=8, max_queue_delay_us=delay_us, threads=1),
    )
    return repo


def _server(repo: Path, log: Path) -> TritonServer:
    return TritonServer(
        repo, free_port(), free_port(), free_port(), address="127.0.0.1", log_path=log, ready_timeout=90
    )


@pytest.fixture(scope="module")
def server(tiny, tmp_path_factory):
    _server_or_skip()
    root = tmp_path_factory.mktemp("served")
    s = _server(_python_repo(tiny, root), root / "server.log").start()
    yield s
    s.stop(timeout=0)  # killed: the clean shutdown is the last test's
    s.cleanup()


def _ready_facts(proc: subprocess.Popen, timeout: float = 120) -> dict:
    """The JSON `serve --json` prints once the server is ready; the serve's own error if it exits first."""
    lines, deadline = [], time.monotonic() + timeout
    while time.monotonic() < deadline:
        line = proc.stdout.readline()
        if not line:  # end of output: serve exited before it was ready
            proc.wait(10)
            pytest.fail(f"serve exited ({proc.returncode}) before it was ready: {proc.stderr.read()[-2000:]}")
        lines.append(line)
        if line == "}\n":
            return json.loads("".join(lines))
    pytest.fail("serve was not ready in time")


def _metric(server: TritonServer, name: str) -> float:
    text = urllib.request.urlopen(server.metrics_url, timeout=5).read().decode()
    return sum(
        float(line.rsplit(" ", 1)[1])
        for line in text.splitlines()
        if line.startswith(name + "{") and 'model="tiny"' in line
    )


def test_one_request_over_http_and_grpc_equals_onnx_runtime(server, tiny):
    assert server.ready() and server.rss_bytes() > 0
    x = np.random.default_rng(1).random((2, 3, 24, 40), dtype=np.float32)
    for url in (server.http_url, server.grpc_url):
        runner = TritonRunner(url, "tiny")  # no I/O until it is activated (here: by the first call)
        assert not runner.is_active and runner.client is None
        try:
            y = runner(x)
            assert runner.is_active
        finally:
            runner.close()
        assert not runner.is_active and runner.client is None
        assert y.shape == x.shape
        np.testing.assert_allclose(y, _ort(tiny, x), rtol=0, atol=1e-6)


def test_config_read_back_from_the_server(server):
    mine = read_config(server.repo / "tiny" / "config.pbtxt")
    with TritonRunner(server.grpc_url) as runner:  # the only model, found by itself
        served = runner.config
    assert runner.model == "tiny" and served["backend"] == "python" and int(served["max_batch_size"]) == 8
    assert [int(d) for d in served["input"][0]["dims"]] == list(mine.input[0].dims)
    assert served["dynamic_batching"]["preferred_batch_size"] == list(mine.dynamic_batching.preferred_batch_size)
    assert {k: v["string_value"] for k, v in served["parameters"].items()} == {
        k: v.string_value for k, v in mine.parameters.items()
    }
    side = int(mine.parameters["max_side"].string_value)
    assert side == default_max_side(8) and runner.limits.max_batch == 8 and runner.limits.max_hw == (side, side)


def test_concurrent_requests_are_batched(server, tiny):
    before_req, before_exec = (
        _metric(server, "nv_inference_request_success"),
        _metric(server, "nv_inference_exec_count"),
    )
    xs = [np.random.default_rng(i).random((1, 3, 16, 16), dtype=np.float32) for i in range(8)]
    results, barrier = [None] * 8, threading.Barrier(8)

    def one(i):
        runner = TritonRunner(server.http_url, "tiny")
        barrier.wait()
        results[i] = runner(xs[i])
        runner.close()

    threads = [threading.Thread(target=one, args=(i,)) for i in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    for x, y in zip(xs, results):
        np.testing.assert_allclose(y, _ort(tiny, x), rtol=0, atol=1e-6)
    requests = _metric(server, "nv_inference_request_success") - before_req
    executions = _metric(server, "nv_inference_exec_count") - before_exec
    assert requests == 8 and executions < requests  # the dynamic batcher grouped them


def test_requests_the_server_refuses_get_one_line(server):
    runner = TritonRunner(server.http_url, "tiny")
    try:
        with pytest.raises(ScaoedError, match=r"refused a 1x1x16x16 request") as e:
            runner(np.zeros((1, 1, 16, 16), np.float32))
        assert "\n" not in str(e.value)
        with pytest.raises(ScaoedError, match=r"refused a 9x3x16x16 request.*batch"):
            runner(np.zeros((9, 3, 16, 16), np.float32))
    finally:
        runner.close()
    with pytest.raises(ScaoedError, match=r"model 'nope' is not ready.*\(ready: tiny\)"):
        TritonRunner(server.http_url, "nope").activate()
    nobody = TritonRunner(f"http://127.0.0.1:{free_port()}")  # made without connecting
    with pytest.raises(ScaoedError, match="cannot reach a Triton server"):
        nobody.activate()
    assert not nobody.is_active and nobody.client is None


def test_denoise_against_the_server_equals_local(server, tiny, tmp_path, capsys):
    from PIL import Image

    src = tmp_path / "in"
    src.mkdir()
    rng = np.random.default_rng(3)
    for name in ("a.png", "b.png"):
        Image.fromarray(rng.integers(0, 256, (30, 44, 3), dtype=np.uint8)).save(src / name)
    assert (
        main(
            [
                "denoise",
                str(src),
                str(tmp_path / "remote"),
                "--server",
                server.grpc_url,
                "--tile",
                "16",
                "--overlap",
                "4",
                "--json",
            ]
        )
        == 0
    )
    with Denoiser.open(tiny, tile=16, overlap=4) as local:
        for name in ("a.png", "b.png"):
            want = local.denoise_image(read_image(src / name)).rgb
            got = read_image(tmp_path / "remote" / name).rgb
            assert np.abs(got - want).max() <= 1 / 255 + 1e-6
    assert json.loads(capsys.readouterr().out)["model"].startswith("model 'tiny' on the Triton server")
    assert (
        main(
            [
                "denoise",
                str(src / "a.png"),
                str(tmp_path / "x.png"),
                "--server",
                server.http_url,
                "--backend",
                "onnxruntime",
            ]
        )
        == 2
    )  # a usage error
    assert "--backend does not apply with --server" in capsys.readouterr().err


def test_a_model_that_fails_to_load_is_named_and_the_server_stopped(tiny, tmp_path):
    _server_or_skip()
    repo = _python_repo(tiny, tmp_path)
    (repo / "tiny" / "1" / "model.py").write_text("raise ImportError('no module named scaoed_deploy')\n")
    server = _server(repo, tmp_path / "s.log")
    with pytest.raises(ScaoedError, match=r"model 'tiny' failed to load: .*no module named scaoed_deploy \(log: ") as e:
        server.start()
    assert "\\n" not in str(e.value) and not server.running()
    server.cleanup()


@pytest.mark.slow  # starts a server of its own, then `serve` in another process
def test_server_death_mid_folder_stops_and_a_second_run_resumes(tiny, tmp_path, monkeypatch, capsys):
    """A server killed after the first image: the run stops with one line, keeps what it wrote; `serve` (the CLI,
    in its own process) serves the rerun, which does the rest, and stops cleanly on SIGTERM."""
    _server_or_skip()
    from PIL import Image

    import scaoed_deploy.cli.denoise as denoise_cli

    repo = _python_repo(tiny, tmp_path, delay_us=0)
    src = tmp_path / "in"
    src.mkdir()
    for i in range(3):
        Image.fromarray(np.full((20, 20, 3), 40 * i, np.uint8)).save(src / f"{i}.png")
    out = tmp_path / "out"
    server = _server(repo, tmp_path / "s1.log").start()
    regions = shm_regions(server.process.pid)
    assert regions  # the python backend's shared memory, which a killed server leaves behind
    try:
        real = denoise_cli.denoise_file

        def then_die(*args, **kwargs):
            result = real(*args, **kwargs)
            os.killpg(server.process.pid, signal.SIGKILL)
            server.process.wait()
            return result

        monkeypatch.setattr(denoise_cli, "denoise_file", then_die)
        assert main(["denoise", str(src), str(out), "--server", server.http_url]) == 1
        err = capsys.readouterr().err.strip().splitlines()[-1]
        assert "stopped answering" in err and "after 1 of 3 image(s)" in err and "resume" in err
        assert sorted(p.name for p in out.iterdir()) == ["0.png"]
    finally:
        server.stop()
        server.cleanup()
    assert not [r for r in regions if (Path("/dev/shm") / r).exists()]  # stop() removed them
    monkeypatch.undo()

    port = free_port()
    cmd = [
        sys.executable,
        "-m",
        "scaoed_deploy.cli",
        "serve",
        str(repo),
        "--http-port",
        str(port),
        "--grpc-port",
        str(free_port()),
        "--metrics-port",
        str(free_port()),
        "--address",
        "127.0.0.1",
        "--json",
        "--log",
        str(tmp_path / "s2.log"),
    ]
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        facts = _ready_facts(proc)
        assert facts["models"] == {"tiny": "python"} and facts["http"] == f"http://127.0.0.1:{port}"
        assert main(["denoise", str(src), str(out), "--server", facts["http"]]) == 0
        assert sorted(p.name for p in out.iterdir()) == ["0.png", "1.png", "2.png"]
        assert "skipped 1 image(s)" in capsys.readouterr().out
        assert process_tree_rss(facts["pid"]) > 0
        regions = shm_regions(facts["pid"])
        t = time.monotonic()
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(60) == 0 and time.monotonic() - t < 30
        assert "tritonserver stopped (exit code 0)" in proc.stderr.read()
        assert (tmp_path / "s2.log").is_file()  # a clean stop keeps the log --log named
        assert process_tree_rss(facts["pid"]) == 0  # the server and its python stubs are gone, and their memory
        assert regions and not [r for r in regions if (Path("/dev/shm") / r).exists()]
    finally:
        if proc.poll() is None:
            proc.kill()
