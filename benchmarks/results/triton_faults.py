#!/usr/bin/env python3
"""Fault run of a served model on loopback: hostile requests, then good ones, and the server must live.

    python3 benchmarks/results/triton_faults.py [--onnx export/scaoednet_k1_t16_fp32.onnx] [--bad 200] [--good 50]

Makes a python-backend model repository from the ONNX (`triton-repo --python-backend --max-side 512`),
starts the bundled tritonserver behind `serve`'s request guard on loopback ports, and sends --bad
malformed or hostile requests of every kind the hostile-input trial found (HTTP JSON and binary, and
gRPC: a 60000 x 60000 shape with 12 values, shape/data count mismatches, NaN and Inf, odd, zero,
negative and oversized sizes, a batch over the max, wrong channels or input name, bodies that are not
JSON or claim 10 GB, the generate extension), cycling through the kinds. After every request it checks
that the server process is the same and alive. Then --good requests of 64 x 64 real noisy crops
through TritonRunner, each compared with ONNX Runtime in this process. Records the server's resident
memory (server + python stub) before and after, and writes triton_faults.json and .md beside this script.
"""

from __future__ import annotations

import argparse
import http.client
import json
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

from scaoed_deploy.bench import machine
from scaoed_deploy.images import read_image
from scaoed_deploy.runtime import OnnxRuntimeRunner
from scaoed_deploy.runtime.triton_client import TritonRunner
from scaoed_deploy.serve import RepoOptions, TritonServer, free_port, make_repository

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent.parent
SIDD = ROOT.parent / "shared" / "data" / "sidd" / "noisy"
MAX_SIDE = 512


def _json(shape, data, name="noisy", datatype="FP32") -> dict:
    return {"inputs": [{"name": name, "shape": shape, "datatype": datatype, "data": data}]}


def _binary(x: np.ndarray) -> tuple[bytes, dict]:
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


def http_kinds() -> dict:
    """{kind: (path suffix, body bytes, extra headers)} of hostile HTTP requests."""
    full = np.full
    return {
        "json 1x3x60000x60000, 12 values": ("infer", json.dumps(_json([1, 3, 60000, 60000], [0.5] * 12)).encode(), {}),
        "json shape/data count mismatch": ("infer", json.dumps(_json([1, 3, 64, 64], [0.5] * 12)).encode(), {}),
        "json negative dims": ("infer", json.dumps(_json([1, 3, -8, 8], [0.5] * 12)).encode(), {}),
        "json FP64 over a huge shape": (
            "infer",
            json.dumps(_json([1, 3, 40000, 40000], [0.5] * 3, datatype="FP64")).encode(),
            {},
        ),
        "json wrong input name": ("infer", json.dumps(_json([1, 3, 8, 8], [0.5] * 192, name="x")).encode(), {}),
        "binary NaN": ("infer", *_binary(full((1, 3, 16, 16), np.nan, np.float32))),
        "binary Inf": ("infer", *_binary(full((1, 3, 16, 16), np.inf, np.float32))),
        "binary odd size 7x9": ("infer", *_binary(full((1, 3, 7, 9), 0.5, np.float32))),
        "binary zero size": ("infer", *_binary(np.zeros((1, 3, 0, 0), np.float32))),
        "binary side over max": ("infer", *_binary(full((1, 3, MAX_SIDE + 2, 8), 0.5, np.float32))),
        "binary batch 64 over max 8": ("infer", *_binary(full((64, 3, 8, 8), 0.5, np.float32))),
        "binary one channel": ("infer", *_binary(full((1, 1, 8, 8), 0.5, np.float32))),
        "body not JSON": ("infer", b"\x00\xffnot json at all", {}),
        "body a JSON list": ("infer", b"[1, 2, 3]", {}),
        "Content-Length of 10 GB": ("infer", b"{}", {"Content-Length": str(10 * 2**30)}),
        "generate extension": ("generate", json.dumps({"noisy": [0.5] * 12}).encode(), {}),
    }


def send_http(port: int, suffix: str, body: bytes, headers: dict) -> tuple[str, str]:
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=120)
    try:
        conn.putrequest("POST", f"/v2/models/{MODEL}/{suffix}")
        headers = {"Content-Length": str(len(body)), **headers}
        for k, v in headers.items():
            conn.putheader(k, v)
        conn.endheaders()
        conn.send(body)
        resp = conn.getresponse()
        text = resp.read().decode(errors="replace")
        try:
            message = json.loads(text).get("error", text)
        except ValueError:
            message = text
        return str(resp.status), message[:160]
    except OSError as e:
        return "connection failed", str(e)[:160]
    finally:
        conn.close()


def grpc_kinds() -> dict:
    """{kind: ModelInferRequest} of hostile gRPC requests (raw protos: the client API refuses some of them)."""
    from tritonclient.grpc import service_pb2

    def request(shape, raw=None, fp32=None):
        req = service_pb2.ModelInferRequest(model_name=MODEL)
        inp = req.inputs.add()
        inp.name, inp.datatype = "noisy", "FP32"
        inp.shape.extend(shape)
        if raw is not None:
            req.raw_input_contents.append(raw)
        else:
            inp.contents.fp32_contents.extend(fp32)
        return req

    return {
        "grpc 1x3x60000x60000, 12 raw values": request([1, 3, 60000, 60000], np.zeros(12, np.float32).tobytes()),
        "grpc 1x3x60000x60000, 12 typed values": request([1, 3, 60000, 60000], fp32=[0.5] * 12),
        "grpc NaN": request([1, 3, 16, 16], np.full((1, 3, 16, 16), np.nan, np.float32).tobytes()),
        "grpc odd size 7x9": request([1, 3, 7, 9], np.zeros((1, 3, 7, 9), np.float32).tobytes()),
    }


def send_grpc(stub, req) -> tuple[str, str]:
    try:
        stub.ModelInfer(req, timeout=120)
        return "OK", ""
    except Exception as e:  # grpc.RpcError: its code and details are the outcome
        code = e.code().name if hasattr(e, "code") else type(e).__name__
        details = e.details() if hasattr(e, "details") else str(e)
        return code, (details or "")[:160]


def good_inputs(count: int, size: int = 64) -> list[np.ndarray]:
    rng = np.random.default_rng(0)
    images = [read_image(p).rgb for p in sorted(SIDD.glob("*.png"))] if SIDD.is_dir() else []
    out = []
    for i in range(count):
        if images:
            im = images[i % len(images)]
            y, x = rng.integers(0, im.shape[0] - size), rng.integers(0, im.shape[1] - size)
            out.append(np.ascontiguousarray(im[y : y + size, x : x + size].transpose(2, 0, 1)[None], np.float32))
        else:
            out.append(rng.random((1, 3, size, size), dtype=np.float32))
    return out


MODEL = ""


def main() -> int:
    global MODEL
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--onnx", default=str(ROOT / "export" / "scaoednet_k1_t16_fp32.onnx"))
    ap.add_argument("--bad", type=int, default=200)
    ap.add_argument("--good", type=int, default=50)
    ap.add_argument("--threads", type=int, default=None)
    args = ap.parse_args()
    onnx = Path(args.onnx)
    if not onnx.is_file():
        print(f"error: {onnx} not found: make it with `scaoed-deploy export --stages 1`", file=sys.stderr)
        return 1
    import grpc
    from tritonclient.grpc import service_pb2_grpc

    with tempfile.TemporaryDirectory() as tmp:
        repo = Path(tmp) / "repo"
        made = make_repository([onnx], repo, RepoOptions(python_backend=True, max_side=MAX_SIDE, threads=args.threads))
        MODEL = made["models"][0]["name"]
        server = TritonServer(
            repo, free_port(), free_port(), free_port(), address="127.0.0.1", log_path=Path(tmp) / "server.log"
        ).start()
        try:
            pid, rss_before = server.process.pid, server.rss_bytes()
            stub = service_pb2_grpc.GRPCInferenceServiceStub(grpc.insecure_channel(f"127.0.0.1:{server.grpc_port}"))
            kinds = [("http", k, v) for k, v in http_kinds().items()] + [
                ("grpc", k, v) for k, v in grpc_kinds().items()
            ]
            outcomes: dict[str, dict] = {}
            deaths, t0 = 0, time.perf_counter()
            for i in range(args.bad):
                proto, kind, req = kinds[i % len(kinds)]
                status, message = send_http(server.http_port, *req) if proto == "http" else send_grpc(stub, req)
                o = outcomes.setdefault(kind, {"sent": 0, "outcomes": {}, "message": message})
                o["sent"] += 1
                o["outcomes"][status] = o["outcomes"].get(status, 0) + 1
                if not server.running() or server.process.pid != pid:
                    deaths += 1
                    break
            bad_s = time.perf_counter() - t0
            reference = OnnxRuntimeRunner(str(onnx), threads=args.threads)
            runner = TritonRunner(server.http_url, MODEL)
            good, worst, failures = 0, 0.0, []
            for x in good_inputs(args.good):
                try:
                    diff = float(np.abs(runner(x) - reference(x)).max())
                except Exception as e:  # counted and named, never stops the run
                    failures.append(str(e).splitlines()[0][:160])
                    continue
                good += 1
                worst = max(worst, diff)
            runner.close()
            alive = server.running() and server.process.pid == pid
            rss_after = server.rss_bytes()
            refused = server.guard.refused if server.guard else None
        finally:
            server.stop()
            server.cleanup()
    accepted = {
        k: o
        for k, o in outcomes.items()
        if not any(s.startswith("4") or s == "INVALID_ARGUMENT" for s in o["outcomes"])
    }
    result = {
        "command": "python3 benchmarks/results/triton_faults.py " + " ".join(sys.argv[1:]),
        "created": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        "machine": machine(),
        "artifact": onnx.name,
        "max_side": MAX_SIDE,
        "bad_requests": args.bad,
        "bad_seconds": round(bad_s, 1),
        "server_deaths": deaths,
        "server_alive_at_end": alive,
        "refused_by_guard": refused,
        "kinds": outcomes,
        "kinds_not_refused": sorted(accepted),
        "good_requests": args.good,
        "good_answered": good,
        "good_failures": failures,
        "good_max_abs_vs_onnxruntime": worst,
        "rss_mib_before": round(rss_before / 2**20, 1),
        "rss_mib_after": round(rss_after / 2**20, 1),
    }
    (HERE / "triton_faults.json").write_text(json.dumps(result, indent=2) + "\n")
    (HERE / "triton_faults.md").write_text(markdown(result))
    print(markdown(result))
    return 0 if deaths == 0 and alive and good == args.good and not accepted else 1


def markdown(r: dict) -> str:
    m = r["machine"]
    lines = [
        f"# Triton fault run: {r['artifact']}",
        "",
        f"`{r['command'].strip()}`",
        "",
        f"Machine: {m['cpu']} ({', '.join(m['isa'])}), {m['cores']} cores. Served through `serve`'s request guard, "
        f"python backend, `--max-side {r['max_side']}`.",
        "",
        f"**{r['bad_requests']} hostile requests** in {r['bad_seconds']} s: server deaths {r['server_deaths']}, "
        f"server alive at the end: {'yes' if r['server_alive_at_end'] else 'NO'}; refused by the guard before "
        f"Triton: {r['refused_by_guard']}; kinds not refused: {', '.join(r['kinds_not_refused']) or 'none'}.",
        "",
        "| kind | sent | outcome | the answer says |",
        "|---|---:|---|---|",
    ]
    for kind, o in r["kinds"].items():
        outcome = ", ".join(f"{s} x{n}" for s, n in o["outcomes"].items())
        lines.append(f"| {kind} | {o['sent']} | {outcome} | {o['message'].replace('|', '/')} |")
    lines += [
        "",
        f"**{r['good_requests']} good requests** (64 x 64 real noisy crops) after them: "
        f"{r['good_answered']} answered, max abs difference to ONNX Runtime in process "
        f"{r['good_max_abs_vs_onnxruntime']:.1e}"
        + (f"; failures: {r['good_failures']}" if r["good_failures"] else "")
        + ".",
        "",
        f"Server resident memory (server + python stub): {r['rss_mib_before']} MiB before the hostile requests, "
        f"{r['rss_mib_after']} MiB after all of them.",
        "",
    ]
    return "\n".join(lines)


if __name__ == "__main__":
    sys.exit(main())
