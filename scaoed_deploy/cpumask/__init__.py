"""Run a command as on a CPU with less than this one: ``scaoed-deploy --as-cpu CLASS COMMAND ...``.

An artifact verified on the CPU it was built on can lose quality on another (ONNX Runtime's U8S8 INT8 sums
u8 x s8 pairs in 16 bits without VNNI; OpenVINO's AVX2 int8 convolutions do the same), and the libraries pick
their kernels from the CPU itself: ``ONEDNN_MAX_CPU_ISA`` caps torch and OpenVINO's convolutions, not ONNX
Runtime's MLAS nor OpenVINO's other kernels. This subpackage makes every library of a child process see a
lesser x86-64 CPU: ``cpumask.c``, compiled here on first use and preloaded, uses Linux's CPUID faulting to
clear feature bits of every CPUID the process runs, per class (``cpu.AS_CPU_CAPS``): ``avx512-vnni`` hides
AMX; ``avx512`` also VNNI, BF16 and FP16; ``avx2`` every AVX-512 and VNNI instruction. The child's commands
then build, verify (``parity``) and time artifacts on the kernels such a CPU runs: the same instructions and
integer arithmetic, on this CPU's cores (its speed is this CPU's, not that machine's). A class needs what it
keeps (``cpu.AS_CPU_NEEDS``): a mask cannot add an instruction this CPU lacks.

``cpu.this_cpu()`` reads the marker the child carries and plans for that class (skips, INT8 format, records
name the mask). Needs Linux on x86-64 with CPUID faulting (``cpuid_fault`` in /proc/cpuinfo) and a C compiler.
"""

from __future__ import annotations

import hashlib
import os
import platform
import shutil
import signal
import subprocess
import sys
import tempfile
from pathlib import Path

from ..cpu import AS_CPU_CAPS, AS_CPU_ENV, AS_CPU_LIBRARY, mask_refusal
from ..errors import ScaoedError
from ..util.files import cache_dir

#: The CPUs a command can run as (cpu.py plans for each).
TARGETS = tuple(AS_CPU_CAPS)
SOURCE = Path(__file__).with_name("cpumask.c")


def _compiler() -> str | None:
    return shutil.which("cc") or shutil.which("gcc")


def unsupported() -> str | None:
    """Why the mask cannot work on this machine, or None (the mask built, and a program run under it)."""
    if platform.system() != "Linux" or platform.machine() not in ("x86_64", "AMD64"):
        return f"--as-cpu needs Linux on x86-64 (this is {platform.system()} on {platform.machine()})"
    try:
        flags = Path("/proc/cpuinfo").read_text().split("\n\n")[0]
    except OSError:
        flags = ""
    if "cpuid_fault" not in flags.split():
        return "--as-cpu needs CPUID faulting, which this CPU or its hypervisor does not offer (no cpuid_fault flag)"
    if not _compiler():
        return "--as-cpu builds its CPUID mask with a C compiler, and none was found (cc or gcc)"
    try:
        lib = _build()
    except ScaoedError as e:
        return str(e)
    probe = subprocess.run([sys.executable, "-c", ""], env=dict(os.environ, LD_PRELOAD=str(lib)), capture_output=True)
    if probe.returncode:  # the kernel refused CPUID faulting (a sandbox's seccomp filter, say)
        return "--as-cpu: this system refuses CPUID faulting to a process (arch_prctl ARCH_SET_CPUID)"
    return None


def library() -> Path:
    """The compiled mask, where it can work here (else one error naming why)."""
    why = unsupported()
    if why:
        raise ScaoedError(why)
    return _build()


def _build() -> Path:
    """The mask built once per source into the user cache (atomically), then reused."""
    digest = hashlib.sha256(SOURCE.read_bytes()).hexdigest()[:12]
    path = cache_dir() / f"{AS_CPU_LIBRARY}-{digest}.so"
    if path.is_file():
        return path
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", dir=path.parent)
    os.close(fd)
    cc = _compiler()
    built = subprocess.run([cc, "-O2", "-shared", "-fPIC", "-o", tmp, str(SOURCE)], capture_output=True, text=True)
    if built.returncode:
        Path(tmp).unlink(missing_ok=True)
        last = (built.stderr.strip().splitlines() or ["no message"])[-1]
        raise ScaoedError(f"could not compile the CPUID mask ({cc}): {last}")
    os.replace(tmp, path)
    return path


def environment(target: str, base: dict | None = None) -> dict:
    """``base`` (default: this process's environment) with the mask for ``target`` preloaded and marked."""
    if target not in TARGETS:
        raise ScaoedError(f"--as-cpu takes one of {', '.join(TARGETS)}, not {target!r}")
    refused = mask_refusal(target)
    if refused:
        raise ScaoedError(refused)
    env = dict(os.environ if base is None else base)
    preload = [p for p in env.get("LD_PRELOAD", "").split(":") if p and AS_CPU_LIBRARY not in p]
    env["LD_PRELOAD"] = ":".join([str(library()), *preload])
    env[AS_CPU_ENV] = target
    # torch.compile's Inductor reused kernels cached by runs on this CPU's full ISA and gave NaN (measured at
    # 512 x 512 K = 1): the masked child keeps its own cache
    own = Path(tempfile.gettempdir()) / f"torchinductor_as_{target}_{os.getuid()}"
    env.setdefault("TORCHINDUCTOR_CACHE_DIR", str(own))
    return env


def run_as(target: str, argv: list[str]) -> int:
    """``scaoed-deploy ARGV`` in a child process that sees a ``target`` CPU; its exit code. Standard streams are
    the child's; Ctrl-C reaches the child too (same process group); SIGTERM and SIGHUP sent to this process are
    passed on to it (a service manager stops the wrapper, and the command must stop with it, not be left running),
    and this waits for it to finish."""
    env = environment(target)
    child = subprocess.Popen([sys.executable, "-m", "scaoed_deploy.cli", *argv], env=env)

    def pass_on(signum, frame):
        child.send_signal(signum)

    before = {s: signal.signal(s, pass_on) for s in (signal.SIGTERM, signal.SIGHUP)}
    wakeup = signal.set_wakeup_fd(-1)  # the child ends itself (its own watchdog): none here says it a second time
    try:
        while True:
            try:
                return child.wait()
            except KeyboardInterrupt:  # the child got it too and ends the way Ctrl-C ends a command
                continue
    finally:
        signal.set_wakeup_fd(wakeup)
        for s, handler in before.items():
            signal.signal(s, handler)
