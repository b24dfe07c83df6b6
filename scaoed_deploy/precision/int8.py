"""INT8 precision ONNX: ModelOpt PTQ Q/DQ for TensorRT, ONNX Runtime's static QDQ for its CPU provider, with
the sensitivity rounds that keep the worst convolutions in FP32 (see ``convert``)."""

from __future__ import annotations

import contextlib
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np

from ..artifact import INT8_TARGETS, all_tensors, module_paths, stages_of
from ..audit import exact_patterns
from ..compare import INT8_FLOOR_PSNR, check_int8_floor, held_out_psnr
from ..cpu import CPU, this_cpu
from ..errors import ScaoedError, first_line
from ..isolate import run_step
from ..runtime.onnxruntime_backend import OnnxRuntimeRunner
from ..util.eta import long_step
from .calibration import CalibSample, check_calibration_memory, common_shape, describe, sensitivity_input
from .common import INT8_MIN_PSNR, INT8_ROUNDS, PrecisionONNX, quiet_modelopt, require_modelopt, stamp, tidy
from .ort_int8 import quantize_onnxruntime

TARGETS = INT8_TARGETS
INT8_METHODS = ("max", "entropy")


@contextlib.contextmanager
def _restoring_onnxruntime_quantization():
    """ModelOpt patches onnxruntime.quantization's calibrators and quantizers in place, for good; ORT's own
    quantize_static then fails later in the same process. Put the originals back afterwards."""
    from onnxruntime.quantization import base_quantizer, calibrate, qdq_quantizer

    owners = [
        calibrate,
        calibrate.CalibraterBase,
        calibrate.MinMaxCalibrater,
        calibrate.HistogramCalibrater,
        calibrate.HistogramCollector,
        qdq_quantizer.QDQQuantizer,
        base_quantizer.BaseQuantizer,
    ]
    saved = [(o, dict(vars(o))) for o in owners]
    try:
        yield
    finally:
        for owner, attrs in saved:
            for name, value in attrs.items():
                if name in ("__dict__", "__weakref__"):
                    continue
                if vars(owner).get(name) is not value:
                    setattr(owner, name, value)


def _quantize_quietly(
    target: str,
    src: Path,
    dst: Path,
    calib: list[CalibSample],
    method: str,
    exclude: list[str],
    input_name: str,
    reduce_range: bool,
) -> None:
    """One INT8 quantization, as a step's child process runs it (module level, so that it pickles). The tools'
    own temporary files go beside ``dst``, in the folder the parent removes, also when the child is killed."""
    tempfile.tempdir = str(dst.parent)
    with quiet_modelopt():
        if target == "tensorrt":
            _quantize_modelopt(src, dst, calib, method, exclude, input_name)
        else:
            quantize_onnxruntime(src, dst, calib, method, exclude, input_name, reduce_range=reduce_range)


def _quantize_modelopt(
    src: Path, dst: Path, calib: list[CalibSample], method: str, exclude: list[str], input_name: str
):
    with _restoring_onnxruntime_quantization():
        _modelopt_ptq(src, dst, calib, method, exclude, input_name)


def _modelopt_ptq(src: Path, dst: Path, calib: list[CalibSample], method: str, exclude: list[str], input_name: str):
    from modelopt.onnx.quantization import quantize

    data = np.concatenate([c.x for c in common_shape(calib)])  # one batch, so one shape
    quantize(
        str(src),
        quantize_mode="int8",
        calibration_data={input_name: data},
        calibration_method=method,
        calibration_eps=["cpu"],
        high_precision_dtype="fp32",
        nodes_to_exclude=exact_patterns(exclude) or None,
        output_path=str(dst),
        log_level="ERROR",
    )


def modelopt_unquantized_convs(proto) -> list[dict]:
    """The convolutions ModelOpt's INT8 quantizer leaves in float by its own rule (input or output channels
    below 16 without a TensorRT INT8 kernel shape), asked of ModelOpt itself, so that the read-back audit
    can tell them from convolutions that were meant to be quantized."""
    import onnx_graphsurgeon as gs
    from modelopt.onnx.quantization.graph_utils import find_nodes_from_convs_to_exclude

    modules = module_paths(proto)
    with quiet_modelopt():  # ModelOpt logs its scan at INFO on stdout, which --json needs clean
        names = set(find_nodes_from_convs_to_exclude(gs.import_onnx(proto), quantize_mode="int8"))
    return [
        {
            "node": n.name,
            "op_type": n.op_type,
            "module": modules.get(n.output[0], ""),
            "reason": "ModelOpt does not quantize this convolution (fewer than 16 channels)",
        }
        for n in proto.graph.node
        if n.name in names
    ]


def ort_int8_format(cpu: CPU | None = None) -> dict:
    """The ONNX Runtime CPU INT8 format for ``cpu`` (this one): U8S8, with 7-bit weights where VNNI is missing."""
    cpu = cpu or this_cpu()
    return {
        "activations": "uint8",
        "weights": "int8 per channel",
        "reduce_range": not cpu.vnni,
        "checked_on": cpu.to_dict(),
    }


def _ort_outputs(model, xs: list[np.ndarray]) -> list[np.ndarray]:
    runner = OnnxRuntimeRunner(model.SerializeToString() if not isinstance(model, (str, Path)) else model)
    return [runner(x) for x in xs]


def sensitive_convs(quantized, fp32, x: np.ndarray, count: int) -> list[dict]:
    """The ``count`` quantized convolutions that add the most error, tensor by tensor, against the FP32 run."""
    got, ref = all_tensors(quantized, x), all_tensors(fp32, x)
    modules = module_paths(fp32)

    def rel(name):
        if name not in got or name not in ref or got[name].shape != ref[name].shape:
            return 0.0
        r = ref[name].astype(np.float64)
        return float(np.sqrt(np.mean((got[name] - r) ** 2)) / (np.sqrt(np.mean(r**2)) + 1e-12))

    producer = {o: n for n in quantized.graph.node for o in n.output}
    ranked = []
    for node in quantized.graph.node:
        if node.op_type != "Conv":
            continue
        inputs = node.input[0]
        while inputs in producer and producer[inputs].op_type in ("DequantizeLinear", "QuantizeLinear"):
            inputs = producer[inputs].input[0]  # the float tensor behind the Q/DQ pair
        added = rel(node.output[0]) - rel(inputs)
        ranked.append(
            {
                "node": node.name,
                "op_type": "Conv",
                "module": modules.get(node.output[0], ""),
                "reason": f"INT8 adds {added:.3g} relative error here (largest in the graph)",
                "added": added,
            }
        )
    ranked.sort(key=lambda r: -r["added"])
    return [{k: v for k, v in r.items() if k != "added"} for r in ranked[:count]]


def quantize_int8(
    fp32_path: str | Path,
    calib: list[CalibSample],
    target: str = "tensorrt",
    method: str = "entropy",
    exclude: list[str] | None = None,
    step: Callable[[str], None] = lambda s: None,
    min_psnr: float = INT8_MIN_PSNR,
    rounds: int = INT8_ROUNDS,
    floor: float = INT8_FLOOR_PSNR,
) -> PrecisionONNX:
    """INT8 Q/DQ for ``target``; keeps sensitive convolutions in FP32 until the held-out check passes."""
    import onnx

    if target not in TARGETS:
        raise ScaoedError(f"unknown INT8 target {target!r}; use {' or '.join(TARGETS)}")
    if method not in INT8_METHODS:
        raise ScaoedError(f"unknown calibration method {method!r}; use {' or '.join(INT8_METHODS)}")
    if len(calib) < 4:
        raise ScaoedError(f"INT8 calibration needs at least 4 images, got {len(calib)}")
    if target == "tensorrt":
        require_modelopt("INT8 quantization for TensorRT")
    t0 = time.perf_counter()
    check_calibration_memory(f"INT8 calibration ({target})", fp32_path, calib, per_crop=1.5)
    source = onnx.load(str(fp32_path))
    input_name = source.graph.input[0].name
    held_out, used = calib[:2], calib[2:]  # judged on crops the calibration did not see
    references = _ort_outputs(fp32_path, [c.x for c in held_out])
    kept: list[dict] = [{"node": n, "op_type": "", "module": "", "reason": "asked (--exclude)"} for n in exclude or []]
    left_by_tool = modelopt_unquantized_convs(source) if target == "tensorrt" else []
    fmt = ort_int8_format() if target == "onnxruntime-cpu" else {}
    tool = (
        "modelopt.onnx.quantization (symmetric S8 Q/DQ)"
        if target == "tensorrt"
        else "onnxruntime.quantization.quantize_static (QDQ, U8 activations, S8 per-channel weights"
        + (", 7-bit range: this CPU has no VNNI)" if fmt["reduce_range"] else ")")
    )
    notes: list[str] = []
    peaks: dict[str, int] = {}
    with tempfile.TemporaryDirectory() as tmp:
        for attempt in range(rounds + 1):
            dst = Path(tmp) / f"int8_{attempt}.onnx"
            message = f"INT8 ({target}, {method} calibration on {len(used)} images" + (
                f", {len(kept)} convs kept in FP32)" if kept else ")"
            )
            kind = "modelopt-quantize" if target == "tensorrt" else "ort-quantize"
            try:
                with long_step(step, kind, message, len(source.graph.node)):
                    # in a child process: stoppable at once, its peak memory its own (see isolate)
                    ran = run_step(
                        _quantize_quietly,
                        target,
                        Path(fp32_path),
                        dst,
                        used,
                        method,
                        [k["node"] for k in kept],
                        input_name,
                        fmt.get("reduce_range", False),
                        name=message,
                    )
                peaks[f"int8 round {attempt + 1}"] = round(ran.peak_rss_mb)
            except ScaoedError:
                raise
            except Exception as e:
                raise ScaoedError(f"INT8 quantization ({target}) failed on {fp32_path}: {first_line(e)}") from e
            proto = onnx.load(str(dst))
            deduped = tidy(proto, source)
            check = held_out_psnr(references, _ort_outputs(proto, [c.x for c in held_out]), "the INT8 model")
            step(f"INT8 check: {check:.1f} dB against FP32 on held-out calibration crops (want >= {min_psnr:g})")
            if check >= min_psnr or attempt == rounds:
                check_int8_floor(check, f"the INT8 model ({target})", rounds, floor)
                if check < min_psnr:
                    notes.append(f"still {check:.1f} dB against FP32 after {rounds} rounds of keeping layers in FP32")
                break
            convs = sum(1 for n in proto.graph.node if n.op_type == "Conv")
            worst = sensitive_convs(proto, source, sensitivity_input(held_out[0].x), max(1, convs // 50))
            kept += worst
            notes.append(
                f"round {attempt + 1}: {check:.1f} dB < {min_psnr:g} dB; kept {len(worst)} sensitive convs in FP32"
            )
    if deduped:
        notes.append(f"{deduped} copies of shared weights merged")
    asked = {k["node"] for k in kept}
    result = PrecisionONNX(
        proto,
        "int8",
        target,
        tool,
        kept + [t for t in left_by_tool if t["node"] not in asked],
        dict(describe(calib), method=method, held_out=[c.name for c in held_out]),
        check,
        fmt,
        notes=notes,
        peak_rss_mb=peaks,
    )
    stamp(proto, source, result, stages_of(source))
    result.seconds = time.perf_counter() - t0
    return result
