"""``denoise``: images in, images out, through any artifact."""

from __future__ import annotations

import time

import click

from ..cluster import denoise_on_ray
from ..contract import ContractError
from ..errors import DiskFullError, ScaoedError
from ..runtime import BACKENDS, DenoiseOptions, Denoiser, denoise_file
from ..runtime.jobs import plan_jobs
from ..runtime.triton_client import ServerLostError, TritonRunner
from ..storage import is_url
from ..weights import DEMO_NOTICE
from .common import Steps, emit_json, json_option, notice, notice_if_busy, progress_bar, stages_option
from .main import cli


class Location(click.ParamType):
    """A local path (that exists, for an input) or an object storage URL (s3://bucket/prefix/, see storage/)."""

    name = "path"

    def __init__(self, exists: bool):
        self.exists = exists

    def convert(self, value, param, ctx):
        if is_url(value):
            return value
        return click.Path(exists=self.exists).convert(value, param, ctx)


LOCATION, LOCATION_OUT = Location(exists=True), Location(exists=False)


def tile_value(ctx, param, value):
    """--tile: an even size of at least 16, or auto."""
    if str(value).lower() == "auto":
        return "auto"
    try:
        tile = int(value)
    except ValueError:
        raise click.BadParameter(f"expected a size like 512, or auto; got {value!r}") from None
    if tile < 16:
        raise click.BadParameter(f"{tile} is smaller than 16")
    return tile


@cli.command()
@click.argument("src", type=LOCATION)  # an image, a folder, a .txt list of image paths, or an s3:// URL of one
@click.argument("dst", type=LOCATION_OUT)
@click.option(
    "--model",
    "-m",
    "--checkpoint",
    "-c",
    "model",
    type=click.Path(),
    help="A checkpoint (.pth/.safetensors), an .onnx file, a TensorRT .engine or an OpenVINO .xml (default: "
    "the demo weights); with --server, the server's model name (default: its only model).",
)
@click.option(
    "--server",
    default=None,
    metavar="URL",
    help="Run on a Triton server instead: http://HOST:8000 or grpc://HOST:8001 (scaoed-deploy serve starts one).",
)
@click.option(
    "--backend",
    type=click.Choice(list(BACKENDS)),
    default=None,
    help="Default: from the model file (checkpoint: torch; .onnx: onnxruntime; .engine: tensorrt).",
)
@stages_option("Stage count K for checkpoints (default: the checkpoint's).")
@click.option(
    "--reference",
    "-r",
    type=LOCATION,
    help="Clean image (or folder of same-named images): print PSNR/SSIM as the paper evaluates.",
)
@click.option(
    "--tile",
    default="512",
    show_default=True,
    callback=tile_value,
    help="Tile size for large images (overlapping tiles, blended), or auto: the largest tile and tile batch "
    "that fit the memory available, per image. 0 is not allowed: use a large value for whole images.",
)
@click.option("--overlap", type=click.IntRange(0), default=32, show_default=True, help="Tile overlap in pixels.")
@click.option("--tile-batch", type=click.IntRange(1), default=4, show_default=True, help="Tiles per run.")
@click.option("--ensemble", is_flag=True, help="Self-ensemble: average the 8 flips/rotations (8x the time).")
@click.option(
    "--bit-depth", type=click.Choice(["8", "16"]), default=None, help="Output bit depth (default: the input's)."
)
@click.option(
    "--overwrite",
    is_flag=True,
    help="Replace outputs that exist. Without it a folder run skips them (so runs "
    "resume) and a single file whose output exists is refused.",
)
@click.option("--device", type=click.Choice(["auto", "cpu", "cuda"]), default="auto", show_default=True)
@click.option("--threads", type=click.IntRange(1), default=None, help="CPU threads.")
@click.option(
    "--allow-unverified",
    is_flag=True,
    help="Run an ONNX file or IR whose graph or weights were edited after its verification (refused otherwise).",
)
@click.option(
    "--allow-cpu-fallback",
    is_flag=True,
    help="With -m PACKAGE: where the package has no choice for this CPU's class, run the nearest lower class's "
    "(with a warning) instead of refusing.",
)
@click.option(
    "--ray",
    "ray_address",
    default=None,
    metavar="ADDRESS",
    help="Run on a Ray cluster: local (a Ray for this run), auto (the cluster this machine joined), HOST:PORT "
    "or ray://HOST:PORT. Paths must be visible to every node.",
)
@click.option(
    "--workers",
    type=click.IntRange(1),
    default=None,
    help="With --ray: the actor pool's size (default: the cluster's CPUs / --threads, or its GPUs).",
)
@json_option
def denoise(
    src,
    dst,
    model,
    server,
    backend,
    stages,
    reference,
    tile,
    overlap,
    tile_batch,
    ensemble,
    bit_depth,
    overwrite,
    device,
    threads,
    allow_unverified,
    allow_cpu_fallback,
    ray_address,
    workers,
    as_json,
):
    """Denoise an image file (or every image in a folder, or a .txt list of paths) into DST with any artifact, on
    a Triton server, or on a Ray cluster."""
    if workers and not ray_address:
        raise click.UsageError("--workers goes with --ray")
    if ray_address and server:
        raise click.UsageError("--ray and --server do not go together: choose where the model runs")
    options = DenoiseOptions(
        model=str(model) if model and not server else None,
        backend=backend,
        stages=stages,
        device=device,
        threads=threads,
        allow_unverified=allow_unverified,
        allow_cpu_fallback=allow_cpu_fallback,
        tile=tile,
        overlap=overlap,
        tile_batch=tile_batch,
        ensemble=ensemble,
        bit_depth=int(bit_depth) if bit_depth else None,
    )
    if ray_address:
        return _denoise_on_ray(src, dst, options, ray_address, workers, reference, overwrite, as_json)
    if server:
        local = [
            name
            for name, value in (
                ("--backend", backend),
                ("--stages", stages),
                ("--threads", threads),
                ("--device", device if device != "auto" else None),
                ("--allow-cpu-fallback", allow_cpu_fallback),
            )
            if value
        ]
        if local:
            raise click.UsageError(
                f"{', '.join(local)} {'does' if len(local) == 1 else 'do'} not apply with "
                "--server: the server's model decides"
            )
    plan = plan_jobs(src, dst, reference, overwrite)  # every rule on the files, said before the model loads
    if server:
        runner = TritonRunner(server, model)
        runner.activate()  # connects: the served model's limits decide the tiles
        denoiser = Denoiser(
            runner, tile=options.tile, overlap=options.overlap, tile_batch=options.tile_batch, ensemble=options.ensemble
        )
    else:
        denoiser = Denoiser.from_options(options)
    if model is None and not server:
        notice(DEMO_NOTICE)
    notice_if_busy(threads, denoiser.runner.on_cpu)
    picked = getattr(denoiser.runner, "package_pick", None)  # -m PACKAGE: the entry this CPU took
    if picked:
        notice(picked.line())
    for warning in getattr(denoiser.runner, "warnings", []):  # a file verified on a CPU with more than this one
        notice(f"warning: {warning}")
    skipped, jobs = plan.skipped, [(j.src, j.dst, j.ref) for j in plan.jobs]
    with denoiser:  # the session or engine is released when the jobs are done
        results, failures = _run_denoise_jobs(denoiser, jobs, options.bit_depth, quiet=as_json, single=plan.single)
    summary = {
        "model": denoiser.description,
        **(
            {"cpu_class": picked.cpu_class, "artifact": str(picked.artifact), "package": picked.to_dict()}
            if picked
            else {}
        ),
        "tile": tile,
        "overlap": overlap,
        "ensemble": ensemble,
        "results": results,
        "skipped_existing": skipped,
        "failures": failures,
        "removed_temporaries": plan.swept,
    }
    if as_json:
        emit_json(summary)
    else:
        _print_results(results, reference)
        if skipped:
            click.echo(f"skipped {len(skipped)} image(s) whose output exists (--overwrite to redo them)")
        click.echo(f"model: {denoiser.description}")
        if plan.swept:
            notice(
                f"removed {len(plan.swept)} temporary file(s) that an interrupted run left: {', '.join(plan.swept[:3])}"
            )
        for f in failures:
            notice(f"failed: {f['input']}: {f['error']}")
    if failures:
        raise ScaoedError(f"{len(failures)} of {len(jobs)} image(s) failed")


def _denoise_on_ray(src, dst, options: DenoiseOptions, address, workers, reference, overwrite, as_json):
    with _RunProgress() as progress:  # on stderr, with --json too: the summary alone goes to stdout
        summary = denoise_on_ray(
            src,
            dst,
            options,
            address=address,
            workers=workers,
            reference=reference,
            overwrite=overwrite,
            progress=progress,
        )
    if options.model is None:
        notice(DEMO_NOTICE)
    if as_json:
        emit_json(summary)
    else:
        _print_results(summary["results"], reference)
        per_worker = ", ".join(f"{w}: {n}" for w, n in sorted(summary["per_worker"].items()))
        click.echo(
            f"done {summary['done']}, skipped {summary['skipped']} (output exists), failed {summary['failed']} "
            f"in {summary['seconds']:.1f} s ({summary['images_per_s']:.2f} img/s) on {summary['workers_ran']} "
            f"worker(s) x {summary['threads_per_worker']} thread(s) at {address}"
            + (f"; per worker: {per_worker}" if per_worker else "")
        )
        for note in summary["notes"]:
            notice(f"note: {note}")
        for f in summary["failures"]:
            notice(f"failed: {f['input']}: {f['error']}")
    if summary["failed"]:
        raise ScaoedError(f"{summary['failed']} of {summary['done'] + summary['failed']} image(s) failed")


class _RunProgress:
    """progress(done, failed, total, note) for a cluster run: a bar with the time left on a terminal; elsewhere a
    line a ``EVERY_S`` seconds (and the last one), each with done / failed / left and the time left."""

    EVERY_S = 10.0

    def __enter__(self):
        from rich.progress import BarColumn, TextColumn, TimeRemainingColumn

        self.bar, self.log = progress_bar(
            TextColumn("denoising"),
            BarColumn(),
            TextColumn("{task.fields[counts]}"),
            TimeRemainingColumn(),
            quiet=False,
            transient=True,
        )
        self.bar.__enter__()
        self.task, self.t0 = None, time.monotonic()
        self.say = Steps(self.log, tick_every=self.EVERY_S) if self.log else None  # a line in EVERY_S at most
        return self

    def __exit__(self, *exc):
        self.bar.__exit__(*exc)

    def __call__(self, done: int, failed: int, total: int, note: str | None) -> None:
        if note:
            notice(f"note: {note}")
        left = total - done - failed
        counts = f"done {done}, failed {failed}, left {left} of {total}"
        if self.task is None:
            self.task = self.bar.add_task("denoising", total=total, counts=counts)
        self.bar.update(self.task, completed=done + failed, counts=counts)
        if self.say:
            spent = time.monotonic() - self.t0
            eta = f", about {spent / (done + failed) * left:.0f} s left" if done + failed and left else ""
            (self.say if left == 0 else self.say.tick)(f"{counts}{eta}")  # the last line always


def _print_results(results: list[dict], reference) -> None:
    """A line per image written (with PSNR/SSIM against its reference), then the mean over them; what reading an
    image changed (a dropped colour profile, clipped samples) as a warning line on stderr."""
    for r in results:
        for warning in r.get("warnings", []):
            notice(f"warning: {warning}")
        line = f"{r['input']} -> {r['output']} ({r['width']}x{r['height']}, {r['bit_depth_out']}-bit)"
        if "psnr" in r:
            line += f": PSNR {r['psnr']:.2f} dB, SSIM {r['ssim']:.4f} (input {r['psnr_in']:.2f} dB, {r['ssim_in']:.4f})"
        click.echo(line)
    if len(results) > 1 and reference:

        def mean(key):
            return sum(r[key] for r in results) / len(results)

        click.echo(f"mean over {len(results)} images: PSNR {mean('psnr'):.2f} dB, SSIM {mean('ssim'):.4f}")


def _tile_progress(denoiser, quiet: bool):
    """Progress over the tiles of one large image, with the time left (tiles are equal work)."""
    from rich.progress import BarColumn, TextColumn, TimeRemainingColumn

    progress, log = progress_bar(
        TextColumn("denoising"),
        BarColumn(),
        TextColumn("{task.completed}/{task.total} tiles"),
        TimeRemainingColumn(),
        quiet=quiet,
        transient=True,
    )
    task = progress.add_task("tiles", total=None)
    t0, said = time.perf_counter(), [0]

    def on_tiles(done, total):
        progress.update(task, completed=done, total=total)
        if log and (done * 10 // total > said[0] or done == total):  # a line per tenth where stderr is a log
            said[0] = done * 10 // total
            left = (time.perf_counter() - t0) / done * (total - done)
            log(f"{done}/{total} tiles, about {left:.0f} s left")

    denoiser.on_tiles = on_tiles
    return progress


def _run_denoise_jobs(denoiser, jobs, bit_depth, quiet: bool, single: bool):
    if len(jobs) == 1:  # one image: progress over its tiles instead
        with _tile_progress(denoiser, quiet):
            return _denoise_each(denoiser, jobs, bit_depth, single, None, None)
    progress, log = progress_bar(quiet=quiet or len(jobs) < 2, transient=True)
    with progress:
        task = progress.add_task("denoising", total=len(jobs))
        return _denoise_each(denoiser, jobs, bit_depth, single, log, lambda: progress.advance(task))


def _denoise_each(denoiser, jobs, bit_depth, single: bool, log, advance):
    results, failures = [], []
    for i, (src, dst, ref) in enumerate(jobs, 1):
        if log:
            log(f"[{i}/{len(jobs)}] {src}")
        try:
            results.append(denoise_file(denoiser, src, dst, ref, bit_depth=bit_depth))
        except (ServerLostError, DiskFullError, ContractError) as e:
            # every later image would fail the same way: stop, keep what is written
            if single:
                raise
            again = (
                ""
                if isinstance(e, ContractError)
                else "; what was written is kept: run the same command again to resume"
            )
            raise type(e)(f"{e}; stopped after {len(results)} of {len(jobs)} image(s){again}") from e
        except ScaoedError as e:
            if single:
                raise
            failures.append({"input": str(src), "error": str(e)})
        if advance:
            advance()
    return results, failures
