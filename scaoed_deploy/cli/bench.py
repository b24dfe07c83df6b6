"""``bench``: every backend, timed in one run."""

from __future__ import annotations

import datetime
import json
from pathlib import Path

import click

from ..bench import BACKENDS, BASELINE, BenchConfig, emulated_rows, markdown, run_bench, write_results
from ..util.device import pick_device
from ..util.files import atomic_path, on_forced_exit
from .common import (
    chosen_backends,
    command_line,
    counted_progress,
    data_option,
    emit_json,
    json_option,
    load_weights,
    notice,
    notice_if_busy,
    resolutions_option,
    stage_list_option,
    weights_options,
)
from .main import cli

RECORDS = Path("benchmarks/results")
RUNS = Path("benchmarks/runs")  # ignored by git


@cli.command()
@resolutions_option("Resolutions, comma-separated (512 or 512x768).")
@stage_list_option("1,3,5", "Stage counts K")
@click.option(
    "--backends",
    default=None,
    help=f"Comma-separated, from: {', '.join(BACKENDS)} "
    "(default: every one that fits the device; torch eager fp32 always runs, for the ratios).",
)
@click.option(
    "--device",
    type=click.Choice(["auto", "cpu", "cuda"]),
    default="auto",
    show_default=True,
    help="auto: the GPU when torch sees one, else the CPU.",
)
@click.option("--batch", type=click.IntRange(1, 256), default=1, show_default=True)
@click.option("--warmup", type=click.IntRange(0), default=2, show_default=True)
@click.option("--iters", type=click.IntRange(1), default=10, show_default=True)
@click.option("--threads", type=click.IntRange(1), default=None, help="CPU threads, pinned (default: all cores).")
@weights_options("Seeded random weights instead (timing only).")
@click.option("--no-quality", is_flag=True, help="Skip the PSNR columns (the SIDD crops through every backend).")
@data_option("Real pairs for PSNR (default ../shared/data/sidd).")
@click.option(
    "--export-dir",
    default="export",
    show_default=True,
    type=click.Path(file_okay=False),
    help="Where ONNX artifacts are reused from (or made into).",
)
@click.option(
    "--name",
    default=None,
    help="Record the result as benchmarks/results/NAME.{json,md,png} (or under -o). "
    "Without --name or -o, results go to a new folder benchmarks/runs/<time>/ and no record changes.",
)
@click.option(
    "-o",
    "--output",
    default=None,
    type=click.Path(file_okay=False),
    help="Folder for the result files, named <device>_<res> unless --name says.",
)
@json_option
def bench(
    resolutions,
    stages,
    backends,
    device,
    batch,
    warmup,
    iters,
    threads,
    checkpoint,
    random_seed,
    blocks,
    no_quality,
    data,
    export_dir,
    name,
    output,
    as_json,
):
    """Latency, throughput, memory and PSNR per backend and K, with ratios to eager fp32 from the same run."""
    from rich.progress import TimeElapsedColumn

    device = pick_device(device).type
    chosen = chosen_backends(backends, device)
    weights = load_weights(checkpoint, random_seed=random_seed, blocks=blocks)
    notice_if_busy(threads, device == "cpu")
    cfg = BenchConfig(
        resolutions=resolutions,
        stages=stages,
        backends=chosen,
        device=device,
        batch=batch,
        warmup=warmup,
        iters=iters,
        threads=threads,
        quality=not no_quality,
        data=Path(data) if data else None,
        export_dir=Path(export_dir),
        explicit=backends is not None,
    )
    for warning in emulated_rows(cfg):  # said now: such a row can take hours
        notice(f"warning: {warning}")
    total = len(resolutions) * len(stages) * len(dict.fromkeys([BASELINE, *chosen]))
    progress, log = counted_progress("bench", TimeElapsedColumn(), quiet=as_json)
    with progress:
        task = progress.add_task("bench", total=total, info="")

        def step(message):
            progress.update(task, info=message)
            if log:
                log(f"[{int(progress.tasks[0].completed) + 1}/{total}] {message}")

        rows: list = []
        with on_forced_exit(lambda: _keep_finished_rows(rows, cfg)):  # a stop that could not wait for the row
            result = run_bench(weights, cfg, step=step, advance=lambda: progress.advance(task), rows=rows)
    result["command"] = command_line()
    result["created"] = datetime.datetime.now().astimezone().isoformat(timespec="seconds")
    tag = name or f"{device}_{'_'.join(f'{h}x{w}' if h != w else str(h) for h, w in resolutions)}"
    interrupted = result["interrupted"]
    if output is None:  # a recorded result changes only when it is named, and not by a run cut short
        output = RECORDS if name and not interrupted else RUNS / datetime.datetime.now().strftime("%Y%m%d-%H%M%S")
    paths = write_results(result, output, tag)
    if interrupted:
        notice(
            f"interrupted: wrote the {sum(r['status'] == 'ok' for r in result['rows'])} row(s) finished so far to "
            f"{paths[0].parent}" + (" (an interrupted run changes no record)" if name else "")
        )
        raise KeyboardInterrupt
    for w in result["warnings"][len(emulated_rows(cfg)) :]:  # the load warning (the emulated rows were said)
        notice(f"warning: {w}")
    if as_json:
        emit_json(dict(result, files=[str(p) for p in paths]))
    else:
        click.echo(markdown(result))
        click.echo("wrote " + ", ".join(str(p) for p in paths))


def _keep_finished_rows(rows: list, cfg) -> None:
    """On a forced stop: the rows finished so far, as JSON in a new runs/ folder (no record changes)."""
    from dataclasses import asdict

    folder = RUNS / datetime.datetime.now().strftime("%Y%m%d-%H%M%S")
    with atomic_path(folder / "interrupted.json") as tmp:
        tmp.write_text(
            json.dumps({"interrupted": True, "command": command_line(), "rows": [asdict(r) for r in rows]}, indent=1)
            + "\n"
        )
    notice(f"interrupted: wrote the {sum(r.status == 'ok' for r in rows)} row(s) finished so far to {folder}")
