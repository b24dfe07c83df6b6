"""``parity``: an artifact against the eager model."""

from __future__ import annotations

from pathlib import Path

import click

from .. import checkpoint as ckpt
from ..audit import audit_line
from ..data import default_sidd_dir
from ..errors import ScaoedError, VerificationError
from ..parity import load_artifact, run_parity, thresholds_for, write_parity_record, write_reports
from ..parity.harness import format_measured
from ..parity.report import localisation_line, report_dict
from ..seal import check_seal
from ..weights import DEMO_NOTICE, demo_weights, has_demo_weights
from .common import (
    command_line,
    data_option,
    emit_json,
    json_option,
    notice,
    progress_steps,
    stages_option,
    stdout_console,
)
from .main import cli


@cli.command()
@click.argument("artifacts", nargs=-1, required=True, type=click.Path())
@stages_option("K of the eager reference (default: the artifact's).")
@click.option(
    "--checkpoint",
    "-c",
    type=click.Path(),
    help="Weights of the eager reference (default: what the artifact records, or the demo weights).",
)
@data_option("Real pairs: a folder with noisy/ and clean/ (default ../shared/data/sidd when present).")
@click.option(
    "--report",
    "report_dir",
    default="reports/parity",
    show_default=True,
    type=click.Path(file_okay=False),
    help="Folder for parity.json, parity.md and one PNG per artifact.",
)
@click.option(
    "--precision",
    type=click.Choice(["fp32", "fp16", "bf16", "int8"]),
    default=None,
    help="Judge as this precision (default: the artifact's metadata, else its tensor types).",
)
@click.option("--max-abs", type=click.FloatRange(min=0), default=None, help="Override: max abs error vs eager.")
@click.option("--min-psnr", type=float, default=None, help="Override: min output PSNR vs eager (dB).")
@click.option(
    "--max-dpsnr", type=click.FloatRange(min=0), default=None, help="Override: max |mean dPSNR| vs clean (dB)."
)
@click.option("--no-localise", is_flag=True, help="Skip finding the first divergent node of a failing ONNX artifact.")
@click.option(
    "--allow-unverified",
    is_flag=True,
    help="Measure a file whose graph or weights were edited after its verification (refused otherwise).",
)
@json_option
def parity(
    artifacts,
    stages,
    checkpoint,
    data,
    report_dir,
    precision,
    max_abs,
    min_psnr,
    max_dpsnr,
    no_localise,
    allow_unverified,
    as_json,
):
    """Check ONNX files or TensorRT engines against the fp32 eager model; exit 3 if any fails."""
    data_dir = Path(data) if data else default_sidd_dir()
    loaded = [load_artifact(a, precision) for a in artifacts]  # every missing or corrupt file is named before any work
    for art in loaded:  # and every file edited after its verification
        check_seal(art.path, art.metadata, allow_unverified)
    results, reference = [], None
    for art in loaded:
        weights = _reference_weights(art, checkpoint)
        thresholds = thresholds_for(art.precision, max_abs=max_abs, min_psnr=min_psnr, max_dpsnr=max_dpsnr)
        with progress_steps(quiet=as_json) as step:
            r = run_parity(
                art,
                weights,
                stages,
                data_dir,
                thresholds,
                localise=not no_localise,
                step=step,
                allow_unverified=allow_unverified,
            )
        results.append(r)
        reference = reference or {
            "weights": weights.identity,
            "blocks": weights.blocks,
            "stages": r.stages,
            "data": str(data_dir) if data_dir else None,
        }
    written = write_reports(results, report_dir, reference, command_line())
    for r in results:  # NAME.parity.json beside each artifact that passed, for triton-repo to read back
        record = write_parity_record(r, command_line())
        if record:
            written.append(record)
    if as_json:
        emit_json(dict(report_dict(results, reference, command_line()), report_files=[str(p) for p in written]))
    else:
        for r in results:
            _print_parity(r)
        click.echo(f"report: {', '.join(str(p) for p in written)}")
    failed = [r for r in results if not r.passed]
    if failed:
        raise VerificationError(
            f"{len(failed)} of {len(results)} artifact(s) failed parity: "
            + "; ".join(f"{r.artifact.path.name}: {r.failures[0].check}" for r in failed)
        )


def _reference_weights(art, checkpoint):
    """The checkpoint if given; else the weights the artifact records (seeded random or the demo weights)."""
    if checkpoint:
        return ckpt.read_checkpoint(checkpoint)
    recorded = art.metadata.get("weights", "")
    if recorded.startswith("random-seed-") and art.blocks:
        seed = int(recorded.rsplit("-", 1)[1])
        notice(f"note: {art.path.name} was exported from seeded random weights; comparing with the same ({recorded})")
        return ckpt.random_weights(blocks=art.blocks, seed=seed)
    if has_demo_weights():
        demo = demo_weights()
        if recorded in ("", demo.identity):
            notice(DEMO_NOTICE)
            return demo
    src = art.metadata.get("weights_source", "a checkpoint")
    raise ScaoedError(f"{art.path} was exported from {src}; pass it with --checkpoint")


def _print_parity(r) -> None:
    from rich.table import Table

    verdict = "[green]passed[/green]" if r.passed else "[bold red]FAILED[/bold red]"
    console = stdout_console()
    table = Table(
        title=f"{r.artifact.path} ({r.artifact.kind}, {r.artifact.precision}, K={r.stages}): {verdict}",
        title_justify="left",
    )
    for col in ("check", "measured", "limit", "result"):
        table.add_column(col, no_wrap=col != "check")
    for o in r.outcomes:
        word = {True: "[green]pass[/green]", False: "[red]FAIL[/red]", None: "n/a"}[o.passed]
        table.add_row(o.check, format_measured(o), o.limit, word)
    console.print(table)
    if r.task:
        task = Table(title="real noise vs clean (8-bit, as the paper evaluates)", title_justify="left")
        for col in ("image", "eager PSNR / SSIM", "artifact PSNR / SSIM", "dPSNR"):
            task.add_column(col, justify="right", no_wrap=True)
        for t in r.task:
            task.add_row(
                t.image,
                f"{t.eager_psnr:.2f} / {t.eager_ssim:.4f}",
                f"{t.artifact_psnr:.2f} / {t.artifact_ssim:.4f}",
                f"{t.dpsnr:+.3f} dB",
            )
        console.print(task)
    if r.audit:
        click.echo(f"  read back: {audit_line(r.audit)}")
    if r.localisation:
        click.echo(f"  first divergent node: {localisation_line(r.localisation)}")
    for n in r.notes:
        click.echo(f"  note: {n}")
