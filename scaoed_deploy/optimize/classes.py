"""``optimize --cpus``: the search once per CPU class, one package holding a verified choice for each.

``native`` is this CPU's own class, searched in this process. Every other class (one of ``cpu.AS_CPU_CAPS``,
below this CPU) is searched by ``scaoed-deploy --as-cpu CLASS optimize ... --cpus native`` in a child whose
every library sees that class's CPU (``cpumask``), with the same settings, weights, evaluation pairs and export
folder: the fp32 exports are shared, the INT8 and IR files a class needs its own of are made and verified
there, in that class's own cache (``bench.candidates``). The child writes a whole package into a temporary
folder; this process takes its choice, files and parity record into ``by_cpu/CLASS/`` of the one package
(``package.write_package``), with ``by_cpu`` in ``selection.json`` (``fleet``'s layout). A masked class is
timed on this machine's cores with that class's instructions: not on such a machine (the report says so).
"""

from __future__ import annotations

import json
import shlex
import subprocess
import sys
import tempfile
from dataclasses import dataclass
from pathlib import Path

from ..cpu import AS_CPU_CAPS, mask_refusal, masked_as, this_cpu
from ..cpumask import environment, unsupported
from ..errors import ScaoedError
from ..fleet import CLASS_FOLDER

NATIVE = "native"


def parse_cpus(text: str) -> list[str]:
    """``--cpus``'s classes, ``native`` first, each once; one error line for a class this CPU cannot run as."""
    names = [n.strip() for n in text.split(",") if n.strip()]
    if not names:
        raise ScaoedError("--cpus takes a comma-separated list of classes: native, " + ", ".join(AS_CPU_CAPS))
    own = this_cpu().isa_class
    out: list[str] = []
    for n in names:
        if n not in (NATIVE, *AS_CPU_CAPS):
            raise ScaoedError(f"--cpus: unknown class {n!r}; use native or {', '.join(AS_CPU_CAPS)}")
        if n == own and n != NATIVE:
            raise ScaoedError(f"--cpus: {n} is this CPU's own class: name it native")
        if n in out:
            raise ScaoedError(f"--cpus names {n} twice")
        if n != NATIVE:
            if masked_as():
                raise ScaoedError(
                    f"--cpus {n} under --as-cpu {masked_as()}: masks do not nest; run optimize --cpus unmasked"
                )
            refused = mask_refusal(n) or unsupported()  # this CPU lacks the class, or no mask works here
            if refused:
                raise ScaoedError(f"--cpus: {refused}")
        out.append(n)
    if NATIVE not in out:
        raise ScaoedError("--cpus must include native: the package's top level is this CPU's own choice")
    return [NATIVE] + [n for n in out if n != NATIVE]


@dataclass(frozen=True)
class ClassRun:
    """One masked class's search: its package in a temporary folder, its selection."""

    cpu_class: str
    folder: Path
    selection: dict
    command: str


def child_args(cfg, weights_flags: str) -> list[str]:
    """optimize's arguments for a child that repeats this run's search (``cfg``: the settled OptimizeConfig)."""
    ((h, w),) = cfg.resolutions
    kind, value = cfg.constraint.kind, cfg.constraint.value
    flag = {"max_latency_ms": "--max-latency-ms", "min_psnr": "--min-psnr", "max_dpsnr": "--max-dpsnr"}
    args = [
        "optimize",
        "--res",
        f"{h}x{w}",
        "--stages",
        ",".join(map(str, cfg.stages)),
        "--device",
        cfg.device,
        "--batch",
        str(cfg.batch),
        "--warmup",
        str(cfg.warmup),
        "--iters",
        str(cfg.iters),
        "--calib-count",
        str(cfg.calib_count),
        "--export-dir",
        str(Path(cfg.export_dir).resolve()),
        *(["--backends", ",".join(cfg.backends)] if cfg.explicit else []),
        *([flag[kind], repr(value)] if kind else []),
        *(["--threads", str(cfg.threads)] if cfg.threads else []),
        *(["--data", str(Path(cfg.data).resolve())] if cfg.data else []),
        *shlex.split(weights_flags),
        "--cpus",
        NATIVE,
    ]
    return args


def run_class(cpu_class: str, args: list[str], work: Path, say=lambda s: None) -> ClassRun:
    """``args`` (``child_args``) under ``--as-cpu cpu_class`` into ``work/cpu_class``; its stderr (progress, its
    warnings and error line) is this command's; one error line when it fails."""
    out = work / cpu_class
    argv = [*args, "-o", str(out)]  # no --json: its progress shows on stderr; its table (stdout) is not needed
    command = shlex.join(["scaoed-deploy", "--as-cpu", cpu_class, *argv])
    say(f"class {cpu_class}: {command}")
    proc = subprocess.run(
        [sys.executable, "-m", "scaoed_deploy.cli", *argv],
        env=environment(cpu_class),
        stdout=subprocess.PIPE,
        text=True,
    )
    if proc.returncode not in (0, 1) or not (out / "selection.json").is_file():
        raise ScaoedError(
            f"--cpus {cpu_class}: its search failed (exit {proc.returncode}; its error is above): nothing written; "
            "the same command resumes with what it made"
        )
    selection = json.loads((out / "selection.json").read_text())
    return ClassRun(cpu_class, out, selection, command)


def run_classes(classes: list[str], cfg, weights_flags: str, say=lambda s: None) -> tuple[list[ClassRun], Path]:
    """Each masked class's search, one after another (each needs the whole machine to be timed); the temporary
    folder holding their packages (the caller removes it)."""
    work = Path(tempfile.mkdtemp(prefix=".scaoed-cpus-"))
    args = child_args(cfg, weights_flags)
    return [run_class(c, args, work, say) for c in classes if c != NATIVE], work


def class_files(run: ClassRun) -> list[tuple[Path, str]]:
    """(file in the child's package, its path in the one package) for what the class ships."""
    return [(run.folder / n, f"{CLASS_FOLDER}/{run.cpu_class}/{n}") for n in run.selection.get("shipped", [])]
