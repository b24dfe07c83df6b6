"""``build-engine``: precision ONNX, lint, audit, parity, engine."""

from __future__ import annotations

from pathlib import Path

import click

from ..artifact import OPENVINO_PRECISIONS, TARGETS
from ..audit import audit_line
from ..build import BuildRequest, build
from ..build.tensorrt import ShapeProfile, parse_batch
from ..runtime.tensorrt import TensorRTMissing
from .common import (
    command_line,
    data_option,
    emit_json,
    json_option,
    load_weights,
    profile_hw,
    progress_steps,
    stages_option,
    weights_options,
)
from .main import cli


@cli.command("build-engine")
@click.option(
    "--fp16", "precision", flag_value="fp16", help="FP16 ONNX (ModelOpt AutoCast, FP32 islands chosen automatically)."
)
@click.option("--bf16", "precision", flag_value="bf16", help="BF16 ONNX, the same way.")
@click.option("--int8", "precision", flag_value="int8", help="INT8 Q/DQ ONNX, calibrated on real noisy images.")
@click.option("--fp32", "precision", flag_value="fp32", help="No conversion: lint and build the fp32 ONNX.")
@stages_option(
    "K: export (or reuse) the fp32 ONNX for it (default: the newest fp32 export of the weights in "
    "--export-dir, else the weights' default K)."
)
@click.option(
    "--onnx",
    "onnx_path",
    type=click.Path(exists=True, dir_okay=False),
    default=None,
    help="Start from this fp32 export instead.",
)
@weights_options("Seeded random weights instead (for tests and timing).")
@click.option(
    "--target",
    type=click.Choice(list(TARGETS)),
    default="tensorrt",
    show_default=True,
    help="tensorrt: precision ONNX + engine; openvino: an OpenVINO IR for CPUs (--fp32, --bf16, or --int8 "
    "by NNCF); onnxruntime-cpu: INT8 U8/S8 QDQ that ONNX Runtime's CPU kernels fuse.",
)
@click.option(
    "--calib",
    default=None,
    help="Calibration folders, comma-separated: real noisy images, or clean:DIR for "
    "clean images with synthetic noise (default: RNI15 + CBSD68/McMaster with synthetic noise; never SIDD).",
)
@click.option("--calib-count", type=click.IntRange(4, 4096), default=32, show_default=True, help="Calibration crops.")
@click.option("--calib-method", type=click.Choice(["entropy", "max"]), default="entropy", show_default=True)
@click.option("--exclude", default=None, help="INT8: node names to keep in FP32, comma-separated.")
@click.option(
    "--int8-rounds",
    type=click.IntRange(0, 5),
    default=2,
    show_default=True,
    help="INT8: rounds of keeping the convolutions that add the most error in float while the held-out "
    "check is below its target (0: quantize once).",
)
@click.option("--min", "min_hw", default="256", show_default=True, callback=profile_hw, help="Profile minimum HxW.")
@click.option("--opt", "opt_hw", default="512", show_default=True, callback=profile_hw, help="Profile optimum HxW.")
@click.option("--max", "max_hw", default="1024", show_default=True, callback=profile_hw, help="Profile maximum HxW.")
@click.option("--batch", default="1:1:1", show_default=True, help="Profile batch MIN:OPT:MAX.")
@click.option(
    "--timing-cache",
    type=click.Path(dir_okay=False),
    default="engines/timing.cache",
    show_default=True,
    help="Reused and updated across builds.",
)
@click.option("--workspace", type=click.IntRange(16), default=None, help="Builder workspace limit in MiB.")
@data_option("Real noisy/clean pairs for parity (default ../shared/data/sidd).")
@click.option("--export-dir", default="export", show_default=True, type=click.Path(file_okay=False))
@click.option(
    "-o",
    "--output",
    type=click.Path(dir_okay=False),
    default=None,
    help="Engine path (default engines/<precision onnx name>.engine).",
)
@json_option
def build_engine_cmd(
    precision,
    stages,
    onnx_path,
    checkpoint,
    random_seed,
    blocks,
    target,
    calib,
    calib_count,
    calib_method,
    exclude,
    int8_rounds,
    min_hw,
    opt_hw,
    max_hw,
    batch,
    timing_cache,
    workspace,
    data,
    export_dir,
    output,
    as_json,
):
    """Precision ONNX -> TensorRT lint -> parity -> TensorRT 11 engine (exit 4 when TensorRT is missing)."""

    if precision is None:
        raise click.UsageError("choose a precision: --fp16, --bf16, --int8 or --fp32")
    if target == "onnxruntime-cpu" and precision != "int8":
        raise click.BadParameter("onnxruntime-cpu is an INT8 flavour; use it with --int8", param_hint="--target")
    if target == "openvino" and precision not in OPENVINO_PRECISIONS:
        raise click.BadParameter(
            f"openvino takes {', '.join('--' + p for p in OPENVINO_PRECISIONS)} "
            f"(OpenVINO's CPU plugin has no {precision} inference)",
            param_hint="--target",
        )
    weights = load_weights(checkpoint, random_seed=random_seed, blocks=blocks)
    req = BuildRequest(
        precision=precision,
        weights=weights,
        stages=stages,
        onnx=Path(onnx_path) if onnx_path else None,
        target=target,
        calib=[c for c in calib.split(",") if c] if calib else None,
        calib_count=calib_count,
        calib_method=calib_method,
        exclude=[n for n in (exclude or "").split(",") if n],
        int8_rounds=int8_rounds,
        profile=ShapeProfile(min_hw, opt_hw, max_hw, parse_batch(batch)),
        timing_cache=Path(timing_cache) if timing_cache else None,
        workspace_mib=workspace,
        export_dir=Path(export_dir),
        engine=Path(output) if output else None,
        data=Path(data) if data else None,
        command=command_line(),
    )
    with progress_steps(quiet=as_json) as step:
        outcome = build(req, step)
    if as_json:
        emit_json(outcome.to_dict())
    else:
        _print_build(outcome)
    if outcome.tensorrt_missing:  # an expected outcome on a machine without TensorRT: a result, then exit 4
        if not as_json:
            _print_next_steps(outcome)
        click.echo(
            f"engine not built: {outcome.tensorrt_missing.split(';')[0]} (exit {TensorRTMissing.exit_code})", err=True
        )
        raise click.exceptions.Exit(TensorRTMissing.exit_code)


def _print_next_steps(o) -> None:
    click.echo("\nTensorRT is not installed here, so steps 1-4 ran and the engine was not built. Written:")
    click.echo(f"   {o.precision_onnx}  (checked as above)")
    click.echo(f"   {o.plan.sidecar_path}  (the build plan: profile, precision, the trtexec line)")
    click.echo("Next, on a machine with an NVIDIA GPU and TensorRT 11 (pip install tensorrt), either:")
    click.echo(f"   scaoed-deploy build-engine --{o.plan.precision} --onnx {o.fp32_onnx}")
    click.echo(f"   {o.plan.trtexec()}")


def _print_build(o) -> None:
    d = o.to_dict()
    click.echo(f"1. fp32 ONNX: {o.fp32_onnx} ({'reused' if o.fp32_reused else 'exported and verified'})")
    if o.conversion:
        c = o.conversion
        extra = (
            f", {c['check_psnr_vs_fp32']:.1f} dB vs fp32 on held-out calibration crops"
            if c["check_psnr_vs_fp32"]
            else ""
        )
        what = "OpenVINO IR" if o.target == "openvino" else "ONNX"
        cal = c["calibration"]
        calib = f", calibration {cal['count']} crops of {', '.join(cal['sources'])}" if cal else ""
        click.echo(f"2. {c['precision']} {what} ({c['tool']}): {c['kept_fp32']} nodes kept in FP32{calib}{extra}")
        for n in c["notes"]:
            click.echo(f"   note: {n}")
    else:
        click.echo("2. no conversion (fp32)")
    if o.audit:
        click.echo(f"   read back: {audit_line(o.audit)}")
    errs = [v for v in o.lint if v.severity == "error"]
    warns = [v for v in o.lint if v.severity != "error"]
    if o.target == "openvino":
        click.echo("3. TensorRT lint: not run (an OpenVINO IR)")
    else:
        click.echo(
            f"3. TensorRT lint: {len(errs)} error(s), {len(warns)} warning(s)"
            + (" (not a TensorRT artifact: reported only)" if errs else "")
        )
    for v in (errs + warns)[:5]:
        click.echo(f"   {v}")
    if o.parity:
        r = o.parity
        t = d["parity"]
        psnr = min((x.psnr for x in r.tensors if x.output == "denoised" and x.finite), default=float("nan"))
        dpsnr = (
            f", mean dPSNR {t['mean_dpsnr']:+.3f} dB on {len(r.task)} real pairs" if t["mean_dpsnr"] is not None else ""
        )
        click.echo(f"4. parity: {'pass' if r.passed else 'FAIL'} (worst PSNR vs eager {psnr:.1f} dB{dpsnr})")
        for n in r.notes:
            click.echo(f"   note: {n}")
    click.echo(f"   wrote {o.precision_onnx}")
    if o.engine:
        click.echo(
            f"5. engine: {o.engine['engine']} (TensorRT {o.engine['tensorrt']}, {o.engine['gpu']}, "
            f"{o.engine['build_seconds']} s); sidecar {o.plan.sidecar_path}"
        )
    elif o.plan:
        click.echo(f"5. engine: not built; build plan in {o.plan.sidecar_path}")
    elif o.target == "openvino":
        click.echo(f"5. engine: none (an OpenVINO IR: scaoed-deploy denoise -m {o.precision_onnx} IN OUT)")
    else:
        click.echo("5. engine: none (an ONNX Runtime CPU artifact)")
