"""``scaoed-deploy``: a thin click shell over the Python API (one module per command group).

Every command prints a short human summary, or with ``--json`` the same facts
as one JSON document on stdout. Bad input ends in one ``error: ...`` line on
stderr and a non-zero exit code:

  0 success - 1 bad input or failed step - 2 bad usage (unknown option, bad value)
  3 an artifact failed verification - 4 TensorRT needed but missing
"""

from . import bench, build, denoise, export, info, optimize, parity, serve, train  # noqa: F401 - each registers its commands
from .main import cli, main

__all__ = ["cli", "main"]
