"""The command group and the console entry point."""

from __future__ import annotations

import contextlib
import os
import signal
import sys
import threading

import click

from ..cpumask import TARGETS, run_as
from ..errors import ScaoedError
from ..util.files import forced_exit_hooks, live_temporaries

EXIT_OK, EXIT_ERROR, EXIT_USAGE, EXIT_VERIFY = 0, 1, 2, 3


# ---------------------------------------------------------------------------- commands
@click.group(context_settings={"help_option_names": ["-h", "--help"], "max_content_width": 100})
@click.version_option(package_name="scaoed-deploy")
@click.option(
    "--as-cpu",
    type=click.Choice(TARGETS),
    default=None,
    help="Run the command as on a lesser CPU class of this one (avx512-vnni: AMX hidden; avx512: VNNI, BF16 "
    "and FP16 hidden too; avx2: every AVX-512 hidden): every library's CPUID is masked (Linux x86-64 with "
    "CPUID faulting; a C compiler builds the mask once), so artifacts for such CPUs are built, verified "
    "and timed on the kernels they will run there.",
)
@click.pass_context
def cli(ctx, as_cpu):
    """ScaoedNet from PyTorch checkpoint to verified ONNX and TensorRT artifacts."""
    if as_cpu and not ctx.resilient_parsing:
        argv = list(ctx.obj["argv"])
        i = (
            argv.index("--as-cpu")
            if "--as-cpu" in argv
            else next(i for i, a in enumerate(argv) if a.startswith("--as-cpu="))
        )
        rest = argv[:i] + argv[i + (1 if "=" in argv[i] else 2) :]
        ctx.exit(run_as(as_cpu, rest))


# ---------------------------------------------------------------------------- entry point
#: Seconds a command has to end by itself after SIGINT or SIGTERM before it is ended by force.
FORCE_AFTER_S = 6.0


@contextlib.contextmanager
def _sigterm_as_interrupt(received: list):
    """SIGTERM ends a command the way Ctrl-C does (finished images kept, nothing half-written): the handler raises
    KeyboardInterrupt and notes that it was SIGTERM. Only the main thread can take signals; the old handler
    comes back afterwards (tests call main in-process).

    Python runs a signal handler only between bytecodes, so a command inside one long native call (an ONNX
    Runtime or torch forward pass of a minute, OpenVINO compiling) would not take the signal until the call
    returns. The C-level handler also writes the signal to a wakeup pipe, which a watchdog thread reads: if the
    command has not ended ``FORCE_AFTER_S`` seconds later, the watchdog runs the forced-exit hooks (a bench
    writes its finished rows), removes the temporary files being written, ends the step processes, says the
    same one line and ends the process with the same exit code."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return

    def handler(signum, frame):
        received.append(signum)
        raise KeyboardInterrupt

    old = signal.signal(signal.SIGTERM, handler)
    read_end, write_end = os.pipe()
    os.set_blocking(write_end, False)
    old_fd = signal.set_wakeup_fd(write_end, warn_on_full_buffer=False)
    done = threading.Event()
    watchdog = threading.Thread(target=_watch, args=(read_end, done), name="scaoed-stop-watchdog", daemon=True)
    watchdog.start()
    try:
        yield
    finally:
        done.set()
        signal.set_wakeup_fd(old_fd)
        os.close(write_end)  # the watchdog reads the end of the pipe and returns
        watchdog.join(1)
        os.close(read_end)
        signal.signal(signal.SIGTERM, old)


def _watch(read_end: int, done: threading.Event) -> None:
    while True:
        try:
            data = os.read(read_end, 1)
        except OSError:
            return
        if not data or done.is_set():
            return
        if data[0] in (signal.SIGINT, signal.SIGTERM) and not done.wait(FORCE_AFTER_S):
            _force_exit(data[0])


def _force_exit(signum: int) -> None:
    """End the process now, as a command that took the signal would have ended (see _sigterm_as_interrupt)."""
    import multiprocessing
    import shutil

    for hook in forced_exit_hooks():
        with contextlib.suppress(Exception):
            hook()
    for path in live_temporaries():
        with contextlib.suppress(OSError):
            shutil.rmtree(path) if path.is_dir() else path.unlink()
    for child in multiprocessing.active_children():
        with contextlib.suppress(Exception):
            child.kill()
    terminated = signum == signal.SIGTERM
    with contextlib.suppress(Exception):
        sys.stderr.write("error: terminated\n" if terminated else "error: interrupted\n")
        sys.stderr.flush()
    os._exit(128 + signal.SIGTERM if terminated else 130)


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
