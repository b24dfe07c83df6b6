"""The command group and the console entry point."""

from __future__ import annotations

import contextlib
import signal
import sys
import threading

import click

from ..cpumask import TARGETS, run_as
from ..errors import ScaoedError

EXIT_OK, EXIT_ERROR, EXIT_USAGE, EXIT_VERIFY = 0, 1, 2, 3


# ---------------------------------------------------------------------------- commands
@click.group(context_settings={"help_option_names": ["-h", "--help"], "max_content_width": 100})
@click.version_option(package_name="scaoed-deploy")
@click.option("--as-cpu", type=click.Choice(TARGETS), default=None,
              help="Run the command as on an AVX2-only CPU: every library's CPUID is masked (Linux x86-64 with "
              "CPUID faulting; a C compiler builds the mask once), so artifacts for such CPUs are built, verified "
              "and timed on the kernels they will run there.")
@click.pass_context
def cli(ctx, as_cpu):
    """ScaoedNet from PyTorch checkpoint to verified ONNX and TensorRT artifacts."""
    if as_cpu and not ctx.resilient_parsing:
        argv = list(ctx.obj["argv"])
        i = argv.index("--as-cpu") if "--as-cpu" in argv else next(
            i for i, a in enumerate(argv) if a.startswith("--as-cpu="))
        rest = argv[:i] + argv[i + (1 if "=" in argv[i] else 2):]
        ctx.exit(run_as(as_cpu, rest))


# ---------------------------------------------------------------------------- entry point
@contextlib.contextmanager
def _sigterm_as_interrupt(received: list):
    """SIGTERM ends a command the way Ctrl-C does (finished images kept, nothing half-written): the handler raises
    KeyboardInterrupt and notes that it was SIGTERM. Only the main thread can take signals; the old handler
    comes back afterwards (tests call main in-process)."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return

    def handler(signum, frame):
        received.append(signum)
        raise KeyboardInterrupt

    old = signal.signal(signal.SIGTERM, handler)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, old)


def main(argv=None) -> int:
    """Console entry point: one 'error: ...' line and an exit code, never a traceback."""
    args = list(argv) if argv is not None else sys.argv[1:]
    received: list[int] = []
    try:
        with _sigterm_as_interrupt(received):
            return _main(args, received)
    except KeyboardInterrupt:  # a signal that came between click's handlers and ours
        return _interrupted(received)


def _interrupted(received: list) -> int:
    if received:
        click.echo("error: terminated", err=True)
        return 128 + signal.SIGTERM
    click.echo("error: interrupted", err=True)
    return 130


def _main(args: list[str], received: list[int]) -> int:
    try:  # the arguments travel in click's context object, for the artifacts and reports that record them
        rv = cli.main(args=args, prog_name="scaoed-deploy", standalone_mode=False, obj={"argv": args})
    except click.exceptions.Exit as e:
        return e.exit_code
    except click.Abort:  # click's name for Ctrl-C (KeyboardInterrupt) or end of input at a prompt
        return _interrupted(received)
    except click.ClickException as e:
        hint = " (see --help)" if isinstance(e, click.UsageError) else ""
        click.echo(f"error: {e.format_message()}{hint}", err=True)
        return e.exit_code
    except ScaoedError as e:
        click.echo(f"error: {e}", err=True)
        return e.exit_code
    except KeyboardInterrupt:
        return _interrupted(received)
    except MemoryError:
        click.echo("error: out of memory (try a smaller image or --stages)", err=True)
        return EXIT_ERROR
    # Non-standalone click returns Exit's code (--help, --version) instead of raising it.
    return rv if isinstance(rv, int) else EXIT_OK


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
