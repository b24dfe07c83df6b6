"""``export``: one verified ONNX file per K."""

from __future__ import annotations

from pathlib import Path

import click

from ..data import default_sidd_dir
from ..errors import VerificationError
from ..export import ExportSpec, default_filename, export_onnx
from .common import (
    command_line,
    data_option,
    emit_json,
    json_option,
    load_weights,
    notice,
    progress_steps,
    stage_list_option,
    stdout_console,
    weights_options,
)
from .main import cli


@cli.command("export")
@stage_list_option("5", "Stage counts K, one file each")
@weights_options("Use seeded random weights instead (for tests and timing).")
@click.option(
    "--static",
    "static_hw",
    nargs=2,
    type=click.IntRange(2, 16384),
    default=None,
    metavar="H W",
    help="Static height and width (even) instead of dynamic ones.",
)
@click.option("--batch", type=click.IntRange(1, 1024), default=None, help="Static batch size (default: dynamic).")
@click.option("--opset", type=click.IntRange(17, 30), default=18, show_default=True)
@click.option("--noise-maps", is_flag=True, help="Also output the K noise maps u(i), for stage-wise parity.")
@click.option(
    "--optimizer",
    type=click.Choice(["onnxslim", "none", "onnxscript"]),
    default="onnxslim",
    show_default=True,
    help="Graph simplification; onnxscript's drops NFAE's epsilon and is kept only to show that.",
)
@data_option("Real noisy images (a folder, or one with noisy/) for the check; default ../shared/data/sidd.")
@click.option(
    "--tolerance", type=click.FloatRange(min=0), default=1e-4, show_default=True, help="Max abs error vs eager."
)
@click.option("-o", "--output", default="export", show_default=True, help="Output folder, or a .onnx file for one K.")
@json_option
def export_cmd(
    stages,
    checkpoint,
    random_seed,
    blocks,
    static_hw,
    batch,
    opset,
    noise_maps,
    optimizer,
    data,
    tolerance,
    output,
    as_json,
):
    """Export one verified ONNX file per stage count (ONNX Runtime vs eager before writing)."""
    weights = load_weights(checkpoint, random_seed=random_seed, blocks=blocks)
    data_dir = Path(data) if data else default_sidd_dir()
    out = Path(output)
    single_file = out.suffix == ".onnx"
    if single_file and len(stages) > 1:
        raise click.BadParameter(
            "give a folder, not a .onnx file, when exporting several stage counts", param_hint="-o"
        )
    results, errors = [], []
    for k in stages:
        spec = ExportSpec(
            stages=k,
            static_hw=tuple(static_hw) if static_hw else None,
            batch=batch,
            opset=opset,
            noise_maps=noise_maps,
            optimizer=optimizer,
            tolerance=tolerance,
        )
        path = out if single_file else out / default_filename(k, weights.blocks, spec)
        try:
            with progress_steps(quiet=as_json) as step:
                results.append(export_onnx(weights, spec, path, data_dir, step=step, command=command_line()))
        except VerificationError as e:
            errors.append(str(e))
            notice(f"failed: {e}")
    summary = {
        "weights": weights.identity,
        "data": str(data_dir) if data_dir else None,
        "exports": [r.to_dict() for r in results],
        "failed": errors,
    }
    if as_json:
        emit_json(summary)
    else:
        for r in results:
            _print_export(r)
        if data_dir is None:
            notice("note: no real noisy images found (../shared/data/sidd or --data): checked on synthetic inputs only")
    if errors:
        raise VerificationError(
            f"{len(errors)} of {len(stages)} export(s) failed verification; their files were not written"
        )


def _print_export(r) -> None:
    from rich.table import Table

    d = r.to_dict()
    how = "simplified with onnxslim" if r.simplified else "unsimplified"
    table = Table(title=f"{r.path} ({d['bytes'] / 1e6:.1f} MB, {how}, {d['seconds']:.0f} s)", title_justify="left")
    for col in ("check", "output", "shape", "max abs err", "PSNR vs eager"):
        table.add_column(col, justify="left" if col in ("check", "output") else "right", no_wrap=True)
    for c in r.checks:
        psnr = "inf" if c.psnr == float("inf") else f"{c.psnr:.1f} dB"
        table.add_row(c.case, c.output, "x".join(map(str, c.shape)), f"{c.max_abs:.2e}", psnr)
    stdout_console().print(table)
    for n in r.notes:
        click.echo(f"  note: {n}")
