"""``info`` and ``convert``: the model's cost, and checkpoints between layouts."""

from __future__ import annotations

import click

from ..checkpoint import convert as do_convert
from ..cost import model_cost
from .common import (
    emit_json,
    json_option,
    resolutions_option,
    stage_list_option,
    stages_option,
    stdout_console,
)
from .main import cli


@cli.command()
@resolutions_option("Output resolution(s): 512, 512x768, or a comma list.")
@stage_list_option("1,3,5", "Stage counts K")
@click.option("--blocks", default=16, show_default=True, type=click.IntRange(1, 64), help="FM2ARB blocks T.")
@json_option
def info(resolutions, stages, blocks, as_json):
    """Parameters and multiply-accumulates per stage count, beside the paper's figures."""
    rows = [model_cost(k, blocks, h, w).to_dict() for (h, w) in resolutions for k in stages]
    if as_json:
        emit_json({"parameters": rows[0]["parameters"], "rows": rows})
        return
    from rich.table import Table

    table = Table(title=f"ScaoedNet cost, T={blocks}: {rows[0]['parameters']:,} parameters at every K",
                  caption="GMAC = 10^9 multiply-accumulates (the paper's 'FLOPs'); paper figures at 512x512")
    for col in ("res", "K", "conv GMAC", "other GMAC", "total GMAC", "paper GMAC", "vs paper"):
        table.add_column(col, justify="right")
    for r in rows:
        paper = f"{r['paper_gmacs']:.0f}" if r["paper_gmacs"] else "-"
        diff = f"{100 * r['vs_paper']:+.1f}%" if r["vs_paper"] is not None else "-"
        table.add_row(
            f"{r['height']}x{r['width']}", str(r["stages"]),
            f"{r['conv_macs'] / 1e9:.1f}", f"{r['other_macs'] / 1e9:.1f}", f"{r['total_macs'] / 1e9:.1f}",
            paper, diff,
        )
    stdout_console().print(table)


@cli.command()
@click.argument("src", type=click.Path(dir_okay=False))
@click.argument("dst", type=click.Path(dir_okay=False))
@stages_option("Stage count K to record in the safetensors config (default: the source's, else 5).")
@json_option
def convert(src, dst, stages, as_json):
    """Convert a checkpoint: authors' .pth <-> scaoed-deploy .safetensors (+ .json config)."""
    result = do_convert(src, dst, stages=stages)
    if as_json:
        emit_json(result)
    else:
        click.echo(
            f"wrote {result['output']} ({result['output_format']}, T={result['blocks']}, "
            f"{result['parameters']:,} parameters) from {result['source']} ({result['source_layout']} layout)"
        )


