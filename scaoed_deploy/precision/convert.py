"""Precision ONNX files for TensorRT 11's strongly typed networks (and ONNX Runtime's CPU INT8).

- FP16 / BF16: ModelOpt AutoCast, with the FP32 islands of ``islands.py`` (chosen
  from a reference run on the calibration images) passed as ``nodes_to_exclude``;
  inputs and outputs stay float32.
- INT8, ``target="tensorrt"``: ModelOpt ONNX PTQ, symmetric signed 8-bit Q/DQ
  (zero point 0), per-channel weights, max or entropy calibration; the layers
  left unquantized stay FP32 (high-precision type fp32, so NFAE cannot overflow).
- INT8, ``target="onnxruntime-cpu"``: ONNX Runtime's static quantization in QDQ
  form, unsigned 8-bit activations and signed 8-bit per-channel weights, which its
  CPU provider fuses into integer convolutions. Not for TensorRT (the lint says so).
  On a CPU without VNNI the weights use 7 bits (``reduce_range``): ONNX Runtime's
  U8S8 kernels there (AVX2's ``vpmaddubsw``) saturate a 16-bit sum of two products,
  which cost 4 to 5 dB against FP32 on an AVX2-only EPYC. The file records the
  format and the CPU (its ISA class) it was checked on.

INT8 sensitivity: after quantizing, the result is compared with the FP32 graph on
held-out calibration crops (run on this CPU); while it is below ``INT8_MIN_PSNR`` dB, the
convolutions that add the most error (measured tensor by tensor against the FP32
run) are kept in FP32 and the model is quantized again. A result still below
``INT8_FLOOR_PSNR`` dB after the last round fails: nothing is written.

Every result keeps the source's ``scaoed.*`` metadata with the precision, the tool,
the calibration set and the nodes kept in FP32 added, and keeps NFAE's 1e-16.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

from ..errors import ScaoedError
from .autocast import mixed_precision
from .calibration import CalibSample
from .common import PrecisionONNX
from .int8 import INT8_ROUNDS, quantize_int8

__all__ = ["PrecisionONNX", "make_precision_onnx", "mixed_precision", "quantize_int8"]


def make_precision_onnx(
    fp32_path: str | Path,
    precision: str,
    calib: list[CalibSample],
    target: str = "tensorrt",
    method: str = "entropy",
    exclude: list[str] | None = None,
    step: Callable[[str], None] = lambda s: None,
    rounds: int = INT8_ROUNDS,
) -> PrecisionONNX:
    if precision in ("fp16", "bf16"):
        return mixed_precision(fp32_path, precision, calib, step)
    if precision == "int8":
        return quantize_int8(fp32_path, calib, target, method, exclude, step, rounds=rounds)
    raise ScaoedError(f"unknown precision {precision!r}; use fp16, bf16 or int8")
