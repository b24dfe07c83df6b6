"""Precision artifacts for TensorRT 11 (strongly typed): FP16/BF16 and INT8 ONNX, and the TensorRT lint."""

from .lint import Violation, lint

__all__ = ["Violation", "lint"]
