"""Eager PyTorch backend: the reference every artifact is compared with."""

from __future__ import annotations

import numpy as np
import torch

from ..checkpoint import Weights, build_model
from ..errors import ScaoedError


def pick_device(device: str = "auto") -> torch.device:
    if device == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if device == "cuda" and not torch.cuda.is_available():
        raise ScaoedError("--device cuda asked for, but torch sees no CUDA GPU")
    return torch.device(device)


class TorchRunner:
    """Runs the eager model on float32 NCHW batches; ``run`` also returns the K noise maps."""

    name = "torch"

    def __init__(self, weights: Weights | None, stages: int | None = None, device: str = "auto", model=None):
        """Build the model from ``weights``, or run an already built ``model`` (the exporter's)."""
        self.device = pick_device(device)
        if self.device.type == "cpu":
            from .cpu_memory import keep_freed_memory

            keep_freed_memory()  # eager calls otherwise fault their activations in afresh each time
        self.model = (model if model is not None else build_model(weights, stages)).to(self.device).eval()
        self.stages = self.model.stages

    @torch.inference_mode()
    def run(self, batch: np.ndarray) -> list[np.ndarray]:
        """[denoised, noise map 1, ..., noise map K]."""
        x = torch.from_numpy(np.ascontiguousarray(batch, dtype=np.float32)).to(self.device)
        out, maps = self.model(x, return_noise_maps=True)
        return [t.float().cpu().numpy() for t in (out, *maps)]

    @torch.inference_mode()
    def __call__(self, batch: np.ndarray) -> np.ndarray:
        x = torch.from_numpy(np.ascontiguousarray(batch, dtype=np.float32)).to(self.device)
        return self.model(x).float().cpu().numpy()
