"""Running ScaoedNet: one runner interface (``base.py``), one backend registry (``registry.py``), the Denoiser.

Backends: torch (checkpoints), ONNX Runtime (CPU or CUDA; .onnx), TensorRT (.engine).
A runner is called on a float32 NCHW batch and returns the denoised batch;
``runner.run(batch)`` returns every output (denoised, then any noise maps).
"""

from ..util.device import pick_device
from .base import BaseRunner, Limits, RunOptions
from .denoiser import DenoiseOptions, Denoiser, denoise_file
from .onnxruntime_backend import OnnxRuntimeRunner
from .registry import BACKENDS, open_runner
from .torch_backend import TorchRunner

__all__ = [
    "BACKENDS",
    "BaseRunner",
    "DenoiseOptions",
    "Denoiser",
    "Limits",
    "OnnxRuntimeRunner",
    "RunOptions",
    "TorchRunner",
    "denoise_file",
    "open_runner",
    "pick_device",
]
