"""``optimize``: measure every K x backend that runs here and ship the one that meets the constraint."""

from __future__ import annotations

import shutil
import time
from dataclasses import replace
from pathlib import Path

import click

from ..bench import BACKENDS, emulated_rows
from ..cpu import AS_CPU_CAPS
from ..errors import ScaoedError, UsageError
from ..optimize import Constraint, OptimizeConfig, default_output, run_optimize, write_package
from ..optimize.classes import parse_cpus, run_classes
from ..optimize.package import weights_args
from ..optimize.report import summary_line, table
from ..optimize.search import gmacs_by_k
from ..util.device import pick_device
from .common import (
    TICK_LOG_S,
    Steps,
    chosen_backends,
    command_line,
    data_option,
    emit_json,
    json_option,
    load_weights,
    notice,
    notice_if_busy,
    progress_bar,
    resolutions_option,
    stage_list_option,
    weights_options,
)
from .main import cli


def _constraint(max_latency_ms, min_psnr, max_dpsnr) -> Constraint:
    given = [
        (k, v)
        for k, v in (("max_latency_ms", max_latency_ms), ("min_psnr", min_psnr), ("max_dpsnr", max_dpsnr))
        if v is not None
    ]
    if len(given) > 1:
        raise UsageError("give one constraint: --max-latency-ms, --min-psnr or --max-dpsnr")
    return Constraint(*given[0]) if given else Constraint()


def _output(output) -> Path:
    out = Path(output) if output else default_output()
    if out.exists() and (not out.is_dir() or any(out.iterdir())):  # said now, not after an hour of measuring
        raise ScaoedError(f"{out} exists and is not an empty folder; choose another -o")
    return out


class TimeLeft:
    """The time left of a search: seconds per GMAC of the candidates measured so far (making their artifacts,
    parity and timing) times the GMACs of the candidates left, less the backends already skipped or excluded
    at a lower K (they will be again)."""

    def __init__(self, plan: list[tuple[int, str]], gmacs: dict[int, float]):
        self.plan, self.gmacs = plan, gmacs
        self.done, self.seconds, self.work = 0, 0.0, 0.0
        self.dropped: set[str] = set()
        self.at = time.monotonic()  # when the estimate was last made: it counts down from there

    def add(self, c) -> bool:
        """Count candidate ``c`` done; True when it is the first measured one (the first estimate)."""
        self.done += 1
        first = False
        if c.status == "built" and "wall_s" in c.extra:
            first = not self.work
            self.seconds += c.extra["wall_s"]
            self.work += self.gmacs[c.k]
        elif c.status in ("skipped", "excluded"):
            self.dropped.add(c.backend)
        self.at = time.monotonic()
        return first

    def text(self) -> str:
        """The estimate made when the last candidate was settled, less the time spent since (counting down within
        a step, not standing still); never below zero."""
        if not self.work:
            return ""
        s = self.seconds / self.work * sum(self.gmacs[k] for k, b in self.plan[self.done :] if b not in self.dropped)
        s = max(0.0, s - (time.monotonic() - self.at))
        return f", about {s / 60:.0f} min left" if s >= 90 else f", about {s:.0f} s left"


@cli.command()
@resolutions_option("Resolution the candidates are timed at (one: 512 or 512x768).")
@stage_list_option("1,2,3,4,5", "Stage counts K to consider")
@click.option(
    "--backends",
    default=None,
    help=f"Comma-separated, from: {', '.join(BACKENDS)} (default: bench's for "
    "the device; torch eager fp32 always runs, for the ratios).",
)
@click.option("--device", type=click.Choice(["auto", "cpu", "cuda"]), default="auto", show_default=True)
@click.option(
    "--max-latency-ms",
    type=click.FloatRange(min=0, min_open=True),
    default=None,
    help="Ship the best PSNR whose median latency is within this.",
)
@click.option("--min-psnr", type=float, default=None, help="Ship the fastest candidate with at least this mean PSNR.")
@click.option(
    "--max-dpsnr",
    type=click.FloatRange(min=0),
    default=None,
    help="Ship the fastest candidate within this many dB of the best one.",
)
@click.option("--batch", type=click.IntRange(1, 256), default=1, show_default=True)
@click.option("--warmup", type=click.IntRange(0), default=1, show_default=True)
@click.option(
    "--iters",
    type=click.IntRange(1),
    default=5,
    show_default=True,
    help="Timed runs per candidate at most: fewer once its last 3 agree within 5 %, or once it is slower "
    "than a measured candidate that scores at least as high (or over --max-latency-ms).",
)
@click.option("--threads", type=click.IntRange(1), default=None, help="CPU threads, pinned (default: all cores).")
@weights_options("Seeded random weights instead (their PSNR means nothing).")
@data_option("Evaluation pairs (noisy/ and clean/; default ../shared/data/sidd).")
@click.option(
    "--calib-count",
    type=click.IntRange(4, 4096),
    default=32,
    show_default=True,
    help="Calibration crops for INT8 candidates.",
)
@click.option(
    "--export-dir",
    default="export",
    show_default=True,
    type=click.Path(file_okay=False),
    help="Where artifacts are reused from (or cached in, under bench/).",
)
@click.option("-o", "--output", default=None, type=click.Path(), help="Package folder (default optimize/<time>/).")
@click.option("--triton", is_flag=True, help="Also a Triton model repository of the choice (python backend).")
@click.option(
    "--cpus",
    default="native",
    show_default=True,
    help="CPU classes to choose for, comma-separated: native (this CPU) and any of "
    f"{', '.join(AS_CPU_CAPS)} below it, each searched under --as-cpu; one package holds a choice per class "
    "and denoise -m PACKAGE picks its own.",
)
@json_option
def optimize(
    resolutions,
    stages,
    backends,
    device,
    max_latency_ms,
    min_psnr,
    max_dpsnr,
    batch,
    warmup,
    iters,
    threads,
    checkpoint,
    random_seed,
    blocks,
    data,
    calib_count,
    export_dir,
    output,
    triton,
    cpus,
    as_json,
):
    """Choose K, precision and backend by measurement: a package with the choice, its proof and a report."""
    from rich.progress import BarColumn, TextColumn

    if len(resolutions) != 1:
        raise UsageError("optimize times one resolution: give --res once (512 or 512x768)")
    constraint = _constraint(max_latency_ms, min_psnr, max_dpsnr)
    classes = parse_cpus(cpus)
    out = _output(output)
    device = pick_device(device).type
    chosen = chosen_backends(backends, device)
    weights = load_weights(checkpoint, random_seed=random_seed, blocks=blocks)
    notice_if_busy(threads, device == "cpu")
    cfg = OptimizeConfig(
        resolutions=resolutions,
        stages=stages,
        backends=chosen,
        device=device,
        batch=batch,
        warmup=warmup,
        iters=iters,
        threads=threads,
        data=Path(data) if data else None,
        export_dir=Path(export_dir),
        calib_count=calib_count,
        explicit=backends is not None,
        constraint=constraint,
        command=command_line(),
    )
    for warning in emulated_rows(cfg):
        notice(f"warning: {warning}")
    order = list(dict.fromkeys(["torch", *chosen]))
    n = len(set(stages)) * len(order)
    eta = TimeLeft([(k, b) for k in sorted(set(stages)) for b in order], gmacs_by_k(cfg, weights))
    progress, log = progress_bar(
        TextColumn("optimize"),
        BarColumn(),
        TextColumn("{task.fields[n]}"),
        TextColumn("{task.fields[info]}"),
        quiet=as_json,
    )

    with progress:
        task = progress.add_task("optimize", total=n, info="", n=f"0/{n}")

        def say(message):
            progress.update(task, info=message + eta.text())
            if log:
                log(f"[{min(eta.done + 1, n)}/{n}] {message}{eta.text()}")

        # a long step's progress (eta.long_step's ticks): every tick on the bar, a line in 30 s in a log
        step = Steps(say, tick_every=TICK_LOG_S if log else 0.0)

        def advance(c, gmacs):
            first = eta.add(c)
            progress.update(task, completed=eta.done, n=f"{eta.done}/{n}")
            if first:
                notice(
                    f"estimate:{eta.text().lstrip(',')} (the measured candidates' seconds per GMAC times the MACs of "
                    "those left; backends skipped at a lower K are not counted; candidates that racing leaves out "
                    "later make it shorter)"
                )

        try:
            selection, previews = run_optimize(weights, cfg, step=step, advance=advance)
        except KeyboardInterrupt:
            notice(
                f"interrupted: the artifacts made so far are kept in {cfg.export_dir / 'bench'} (exports in "
                f"{cfg.export_dir}); the same command resumes"
            )
            raise
    runs, work = [], None
    try:
        if len(classes) > 1:
            cfg = replace(cfg, data=Path(selection["config"]["data"]), threads=selection["config"]["threads"])
            runs, work = run_classes(classes, cfg, weights_args(weights), say=notice)
        paths = write_package(selection, previews, weights, out, triton=triton, classes=runs)
    finally:
        if work:
            shutil.rmtree(work, ignore_errors=True)
    for w in selection["warnings"]:
        notice(f"warning: {w}")
    if not selection["chosen"]:
        raise ScaoedError(f"{selection['error']} (the measurements: {out / 'report.md'})")
    lacking = [r.cpu_class for r in runs if not r.selection["chosen"]]
    if lacking:
        raise ScaoedError(
            f"nothing met the constraint on class {', '.join(lacking)} (the measurements: {out / 'report.md'})"
        )
    if as_json:
        emit_json(dict(selection, files=[str(p) for p in paths]))
    else:
        click.echo("\n".join(table(selection)))
        click.echo(summary_line(selection))
        for r in runs:
            click.echo(f"class {r.cpu_class} (--as-cpu {r.cpu_class}): {summary_line(r.selection)}")
        triton_dir = ["triton/"] if (selection.get("triton") or {}).get("repository") else []
        click.echo(
            f"wrote {out}/ (selection.json, report.md, report.html, reproduce.sh, "
            f"{', '.join(selection['shipped'] + triton_dir)})"
        )
