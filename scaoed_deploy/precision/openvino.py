"""OpenVINO IR (``.xml`` + ``.bin``) from the verified fp32 ONNX: fp32, bf16 and INT8.

- fp32 and bf16: the same f32 IR (``ov.convert_model``, weights kept f32); bf16 is an
  explicit inference precision recorded in the IR's metadata and applied by the runner
  (``runtime/openvino_backend.py``), never left to the CPU's default.
- INT8: NNCF post-training quantization of the IR on the same calibration set as the
  other INT8 paths (SIDD refused there). Its ignored scope is the FP32 islands of
  ``islands.py`` (every NFAE layer: its variance division and 1e-16 would not survive 8
  bits), plus the convolutions the sensitivity check keeps: after quantizing, the IR is
  compared with the fp32 ONNX on held-out calibration crops; while it is below
  ``INT8_MIN_PSNR`` dB, the convolutions that add the most error, measured tensor by
  tensor against ONNX Runtime's fp32 run, are ignored too and the IR is quantized again.
  The weights' range follows the CPU the IR is built for (``int8_format``): without VNNI, OpenVINO's
  int8 convolutions (``jit_avx2_I8``) sum pairs of u8 x s8 products in 16 bits, which saturate at
  full-range weights (K = 1, demo weights: 45.1 dB against fp32 with VNNI, 41.1 dB with the same IR
  under ``ONEDNN_MAX_CPU_ISA=AVX2``); NNCF's overflow fix on every layer (7-bit weights) gives the same
  output with and without VNNI (44.5 dB both). Build under that cap to make an IR for AVX2-only CPUs.

The IR keeps the source's ``scaoed.*`` metadata in its rt_info, with the precision, the
tool, the calibration set and the nodes kept in float added.
"""

from __future__ import annotations

import contextlib
import json
import os
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from ..artifact import OPENVINO_PRECISIONS, all_tensors, metadata_of, module_paths
from ..audit import audit_ov_model
from ..compare import check_int8_floor, held_out_psnr
from ..cpu import CPU, this_cpu
from ..errors import ScaoedError, first_line
from ..ir import require_openvino, write_ir_metadata
from ..runtime.onnxruntime_backend import OnnxRuntimeRunner
from ..runtime.openvino_backend import INFERENCE_PRECISION
from ..seal import SEAL_KEY
from ..util.eta import long_step
from ..util.files import track_temporary, untrack_temporary
from .calibration import CalibSample, check_calibration_memory, describe, sensitivity_input
from .common import INT8_MIN_PSNR, INT8_ROUNDS, ISLAND_IMAGES
from .islands import select_islands
from .quiet import quiet_tools

TOOL = {
    "fp32": "openvino.convert_model",
    "bf16": "openvino.convert_model (bf16 inference precision)",
    "int8": "nncf.quantize (OpenVINO IR, FakeQuantize: asymmetric activations, S8 per-channel weights)",
}


@dataclass
class OpenVINOIR:
    model: object  # openvino.Model
    precision: str
    kept_float: list[dict] = field(default_factory=list)  # node, op_type, module, reason
    calibration: dict = field(default_factory=dict)
    check_psnr: float | None = None
    seconds: float = 0.0
    notes: list[str] = field(default_factory=list)
    int8_format: dict = field(default_factory=dict)  # INT8: NNCF's overflow fix for the CPU it was built on

    def summary(self) -> dict:
        return {
            "precision": self.precision,
            "target": "openvino",
            "tool": TOOL[self.precision],
            "inference_precision": INFERENCE_PRECISION[self.precision],
            "kept_fp32": len(self.kept_float),
            "calibration": self.calibration,
            "check_psnr_vs_fp32": self.check_psnr,
            "seconds": round(self.seconds, 1),
            "notes": self.notes,
        }


def _compile(model, inference_precision: str = "f32"):
    ov = require_openvino("running an IR")
    return ov.Core().compile_model(model, "CPU", {"INFERENCE_PRECISION_HINT": inference_precision})


def _outputs(compiled, xs: list[np.ndarray]) -> list[np.ndarray]:
    return [np.asarray(compiled(x)[compiled.output(0)], dtype=np.float32) for x in xs]


def _float_producer(value):
    """The node behind a tensor once FakeQuantize/Convert are skipped (what a convolution really reads)."""
    node = value.get_node()
    while node.get_type_name() in ("FakeQuantize", "Convert") and node.get_input_size():
        node = node.input_value(0).get_node()
    return node


def _onnx_name(node, known: set[str]) -> str | None:
    return next((n for n in node.output(0).get_names() if n in known), None)


def sensitive_convs(quantized, source, x: np.ndarray, count: int, skip: set[str]) -> list[dict]:
    """The ``count`` quantized convolutions of the IR that add the most error, tensor by tensor, against
    ONNX Runtime's run of the fp32 ``source`` (the IR's tensors keep the ONNX tensor names)."""
    ref = all_tensors(source, x)
    modules = module_paths(source)
    known = set(ref)
    convs = []
    for op in quantized.get_ordered_ops():
        if op.get_type_name() != "Convolution" or op.get_friendly_name() in skip:
            continue
        consumer = next(iter(op.output(0).get_target_inputs())).get_node()  # the bias Add carries the ONNX name
        out = _onnx_name(consumer, known) or _onnx_name(op, known)
        inp = _onnx_name(_float_producer(op.input_value(0)), known)
        if out:
            convs.append((op.get_friendly_name(), op, out, inp))
    probe = quantized.clone()
    holders = {n: o.output(0) for o in probe.get_ordered_ops() if o.get_output_size() for n in o.output(0).get_names()}
    wanted = {t for _, _, out, inp in convs for t in (out, inp) if t}
    extra = {t: holders[t] for t in wanted if t in holders}
    probe.add_outputs(list(extra.values()))
    compiled = _compile(probe)
    result = compiled(x)
    got = {}
    for out in compiled.outputs:
        for name in out.get_names():
            if name in extra:
                got[name] = np.asarray(result[out], dtype=np.float64)

    def rel(name):
        if not name or name not in got or got[name].shape != ref[name].shape:
            return 0.0
        r = ref[name].astype(np.float64)
        return float(np.sqrt(np.mean((got[name] - r) ** 2)) / (np.sqrt(np.mean(r**2)) + 1e-12))

    ranked = [
        {"node": name, "op_type": "Convolution", "module": modules.get(out, ""), "added": rel(out) - rel(inp)}
        for name, _, out, inp in convs
    ]
    ranked.sort(key=lambda r: -r["added"])
    return [
        {
            "node": r["node"],
            "op_type": "Convolution",
            "module": r["module"],
            "reason": f"INT8 adds {r['added']:.3g} relative error here (largest in the graph)",
        }
        for r in ranked[:count]
    ]


def int8_format(cpu: CPU | None = None) -> dict:
    """NNCF's overflow fix for ``cpu`` (this one, as ONEDNN_MAX_CPU_ISA caps it): NNCF's default (7-bit weights in
    the first layer only) where VNNI sums u8 x s8 products in 32 bits, 7-bit weights everywhere where it does not."""
    cpu = cpu or this_cpu()
    return {"overflow_fix": "first_layer_only" if cpu.vnni else "enable"}


def _quantize(ov_model, samples: list[CalibSample], ignored: list[str], overflow_fix: str):
    """NNCF PTQ. Activation ranges are the min/max over all calibration crops, not NNCF's default mean of
    per-crop extremes: that clips bright content (a bright SIDD crop lost 1.7 dB at K = 5); the MIXED preset
    (asymmetric activations) halves the loss elsewhere (SIDD, K = 1, demo weights: -0.09 dB against -0.12)."""
    import nncf
    from nncf.quantization.advanced_parameters import AdvancedQuantizationParameters
    from nncf.quantization.range_estimator import RangeEstimatorParametersSet

    with quiet_tools("nncf"):
        return nncf.quantize(
            ov_model,
            nncf.Dataset([c.x for c in samples]),
            subset_size=len(samples),
            preset=nncf.QuantizationPreset.MIXED,
            fast_bias_correction=True,
            ignored_scope=nncf.IgnoredScope(names=ignored, validate=False),
            advanced_parameters=AdvancedQuantizationParameters(
                overflow_fix=nncf.OverflowFix(overflow_fix),
                activations_range_estimator_params=RangeEstimatorParametersSet.MINMAX,
            ),
        )


def make_openvino_ir(
    fp32_path: str | Path,
    precision: str,
    calib: list[CalibSample] | None = None,
    step: Callable[[str], None] = lambda s: None,
    min_psnr: float = INT8_MIN_PSNR,
    rounds: int = INT8_ROUNDS,
) -> OpenVINOIR:
    """The IR for ``precision`` (see the module doc); nothing is written (``save_ir`` does that)."""
    import onnx

    if precision not in OPENVINO_PRECISIONS:
        raise ScaoedError(f"OpenVINO's CPU target takes {', '.join(OPENVINO_PRECISIONS)}, not {precision}")
    ov = require_openvino(f"the {precision} OpenVINO IR")
    t0 = time.perf_counter()
    source = onnx.load(str(fp32_path))
    step(f"converting {Path(fp32_path).name} to OpenVINO IR")
    try:
        model = ov.convert_model(str(fp32_path))
    except Exception as e:
        raise ScaoedError(f"OpenVINO cannot convert {fp32_path}: {first_line(e)}") from e
    result = OpenVINOIR(model, precision)
    if precision == "int8":
        if not calib or len(calib) < 4:
            raise ScaoedError(f"INT8 calibration needs at least 4 images, got {len(calib or [])}")
        try:
            import nncf  # noqa: F401
        except ImportError as e:
            raise ScaoedError(f"OpenVINO INT8 needs NNCF: pip install nncf ({first_line(e)})") from e
        step("choosing the layers NNCF leaves in float (NFAE)")
        names = {o.get_friendly_name() for o in model.get_ordered_ops()}
        islands = [
            {"node": i.node, "op_type": i.op_type, "module": i.module, "reason": i.reason}
            for i in select_islands(source, [sensitivity_input(c.x) for c in calib[:ISLAND_IMAGES]], "fp16")
            if i.node in names
        ]
        fmt = result.int8_format = int8_format()
        if fmt["overflow_fix"] == "enable":
            result.notes.append("7-bit weights (NNCF overflow fix on every layer): this CPU has no VNNI")
        check_calibration_memory("INT8 calibration (NNCF)", fp32_path, calib, per_crop=1.0)
        held_out, used = calib[:2], calib[2:]  # judged on crops the calibration did not see
        runner = OnnxRuntimeRunner(str(fp32_path))
        references = [runner(c.x) for c in held_out]
        kept: list[dict] = []
        for attempt in range(rounds + 1):
            message = (
                f"INT8 (NNCF on {len(used)} images, {len(islands)} NFAE nodes"
                + (f" and {len(kept)} convs" if kept else "")
                + " left in float)"
            )
            fresh = ov.convert_model(str(fp32_path)) if attempt else model
            try:
                with long_step(step, "nncf", message, len(source.graph.node)):
                    quantized = _quantize(fresh, used, [k["node"] for k in islands + kept], fmt["overflow_fix"])
            except Exception as e:
                raise ScaoedError(f"NNCF quantization failed on {fp32_path}: {first_line(e)}") from e
            check = held_out_psnr(references, _outputs(_compile(quantized), [c.x for c in held_out]), "the INT8 IR")
            step(f"INT8 check: {check:.1f} dB against fp32 on held-out calibration crops (want >= {min_psnr:g})")
            if check >= min_psnr or attempt == rounds:
                check_int8_floor(check, "the INT8 IR", rounds)
                if check < min_psnr:
                    result.notes.append(f"still {check:.1f} dB against fp32 after {rounds} rounds")
                break
            convs = sum(1 for o in quantized.get_ordered_ops() if o.get_type_name() == "Convolution")
            worst = sensitive_convs(
                quantized, source, sensitivity_input(held_out[0].x), max(1, convs // 50), {k["node"] for k in kept}
            )
            kept += worst
            result.notes.append(
                f"round {attempt + 1}: {check:.1f} dB < {min_psnr:g} dB; kept {len(worst)} sensitive convs in float"
            )
        asked = {k["node"] for k in kept}
        left = [
            {"node": n, "op_type": "Convolution", "module": "", "reason": "NNCF left an input unquantized"}
            for n, op, p in audit_ov_model(quantized).nodes
            if op == "Convolution" and p == "float32" and n not in asked
        ]
        result.model, result.kept_float, result.check_psnr = quantized, islands + kept + left, check
        result.calibration = dict(describe(calib), held_out=[c.name for c in held_out])
    meta = metadata_of(source)
    meta.pop(SEAL_KEY, None)  # the source's digest: this file is sealed when it is verified, not before
    meta.update(
        precision=precision,
        precision_target="openvino",
        inference_precision=INFERENCE_PRECISION[precision],
        precision_detail=json.dumps(
            {
                "tool": TOOL[precision],
                "calibration": result.calibration,
                "check_psnr_vs_fp32": result.check_psnr,
                "checked_on": this_cpu().to_dict(),
                **({"int8_format": result.int8_format} if result.int8_format else {}),
                "kept_float": [k["node"] for k in result.kept_float],
            }
        ),
    )
    write_ir_metadata(result.model, meta)
    result.seconds = time.perf_counter() - t0
    return result


@contextlib.contextmanager
def atomic_ir(final: Path) -> Iterator[Path]:
    """A temporary .xml path beside ``final``; on success its .bin then its .xml are renamed onto ``final``'s,
    on failure both are removed: a failed build leaves no IR, half or whole."""
    final = Path(final)
    final.parent.mkdir(parents=True, exist_ok=True)
    tmp = final.with_name(f".{final.stem}.tmp-{os.getpid()}.xml")
    for p in (tmp, tmp.with_suffix(".bin")):
        track_temporary(p)
    try:
        yield tmp
        os.replace(tmp.with_suffix(".bin"), final.with_suffix(".bin"))
        os.replace(tmp, final)
    finally:
        for p in (tmp, tmp.with_suffix(".bin")):
            p.unlink(missing_ok=True)
            untrack_temporary(p)


def save_ir(ir: OpenVINOIR, path: Path) -> None:
    """Write the IR (weights as they are: f32, or INT8 as NNCF compressed them)."""
    ov = require_openvino("writing an IR")
    ov.save_model(ir.model, str(path), compress_to_fp16=False)
