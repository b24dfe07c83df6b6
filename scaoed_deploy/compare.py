"""Tensor agreement between an artifact's outputs and the eager model's."""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass

import numpy as np

from .errors import VerificationError


def held_out_psnr(references: list[np.ndarray], outputs: list[np.ndarray], what: str) -> float:
    """The worst PSNR (dB) of a converted model's ``outputs`` against the fp32 ``references`` on held-out
    calibration crops; a NaN/Inf output raises, naming ``what``."""
    if not all(np.isfinite(o).all() for o in outputs):
        raise VerificationError(f"{what} gives NaN/Inf on held-out calibration images")
    return min(psnr_against(r, o) for r, o in zip(references, outputs))


#: An INT8 model further than this from fp32 on held-out crops, after its rounds of keeping layers in float, fails
#: its own check and is not written (both INT8 converters: ONNX and OpenVINO IR).
INT8_FLOOR_PSNR = 30.0


def check_int8_floor(check: float, what: str, rounds: int, floor: float = INT8_FLOOR_PSNR) -> None:
    """Refuse an INT8 model whose held-out PSNR ``check`` (from ``held_out_psnr``) is still below ``floor``."""
    if check < floor:
        raise VerificationError(
            f"{what} gives {check:.1f} dB against fp32 on held-out crops after {rounds} round(s) "
            f"of keeping layers in float, below the floor of {floor:g} dB; nothing written"
        )


def psnr_against(reference: np.ndarray, output: np.ndarray, peak: float = 1.0) -> float:
    """PSNR (dB) of ``output`` against ``reference`` for signals of range ``peak``; inf when equal."""
    mse = float(np.mean((output.astype(np.float64) - reference.astype(np.float64)) ** 2))
    return math.inf if mse == 0 else 10 * math.log10(peak * peak / mse)


@dataclass
class Agreement:
    """How closely one output tensor follows the eager model's on one input."""

    case: str
    output: str
    shape: tuple
    max_abs: float
    mean_abs: float
    psnr: float
    finite: bool  # the artifact's output has no NaN/Inf
    reference_finite: bool

    def passed(self, max_abs: float) -> bool:
        return self.finite and self.max_abs <= max_abs

    def to_dict(self) -> dict:
        d = asdict(self)
        d["shape"] = list(self.shape)
        return d


def agreement(case: str, output: str, reference: np.ndarray, got: np.ndarray) -> Agreement:
    if reference.shape != got.shape:
        raise ValueError(f"{case}/{output}: shape {got.shape} differs from the reference's {reference.shape}")
    finite = bool(np.isfinite(got).all())
    ref_finite = bool(np.isfinite(reference).all())
    if finite and ref_finite:
        diff = np.abs(got.astype(np.float64) - reference.astype(np.float64))
        max_abs, mean_abs = float(diff.max()), float(diff.mean())
        psnr = psnr_against(reference, got)
    else:
        max_abs = mean_abs = math.inf
        psnr = -math.inf
    return Agreement(case, output, tuple(got.shape), max_abs, mean_abs, psnr, finite, ref_finite)
