"""``info`` and ``convert``: the model's cost, and checkpoints between layouts."""

from __future__ import annotations

import click

from ..checkpoint import convert as do_convert
from ..cost import model_cost
from ..cpu import this_cpu
from ..precision.int8 import ort_int8_format
from ..precision.openvino import int8_format as openvino_int8_format
from ..runtime.base import cpu_threads
from ..runtime.variants import VARIANTS
from .common import emit_json, json_option, resolutions_option, stage_list_option, stages_option, stdout_console
from .main import cli

#: What to ship on a CPU, best first, where the CPU runs it natively (docs/bench.md: Which artifact for which CPU).
SHIP_ON_CPU = ("openvino-int8", "openvino-bf16")


@cli.command()
@resolutions_option("Output resolution(s): 512, 512x768, or a comma list.")
@stage_list_option("1,3,5", "Stage counts K")
@click.option("--blocks", default=16, show_default=True, type=click.IntRange(1, 64), help="FM2ARB blocks T.")
@json_option
def info(resolutions, stages, blocks, as_json):
    """Parameters and multiply-accumulates per stage count, beside the paper's figures, and what this CPU runs
    natively (its ISA, peak per precision, the INT8 formats built here and the artifact to ship on it)."""
    rows = [model_cost(k, blocks, h, w).to_dict() for (h, w) in resolutions for k in stages]
    cpu = cpu_info()
    if as_json:
        emit_json({"parameters": rows[0]["parameters"], "rows": rows, "cpu": cpu})
        return
    from rich.table import Table

    table = Table(
        title=f"ScaoedNet cost, T={blocks}: {rows[0]['parameters']:,} parameters at every K",
        caption="GMAC = 10^9 multiply-accumulates (the paper's 'FLOPs'); paper figures at 512x512",
    )
    for col in ("res", "K", "conv GMAC", "other GMAC", "total GMAC", "paper GMAC", "vs paper"):
        table.add_column(col, justify="right")
    for r in rows:
        paper = f"{r['paper_gmacs']:.0f}" if r["paper_gmacs"] else "-"
        diff = f"{100 * r['vs_paper']:+.1f}%" if r["vs_paper"] is not None else "-"
        table.add_row(
            f"{r['height']}x{r['width']}",
            str(r["stages"]),
            f"{r['conv_macs'] / 1e9:.1f}",
            f"{r['other_macs'] / 1e9:.1f}",
            f"{r['total_macs'] / 1e9:.1f}",
            paper,
            diff,
        )
    console = stdout_console()
    console.print(table)
    console.print(cpu_lines(cpu), highlight=False, soft_wrap=True)


def cpu_info() -> dict:
    """This CPU as ``info`` reports it: ISA, per-precision capabilities, the INT8 formats a build here picks, and
    what to ship on it."""
    cpu, cores = this_cpu(), cpu_threads()
    caps = cpu.capabilities(cores)
    ship = [name for name in SHIP_ON_CPU if VARIANTS[name].not_native(cpu) is None]
    return {
        **cpu.to_dict(),
        "cores": cores,
        "clock_mhz": cpu.mhz,
        "precisions": caps,
        "int8_formats": {
            "onnxruntime": {"reduce_range": ort_int8_format(cpu)["reduce_range"]},
            "openvino": openvino_int8_format(cpu),
        },
        "ship": ship,
    }


def cpu_lines(c: dict) -> str:
    def peak(p):
        return f" ({c['precisions'][p]['peak_gmacs']:.0f} GMAC/s peak)" if c["precisions"][p]["peak_gmacs"] else ""

    native = [
        p + (f" with {c['precisions'][p]['dot_product'].split(' (')[0]}" if p == "int8" else "") + peak(p)
        for p, v in c["precisions"].items()
        if v["native"]
    ]
    missing = [p for p, v in c["precisions"].items() if not v["native"]]
    ort, ov = c["int8_formats"]["onnxruntime"], c["int8_formats"]["openvino"]
    return "\n".join(
        [
            f"This CPU: {c['cpu']} ({', '.join(c['isa']) or 'no AVX2'}"
            + (f", capped by {c['capped_by']}" if c.get("capped_by") else "")
            + f"), class {c['isa_class']}, "
            f"{c['cores']} cores" + (f" at {c['clock_mhz']:.0f} MHz" if c["clock_mhz"] else ""),
            f"  native: {', '.join(native)}"
            + (f"; not native: {', '.join(missing)} (bench skips them)" if missing else ""),
            f"  INT8 built here: ONNX Runtime with "
            f"{'7-bit' if ort['reduce_range'] else 'full-range'} weights, OpenVINO "
            f"with NNCF's overflow fix '{ov['overflow_fix']}'",
            f"  ship on this CPU kind: {' or '.join(c['ship'])} (docs/bench.md: Which artifact for which CPU)",
        ]
    )


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
