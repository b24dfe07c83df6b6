"""FP16 / BF16 precision ONNX by ModelOpt AutoCast, with the FP32 islands of ``islands`` passed as
``nodes_to_exclude``; inputs and outputs stay float32 (see ``convert``)."""

from __future__ import annotations

import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np

from ..artifact import stages_of
from ..audit import exact_patterns
from ..errors import ScaoedError, first_line
from ..util.eta import long_step
from .calibration import CalibSample, check_calibration_memory, common_shape, describe, sensitivity_input
from .common import ISLAND_IMAGES, PrecisionONNX, quiet_modelopt, require_modelopt, stamp, tidy
from .islands import select_islands

AUTOCAST_IMAGES = 4  # calibration images in AutoCast's own reference run (one batch)


def mixed_precision(
    fp32_path: str | Path, precision: str, calib: list[CalibSample], step: Callable[[str], None] = lambda s: None
) -> PrecisionONNX:
    """AutoCast to fp16/bf16 with FP32 islands chosen from a reference run on ``calib``."""
    import onnx

    if precision not in ("fp16", "bf16"):
        raise ValueError(precision)
    require_modelopt(f"{precision.upper()} conversion")
    from modelopt.onnx.autocast import convert_to_mixed_precision

    t0 = time.perf_counter()
    check_calibration_memory(
        f"{precision} conversion (AutoCast)", fp32_path, calib, per_crop=1.0, common_batch=2 * AUTOCAST_IMAGES
    )  # its reference run: a batch, every tensor, copied
    source = onnx.load(str(fp32_path))
    # A reference run keeps every tensor of the graph: a few images bound its memory (K=5 at 160 px is ~2 GB each).
    sample = calib[:ISLAND_IMAGES]
    step(f"choosing FP32 islands from a reference run on {len(sample)} calibration images")
    islands = select_islands(source, [sensitivity_input(c.x) for c in sample], precision=precision)
    with tempfile.TemporaryDirectory() as tmp:  # AutoCast's own reference run takes one batch of one shape
        npz = Path(tmp) / "calibration.npz"
        np.savez(
            npz, **{source.graph.input[0].name: np.concatenate([c.x for c in common_shape(calib)[:AUTOCAST_IMAGES]])}
        )
        try:
            with (
                long_step(
                    step,
                    "autocast",
                    f"converting to {precision} with ModelOpt AutoCast ({len(islands)} nodes kept in FP32)",
                    len(source.graph.node),
                ),
                quiet_modelopt(),
            ):
                proto = convert_to_mixed_precision(
                    onnx_path=str(fp32_path),
                    low_precision_type=precision,
                    keep_io_types=True,
                    nodes_to_exclude=exact_patterns([i.node for i in islands]),
                    calibration_data=str(npz),
                    providers=["cpu"],
                )
        except Exception as e:
            raise ScaoedError(f"ModelOpt AutoCast failed on {fp32_path}: {first_line(e)}") from e
    deduped = tidy(proto, source)
    result = PrecisionONNX(
        proto, precision, "tensorrt", "modelopt.onnx.autocast", [i.to_dict() for i in islands], describe(calib)
    )
    if deduped:
        result.notes.append(f"{deduped} copies of shared weights merged")
    stamp(proto, source, result, stages_of(source))
    result.seconds = time.perf_counter() - t0
    return result


# ---------------------------------------------------------------------------- INT8
