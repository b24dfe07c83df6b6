"""``scaoed-deploy``: a thin click shell over the Python API.

Every command prints a short human summary, or with ``--json`` the same facts
as one JSON document on stdout. Bad input ends in one ``error: ...`` line on
stderr and a non-zero exit code:

  0 success - 1 bad input or failed step - 2 bad usage (unknown option, bad value)
  3 an artifact failed verification - 4 TensorRT needed but missing
"""

from __future__ import annotations

import contextlib
import datetime
import json
import sys
from pathlib import Path

import click

from .errors import ScaoedError

EXIT_OK, EXIT_ERROR, EXIT_USAGE, EXIT_VERIFY = 0, 1, 2, 3


# ---------------------------------------------------------------------------- helpers
def _stage_list(ctx, param, value):
    if value is None:
        return None
    try:
        stages = [int(v) for v in str(value).split(",") if v.strip()]
    except ValueError:
        raise click.BadParameter(f"expected stage counts like 1,3,5, got {value!r}") from None
    bad = [k for k in stages if not 1 <= k <= 8]
    if not stages or bad:
        raise click.BadParameter(f"stage counts must be 1 to 8, got {value!r}")
    return stages


def _resolution(ctx, param, value):
    out = []
    for item in str(value).split(","):
        item = item.strip().lower()
        try:
            h, w = (int(v) for v in item.split("x")) if "x" in item else (int(item), int(item))
        except ValueError:
            raise click.BadParameter(f"expected sizes like 512 or 512x768, got {item!r}") from None
        if h < 2 or w < 2 or h % 2 or w % 2:
            raise click.BadParameter(f"sizes must be even and at least 2, got {h}x{w}")
        out.append((h, w))
    return out


def emit_json(data) -> None:
    from .jsonio import dumps

    click.echo(dumps(data))


def notice(message: str) -> None:
    """A one-line notice on stderr (stdout stays clean for --json)."""
    click.echo(message, err=True)


def _console():
    from rich.console import Console

    return Console()


def load_weights(checkpoint: str | None, *, random_seed: int | None = None, blocks: int = 16):
    """The checkpoint's weights; else seeded random ones when asked for; else the shipped demo weights."""
    from . import checkpoint as ckpt
    from .weights import DEMO_NOTICE, demo_weights

    if checkpoint:
        return ckpt.read_checkpoint(checkpoint)
    if random_seed is not None:
        notice(f"note: using seeded random weights (seed {random_seed}, T={blocks}), not a trained model")
        return ckpt.random_weights(blocks=blocks, seed=random_seed)
    weights = demo_weights()
    notice(DEMO_NOTICE)
    return weights


json_option = click.option("--json", "as_json", is_flag=True, help="Print the result as JSON for scripts.")


# ---------------------------------------------------------------------------- commands
@click.group(context_settings={"help_option_names": ["-h", "--help"], "max_content_width": 100})
@click.version_option(package_name="scaoed-deploy")
def cli():
    """ScaoedNet from PyTorch checkpoint to verified ONNX and TensorRT artifacts."""


@cli.command()
@click.option("--res", "resolutions", default="512", show_default=True, callback=_resolution,
              help="Output resolution(s): 512, 512x768, or a comma list.")
@click.option("--stages", "stages", default="1,3,5", show_default=True, callback=_stage_list,
              help="Stage counts K (1 to 8), comma-separated.")
@click.option("--blocks", default=16, show_default=True, type=click.IntRange(1, 64), help="FM2ARB blocks T.")
@json_option
def info(resolutions, stages, blocks, as_json):
    """Parameters and multiply-accumulates per stage count, beside the paper's figures."""
    from .cost import model_cost

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
    _console().print(table)


@cli.command()
@click.argument("src", type=click.Path(dir_okay=False))
@click.argument("dst", type=click.Path(dir_okay=False))
@click.option("--stages", type=click.IntRange(1, 8), default=None,
              help="Stage count K to record in the safetensors config (default: the source's, else 5).")
@json_option
def convert(src, dst, stages, as_json):
    """Convert a checkpoint: authors' .pth <-> scaoed-deploy .safetensors (+ .json config)."""
    from .checkpoint import convert as do_convert

    result = do_convert(src, dst, stages=stages)
    if as_json:
        emit_json(result)
    else:
        click.echo(
            f"wrote {result['output']} ({result['output_format']}, T={result['blocks']}, "
            f"{result['parameters']:,} parameters) from {result['source_layout']} layout {result['source']}"
        )


@cli.command()
@click.argument("src", type=click.Path(exists=True))
@click.argument("dst", type=click.Path())
@click.option("--model", "-m", "--checkpoint", "-c", "model", type=click.Path(),
              help="A checkpoint (.pth/.safetensors), an .onnx file or a TensorRT .engine (default: the demo weights).")
@click.option("--backend", type=click.Choice(["torch", "onnxruntime", "onnxruntime-cuda", "tensorrt"]), default=None,
              help="Default: from the model file (checkpoint: torch; .onnx: onnxruntime; .engine: tensorrt).")
@click.option("--stages", type=click.IntRange(1, 8), default=None, help="Stage count K for checkpoints (default: the checkpoint's).")
@click.option("--reference", "-r", type=click.Path(exists=True),
              help="Clean image (or folder of same-named images): print PSNR/SSIM as the paper evaluates.")
@click.option("--tile", type=click.IntRange(16), default=512, show_default=True,
              help="Tile size for large images (overlapping tiles, blended); 0 is not allowed: use a large value for whole images.")
@click.option("--overlap", type=click.IntRange(0), default=32, show_default=True, help="Tile overlap in pixels.")
@click.option("--tile-batch", type=click.IntRange(1), default=4, show_default=True, help="Tiles per run.")
@click.option("--ensemble", is_flag=True, help="Self-ensemble: average the 8 flips/rotations (8x the time).")
@click.option("--bit-depth", type=click.Choice(["8", "16"]), default=None, help="Output bit depth (default: the input's).")
@click.option("--overwrite", is_flag=True, help="Folders: redo images whose output exists (default: skip them, so runs resume).")
@click.option("--device", type=click.Choice(["auto", "cpu", "cuda"]), default="auto", show_default=True)
@click.option("--threads", type=click.IntRange(1), default=None, help="CPU threads.")
@json_option
def denoise(src, dst, model, backend, stages, reference, tile, overlap, tile_batch, ensemble, bit_depth, overwrite,
            device, threads, as_json):
    """Denoise an image file (or every image in a folder) into DST with any artifact."""
    from .images import list_images
    from .runtime import Denoiser

    denoiser = Denoiser.open(model, backend=backend, stages=stages, device=device, threads=threads, tile=tile,
                             overlap=overlap, tile_batch=tile_batch, ensemble=ensemble)
    if model is None:
        from .weights import DEMO_NOTICE

        notice(DEMO_NOTICE)
    src_p, dst_p = Path(src), Path(dst)
    skipped = []
    if src_p.is_dir():
        if dst_p.exists() and not dst_p.is_dir():
            raise ScaoedError(f"{dst_p} is a file; a folder in needs a folder out")
        jobs = [(p, dst_p / p.name, (Path(reference) / p.name) if reference else None) for p in list_images(src_p)]
        if not jobs:
            raise ScaoedError(f"no images in {src_p} (looked for .png .jpg .jpeg .tif .tiff .bmp .webp)")
        if reference:
            missing = [str(r) for _, _, r in jobs if not r.is_file()]
            if missing:
                raise ScaoedError(f"reference folder lacks {len(missing)} image(s): {', '.join(missing[:3])}")
        if not overwrite:
            skipped = [str(d) for _, d, _ in jobs if d.exists()]
            jobs = [j for j in jobs if not j[1].exists()]
    else:
        if dst_p.is_dir():
            dst_p = dst_p / src_p.name
        jobs = [(src_p, dst_p, Path(reference) if reference else None)]
    results, failures = _run_denoise_jobs(denoiser, jobs, int(bit_depth) if bit_depth else None, quiet=as_json,
                                          single=not src_p.is_dir())
    summary = {"model": denoiser.description, "tile": tile, "overlap": overlap, "ensemble": ensemble,
               "results": results, "skipped_existing": skipped, "failures": failures}
    if as_json:
        emit_json(summary)
    else:
        for r in results:
            line = f"{r['input']} -> {r['output']} ({r['width']}x{r['height']}, {r['bit_depth_out']}-bit)"
            if "psnr" in r:
                line += (f": PSNR {r['psnr']:.2f} dB, SSIM {r['ssim']:.4f} "
                         f"(input {r['psnr_in']:.2f} dB, {r['ssim_in']:.4f})")
            click.echo(line)
        if len(results) > 1 and reference:
            def mean(key):
                return sum(r[key] for r in results) / len(results)

            click.echo(f"mean over {len(results)} images: PSNR {mean('psnr'):.2f} dB, SSIM {mean('ssim'):.4f}")
        if skipped:
            click.echo(f"skipped {len(skipped)} image(s) whose output exists (--overwrite to redo them)")
        click.echo(f"model: {denoiser.description}")
        for f in failures:
            notice(f"failed: {f['input']}: {f['error']}")
    if failures:
        raise ScaoedError(f"{len(failures)} of {len(jobs)} image(s) failed")


def _run_denoise_jobs(denoiser, jobs, bit_depth, quiet: bool, single: bool):
    from .runtime import denoise_file

    results, failures = [], []
    progress, log = _progress(quiet=quiet or len(jobs) < 2, transient=True)
    with progress:
        task = progress.add_task("denoising", total=len(jobs))
        for i, (src, dst, ref) in enumerate(jobs, 1):
            if log:
                log(f"[{i}/{len(jobs)}] {src}")
            try:
                results.append(denoise_file(denoiser, src, dst, ref, bit_depth=bit_depth))
            except ScaoedError as e:
                if single:
                    raise
                failures.append({"input": str(src), "error": str(e)})
            progress.advance(task)
    return results, failures


def _stderr_console():
    from rich.console import Console

    return Console(stderr=True)


def _progress(*columns, quiet: bool, **kwargs):
    """(a rich Progress on stderr, log): on a terminal a live bar and log None; where stderr is a log file or CI,
    which rich would draw the bar into only once at the end, no bar and log(text) prints a progress line; both
    off when quiet."""
    from rich.progress import Progress

    console = _stderr_console()
    log = None if quiet or console.is_terminal else (
        lambda text: console.print(f"  {text}", highlight=False, soft_wrap=True))
    return Progress(*columns, console=console, disable=quiet or log is not None, **kwargs), log


@cli.command("export")
@click.option("--stages", default="5", show_default=True, callback=_stage_list, help="Stage counts K, comma-separated: one file each.")
@click.option("--checkpoint", "-c", type=click.Path(), help="Weights (default: the demo weights).")
@click.option("--random-seed", type=int, default=None, help="Use seeded random weights instead (for tests and timing).")
@click.option("--blocks", default=16, show_default=True, type=click.IntRange(1, 64), help="T, with --random-seed.")
@click.option("--static", "static_hw", nargs=2, type=click.IntRange(2, 16384), default=None, metavar="H W",
              help="Static height and width (even) instead of dynamic ones.")
@click.option("--batch", type=click.IntRange(1, 1024), default=None, help="Static batch size (default: dynamic).")
@click.option("--opset", type=click.IntRange(17, 30), default=18, show_default=True)
@click.option("--noise-maps", is_flag=True, help="Also output the K noise maps u(i), for stage-wise parity.")
@click.option("--optimizer", type=click.Choice(["onnxslim", "none", "onnxscript"]), default="onnxslim", show_default=True,
              help="Graph simplification; onnxscript's drops NFAE's epsilon and is kept only to show that.")
@click.option("--data", type=click.Path(exists=True, file_okay=False),
              help="Real noisy images (a folder, or one with noisy/) for the check; default ../shared/data/sidd.")
@click.option("--tolerance", type=click.FloatRange(min=0), default=1e-4, show_default=True, help="Max abs error vs eager.")
@click.option("-o", "--output", default="export", show_default=True, help="Output folder, or a .onnx file for one K.")
@json_option
def export_cmd(stages, checkpoint, random_seed, blocks, static_hw, batch, opset, noise_maps, optimizer, data, tolerance, output, as_json):
    """Export one verified ONNX file per stage count (ONNX Runtime vs eager before writing)."""
    from .data import default_sidd_dir
    from .errors import VerificationError
    from .export import ExportSpec, command_line, default_filename, export_onnx

    weights = load_weights(checkpoint, random_seed=random_seed, blocks=blocks)
    data_dir = Path(data) if data else default_sidd_dir()
    out = Path(output)
    single_file = out.suffix == ".onnx"
    if single_file and len(stages) > 1:
        raise click.BadParameter("give a folder, not a .onnx file, when exporting several stage counts", param_hint="-o")
    results, errors = [], []
    for k in stages:
        spec = ExportSpec(stages=k, static_hw=tuple(static_hw) if static_hw else None, batch=batch, opset=opset,
                          noise_maps=noise_maps, optimizer=optimizer, tolerance=tolerance)
        path = out if single_file else out / default_filename(k, weights.blocks, spec)
        try:
            with progress_steps(quiet=as_json) as step:
                results.append(export_onnx(weights, spec, path, data_dir, step=step, command=command_line()))
        except VerificationError as e:
            errors.append(str(e))
            notice(f"failed: {e}")
    summary = {"weights": weights.identity, "data": str(data_dir) if data_dir else None,
               "exports": [r.to_dict() for r in results], "failed": errors}
    if as_json:
        emit_json(summary)
    else:
        for r in results:
            _print_export(r)
        if data_dir is None:
            notice("note: no real noisy images found (../shared/data/sidd or --data): checked on synthetic inputs only")
    if errors:
        raise VerificationError(f"{len(errors)} of {len(stages)} export(s) failed verification; their files were not written")


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
    _console().print(table)
    for n in r.notes:
        click.echo(f"  note: {n}")


@cli.command()
@click.argument("artifacts", nargs=-1, required=True, type=click.Path())
@click.option("--stages", type=click.IntRange(1, 8), default=None, help="K of the eager reference (default: the artifact's).")
@click.option("--checkpoint", "-c", type=click.Path(), help="Weights of the eager reference (default: what the artifact records, or the demo weights).")
@click.option("--data", type=click.Path(exists=True, file_okay=False),
              help="Real pairs: a folder with noisy/ and clean/ (default ../shared/data/sidd when present).")
@click.option("--report", "report_dir", default="reports/parity", show_default=True, type=click.Path(file_okay=False),
              help="Folder for parity.json, parity.md and one PNG per artifact.")
@click.option("--precision", type=click.Choice(["fp32", "fp16", "bf16", "int8"]), default=None,
              help="Judge as this precision (default: the artifact's metadata, else its tensor types).")
@click.option("--max-abs", type=click.FloatRange(min=0), default=None, help="Override: max abs error vs eager.")
@click.option("--min-psnr", type=float, default=None, help="Override: min output PSNR vs eager (dB).")
@click.option("--max-dpsnr", type=click.FloatRange(min=0), default=None, help="Override: max |mean dPSNR| vs clean (dB).")
@click.option("--no-localise", is_flag=True, help="Skip finding the first divergent node of a failing ONNX artifact.")
@json_option
def parity(artifacts, stages, checkpoint, data, report_dir, precision, max_abs, min_psnr, max_dpsnr, no_localise, as_json):
    """Check ONNX files or TensorRT engines against the fp32 eager model; exit 3 if any fails."""
    from .data import default_sidd_dir
    from .errors import VerificationError
    from .export import command_line
    from .parity import load_artifact, run_parity, thresholds_for, write_reports

    data_dir = Path(data) if data else default_sidd_dir()
    loaded = [load_artifact(a, precision) for a in artifacts]  # every missing or corrupt file is named before any work
    results, reference = [], None
    for art in loaded:
        weights = _reference_weights(art, checkpoint)
        thresholds = thresholds_for(art.precision, max_abs=max_abs, min_psnr=min_psnr, max_dpsnr=max_dpsnr)
        with progress_steps(quiet=as_json) as step:
            r = run_parity(art, weights, stages, data_dir, thresholds, localise=not no_localise, step=step)
        results.append(r)
        reference = reference or {"weights": weights.identity, "blocks": weights.blocks, "stages": r.stages,
                                  "data": str(data_dir) if data_dir else None}
    written = write_reports(results, report_dir, reference, command_line())
    if as_json:
        from .parity.report import report_dict

        emit_json(dict(report_dict(results, reference, command_line()), report_files=[str(p) for p in written]))
    else:
        for r in results:
            _print_parity(r)
        click.echo(f"report: {', '.join(str(p) for p in written)}")
    failed = [r for r in results if not r.passed]
    if failed:
        raise VerificationError(f"{len(failed)} of {len(results)} artifact(s) failed parity: "
                                + "; ".join(f"{r.artifact.path.name}: {r.failures[0].check}" for r in failed))


def _reference_weights(art, checkpoint):
    """The checkpoint if given; else the weights the artifact records (seeded random or the demo weights)."""
    from . import checkpoint as ckpt
    from .weights import DEMO_NOTICE, demo_weights, has_demo_weights

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

    from .audit import audit_line
    from .parity.harness import format_measured
    from .parity.report import localisation_line

    verdict = "[green]passed[/green]" if r.passed else "[bold red]FAILED[/bold red]"
    console = _console()
    table = Table(title=f"{r.artifact.path} ({r.artifact.kind}, {r.artifact.precision}, K={r.stages}): {verdict}",
                  title_justify="left")
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
            task.add_row(t.image, f"{t.eager_psnr:.2f} / {t.eager_ssim:.4f}",
                         f"{t.artifact_psnr:.2f} / {t.artifact_ssim:.4f}", f"{t.dpsnr:+.3f} dB")
        console.print(task)
    if r.audit:
        click.echo(f"  read back: {audit_line(r.audit)}")
    if r.localisation:
        click.echo(f"  first divergent node: {localisation_line(r.localisation)}")
    for n in r.notes:
        click.echo(f"  note: {n}")


@cli.command()
@click.option("--clean", required=True, help="Clean image folder(s), comma-separated (never the SIDD crops).")
@click.option("--pairs", default=None, help="Extra real noisy/clean training pairs (folders with noisy/ and clean/), comma-separated.")
@click.option("--val", type=click.Path(exists=True, file_okay=False), default=None,
              help="Real noisy/clean pairs to report PSNR on while training (monitoring only).")
@click.option("--stages", type=click.IntRange(1, 8), default=2, show_default=True,
              help="K used in training (and, with --stage-choices, for validation and as the weights' default).")
@click.option("--stage-choices", default=None, callback=_stage_list, help="Draw K per batch from these, e.g. 1,2,3,4,5 (weights are shared across stages).")
@click.option("--init", type=click.Path(exists=True, dir_okay=False), default=None,
              help="Start from these weights with a fresh optimiser (fine-tuning).")
@click.option("--blocks", type=click.IntRange(1, 64), default=16, show_default=True, help="FM2ARB blocks T.")
@click.option("--patch", type=click.IntRange(16, 1024), default=64, show_default=True)
@click.option("--batch", type=click.IntRange(1, 1024), default=8, show_default=True)
@click.option("--steps", type=click.IntRange(1), default=2000, show_default=True, help="Total steps (on --resume: the new total).")
@click.option("--lr", type=click.FloatRange(min=0, min_open=True), default=2e-4, show_default=True, help="Peak learning rate (cosine decay).")
@click.option("--seed", default=0, show_default=True)
@click.option("--val-every", type=click.IntRange(1), default=250, show_default=True)
@click.option("--resume", type=click.Path(exists=True, dir_okay=False), default=None, help="A .train-state.pt to continue from exactly.")
@click.option("--max-minutes", type=click.FloatRange(min=0), default=None,
              help="Time budget: stop after the step that spends it, saving weights and state (continue with --resume "
              "and the same --steps), e.g. to fit a long run into jobs of fixed length.")
@click.option("--device", type=click.Choice(["auto", "cpu", "cuda"]), default="auto", show_default=True,
              help="auto: the GPU when torch sees one, else the CPU.")
@click.option("--amp", type=click.Choice(["none", "bf16"]), default="none", show_default=True,
              help="bf16: autocast the forward pass (about 2x faster on CPUs with AVX-512 BF16; float32 master weights).")
@click.option("-o", "--output", required=True, type=click.Path(dir_okay=False), help="Weights to write: NAME.safetensors (+ NAME.json).")
@json_option
def train(clean, pairs, val, stages, stage_choices, init, blocks, patch, batch, steps, lr, seed, val_every, resume,
          max_minutes, device, amp, output, as_json):
    """Train ScaoedNet on clean images with synthetic camera noise (L1, Adam, cosine decay)."""
    from rich.progress import BarColumn, TextColumn, TimeRemainingColumn

    from .runtime.torch_backend import pick_device
    from .train import TrainConfig, state_path
    from .train import train as run_training

    if patch % 2:
        raise click.BadParameter("must be even", param_hint="--patch")
    cfg = TrainConfig(clean=[c for c in clean.split(",") if c], stages=stages, blocks=blocks, patch=patch, batch=batch,
                      steps=steps, lr=lr, seed=seed, val_every=val_every,
                      pairs=[p for p in (pairs or "").split(",") if p], val=val, amp=amp, init=init,
                      stage_choices=stage_choices or [])
    dev = str(pick_device(device))
    columns = [TextColumn("training"), BarColumn(), TextColumn("{task.completed}/{task.total}"),
               TextColumn("{task.fields[info]}"), TimeRemainingColumn()]
    progress, log = _progress(*columns, quiet=as_json)
    with progress:
        task = progress.add_task("train", total=steps, info="")

        def report(d):
            info = f"loss {d['loss']:.4f}"
            if "val_psnr_synthetic" in d:
                report.val = f" | val {d['val_psnr_synthetic']:.2f} dB" + (
                    f" | real {d['val_psnr_real']:.2f} dB" if "val_psnr_real" in d else "")
                if log:  # a line per validation, not per step
                    log(f"step {d['step']}/{steps} ({d['seconds']:.0f} s): {info}{report.val}")
            progress.update(task, completed=d["step"], info=info + report.val)

        report.val = ""
        result = run_training(cfg, output, resume=resume, device=dev, report=report,
                              max_seconds=None if max_minutes is None else 60 * max_minutes)
        progress.update(task, completed=result["steps"])  # also when a resumed state had nothing left to run
    if as_json:
        emit_json(result)
    else:
        last = result["history"][-1] if result["history"] else result["last"]
        click.echo(f"wrote {result['weights']} after {result['steps']} steps (resumable state: {state_path(output)}); "
                   f"last validation: {json.dumps({k: round(v, 4) for k, v in last.items() if isinstance(v, float)})}")
        if not result["complete"]:
            click.echo(f"stopped by --max-minutes at step {result['steps']} of {result['planned_steps']}; continue with "
                       f"--resume {state_path(output)} --steps {result['planned_steps']}")


def _hw(ctx, param, value):
    if value is None:
        return None
    sizes = _resolution(ctx, param, value)
    if len(sizes) != 1:
        raise click.BadParameter(f"expected one size like 512 or 512x768, got {value!r}")
    return sizes[0]


@cli.command("build-engine")
@click.option("--fp16", "precision", flag_value="fp16", help="FP16 ONNX (ModelOpt AutoCast, FP32 islands chosen automatically).")
@click.option("--bf16", "precision", flag_value="bf16", help="BF16 ONNX, the same way.")
@click.option("--int8", "precision", flag_value="int8", help="INT8 Q/DQ ONNX, calibrated on real noisy images.")
@click.option("--fp32", "precision", flag_value="fp32", help="No conversion: lint and build the fp32 ONNX.")
@click.option("--stages", type=click.IntRange(1, 8), default=None,
              help="K: export (or reuse) the fp32 ONNX for it (default: the newest fp32 export of the weights in "
              "--export-dir, else the weights' default K).")
@click.option("--onnx", "onnx_path", type=click.Path(exists=True, dir_okay=False), default=None,
              help="Start from this fp32 export instead.")
@click.option("--checkpoint", "-c", type=click.Path(), help="Weights (default: the demo weights).")
@click.option("--target", type=click.Choice(["tensorrt", "onnxruntime-cpu"]), default="tensorrt", show_default=True,
              help="INT8 flavour: symmetric S8 Q/DQ for TensorRT, or U8/S8 QDQ that ONNX Runtime's CPU kernels fuse.")
@click.option("--calib", default=None, help="Calibration folders, comma-separated: real noisy images, or clean:DIR for "
              "clean images with synthetic noise (default: RNI15 + CBSD68/McMaster with synthetic noise; never SIDD).")
@click.option("--calib-count", type=click.IntRange(4, 4096), default=32, show_default=True, help="Calibration crops.")
@click.option("--calib-method", type=click.Choice(["entropy", "max"]), default="entropy", show_default=True)
@click.option("--exclude", default=None, help="INT8: node names to keep in FP32, comma-separated.")
@click.option("--min", "min_hw", default="256", show_default=True, callback=_hw, help="Profile minimum HxW.")
@click.option("--opt", "opt_hw", default="512", show_default=True, callback=_hw, help="Profile optimum HxW.")
@click.option("--max", "max_hw", default="1024", show_default=True, callback=_hw, help="Profile maximum HxW.")
@click.option("--batch", default="1:1:1", show_default=True, help="Profile batch MIN:OPT:MAX.")
@click.option("--timing-cache", type=click.Path(dir_okay=False), default="engines/timing.cache", show_default=True,
              help="Reused and updated across builds.")
@click.option("--workspace", type=click.IntRange(16), default=None, help="Builder workspace limit in MiB.")
@click.option("--data", type=click.Path(exists=True, file_okay=False),
              help="Real noisy/clean pairs for parity (default ../shared/data/sidd).")
@click.option("--export-dir", default="export", show_default=True, type=click.Path(file_okay=False))
@click.option("-o", "--output", type=click.Path(dir_okay=False), default=None,
              help="Engine path (default engines/<precision onnx name>.engine).")
@json_option
def build_engine_cmd(precision, stages, onnx_path, checkpoint, target, calib, calib_count, calib_method, exclude, min_hw,
                     opt_hw, max_hw, batch, timing_cache, workspace, data, export_dir, output, as_json):
    """Precision ONNX -> TensorRT lint -> parity -> TensorRT 11 engine (exit 4 when TensorRT is missing)."""
    from .build import BuildRequest, build
    from .engine import ShapeProfile, parse_batch
    from .export import command_line
    from .runtime.tensorrt_backend import TensorRTMissing

    if precision is None:
        raise click.UsageError("choose a precision: --fp16, --bf16, --int8 or --fp32")
    if target != "tensorrt" and precision != "int8":
        raise click.BadParameter("onnxruntime-cpu is an INT8 flavour; use it with --int8", param_hint="--target")
    weights = load_weights(checkpoint)
    req = BuildRequest(precision, weights, stages, Path(onnx_path) if onnx_path else None, target,
                       [c for c in calib.split(",") if c] if calib else None, calib_count, calib_method,
                       [n for n in (exclude or "").split(",") if n],
                       ShapeProfile(min_hw, opt_hw, max_hw, parse_batch(batch)),
                       Path(timing_cache) if timing_cache else None, workspace, Path(export_dir),
                       Path(output) if output else None, Path(data) if data else None, command_line())
    with progress_steps(quiet=as_json) as step:
        outcome = build(req, step)
    if as_json:
        emit_json(outcome.to_dict())
    else:
        _print_build(outcome)
    if outcome.tensorrt_missing:
        raise TensorRTMissing(outcome.tensorrt_missing + f"; the precision ONNX and build plan are written "
                              f"({outcome.plan.sidecar_path}); or run: {outcome.plan.trtexec()}")


def _print_build(o) -> None:
    from .audit import audit_line

    d = o.to_dict()
    click.echo(f"1. fp32 ONNX: {o.fp32_onnx} ({'reused' if o.fp32_reused else 'exported and verified'})")
    if o.conversion:
        c = o.conversion
        extra = f", {c['check_psnr_vs_fp32']:.1f} dB vs fp32 on held-out calibration crops" if c["check_psnr_vs_fp32"] else ""
        click.echo(f"2. {c['precision']} ONNX ({c['tool']}): {c['kept_fp32']} nodes kept in FP32, calibration "
                   f"{c['calibration']['count']} crops of {', '.join(c['calibration']['sources'])}{extra}")
        for n in c["notes"]:
            click.echo(f"   note: {n}")
    else:
        click.echo("2. no conversion (fp32)")
    if o.audit:
        click.echo(f"   read back: {audit_line(o.audit)}")
    errs = [v for v in o.lint if v.severity == "error"]
    warns = [v for v in o.lint if v.severity != "error"]
    click.echo(f"3. TensorRT lint: {len(errs)} error(s), {len(warns)} warning(s)" + (
        " (not a TensorRT artifact: reported only)" if errs else ""))
    for v in (errs + warns)[:5]:
        click.echo(f"   {v}")
    if o.parity:
        r = o.parity
        t = d["parity"]
        psnr = min((x.psnr for x in r.tensors if x.output == "denoised" and x.finite), default=float("nan"))
        dpsnr = f", mean dPSNR {t['mean_dpsnr']:+.3f} dB on {len(r.task)} real pairs" if t["mean_dpsnr"] is not None else ""
        click.echo(f"4. parity: {'pass' if r.passed else 'FAIL'} (worst PSNR vs eager {psnr:.1f} dB{dpsnr})")
        for n in r.notes:
            click.echo(f"   note: {n}")
    click.echo(f"   wrote {o.precision_onnx}")
    if o.engine:
        click.echo(f"5. engine: {o.engine['engine']} (TensorRT {o.engine['tensorrt']}, {o.engine['gpu']}, "
                   f"{o.engine['build_seconds']} s); sidecar {o.plan.sidecar_path}")
    elif o.plan:
        click.echo(f"5. engine: not built; build plan in {o.plan.sidecar_path}")
    else:
        click.echo("5. engine: none (an ONNX Runtime CPU artifact)")


@cli.command()
@click.option("--res", "resolutions", default="512", show_default=True, callback=_resolution,
              help="Resolutions, comma-separated (512 or 512x768).")
@click.option("--stages", default="1,3,5", show_default=True, callback=_stage_list, help="Stage counts K.")
@click.option("--backends", default=None,
              help="Comma-separated, from: torch, torch-bf16, torch-fp16, torch-compile, onnxruntime, onnxruntime-fp16, "
                   "onnxruntime-bf16, onnxruntime-int8, tensorrt, tensorrt-fp16, tensorrt-int8 "
                   "(default: every one that fits the device; torch eager fp32 always runs, for the ratios).")
@click.option("--device", type=click.Choice(["auto", "cpu", "cuda"]), default="auto", show_default=True,
              help="auto: the GPU when torch sees one, else the CPU.")
@click.option("--batch", type=click.IntRange(1, 256), default=1, show_default=True)
@click.option("--warmup", type=click.IntRange(0), default=2, show_default=True)
@click.option("--iters", type=click.IntRange(1), default=10, show_default=True)
@click.option("--threads", type=click.IntRange(1), default=None, help="CPU threads, pinned (default: all cores).")
@click.option("--checkpoint", "-c", type=click.Path(), help="Weights (default: the demo weights).")
@click.option("--random-seed", type=int, default=None, help="Seeded random weights instead (timing only).")
@click.option("--blocks", default=16, show_default=True, type=click.IntRange(1, 64), help="T, with --random-seed.")
@click.option("--no-quality", is_flag=True, help="Skip the PSNR columns (the SIDD crops through every backend).")
@click.option("--data", type=click.Path(exists=True, file_okay=False), help="Real pairs for PSNR (default ../shared/data/sidd).")
@click.option("--export-dir", default="export", show_default=True, type=click.Path(file_okay=False),
              help="Where ONNX artifacts are reused from (or made into).")
@click.option("--name", default=None, help="Result file name (default: <device>_<res>).")
@click.option("-o", "--output", default="benchmarks/results", show_default=True, type=click.Path(file_okay=False))
@json_option
def bench(resolutions, stages, backends, device, batch, warmup, iters, threads, checkpoint, random_seed, blocks,
          no_quality, data, export_dir, name, output, as_json):
    """Latency, throughput, memory and PSNR per backend and K, with ratios to eager fp32 from the same run."""
    from rich.progress import BarColumn, TextColumn, TimeElapsedColumn

    from .bench import BACKENDS, BASELINE, CPU_DEFAULT, GPU_DEFAULT, BenchConfig, markdown, run_bench, write_results
    from .export import command_line
    from .runtime.torch_backend import pick_device

    device = pick_device(device).type
    chosen = [b.strip() for b in backends.split(",") if b.strip()] if backends else \
        list(CPU_DEFAULT if device == "cpu" else GPU_DEFAULT)
    unknown = [b for b in chosen if b not in BACKENDS]
    if unknown:
        raise click.BadParameter(f"unknown backend(s) {', '.join(unknown)}; choose from {', '.join(BACKENDS)}",
                                 param_hint="--backends")
    weights = load_weights(checkpoint, random_seed=random_seed, blocks=blocks)
    cfg = BenchConfig(resolutions, stages, chosen, device, batch, warmup, iters, threads, not no_quality,
                      Path(data) if data else None, Path(export_dir))
    total = len(resolutions) * len(stages) * len(dict.fromkeys([BASELINE, *chosen]))
    columns = [TextColumn("bench"), BarColumn(), TextColumn("{task.completed}/{task.total}"),
               TextColumn("{task.fields[info]}"), TimeElapsedColumn()]
    progress, log = _progress(*columns, quiet=as_json)
    with progress:
        task = progress.add_task("bench", total=total, info="")

        def step(message):
            progress.update(task, info=message)
            if log:
                log(f"[{int(progress.tasks[0].completed) + 1}/{total}] {message}")

        result = run_bench(weights, cfg, step=step, advance=lambda: progress.advance(task))
    result["command"] = command_line()
    result["created"] = datetime.datetime.now().astimezone().isoformat(timespec="seconds")
    tag = name or f"{device}_{'_'.join(f'{h}x{w}' if h != w else str(h) for h, w in resolutions)}"
    paths = write_results(result, output, tag)
    if as_json:
        emit_json(dict(result, files=[str(p) for p in paths]))
    else:
        click.echo(markdown(result))
        click.echo("wrote " + ", ".join(str(p) for p in paths))


@contextlib.contextmanager
def progress_steps(quiet: bool = False):
    """Yields step(message): a spinner on a terminal, a line per step on stderr otherwise."""
    console = _stderr_console()
    if quiet and not console.is_terminal:
        yield lambda message: None
    elif console.is_terminal:
        with console.status("starting") as status:
            yield status.update
    else:
        yield lambda message: console.print(f"  {message}", highlight=False)


# ---------------------------------------------------------------------------- entry point
def main(argv=None) -> int:
    """Console entry point: one 'error: ...' line and an exit code, never a traceback."""
    from . import errors

    errors._ARGV = list(argv) if argv is not None else None
    try:
        rv = cli.main(args=argv, prog_name="scaoed-deploy", standalone_mode=False)
    except click.exceptions.Exit as e:
        return e.exit_code
    except click.Abort:
        click.echo("error: aborted", err=True)
        return EXIT_ERROR
    except click.ClickException as e:
        hint = " (see --help)" if isinstance(e, click.UsageError) else ""
        click.echo(f"error: {e.format_message()}{hint}", err=True)
        return e.exit_code
    except ScaoedError as e:
        click.echo(f"error: {e}", err=True)
        return e.exit_code
    except KeyboardInterrupt:
        click.echo("error: interrupted", err=True)
        return 130
    except MemoryError:
        click.echo("error: out of memory (try a smaller image or --stages)", err=True)
        return EXIT_ERROR
    # Non-standalone click returns Exit's code (--help, --version) instead of raising it.
    return rv if isinstance(rv, int) else EXIT_OK


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
