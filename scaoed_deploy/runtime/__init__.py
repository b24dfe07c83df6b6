"""Denoising with ScaoedNet through one runner interface: torch, ONNX Runtime (TensorRT later).

A runner is called on a float32 NCHW batch and returns the denoised batch;
``runner.run(batch)`` returns every output (denoised, then any noise maps).
"""

from .denoiser import Denoiser, denoise_file
from .onnxruntime_backend import OnnxRuntimeRunner
from .torch_backend import TorchRunner, pick_device

__all__ = ["Denoiser", "TorchRunner", "OnnxRuntimeRunner", "denoise_file", "pick_device"]
