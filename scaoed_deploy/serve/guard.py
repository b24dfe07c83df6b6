"""A request guard in front of tritonserver's HTTP endpoint: no request may take the server down.

Triton's HTTP frontend turns a JSON infer request's ``data`` into a buffer sized from the shape the
request *declares* (``element_count x 4`` bytes for FP32), before the model config or the model
sees it: 1 x 3 x 60000 x 60000 with 12 values asked for 43 GB, and tritonserver aborted on
``std::bad_alloc``. No server option bounds it (``--http-max-input-size`` bounds bodies, and this
body is small) and model dims are -1 for dynamic sizes. So ``serve`` runs Triton's HTTP endpoint
on a loopback port of its own, its inference API fenced by a per-run header
(``--http-restricted-api``), and this guard on the public port: it reads each infer request's
JSON header and refuses with HTTP 400, before anything is forwarded, a request whose inputs are
not N x 3 x H x W within the model's limits (max batch, static dims, ``max_side``) or whose JSON
``data`` does not hold as many values as its shape declares. Everything else is passed through as
it is. gRPC goes to Triton directly: its frontend sizes buffers from the data actually sent.
"""

from __future__ import annotations

import contextlib
import http.client
import json
import re
import threading
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

INFER_PATH = re.compile(r"^/v2/models/([^/]+)(?:/versions/[^/]+)?/(infer|generate|generate_stream)$")
HOP_BY_HOP = {"connection", "keep-alive", "transfer-encoding", "te", "trailer", "upgrade", "proxy-connection"}
GUARD_HEADER = "scaoed-guard"
MAX_HEADER_BYTES = 1 << 20  # an infer request's JSON header (without binary data): 1 MiB is plenty


@dataclass
class ModelLimits:
    """What one served model takes: its input, max batch (0: no batching), dims after the batch, max side."""

    input_name: str
    max_batch: int
    dims: list[int]  # -1 where dynamic
    max_side: int | None

    def max_body(self) -> int:
        """The largest request body worth reading: a full batch of the largest images, as JSON text."""
        side = self.max_side or max([d for d in self.dims if d > 0] or [4096])
        return max(1, self.max_batch) * 3 * side * side * 24 + MAX_HEADER_BYTES


def _count_values(data) -> int:
    """Leaves of a (nested) JSON array, iteratively (a deep nesting cannot exhaust the stack)."""
    count, stack = 0, [data]
    while stack:
        item = stack.pop()
        if isinstance(item, list):
            stack.extend(item)
        else:
            count += 1
    return count


def check_infer(header: dict, limits: ModelLimits) -> str | None:
    """Why an infer request (its JSON header) must not reach Triton, or None."""
    inputs = header.get("inputs")
    if not isinstance(inputs, list) or not inputs:
        return "the request has no inputs"
    for inp in inputs:
        if not isinstance(inp, dict):
            return "each input must be an object"
        shape = inp.get("shape")
        if not isinstance(shape, list) or not all(isinstance(d, int) and not isinstance(d, bool) for d in shape):
            return f"input {inp.get('name')!r}: shape must be a list of integers"
        if inp.get("name") != limits.input_name:
            return f"unknown input {inp.get('name')!r}; this model takes {limits.input_name!r}"
        batched = limits.max_batch > 0
        want = len(limits.dims) + (1 if batched else 0)
        if len(shape) != want or any(d < 0 for d in shape):
            return f"input {limits.input_name!r} must have {want} non-negative dims, got {shape}"
        if batched and not 1 <= shape[0] <= limits.max_batch:
            return f"batch must be 1 to {limits.max_batch} on this model, got {shape[0]}"
        dims = shape[1:] if batched else shape
        for got, fixed in zip(dims, limits.dims):
            if fixed > 0 and got != fixed:
                return f"input {limits.input_name!r} must be {limits.dims} after the batch, got {dims}"
        h, w = dims[-2:]
        if h <= 0 or w <= 0 or h % 2 or w % 2:
            return f"height and width must be even and positive, got {h}x{w} (pad the image, as local denoise does)"
        if limits.max_side and max(h, w) > limits.max_side:
            return f"height and width must be at most {limits.max_side} on this model, got {h}x{w} (send tiles)"
        if "data" in inp:
            count = 1
            for d in shape:
                count *= d
            sent = _count_values(inp["data"])
            if sent != count:
                return f"input {limits.input_name!r} declares {count} values (shape {shape}) but sends {sent}"
    return None


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    guard: RequestGuard  # set on the subclass the guard makes

    def log_message(self, *args) -> None:  # the server's own log says what happened
        pass

    def _reply(self, status: int, body: bytes, headers: list[tuple[str, str]] = ()) -> None:
        self.send_response(status)
        for k, v in headers:
            if k.lower() not in HOP_BY_HOP and k.lower() != "content-length":
                self.send_header(k, v)
        self.send_header("Content-Length", str(len(body)))
        if self.close_connection:
            self.send_header("Connection", "close")
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(body)

    def _refuse(self, status: int, message: str) -> None:
        if status < 500:  # a request refused, not Triton still starting
            self.guard.refused += 1
        self.close_connection = True  # a body left unread must not be taken for the next request
        self._reply(status, json.dumps({"error": message}).encode(), [("Content-Type", "application/json")])

    def _handle(self) -> None:
        length = self.headers.get("Content-Length")
        if self.headers.get("Transfer-Encoding", "").lower() == "chunked":
            return self._refuse(411, "send a Content-Length (chunked request bodies are not taken)")
        try:
            size = int(length) if length else 0
        except ValueError:
            return self._refuse(400, f"bad Content-Length {length!r}")
        m = INFER_PATH.match(self.path.split("?", 1)[0])
        if m and self.command == "POST":
            limits = self.guard.models.get(m.group(1))
            if limits is None:
                return self._refuse(404, f"unknown model {m.group(1)!r}")
            if m.group(2) != "infer":
                return self._refuse(400, f"the {m.group(2)} extension is not served; use /infer")
            if size > limits.max_body():
                return self._refuse(413, f"request body of {size} bytes is larger than this model takes")
        body = self.rfile.read(size) if size else b""
        if m and self.command == "POST":
            split = self.headers.get("Inference-Header-Content-Length")
            try:
                head = json.loads((body[: int(split)] if split else body).decode("utf-8"))
            except UnicodeDecodeError as e:
                return self._refuse(400, f"the request's JSON header is not UTF-8 text (byte {e.start})")
            except ValueError as e:
                return self._refuse(400, f"the request's JSON cannot be read ({e})")
            why = check_infer(head, limits) if isinstance(head, dict) else "the request must be a JSON object"
            if why:
                return self._refuse(400, why)
        headers = {k: v for k, v in self.headers.items() if k.lower() not in HOP_BY_HOP}
        headers[GUARD_HEADER] = self.guard.token
        conn = http.client.HTTPConnection("127.0.0.1", self.guard.upstream_port, timeout=self.guard.timeout)
        try:
            conn.request(self.command, self.path, body=body if self.command in ("POST", "PUT") else None,
                         headers=headers)
            resp = conn.getresponse()
            data = resp.read()
        except OSError as e:
            return self._refuse(502, f"tritonserver did not answer ({e})")
        finally:
            conn.close()
        self._reply(resp.status, data, resp.getheaders())

    do_GET = do_POST = do_PUT = do_DELETE = do_HEAD = _handle


class RequestGuard:
    """The guard on ``address:port`` in front of Triton's HTTP endpoint at ``127.0.0.1:upstream_port``."""

    def __init__(self, address: str, port: int, upstream_port: int, models: dict[str, ModelLimits], token: str,
                 timeout: float = 600.0):
        self.models, self.token, self.upstream_port, self.timeout = models, token, upstream_port, timeout
        self.refused = 0
        handler = type("Handler", (_Handler,), {"guard": self})
        self.httpd = ThreadingHTTPServer((address, port), handler)
        self.httpd.daemon_threads = True
        self._thread: threading.Thread | None = None

    def start(self) -> RequestGuard:
        self._thread = threading.Thread(target=self.httpd.serve_forever, name="scaoed-guard", daemon=True)
        self._thread.start()
        return self

    def stop(self) -> None:
        with contextlib.suppress(Exception):
            self.httpd.shutdown()
        self.httpd.server_close()
        if self._thread is not None:
            self._thread.join(5)
