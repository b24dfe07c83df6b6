"""A runner whose model runs on a Triton Inference Server, over HTTP or gRPC (tritonclient).

``TritonRunner(url, model)`` only parses the URL (no I/O); ``activate`` (or the first call, or ``with``) connects,
checks that the server answers and the model is ready, then reads the model's config from the server: input and
output names, the max batch, and the spatial limits (static dims, or an engine profile's
``profile_min``/``profile_max`` parameters written by ``triton-repo``), so that ``Denoiser`` tiles and batches
within them as it does for a local artifact. URLs: ``http://host:8000`` (the default scheme) or
``grpc://host:8001``.

Errors are one line each: a server that cannot be reached, a model that is not ready (the ready ones are named), a
request the server refuses (wrong shape, over the limits). A server that stops answering mid-run raises
``ServerLostError``, which a folder run does not swallow per image: it stops, keeping what it wrote, and a second
run resumes.
"""

from __future__ import annotations

from urllib.parse import urlparse

import numpy as np

from ..errors import ScaoedError, first_line
from ..util.optional import optional_import
from .base import BaseRunner, Limits

TYPES = {"TYPE_FP32": ("FP32", np.float32), "TYPE_FP16": ("FP16", np.float16), "TYPE_BF16": ("BF16", np.float32)}


class ServerLostError(ScaoedError):
    """The server stopped answering (it died, or the network went) while a run was using it."""


def parse_url(url: str) -> tuple[str, str]:
    """(protocol, host:port) from ``http://h:p``, ``grpc://h:p`` or a bare ``h:p`` (HTTP)."""
    u = urlparse(url if "://" in url else f"http://{url}")
    if u.scheme not in ("http", "grpc"):
        raise ScaoedError(f"--server {url}: use http://HOST:PORT or grpc://HOST:PORT")
    if not u.hostname:
        raise ScaoedError(f"--server {url}: no host")
    port = u.port or (8001 if u.scheme == "grpc" else 8000)
    return u.scheme, f"{u.hostname}:{port}"


def require_tritonclient(module: str, what: str):
    """``tritonclient``'s ``module``, or one line saying that ``what`` needs it."""
    return optional_import(module, f"{what} needs tritonclient: pip install 'tritonclient[grpc,http]'")


def config_limits(cfg: dict) -> Limits:
    """The sizes a served model accepts, from its config as the server reports it (JSON, proto field names):
    an engine's profile (``profile_min``/``profile_max`` parameters, N x C x H x W), else static dims; the max
    batch, or a static batch where the model does not batch."""
    max_batch = int(cfg.get("max_batch_size", 0))
    dims = [int(d) for d in cfg["input"][0].get("dims", [])]
    params = {k: v.get("string_value", "") for k, v in cfg.get("parameters", {}).items()}
    lo, hi = params.get("profile_min"), params.get("profile_max")
    if lo and hi:
        lo_s, hi_s = ([int(v) for v in s.split("x")] for s in (lo, hi))
        min_hw, max_hw = tuple(lo_s[2:]), tuple(hi_s[2:])
    elif len(dims) >= 2 and all(d > 0 for d in dims[-2:]):
        min_hw = max_hw = tuple(dims[-2:])
    elif params.get("max_side"):  # dynamic sizes up to the side the repository set: larger images are tiled
        min_hw, max_hw = None, (int(params["max_side"]),) * 2
    else:
        min_hw = max_hw = None
    static_batch = dims[0] if max_batch == 0 and len(dims) == 4 and dims[0] > 0 else None
    return Limits(min_hw, max_hw, static_batch, max_batch or None)


class TritonRunner(BaseRunner):
    """Runs batches on model ``model`` of the server at ``url`` (``model`` None: the server's only ready model)."""

    name = "triton"
    on_cpu = False  # the work is done by the server

    def __init__(self, url: str, model: str | None = None, timeout: float = 120.0):
        super().__init__()
        self.url = url
        self.protocol, self.hostport = parse_url(url)  # a malformed URL is refused here, before any connection
        self.model, self.timeout, self.client = model, timeout, None
        self.description = f"the Triton server at {url}"

    def _activate(self) -> None:
        """Connect, check the server and the model, read the model's config (its names and limits)."""
        self.tc = require_tritonclient(f"tritonclient.{self.protocol}", "a Triton server")
        if self.protocol == "grpc":
            self.client = self.tc.InferenceServerClient(self.hostport)
        else:
            self.client = self.tc.InferenceServerClient(
                self.hostport, connection_timeout=10.0, network_timeout=self.timeout
            )
        try:
            self._check_and_read()
        except BaseException:
            self._deactivate()
            raise

    def _check_and_read(self) -> None:
        url = self.url
        if not self._live():
            raise ScaoedError(
                f"cannot reach a Triton server at {url}: is it running? (scaoed-deploy serve REPO starts one)"
            )
        self.model = self.model or self._only_model()
        try:
            ready = self.client.is_model_ready(self.model)
        except Exception as e:  # tritonclient raises its own exception types, and socket errors
            raise ServerLostError(f"the Triton server at {url} stopped answering ({first_line(e)})") from e
        if not ready:
            names = self._ready_models()
            raise ScaoedError(f"model {self.model!r} is not ready on {url} (ready: {', '.join(names) or 'none'})")
        self._read_config()

    def _deactivate(self) -> None:
        """Close the connection (the served model stays on the server)."""
        client, self.client = self.client, None
        if client is not None:
            client.close()

    # -------------------------------------------------------------- server state
    def _live(self) -> bool:
        try:
            return bool(self.client.is_server_live())
        except Exception:  # connection refused, unknown host, timeout: all mean "not reachable"
            return False

    def _ready_models(self) -> list[str]:
        index = self.client.get_model_repository_index(**({"as_json": True} if self.protocol == "grpc" else {}))
        models = index.get("models", []) if isinstance(index, dict) else index
        return sorted(m["name"] for m in models if m.get("state") == "READY")

    def _only_model(self) -> str:
        names = self._ready_models()
        if len(names) != 1:
            raise ScaoedError(
                f"the server at {self.url} has {len(names)} ready models "
                f"({', '.join(names) or 'none'}): name one with --model"
            )
        return names[0]

    def _read_config(self) -> None:
        if self.protocol == "grpc":
            cfg = self.client.get_model_config(self.model, as_json=True)["config"]
        else:
            cfg = self.client.get_model_config(self.model)
        self.config = cfg
        first = cfg["input"][0]
        self.input_name = first["name"]
        self.input_type, self.input_dtype = TYPES.get(first.get("data_type", "TYPE_FP32"), ("FP32", np.float32))
        self.output_names = [o["name"] for o in cfg["output"]]
        self.limits = config_limits(cfg)
        self.description = (
            f"model {self.model!r} on the Triton server at {self.url} ({cfg.get('backend') or cfg.get('platform')})"
        )

    # -------------------------------------------------------------- running
    def _run(self, batch: np.ndarray) -> list[np.ndarray]:
        x = np.ascontiguousarray(batch, dtype=self.input_dtype)
        inp = self.tc.InferInput(self.input_name, list(x.shape), self.input_type)
        if self.protocol == "grpc":
            inp.set_data_from_numpy(x)
            outs = [self.tc.InferRequestedOutput(n) for n in self.output_names]
            kwargs = {"client_timeout": self.timeout}
        else:
            inp.set_data_from_numpy(x, binary_data=True)
            outs = [self.tc.InferRequestedOutput(n, binary_data=True) for n in self.output_names]
            kwargs = {}
        try:
            result = self.client.infer(self.model, [inp], outputs=outs, **kwargs)
        except Exception as e:  # refused by the server, or the server is gone: tell them apart
            if not self._live():
                raise ServerLostError(f"the Triton server at {self.url} stopped answering ({first_line(e)})") from e
            raise ScaoedError(
                f"the server refused a {'x'.join(map(str, x.shape))} request to {self.model!r}: {first_line(e)}"
            ) from e
        return [np.asarray(result.as_numpy(n), dtype=np.float32) for n in self.output_names]
