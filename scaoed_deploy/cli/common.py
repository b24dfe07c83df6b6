"""Helpers and option groups the commands share."""

from __future__ import annotations

import contextlib
import sys
import time

import click

from .. import checkpoint as ckpt
from ..bench import check_backends, default_backends
from ..cpu import masked_as
from ..errors import ScaoedError
from ..model import ScaoedNet
from ..runtime.base import busy_warning
from ..util.jsonio import dumps
from ..weights import DEMO_NOTICE, demo_weights


# ---------------------------------------------------------------------------- helpers
def stage_list(ctx, param, value):
    if value is None:
        return None
    try:
        stages = [int(v) for v in str(value).split(",") if v.strip()]
    except ValueError:
        raise click.BadParameter(f"expected stage counts like 1,3,5, got {value!r}") from None
    bad = [k for k in stages if not 1 <= k <= ScaoedNet.MAX_STAGES]
    if not stages or bad:
        raise click.BadParameter(f"stage counts must be 1 to {ScaoedNet.MAX_STAGES}, got {value!r}")
    return stages


def resolution_list(ctx, param, value):
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
    click.echo(dumps(data))


def profile_hw(ctx, param, value):
    if value is None:
        return None
    sizes = resolution_list(ctx, param, value)
    if len(sizes) != 1:
        raise click.BadParameter(f"expected one size like 512 or 512x768, got {value!r}")
    return sizes[0]


def notice(message: str) -> None:
    """A one-line notice on stderr (stdout stays clean for --json)."""
    click.echo(message, err=True)


def notice_if_busy(threads: int | None, on_cpu: bool) -> None:
    """Say in one line when the machine is already busy (a CPU run's timings and speed then suffer)."""
    busy = busy_warning(threads) if on_cpu else None
    if busy:
        notice(busy)


def stdout_console():
    from rich.console import Console

    return Console()


def load_weights(checkpoint: str | None, *, random_seed: int | None = None, blocks: int = 16):
    """The checkpoint's weights; else seeded random ones when asked for; else the shipped demo weights."""
    if checkpoint:
        return ckpt.read_checkpoint(checkpoint)
    if random_seed is not None:
        notice(f"note: using seeded random weights (seed {random_seed}, T={blocks}), not a trained model")
        return ckpt.random_weights(blocks=blocks, seed=random_seed)
    weights = demo_weights()
    notice(DEMO_NOTICE)
    return weights


def chosen_backends(backends: str | None, device: str) -> list[str]:
    """--backends as a list (default: bench's for the device), every name checked (a usage error)."""
    if backends is None:
        chosen = default_backends(device)
    else:
        chosen = [b.strip() for b in backends.split(",") if b.strip()]
        if not chosen:  # '' or ',,': no backend named is a mistake, not "the defaults"
            raise click.BadParameter(
                f"names no backend ({backends!r}); leave it out for the defaults", param_hint="--backends"
            )
    try:
        check_backends(chosen)
    except ScaoedError as e:
        raise click.BadParameter(str(e), param_hint="--backends") from e
    return chosen


def command_line() -> str:
    """The command as the user typed it (recorded in artifacts and reports), from click's context object."""
    ctx = click.get_current_context(silent=True)
    obj = ctx.find_object(dict) if ctx else None
    masked = masked_as()  # run by --as-cpu in this child: the user typed it before the command
    typed = (obj or {}).get("argv", sys.argv[1:])
    return " ".join(["scaoed-deploy", *(["--as-cpu", masked] if masked else []), *typed])


def stderr_console():
    from rich.console import Console

    return Console(stderr=True)


def progress_bar(*columns, quiet: bool, **kwargs):
    """(a rich Progress on stderr, log): on a terminal a live bar and log None; where stderr is a log file or CI,
    which rich would draw the bar into only once at the end, no bar and log(text) prints a progress line; both
    off when quiet."""
    from rich.progress import Progress

    console = stderr_console()
    log = (
        None
        if quiet or console.is_terminal
        else (lambda text: console.print(f"  {text}", highlight=False, soft_wrap=True))
    )
    return Progress(*columns, console=console, disable=quiet or log is not None, **kwargs), log


def counted_progress(label: str, clock, quiet: bool):
    """progress_bar with the columns of a counted run: label, bar, done/total, the current step, and ``clock``
    (a rich elapsed- or remaining-time column)."""
    from rich.progress import BarColumn, TextColumn

    return progress_bar(
        TextColumn(label),
        BarColumn(),
        TextColumn("{task.completed}/{task.total}"),
        TextColumn("{task.fields[info]}"),
        clock,
        quiet=quiet,
    )


#: In a log, a long step's progress (step.tick) is a line every this many seconds; on a terminal, every tick.
TICK_LOG_S = 30.0


class Steps:
    """step(message) and step.tick(message) (the same step's progress: every tick on a spinner, one line a
    ``tick_every`` seconds in a log)."""

    def __init__(self, say, tick_every: float = 0.0):
        self.say, self.tick_every, self._last = say, tick_every, 0.0

    def __call__(self, message: str) -> None:
        self._last = time.monotonic()
        self.say(message)

    def tick(self, message: str) -> None:
        if time.monotonic() - self._last >= self.tick_every:
            self(message)


@contextlib.contextmanager
def progress_steps(quiet: bool = False):
    """Yields step(message): a spinner on a terminal, a line per step on stderr otherwise (a long step's
    progress, step.tick, one line in 30 s)."""
    console = stderr_console()
    if quiet and not console.is_terminal:
        yield Steps(lambda message: None)
    elif console.is_terminal:
        with console.status("starting") as status:
            yield Steps(status.update)
    else:  # a log line: unwrapped
        yield Steps(
            lambda message: console.print(f"  {message}", highlight=False, soft_wrap=True), tick_every=TICK_LOG_S
        )


# ---------------------------------------------------------------------------- shared option groups
json_option = click.option("--json", "as_json", is_flag=True, help="Print the result as JSON for scripts.")


def stages_option(help: str, default: int | None = None):
    """--stages K, bounded by the model's own limit."""
    return click.option(
        "--stages",
        type=click.IntRange(1, ScaoedNet.MAX_STAGES),
        default=default,
        show_default=default is not None,
        help=help,
    )


def weights_options(random_help: str = "Seeded random weights instead (for tests and timing)."):
    """--checkpoint, --random-seed and --blocks: the weights a command runs (load_weights reads them)."""

    def apply(f):
        f = click.option(
            "--blocks", default=16, show_default=True, type=click.IntRange(1, 64), help="T, with --random-seed."
        )(f)
        f = click.option("--random-seed", type=int, default=None, help=random_help)(f)
        return click.option("--checkpoint", "-c", type=click.Path(), help="Weights (default: the demo weights).")(f)

    return apply


def stage_list_option(default: str, help: str, name: str = "--stages"):
    """--stages 1,3,5: several K, each within the model's limit."""
    return click.option(
        name,
        default=default,
        show_default=default is not None,
        callback=stage_list,
        help=f"{help} (1 to {ScaoedNet.MAX_STAGES}, comma-separated)",
    )


def resolutions_option(help: str):
    """--res 512[,512x768...]: output resolutions."""
    return click.option("--res", "resolutions", default="512", show_default=True, callback=resolution_list, help=help)


def data_option(help: str):
    """--data DIR: real noisy/clean pairs (default ../shared/data/sidd)."""
    return click.option("--data", type=click.Path(exists=True, file_okay=False), help=help)
