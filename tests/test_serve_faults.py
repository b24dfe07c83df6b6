"""Serving under hostile requests and killed processes, against the real bundled tritonserver: a request beyond
what the model takes is a 400 and the server keeps serving; inputs that are not finite or not of even, positive
size are 400s that say so; the log stays clean; a killed `serve` takes its server with it and the next start
removes what it left."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import numpy as np
import pytest
from references import tiny_conv_onnx

from scaoed_deploy.serve import RepoOptions, TritonServer, free_port, make_repository
from scaoed_deploy.serve.guard import ModelLimits, check_infer
from scaoed_deploy.serve.processes import (
    OWNER_FILE,
    SHM,
    SHM_PREFIX,
    STALE_AFTER_S,
    WORKDIR_PREFIX,
    clean_stale,
    process_tree,
)

MAX_SIDE = 256


def _post(url: str, body: bytes, headers: dict | None = None) -> tuple[int, str]:
    req = urllib.request.Request(url, data=body, headers=headers or {})
    try:
        with urllib.request.urlopen(req, timeout=60) as r:
            return r.status, r.read().decode()
    except urllib.error.HTTPError as e:
        return e.code, e.read().decode()


def _json_infer(shape, data) -> bytes:
    return json.dumps({"inputs": [{"name": "noisy", "shape": shape, "datatype": "FP32", "data": data}]}).encode()


def _binary_infer(x: np.ndarray) -> tuple[bytes, dict]:
    raw = np.ascontiguousarray(x, dtype=np.float32).tobytes()
    head = json.dumps(
        {
            "inputs": [
                {
                    "name": "noisy",
                    "shape": list(x.shape),
                    "datatype": "FP32",
                    "parameters": {"binary_data_size": len(raw)},
                }
            ]
        }
    ).encode()
    return head + raw, {"Inference-Header-Content-Length": str(len(head))}


@pytest.fixture(scope="module")
def served(tmp_path_factory):
    from test_serve import _server_or_skip

    _server_or_skip()
    root = tmp_path_factory.mktemp("faults")
    tiny = tiny_conv_onnx(root / "tiny.onnx")
    make_repository(
        [tiny], root / "repo", RepoOptions(python_backend=True, allow_unverified=True, threads=1, max_side=MAX_SIDE)
    )
    s = TritonServer(
        root / "repo",
        free_port(),
        free_port(),
        free_port(),
        address="127.0.0.1",
        log_path=root / "server.log",
        ready_timeout=90,
    ).start()
    yield s, tiny
    s.stop(timeout=0)  # killed: a clean stop is test_a_clean_stop_...'s
    s.cleanup()


def _good(served) -> None:
    """A good request is answered, with ONNX Runtime's values."""
    import onnxruntime as ort

    server, tiny = served
    x = np.random.default_rng(0).random((1, 3, 8, 12), dtype=np.float32)
    code, text = _post(f"{server.http_url}/v2/models/tiny/infer", _json_infer([1, 3, 8, 12], x.ravel().tolist()))
    assert code == 200, text
    got = np.array(json.loads(text)["outputs"][0]["data"], np.float32).reshape(x.shape)
    want = ort.InferenceSession(str(tiny), providers=["CPUExecutionProvider"]).run(None, {"noisy": x})[0]
    np.testing.assert_allclose(got, want, atol=1e-6)


def test_a_60000_square_request_is_refused_and_the_server_keeps_serving(served):
    server, _ = served
    code, text = _post(f"{server.http_url}/v2/models/tiny/infer", _json_infer([1, 3, 60000, 60000], [0.5] * 12))
    assert code == 400 and f"at most {MAX_SIDE}" in json.loads(text)["error"]
    code, text = _post(f"{server.http_url}/v2/models/tiny/infer", _json_infer([1, 3, 8, 8], [0.5] * 12))
    assert code == 400 and "declares 192 values" in text and "sends 12" in text
    assert server.running()
    _good(served)


@pytest.mark.parametrize(
    "case, shape, fill, says",
    [
        ("nan", (1, 3, 8, 8), np.nan, "NaN or Inf"),
        ("inf", (1, 3, 8, 8), np.inf, "NaN or Inf"),
        ("odd", (1, 3, 7, 9), 0.5, "even and positive, got 7x9"),
        ("zero", (1, 3, 0, 0), 0.5, "even and positive, got 0x0"),
        ("too large", (1, 3, MAX_SIDE + 2, 8), 0.5, f"at most {MAX_SIDE}"),
    ],
)
def test_bad_inputs_are_400s_that_name_the_cause(served, case, shape, fill, says):
    server, _ = served
    body, headers = _binary_infer(np.full(shape, fill, np.float32))
    code, text = _post(f"{server.http_url}/v2/models/tiny/infer", body, headers)
    assert code == 400 and says in json.loads(text)["error"], text


def test_grpc_bad_inputs_are_refused_by_the_model_with_invalid_argument(served):
    import tritonclient.grpc as grpcclient
    from tritonclient.utils import InferenceServerException

    server, _ = served
    client = grpcclient.InferenceServerClient(server.grpc_url.removeprefix("grpc://"))
    for x, says in (
        (np.full((1, 3, 8, 8), np.nan, np.float32), "NaN or Inf"),
        (np.zeros((1, 3, MAX_SIDE + 2, 8), np.float32), f"at most {MAX_SIDE}"),
    ):
        inp = grpcclient.InferInput("noisy", list(x.shape), "FP32")
        inp.set_data_from_numpy(x)
        with pytest.raises(InferenceServerException, match=says) as e:
            client.infer("tiny", [inp])
        assert e.value.status() == "StatusCode.INVALID_ARGUMENT"
    client.close()
    _good(served)


def test_tritons_own_http_port_takes_no_inference_without_the_guard(served):
    server, _ = served
    code, text = _post(
        f"http://127.0.0.1:{server.triton_http_port}/v2/models/tiny/infer", _json_infer([1, 3, 8, 8], [0.5] * 192)
    )
    assert code == 403 and "restricted" in text


def test_the_served_models_log_stays_clean(served):
    server, _ = served
    for _ in range(20):
        _good(served)
    log = server.log_path.read_text(errors="replace")
    assert "PyCapsule" not in log and "Traceback" not in log


def test_check_infer_against_brute_force_limits():
    limits = ModelLimits("noisy", 4, [3, -1, -1], 64)
    for n in (0, 1, 4, 5):
        for h in (0, 2, 3, 64, 66):
            size = {"binary_data_size": n * 3 * h * 8 * 4}
            why = check_infer(
                {"inputs": [{"name": "noisy", "shape": [n, 3, h, 8], "datatype": "FP32", "parameters": size}]}, limits
            )
            ok = 1 <= n <= 4 and 0 < h <= 64 and h % 2 == 0
            assert (why is None) == ok, (n, h, why)
    assert "unknown input" in check_infer({"inputs": [{"name": "x", "shape": [1, 3, 8, 8]}]}, limits)
    fp32 = {"name": "noisy", "datatype": "FP32"}
    assert "must be [3, -1, -1]" in check_infer({"inputs": [{**fp32, "shape": [1, 1, 8, 8]}]}, limits)
    assert "integers" in check_infer({"inputs": [{**fp32, "shape": [1, 3, "8", 8]}]}, limits)
    nested = [[[[0.0] * 8] * 8] * 3]
    assert check_infer({"inputs": [{**fp32, "shape": [1, 3, 8, 8], "data": nested}]}, limits) is None
    assert "must be FP32" in check_infer(
        {"inputs": [{**fp32, "datatype": "BYTES", "shape": [1, 3, 8, 8], "data": nested}]}, limits
    )
    assert "binary_data_size is 4" in check_infer(
        {"inputs": [{**fp32, "shape": [1, 3, 8, 8], "parameters": {"binary_data_size": 4}}]}, limits
    )
    assert "sends no data" in check_infer({"inputs": [{**fp32, "shape": [1, 3, 8, 8]}]}, limits)
    shm = {"shared_memory_region": "r", "shared_memory_byte_size": 768}
    assert "only the parameter binary_data_size" in check_infer(
        {"inputs": [{**fp32, "shape": [1, 3, 8, 8], "parameters": shm}]}, limits
    )


@pytest.mark.slow  # starts a server of its own
def test_a_killed_serve_takes_its_server_with_it_and_the_next_start_cleans_up(tmp_path):
    from test_serve import _server_or_skip

    _server_or_skip()
    tiny = tiny_conv_onnx(tmp_path / "tiny.onnx")
    make_repository([tiny], tmp_path / "repo", RepoOptions(python_backend=True, allow_unverified=True, threads=1))
    ports = [str(free_port()) for _ in range(3)]
    proc = subprocess.Popen(
        [
            sys.executable,
            "-c",
            "import sys; from scaoed_deploy.cli import main; sys.exit(main())",
            "serve",
            str(tmp_path / "repo"),
            "--http-port",
            ports[0],
            "--grpc-port",
            ports[1],
            "--metrics-port",
            ports[2],
            "--address",
            "127.0.0.1",
            "--log",
            str(tmp_path / "server.log"),
        ],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    try:
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline and "Ctrl-C stops it" not in (line := proc.stdout.readline()):
            assert line or proc.poll() is None, "serve exited before it was ready"
        tree = process_tree(proc.pid) - {proc.pid}
        assert len(tree) >= 2  # tritonserver and its python stub
        workdirs = [
            p
            for p in Path("/tmp").glob(WORKDIR_PREFIX + "*")
            if (p / OWNER_FILE).is_file() and (p / OWNER_FILE).read_text() == str(proc.pid)
        ]
        assert len(workdirs) == 1
        proc.kill()  # kill -9: no clean-up of its own runs
        proc.wait()
        deadline = time.monotonic() + 20
        while time.monotonic() < deadline and any(
            Path(f"/proc/{p}").exists() and "Z" not in Path(f"/proc/{p}/stat").read_text().split()[2] for p in tree
        ):
            time.sleep(0.2)
        alive = [
            p for p in tree if Path(f"/proc/{p}").exists() and "Z" not in Path(f"/proc/{p}/stat").read_text().split()[2]
        ]
        assert alive == []  # the server and its stub died with it
        assert clean_stale()["folders"] == [str(workdirs[0])] and not workdirs[0].exists()
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()


def test_clean_stale_removes_only_regions_no_live_process_names(tmp_path):
    if not SHM.is_dir():
        pytest.skip("no /dev/shm")
    stale, young = SHM / f"{SHM_PREFIX}test-stale-{os.getpid()}", SHM / f"{SHM_PREFIX}test-young-{os.getpid()}"
    for region in (stale, young):
        region.write_bytes(b"\0" * 16)
    old = time.time() - STALE_AFTER_S - 5
    os.utime(stale, (old, old))
    try:
        gone = clean_stale()["shm_regions"]
        assert stale.name in gone and not stale.exists() and young.exists()
    finally:
        for region in (stale, young):
            region.unlink(missing_ok=True)


@pytest.mark.slow  # starts a server of its own
def test_a_clean_stop_removes_the_log_it_chose(tmp_path):
    from test_serve import _server_or_skip

    _server_or_skip()
    tiny = tiny_conv_onnx(tmp_path / "tiny.onnx")
    make_repository([tiny], tmp_path / "repo", RepoOptions(python_backend=True, allow_unverified=True, threads=1))
    s = TritonServer(
        tmp_path / "repo", free_port(), free_port(), free_port(), address="127.0.0.1", ready_timeout=90
    ).start()
    log = s.log_path
    assert log.is_file() and s.stop() == 0
    s.cleanup()
    assert not log.exists()  # a named log is kept: test_serve's serve --log test


README = Path(__file__).resolve().parents[1] / "docs" / "serve.md"


def _request_table() -> list[tuple[str, int, str]]:
    """(request, HTTP status, quoted error) from docs/serve.md's table of requests to a served model."""
    text = README.read_text()
    section = text[text.index("| request to a served model |") :]
    rows = []
    for line in section.splitlines()[2:]:
        if not line.startswith("|"):
            break
        cells = [c.strip() for c in line.strip().strip("|").split("|")]
        rows.append((cells[0], int(cells[1]), cells[2].strip("`")))
    return rows


def _row_request(name: str, server) -> tuple[str, bytes, dict]:
    url = f"{server.http_url}/v2/models/tiny/infer"
    if name.startswith("1 x 3 x 60000 x 60000"):
        return url, _json_infer([1, 3, 60000, 60000], [0.5] * 12), {}
    if name.startswith("a shape of 1 x 3 x 8 x 8 with 12 values"):
        return url, _json_infer([1, 3, 8, 8], [0.5] * 12), {}
    shape, fill = {
        "NaN or Inf values": ((1, 3, 8, 8), np.nan),
        "odd size, 1 x 3 x 7 x 9": ((1, 3, 7, 9), 0.5),
        "zero size, 1 x 3 x 0 x 0": ((1, 3, 0, 0), 0.5),
        "a side over `--max-side`": ((1, 3, MAX_SIDE + 2, 8), 0.5),
    }.get(name, ((1, 3, 8, 8), 0.5))
    body, headers = _binary_infer(np.full(shape, fill, np.float32))
    if name.startswith("Triton's own HTTP port"):
        url = f"http://127.0.0.1:{server.triton_http_port}/v2/models/tiny/infer"
    return url, body, headers


@pytest.mark.parametrize("name, status, quoted", _request_table(), ids=[r[0] for r in _request_table()])
def test_each_row_of_the_readmes_request_table(served, name, status, quoted):
    server, _ = served
    code, text = _post(*_row_request(name, server))
    assert code == status and quoted in json.loads(text)["error"], text
    assert server.running()


def test_the_request_table_covers_the_issue_list():
    names = " ".join(r[0] for r in _request_table())
    for case in ("60000", "NaN", "odd", "zero", "max-side", "without the guard"):
        assert case in names


# ------------------------------------------------------------------ the guard is a closed door
def _raw(port: int, request: bytes) -> tuple[int, str]:
    """Send bytes as they are (no client library normalising them); the status and body of the answer."""
    import socket

    with socket.create_connection(("127.0.0.1", port), timeout=60) as sock:
        sock.sendall(request)
        sock.shutdown(socket.SHUT_WR)
        data = b""
        while chunk := sock.recv(1 << 16):
            data += chunk
    head, _, body = data.partition(b"\r\n\r\n")
    return int(head.split(b" ", 2)[1]), body.decode(errors="replace")


def _http(method: str, target: str, body: bytes = b"", headers: tuple = ()) -> bytes:
    lines = [f"{method} {target} HTTP/1.1", "Host: 127.0.0.1", *headers]
    if not any(h.lower().startswith(("content-length", "transfer-encoding")) for h in headers):
        lines.append(f"Content-Length: {len(body)}")
    return ("\r\n".join(lines) + "\r\n\r\n").encode() + body


HUGE = [1, 3, 60000, 60000]  # what Triton would size a 43 GB buffer for, were it forwarded
SMALL = [1, 3, 2, 2]


def _dup_key_body(first, second) -> bytes:
    return b'{"inputs":[{"name":"noisy","shape":%s,"datatype":"FP32","data":%s,"shape":%s}]}' % (
        json.dumps(first).encode(),
        json.dumps([0.5] * 12).encode(),
        json.dumps(second).encode(),
    )


BYPASSES = {  # name: (request bytes for the guard's port, status, what the error says)
    "duplicate shape key": (
        lambda: _http("POST", "/v2/models/tiny/infer", _dup_key_body(HUGE, SMALL)),
        400,
        "appears twice",
    ),
    "duplicate inputs key": (
        lambda: _http(
            "POST",
            "/v2/models/tiny/infer",
            b'{"inputs":'
            + json.dumps([{"name": "noisy", "shape": HUGE, "datatype": "FP32", "data": [0.5] * 12}]).encode()
            + b',"inputs":'
            + json.dumps([{"name": "noisy", "shape": SMALL, "datatype": "FP32", "data": [0.5] * 12}]).encode()
            + b"}",
        ),
        400,
        "appears twice",
    ),
    "absolute-form target": (
        lambda: _http("POST", "http://127.0.0.1:1/v2/models/tiny/infer", _json_infer(HUGE, [0.5] * 12)),
        400,
        "origin form",
    ),
    "100,000-deep nesting": (
        lambda: _http("POST", "/v2/models/tiny/infer", b"[" * 100_000 + b"]" * 100_000),
        400,
        "nested too deeply",
    ),
    "percent-encoded path": (
        lambda: _http("POST", "/v2/models/tiny/%69nfer", _json_infer(HUGE, [0.5] * 12)),
        400,
        "percent-encoding",
    ),
    "double slash": (lambda: _http("POST", "/v2//models/tiny/infer", _json_infer(HUGE, [0.5] * 12)), 400, "empty"),
    "leading double slash": (
        lambda: _http("POST", "//v2/models/tiny/infer", _json_infer(HUGE, [0.5] * 12)),
        400,
        "at most",
    ),
    "dot segment": (lambda: _http("POST", "/v2/models/tiny/./infer", _json_infer(HUGE, [0.5] * 12)), 400, "'.'"),
    "dot-dot segment": (
        lambda: _http("POST", "/v2/models/x/../tiny/infer", _json_infer(HUGE, [0.5] * 12)),
        400,
        "'..'",
    ),
    "query string": (
        lambda: _http("POST", "/v2/models/tiny/infer?x=1", _json_infer(HUGE, [0.5] * 12)),
        400,
        "no query",
    ),
    "Transfer-Encoding and Content-Length": (
        lambda: _http(
            "POST", "/v2/models/tiny/infer", b"0\r\n\r\n", ("Content-Length: 5", "Transfer-Encoding: chunked")
        ),
        411,
        "Transfer-Encoding",
    ),
    "Transfer-Encoding in odd case": (
        lambda: _http(
            "POST", "/v2/models/tiny/infer", b"0\r\n\r\n", ("tRANSFER-eNCODING: Chunked", "content-length: 5")
        ),
        411,
        "Transfer-Encoding",
    ),
    "two Content-Lengths in two cases": (
        lambda: _http(
            "POST",
            "/v2/models/tiny/infer",
            _json_infer(SMALL, [0.5] * 12),
            (f"Content-Length: {len(_json_infer(SMALL, [0.5] * 12))}", "CONTENT-LENGTH: 4"),
        ),
        400,
        "more than once",
    ),
    "two Inference-Header-Content-Lengths": (
        lambda: _http(
            "POST",
            "/v2/models/tiny/infer",
            _json_infer(SMALL, [0.5] * 12),
            ("Inference-Header-Content-Length: 10", "inference-header-content-length: 20"),
        ),
        400,
        "more than once",
    ),
    "compressed body": (
        lambda: _http("POST", "/v2/models/tiny/infer", b"\x1f\x8b", ("Content-Encoding: gzip",)),
        400,
        "Content-Encoding",
    ),
    "model load API": (lambda: _http("POST", "/v2/repository/models/tiny/load", b"{}"), 404, "not served"),
    "GET on infer": (lambda: _http("GET", "/v2/models/tiny/infer"), 404, "not served"),
    "unknown model": (
        lambda: _http("POST", "/v2/models/other/infer", _json_infer(SMALL, [0.5] * 12)),
        404,
        "unknown model",
    ),
    "NaN literal": (
        lambda: _http(
            "POST", "/v2/models/tiny/infer", _json_infer([1, 3, 2, 2], [0.5] * 11).replace(b"]}]", b", NaN]}]")
        ),
        400,
        "not JSON",
    ),
    "binary size that lies": (
        lambda: _http("POST", "/v2/models/tiny/infer", *_lying_binary()),
        400,
        "binary_data_size",
    ),
    "BYTES datatype": (
        lambda: _http(
            "POST",
            "/v2/models/tiny/infer",
            json.dumps(
                {"inputs": [{"name": "noisy", "shape": SMALL, "datatype": "BYTES", "data": ["a"] * 12}]}
            ).encode(),
        ),
        400,
        "must be FP32",
    ),
}


def _lying_binary() -> tuple[bytes, tuple]:
    head = json.dumps(
        {"inputs": [{"name": "noisy", "shape": SMALL, "datatype": "FP32", "parameters": {"binary_data_size": 8}}]}
    ).encode()
    return head + b"\0" * 8, (f"Inference-Header-Content-Length: {len(head)}",)


@pytest.mark.parametrize("name", list(BYPASSES))
def test_each_bypass_family_is_refused_before_triton(served, name):
    server, _ = served
    make, status, says = BYPASSES[name]
    refused = server.guard.refused
    code, text = _raw(server.http_port, make())
    assert code == status and says in json.loads(text)["error"], (code, text)
    assert server.guard.refused == refused + 1  # the guard answered, Triton never saw it
    assert server.running()


def test_a_mixed_run_after_the_bypasses_answers_every_good_request_as_local_denoise(served):
    """200 requests, bypasses and good ones interleaved: the server lives and every good answer is exactly the
    denoise runner's output for the same image (binary in and out, so no JSON rounding)."""
    import tritonclient.http as httpclient

    from scaoed_deploy.runtime.base import RunOptions
    from scaoed_deploy.runtime.registry import open_runner

    server, tiny = served
    client = httpclient.InferenceServerClient(server.http_url.removeprefix("http://"), network_timeout=60)
    rng, names, good = np.random.default_rng(7), list(BYPASSES), 0
    with open_runner(tiny, "onnxruntime", RunOptions(threads=1, allow_unverified=True)) as local:
        for i in range(200):
            if i % 4:
                make, status, _ = BYPASSES[names[i % len(names)]]
                assert _raw(server.http_port, make())[0] == status
                continue
            h, w = 2 * int(rng.integers(1, 20)), 2 * int(rng.integers(1, 20))
            x = rng.random((1, 3, h, w), dtype=np.float32)
            inp = httpclient.InferInput("noisy", list(x.shape), "FP32")
            inp.set_data_from_numpy(x, binary_data=True)
            out = client.infer("tiny", [inp], outputs=[httpclient.InferRequestedOutput("denoised", binary_data=True)])
            assert np.array_equal(out.as_numpy("denoised"), local.run(x)[0]), (h, w)
            good += 1
    client.close()
    assert good == 50 and server.running()
