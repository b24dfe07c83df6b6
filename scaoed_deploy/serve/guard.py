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

The guard is a closed door: it forwards only what it has classified and checked, and refuses
everything else before reading further. What it forwards (``route``):

- ``GET``/``HEAD`` of ``/v2``, ``/v2/health/live``, ``/v2/health/ready``, and of a served model's
  ``/v2/models/NAME[/versions/N]``, ``.../ready``, ``.../config``, ``.../stats``;
- ``POST /v2/repository/index`` (the list of models) with a small JSON object body;
- ``POST /v2/models/NAME[/versions/N]/infer``, its JSON header checked by ``check_infer``.

The request target must be in origin form and canonical, exactly as the route names it: no
absolute form (``http://host/...``), no query, no percent-encoding, no empty, ``.`` or ``..``
segments. The body is read by ``Content-Length`` alone: a ``Transfer-Encoding`` or
``Content-Encoding``, or a repeated ``Content-Length`` or ``Inference-Header-Content-Length``, is
refused. JSON is parsed as strictly as the server does, never more loosely: an object with a
repeated key (which parsers resolve differently: Python keeps the last, Triton the first) is refused,
and so is nesting too deep to parse. What is forwarded is rebuilt from what was checked: the same
path, the bytes read, and only the headers Triton needs, with the guard's token.
"""

from __future__ import annotations

import contextlib
import http.client
import json
import re
import threading
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

SEGMENT = r"[A-Za-z0-9_][A-Za-z0-9_.-]*"
MODEL_ROUTE = re.compile(rf"^/v2/models/({SEGMENT})(?:/versions/([0-9]+))?(?:/(ready|config|stats|infer))?$")
SERVER_ROUTES = {"/v2", "/v2/health/live", "/v2/health/ready"}
INDEX_ROUTE = "/v2/repository/index"
FORWARDED_HEADERS = {"content-type", "accept", "accept-encoding", "inference-header-content-length", "user-agent"}
SINGLE_HEADERS = ("content-length", "inference-header-content-length", "content-type", "host")
GUARD_HEADER = "scaoed-guard"
HOP_BY_HOP = {"connection", "keep-alive", "transfer-encoding", "te", "trailer", "upgrade", "proxy-connection"}
MAX_SMALL_BODY = 64 << 10  # the repository index request: an empty or tiny JSON object
MAX_HEADER_BYTES = 1 << 20  # an infer request's JSON header (without binary data): 1 MiB is plenty


@dataclass
class ModelLimits:
    """What one served model takes: its input, max batch (0: no batching), dims after the batch, max side."""

    input_name: str
    max_batch: int
    dims: list[int]  # -1 where dynamic
    max_side: int | None
    datatype: str = "FP32"

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
        if inp.get("datatype") != limits.datatype:
            return f"input {limits.input_name!r} must be {limits.datatype}, got {inp.get('datatype')!r}"
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
        count = 1
        for d in shape:
            count *= d
        params = inp.get("parameters", {})
        if not isinstance(params, dict) or set(params) - {"binary_data_size"}:
            return f"input {limits.input_name!r}: only the parameter binary_data_size is taken"
        if "data" in inp:
            if "binary_data_size" in params:
                return f"input {limits.input_name!r} sends both JSON data and binary data"
            sent = _count_values(inp["data"])
            if sent != count:
                return f"input {limits.input_name!r} declares {count} values (shape {shape}) but sends {sent}"
        elif "binary_data_size" in params:
            size = params["binary_data_size"]
            if not isinstance(size, int) or isinstance(size, bool) or size != count * ITEM_BYTES[limits.datatype]:
                return (
                    f"input {limits.input_name!r} declares {count} values (shape {shape}) but binary_data_size "
                    f"is {size!r}"
                )
        else:
            return f"input {limits.input_name!r} sends no data"
    return None


class DuplicateKeyError(ValueError):
    pass


def _no_duplicates(pairs: list[tuple]) -> dict:
    seen = {}
    for key, value in pairs:
        if key in seen:
            raise DuplicateKeyError(f"the key {key!r} appears twice in one object")
        seen[key] = value
    return seen


def parse_json(raw: bytes):
    """JSON as strictly as Triton reads it: UTF-8, one value, no repeated key in an object, no NaN literals.
    Raises ValueError with the reason (a nesting too deep to parse included)."""
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as e:
        raise ValueError(f"is not UTF-8 text (byte {e.start})") from e

    def no_constant(name):
        raise ValueError(f"holds {name}, which is not JSON")

    try:
        return json.loads(text, object_pairs_hook=_no_duplicates, parse_constant=no_constant)
    except DuplicateKeyError as e:
        raise ValueError(f"is ambiguous: {e}") from e
    except RecursionError as e:
        raise ValueError("is nested too deeply") from e
    except ValueError as e:
        raise ValueError(f"cannot be read ({e})") from e


ITEM_BYTES = {"FP32": 4, "FP16": 2, "BF16": 2}


def route(method: str, target: str, models: dict) -> tuple[str, str | None] | str:
    """What a request is: ("server" | "index" | "model" | "infer", model name or None), or why it is not forwarded."""
    if not target.startswith("/"):
        return "the request target must be a path (origin form), not an absolute URL"
    if any(c in target for c in "?#%\\") or "//" in target or any(seg in (".", "..") for seg in target.split("/")):
        return "the request path must be plain: no query, percent-encoding, empty, '.' or '..' segments"
    if target in SERVER_ROUTES:
        return ("server", None) if method in ("GET", "HEAD") else f"{method} {target} is not served"
    if target == INDEX_ROUTE:
        return ("index", None) if method == "POST" else f"{method} {target} is not served"
    m = MODEL_ROUTE.match(target)
    if not m:
        return f"{target} is not served through this port"
    if m.group(1) not in models:
        return f"unknown model {m.group(1)!r}"
    if m.group(3) == "infer":
        return ("infer", m.group(1)) if method == "POST" else f"{method} {target} is not served; POST an infer request"
    return ("model", m.group(1)) if method in ("GET", "HEAD") else f"{method} {target} is not served"


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

    def _header_problem(self) -> tuple[int, str] | None:
        for name in SINGLE_HEADERS:
            if len(self.headers.get_all(name, [])) > 1:
                return 400, f"the {name} header appears more than once"
        if self.headers.get_all("transfer-encoding"):
            return 411, "send a Content-Length alone (Transfer-Encoding, chunked or not, is not taken)"
        encoding = self.headers.get("content-encoding", "identity").strip().lower()
        if encoding != "identity":
            return 400, f"Content-Encoding {encoding!r} is not taken: send the body as it is"
        return None

    def _handle(self) -> None:
        what = route(self.command, self.path, self.guard.models)
        if isinstance(what, str):
            return self._refuse(404 if "not served" in what or "unknown model" in what else 400, what)
        kind, model = what
        problem = self._header_problem()
        if problem:
            return self._refuse(*problem)
        length = self.headers.get("Content-Length")
        if length is not None and not length.strip().isdigit():
            return self._refuse(400, f"bad Content-Length {length!r}")
        size = int(length) if length is not None else 0
        if kind in ("server", "model") and size:
            return self._refuse(400, f"{self.command} {self.path} takes no body")
        limit = self.guard.models[model].max_body() if kind == "infer" else MAX_SMALL_BODY
        if size > limit:
            return self._refuse(413, f"request body of {size} bytes is larger than this model takes")
        body = self.rfile.read(size) if size else b""
        if len(body) != size:
            return self._refuse(400, "the request body is shorter than its Content-Length")
        if kind == "infer":
            why = self._check_infer(body, self.guard.models[model])
            if why:
                return self._refuse(400, why)
        elif kind == "index" and body:
            try:
                index = parse_json(body)
            except ValueError as e:
                return self._refuse(400, f"the request's JSON {e}")
            if not isinstance(index, dict):
                return self._refuse(400, "the request must be a JSON object")
        headers = {k.lower(): v for k, v in self.headers.items() if k.lower() in FORWARDED_HEADERS}
        headers[GUARD_HEADER] = self.guard.token
        conn = http.client.HTTPConnection("127.0.0.1", self.guard.upstream_port, timeout=self.guard.timeout)
        try:
            conn.request(self.command, self.path, body=body if self.command == "POST" else None, headers=headers)
            resp = conn.getresponse()
            data = resp.read()
        except OSError as e:
            return self._refuse(502, f"tritonserver did not answer ({e})")
        finally:
            conn.close()
        self._reply(resp.status, data, resp.getheaders())

    def _check_infer(self, body: bytes, limits: ModelLimits) -> str | None:
        split = self.headers.get("Inference-Header-Content-Length")
        if split is not None:
            if not split.strip().isdigit() or not 0 < int(split) <= len(body):
                return f"bad Inference-Header-Content-Length {split!r} for a body of {len(body)} bytes"
            head_bytes = body[: int(split)]
        else:
            head_bytes = body
        try:
            head = parse_json(head_bytes)
        except ValueError as e:
            return f"the request's JSON {e}"
        if not isinstance(head, dict):
            return "the request must be a JSON object"
        why = check_infer(head, limits)
        if why:
            return why
        binary = sum(i.get("parameters", {}).get("binary_data_size", 0) for i in head["inputs"])
        if binary != len(body) - len(head_bytes):
            return f"the request's binary data is {len(body) - len(head_bytes)} bytes but its inputs declare {binary}"
        return None

    do_GET = do_POST = do_PUT = do_DELETE = do_HEAD = _handle


class RequestGuard:
    """The guard on ``address:port`` in front of Triton's HTTP endpoint at ``127.0.0.1:upstream_port``."""

    def __init__(
        self,
        address: str,
        port: int,
        upstream_port: int,
        models: dict[str, ModelLimits],
        token: str,
        timeout: float = 600.0,
    ):
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
