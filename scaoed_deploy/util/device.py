"""The torch device a command runs on: ``auto`` (CUDA where torch sees a GPU, else the CPU), or the one asked for,
with one line where CUDA is asked for and absent. torch is imported on first use."""

from __future__ import annotations

from ..errors import ScaoedError


def pick_device(device: str = "auto"):
    """A ``torch.device`` for ``auto``, ``cpu`` or ``cuda``."""
    import torch

    if device == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if device == "cuda" and not torch.cuda.is_available():
        raise ScaoedError("--device cuda asked for, but torch sees no CUDA GPU")
    return torch.device(device)
