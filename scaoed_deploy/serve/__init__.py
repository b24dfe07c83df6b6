"""Serving: a Triton Inference Server model repository from verified artifacts, and the server to run it.

``repository.py`` writes the repository (``triton-repo``), ``server.py`` starts and stops a
``tritonserver`` on it (``serve``), ``triton_model.py`` is the python-backend model that runs an
artifact through the runner registry. The client side is a runner (``runtime/triton_client.py``),
so ``Denoiser`` and ``denoise --server`` work against a server as against a local file.
"""

from .config import read_config
from .repository import RepoOptions, make_repository, model_config
from .server import TritonServer, bundled_server, free_port

__all__ = [
    "RepoOptions",
    "TritonServer",
    "bundled_server",
    "free_port",
    "make_repository",
    "model_config",
    "read_config",
]
