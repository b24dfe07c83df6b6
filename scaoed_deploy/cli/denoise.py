"""``denoise``: images in, images out, through any artifact."""

from __future__ import annotations

from pathlib import Path

import click

from ..contract import ContractError
from ..errors import DiskFullError, ScaoedError
from ..images import list_images
from ..runtime import BACKENDS, Denoiser, denoise_file
from ..runtime.base import busy_warning
from ..runtime.triton_client import ServerLostError, TritonRunner
from ..weights import DEMO_NOTICE
from .common import emit_json, json_option, notice, progress_bar, stages_option
from .main import cli


@cli.command()
@click.argument("src", type=click.Path(exists=True))
@click.argument("dst", type=click.Path())
@click.option("--model", "-m", "--checkpoint", "-c", "model", type=click.Path(),
              help="A checkpoint (.pth/.safetensors), an .onnx file, a TensorRT .engine or an OpenVINO .xml (default: "
                   "the demo weights); with --server, the server's model name (default: its only model).")
@click.option("--server", default=None, metavar="URL",
              help="Run on a Triton server instead: http://HOST:8000 or grpc://HOST:8001 (scaoed-deploy serve starts one).")
@click.option("--backend", type=click.Choice(list(BACKENDS)), default=None,
              help="Default: from the model file (checkpoint: torch; .onnx: onnxruntime; .engine: tensorrt).")
@stages_option("Stage count K for checkpoints (default: the checkpoint's).")
@click.option("--reference", "-r", type=click.Path(exists=True),
              help="Clean image (or folder of same-named images): print PSNR/SSIM as the paper evaluates.")
@click.option("--tile", type=click.IntRange(16), default=512, show_default=True,
              help="Tile size for large images (overlapping tiles, blended); 0 is not allowed: use a large value for whole images.")
@click.option("--overlap", type=click.IntRange(0), default=32, show_default=True, help="Tile overlap in pixels.")
@click.option("--tile-batch", type=click.IntRange(1), default=4, show_default=True, help="Tiles per run.")
@click.option("--ensemble", is_flag=True, help="Self-ensemble: average the 8 flips/rotations (8x the time).")
@click.option("--bit-depth", type=click.Choice(["8", "16"]), default=None, help="Output bit depth (default: the input's).")
@click.option("--overwrite", is_flag=True, help="Replace outputs that exist. Without it a folder run skips them (so runs "
              "resume) and a single file whose output exists is refused.")
@click.option("--device", type=click.Choice(["auto", "cpu", "cuda"]), default="auto", show_default=True)
@click.option("--threads", type=click.IntRange(1), default=None, help="CPU threads.")
@click.option("--allow-unverified", is_flag=True,
              help="Run an ONNX file or IR whose graph or weights were edited after its verification (refused otherwise).")
@json_option
def denoise(src, dst, model, server, backend, stages, reference, tile, overlap, tile_batch, ensemble, bit_depth,
            overwrite, device, threads, allow_unverified, as_json):
    """Denoise an image file (or every image in a folder) into DST with any artifact, or on a Triton server."""

    src_p, dst_p = Path(src), Path(dst)
    if not src_p.is_dir():
        dst_p = dst_p / src_p.name if dst_p.is_dir() else dst_p
        same = dst_p.exists() and dst_p.resolve() == src_p.resolve()
        if dst_p.exists() and not overwrite:  # one rule for files and folders, said before the model loads
            raise ScaoedError(f"{dst_p} is the input itself; --overwrite to replace it" if same else
                              f"{dst_p} exists; --overwrite to replace it")
    elif dst_p.exists() and dst_p.resolve() == src_p.resolve():
        raise ScaoedError(f"{dst_p} is the input folder: a folder run never writes over its own inputs; "
                          "name another output folder")
    if server:
        local = [name for name, value in (("--backend", backend), ("--stages", stages), ("--threads", threads),
                                          ("--device", device if device != "auto" else None)) if value]
        if local:
            raise ScaoedError(f"{', '.join(local)} {'does' if len(local) == 1 else 'do'} not apply with --server: "
                              "the server's model decides")
        denoiser = Denoiser(TritonRunner(server, model), tile=tile, overlap=overlap, tile_batch=tile_batch,
                            ensemble=ensemble)
    else:
        denoiser = Denoiser.open(model, backend=backend, stages=stages, device=device, threads=threads, tile=tile,
                                 overlap=overlap, tile_batch=tile_batch, ensemble=ensemble,
                                 allow_unverified=allow_unverified)
    if model is None and not server:
        notice(DEMO_NOTICE)
    busy = busy_warning(threads) if denoiser.runner.on_cpu else None
    if busy:
        notice(busy)
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
        jobs = [(src_p, dst_p, Path(reference) if reference else None)]
    with denoiser:  # the session or engine is released when the jobs are done
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
    results, failures = [], []
    progress, log = progress_bar(quiet=quiet or len(jobs) < 2, transient=True)
    with progress:
        task = progress.add_task("denoising", total=len(jobs))
        for i, (src, dst, ref) in enumerate(jobs, 1):
            if log:
                log(f"[{i}/{len(jobs)}] {src}")
            try:
                results.append(denoise_file(denoiser, src, dst, ref, bit_depth=bit_depth))
            except (ServerLostError, DiskFullError, ContractError) as e:
                # every later image would fail the same way: stop, keep what is written
                if single:
                    raise
                again = "" if isinstance(e, ContractError) else \
                    "; what was written is kept: run the same command again to resume"
                raise type(e)(f"{e}; stopped after {len(results)} of {len(jobs)} image(s){again}") from e
            except ScaoedError as e:
                if single:
                    raise
                failures.append({"input": str(src), "error": str(e)})
            progress.advance(task)
    return results, failures


