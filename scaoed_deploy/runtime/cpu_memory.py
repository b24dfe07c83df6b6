"""glibc malloc settings for CPU inference: keep freed activation memory for the next call.

ScaoedNet's activations are 64-channel float32 maps, 64 MiB each at 512 x 512 and
16 MiB at 256. glibc's malloc serves requests over its mmap threshold (at most
32 MiB) with a fresh ``mmap`` and gives them back with ``munmap`` on free, and it
returns the free top of its heap to the system past a trim threshold; PyTorch's CPU
allocator sits directly on malloc. So every eager call faults its activations in page
by page again: on the 2-core benchmark machine five K = 1 calls at 512 took 1.9
million minor faults (0.14 million with the settings below) and the faults 22 to 31 %
of eager latency (512, K = 1: 1.83 -> 1.43 s; 256, K = 1: 0.46 -> 0.32 s, K = 3:
1.31 -> 0.98 s), while ONNX Runtime keeps its own arena and never pays them.
PyTorch's CPU tuning guides answer this with jemalloc or tcmalloc through
``LD_PRELOAD``, which a pip package cannot arrange; the same effect from inside the process is glibc's own
``mallopt``: no mmap for large blocks (``M_MMAP_MAX`` 0) and no trimming below
2 GiB of free heap (``M_TRIM_THRESHOLD``), as the environment variables
``MALLOC_MMAP_MAX_=0 MALLOC_TRIM_THRESHOLD_=...`` would do at start-up.

The cost: freed memory stays with the process (its RSS does not shrink after a
large image) until :func:`release_free_memory`. The torch runner on the CPU and the
benchmark apply this when they start (once per process; training, whose 64 to 96 px
patches stay under the threshold, ran 12 steps in the same time either way);
``SCAOED_DEPLOY_MALLOC=system`` in the environment leaves glibc's defaults. Elsewhere
(macOS, Windows, musl) both functions do nothing.
"""

from __future__ import annotations

import ctypes
import functools
import os
import sys

OPT_OUT_ENV = "SCAOED_DEPLOY_MALLOC"
_M_TRIM_THRESHOLD, _M_MMAP_MAX = -1, -4  # glibc <malloc.h>
_TRIM_THRESHOLD = 2**31 - 1  # mallopt takes an int: 2 GiB of free heap before any is given back

_state: str | None = None


@functools.cache  # the benchmark asks before every row
def _glibc():
    if not sys.platform.startswith("linux"):
        return None
    try:
        libc = ctypes.CDLL(None)
        libc.gnu_get_libc_version  # noqa: B018 - present only in glibc
        return libc
    except (OSError, AttributeError):
        return None


def keep_freed_memory() -> str:
    """Apply the settings above once per process; returns what is in force, for benchmark records."""
    global _state
    if _state is None:
        if os.environ.get(OPT_OUT_ENV, "").lower() == "system":
            _state = f"system malloc defaults ({OPT_OUT_ENV}=system)"
        elif (libc := _glibc()) is None:
            _state = "system malloc defaults (not glibc)"
        elif libc.mallopt(_M_MMAP_MAX, 0) == 1 and libc.mallopt(_M_TRIM_THRESHOLD, _TRIM_THRESHOLD) == 1:
            _state = "glibc malloc, freed memory kept (M_MMAP_MAX=0, M_TRIM_THRESHOLD=2 GiB)"
        else:
            _state = "system malloc defaults (mallopt refused)"
    return _state


def release_free_memory() -> None:
    """Give the free heap back to the system (``malloc_trim``), e.g. before measuring a peak RSS."""
    libc = _glibc()
    if libc is not None:
        libc.malloc_trim(0)
