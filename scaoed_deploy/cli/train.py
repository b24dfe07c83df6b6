"""``train``: weights from clean images with synthetic camera noise."""

from __future__ import annotations

import json

import click

from ..train import TrainConfig, state_path
from ..train import train as run_training
from ..util.device import pick_device
from .common import counted_progress, emit_json, json_option, stage_list_option, stages_option
from .main import cli


@cli.command()
@click.option("--clean", required=True, help="Clean image folder(s), comma-separated (never the SIDD crops).")
@click.option(
    "--pairs",
    default=None,
    help="Extra real noisy/clean training pairs (folders with noisy/ and clean/), comma-separated.",
)
@click.option(
    "--val",
    type=click.Path(exists=True, file_okay=False),
    default=None,
    help="Real noisy/clean pairs to report PSNR on while training (monitoring only).",
)
@stages_option("K used in training (and, with --stage-choices, for validation and as the weights' default).", default=2)
@stage_list_option(
    None, "Draw K per batch from these, e.g. 1,2,3,4,5; the weights are shared across stages", name="--stage-choices"
)
@click.option(
    "--init",
    type=click.Path(exists=True, dir_okay=False),
    default=None,
    help="Start from these weights with a fresh optimiser (fine-tuning).",
)
@click.option("--blocks", type=click.IntRange(1, 64), default=16, show_default=True, help="FM2ARB blocks T.")
@click.option("--patch", type=click.IntRange(16, 1024), default=64, show_default=True)
@click.option("--batch", type=click.IntRange(1, 1024), default=8, show_default=True)
@click.option(
    "--steps", type=click.IntRange(1), default=2000, show_default=True, help="Total steps (on --resume: the new total)."
)
@click.option(
    "--lr",
    type=click.FloatRange(min=0, min_open=True),
    default=2e-4,
    show_default=True,
    help="Peak learning rate (cosine decay).",
)
@click.option("--seed", default=0, show_default=True)
@click.option("--val-every", type=click.IntRange(1), default=250, show_default=True)
@click.option(
    "--resume",
    type=click.Path(exists=True, dir_okay=False),
    default=None,
    help="A .train-state.pt to continue from exactly.",
)
@click.option(
    "--max-minutes",
    type=click.FloatRange(min=0),
    default=None,
    help="Time budget: stop after the step that spends it, saving weights and state (continue with --resume "
    "and the same --steps), e.g. to fit a long run into jobs of fixed length.",
)
@click.option(
    "--device",
    type=click.Choice(["auto", "cpu", "cuda"]),
    default="auto",
    show_default=True,
    help="auto: the GPU when torch sees one, else the CPU.",
)
@click.option(
    "--amp",
    type=click.Choice(["none", "bf16"]),
    default="none",
    show_default=True,
    help="bf16: autocast the forward pass (about 2x faster on CPUs with AVX-512 BF16; float32 master weights).",
)
@click.option(
    "-o",
    "--output",
    required=True,
    type=click.Path(dir_okay=False),
    help="Weights to write: NAME.safetensors (+ NAME.json).",
)
@json_option
def train(
    clean,
    pairs,
    val,
    stages,
    stage_choices,
    init,
    blocks,
    patch,
    batch,
    steps,
    lr,
    seed,
    val_every,
    resume,
    max_minutes,
    device,
    amp,
    output,
    as_json,
):
    """Train ScaoedNet on clean images with synthetic camera noise (L1, Adam, cosine decay)."""
    from rich.progress import TimeRemainingColumn

    if patch % 2:
        raise click.BadParameter("must be even", param_hint="--patch")
    cfg = TrainConfig(
        clean=[c for c in clean.split(",") if c],
        stages=stages,
        blocks=blocks,
        patch=patch,
        batch=batch,
        steps=steps,
        lr=lr,
        seed=seed,
        val_every=val_every,
        pairs=[p for p in (pairs or "").split(",") if p],
        val=val,
        amp=amp,
        init=init,
        stage_choices=stage_choices or [],
    )
    dev = str(pick_device(device))
    progress, log = counted_progress("training", TimeRemainingColumn(), quiet=as_json)
    with progress:
        task = progress.add_task("train", total=steps, info="")

        def report(d):
            info = f"loss {d['loss']:.4f}"
            if "val_psnr_synthetic" in d:
                report.val = f" | val {d['val_psnr_synthetic']:.2f} dB" + (
                    f" | real {d['val_psnr_real']:.2f} dB" if "val_psnr_real" in d else ""
                )
                if log:  # a line per validation, not per step
                    log(f"step {d['step']}/{steps} ({d['seconds']:.0f} s): {info}{report.val}")
            progress.update(task, completed=d["step"], info=info + report.val)

        report.val = ""
        result = run_training(
            cfg,
            output,
            resume=resume,
            device=dev,
            report=report,
            max_seconds=None if max_minutes is None else 60 * max_minutes,
        )
        progress.update(task, completed=result["steps"])  # also when a resumed state had nothing left to run
    if as_json:
        emit_json(result)
    else:
        last = result["history"][-1] if result["history"] else result["last"]
        click.echo(
            f"wrote {result['weights']} after {result['steps']} steps (resumable state: {state_path(output)}); "
            f"last validation: {json.dumps({k: round(v, 4) for k, v in last.items() if isinstance(v, float)})}"
        )
        if not result["complete"]:
            click.echo(
                f"stopped by --max-minutes at step {result['steps']} of {result['planned_steps']}; continue with "
                f"--resume {state_path(output)} --steps {result['planned_steps']}"
            )
