"""What the precision converters share (AutoCast in ``autocast``, INT8 in ``int8``, which never import each
other): the result record, the metadata stamp, the repairs both need, ModelOpt's import and quieting."""

from __future__ import annotations

import json
from dataclasses import dataclass, field

from ..artifact import carry_module_tags, check_nfae_epsilon, metadata_of, prune_value_info, write_metadata
from ..audit import dedupe_weights
from ..seal import SEAL_KEY
from ..util.optional import optional_import
from .quiet import quiet_tools

INT8_MIN_PSNR = 40.0  # dB against the FP32 graph on held-out calibration crops (every INT8 path)
INT8_ROUNDS = 2  # at most this many rounds of keeping sensitive layers in FP32
ISLAND_IMAGES = 8  # calibration images in the islands' reference run (it holds every tensor)


@dataclass
class PrecisionONNX:
    proto: object  # onnx.ModelProto
    precision: str
    target: str
    tool: str
    kept_fp32: list[dict] = field(default_factory=list)  # node, op_type, module, reason
    calibration: dict = field(default_factory=dict)
    check_psnr: float | None = None  # INT8: PSNR (dB) against FP32 on held-out calibration crops
    int8_format: dict = field(default_factory=dict)  # INT8: the format and the CPU it was checked on
    seconds: float = 0.0
    notes: list[str] = field(default_factory=list)
    peak_rss_mb: dict[str, int] = field(default_factory=dict)  # step: peak resident memory of its own process

    def summary(self) -> dict:
        return {
            "precision": self.precision,
            "target": self.target,
            "tool": self.tool,
            "kept_fp32": len(self.kept_fp32),
            "calibration": self.calibration,
            "check_psnr_vs_fp32": self.check_psnr,
            **({"int8_format": self.int8_format} if self.int8_format else {}),
            "seconds": round(self.seconds, 1),
            "notes": self.notes,
            **({"peak_rss_mb": self.peak_rss_mb} if self.peak_rss_mb else {}),
        }


def require_modelopt(what: str):
    """ModelOpt's ONNX tools, or one line saying that ``what`` needs them."""
    optional_import("modelopt.onnx", f"{what} needs NVIDIA ModelOpt: pip install 'nvidia-modelopt[onnx]'")


def stamp(proto, source, result: PrecisionONNX, stages: int | None) -> None:
    """Carry the source's scaoed.* metadata and record what this conversion did."""
    meta = metadata_of(source)
    meta.pop(SEAL_KEY, None)  # the source's digest: this file is sealed when it is verified, not before
    meta["precision"] = result.precision
    meta["precision_target"] = result.target
    meta["precision_detail"] = json.dumps(
        {
            "tool": result.tool,
            "calibration": result.calibration,
            "check_psnr_vs_fp32": result.check_psnr,
            "kept_fp32": [k["node"] for k in result.kept_fp32],
            **({"int8_format": result.int8_format} if result.int8_format else {}),
        }
    )
    write_metadata(proto, meta)
    if stages:
        check_nfae_epsilon(proto, stages)


def tidy(proto, source) -> int:
    """What both converters leave behind, repaired: a weight shared by the K stages is converted (or quantized)
    once per consumer, so copies are merged; stale value_info is dropped; the module tags they lose come back
    from the source. Returns the number of copies merged."""
    deduped = dedupe_weights(proto)
    prune_value_info(proto)
    carry_module_tags(source, proto)
    return deduped


def quiet_modelopt():
    return quiet_tools("", "modelopt", "modelopt.onnx", "modelopt.onnx.autocast", "modelopt.onnx.quantization")


# ---------------------------------------------------------------------------- FP16 / BF16
