"""This CPU: its name, its instruction sets, and which precisions it runs natively.

One place that reads the ISA (``/proc/cpuinfo`` on Linux), for every step that depends on it:
``bench`` skips the rows this CPU would only emulate, the ONNX Runtime INT8 build picks its
quantization format, and records and artifacts name the CPU and the ISA they were made on.

- **VNNI** (AVX-512 VNNI or AVX-VNNI): int8 dot products without the 16-bit intermediate of
  AVX2's ``vpmaddubsw``, which can saturate for U8 x S8 (ONNX Runtime's documented caveat: use
  ``reduce_range`` where VNNI is missing).
- **bf16** (AVX-512 BF16 or AMX-BF16): without it torch emulates bf16 convolutions (about 200 x
  slower than fp32 on an AVX2-only EPYC) and OpenVINO silently runs f32.
- **fp16** (AVX-512 FP16 or AMX-FP16): without it an fp16 convolution runs through float32 with
  conversions around it (ONNX Runtime: 1.06 to 1.3 x eager fp32 at 512 x 512 on an AVX-512 EPYC).

``ONEDNN_MAX_CPU_ISA`` (oneDNN's own cap) masks the flags above it, so that a run capped at ``AVX2``
is planned as on an AVX2-only CPU (``capped_by`` says so). torch's CPU kernels obey it, and so do
OpenVINO's convolutions (its CPU plugin builds them with oneDNN: ``brgconv_avx512_I8`` becomes
``jit_avx2_I8``, measured), but not OpenVINO's own kernels of other ops (ReduceMean stays AVX-512) nor
ONNX Runtime (its MLAS picks kernels from the CPU itself, VNNI included): a capped run is an AVX2-only
CPU for torch and OpenVINO's convolutions, not for the whole of either runtime.

``scaoed-deploy --as-cpu avx2`` (``cpumask``) runs a command whose every library sees an AVX2-only CPU (its
CPUID masked); the child carries ``SCAOED_DEPLOY_AS_CPU`` beside the preloaded mask, and ``this_cpu`` then
plans for AVX2 as well (``capped_by`` names the mask).
"""

from __future__ import annotations

import dataclasses
import functools
import os
import platform
from dataclasses import dataclass
from pathlib import Path

#: The flags that matter here, in the order records list them.
ISA_FLAGS = (
    "avx2",
    "avx512f",
    "avx512_vnni",
    "avx_vnni",
    "avx512_bf16",
    "amx_bf16",
    "amx_int8",
    "avx512_fp16",
    "amx_fp16",
)


#: Set by ``--as-cpu`` in the child it runs, beside the preloaded CPUID mask (a library of this name).
AS_CPU_ENV, AS_CPU_LIBRARY = "SCAOED_DEPLOY_AS_CPU", "scaoed-cpumask"
#: ``--as-cpu`` targets (classes below the machine's own, most capable first) and the ONEDNN_MAX_CPU_ISA value
#: whose flags they leave: avx512-vnni hides AMX, avx512 also VNNI, BF16 and FP16, avx2 every AVX-512 and VNNI.
AS_CPU_CAPS = {"avx512-vnni": "AVX512_CORE_FP16", "avx512": "AVX512_CORE", "avx2": "AVX2"}
#: The flags a CPU needs for ``--as-cpu`` to run as each target (a mask hides instructions; it cannot add them).
AS_CPU_NEEDS = {"avx512-vnni": {"avx512f", "avx512_vnni"}, "avx512": {"avx512f"}, "avx2": {"avx2"}}
#: ``isa_class`` names, most capable first.
CLASSES = ("amx", "avx512-vnni", "avx512", "avx2-vnni", "avx2", "other")

#: ONEDNN_MAX_CPU_ISA values and the flags of ISA_FLAGS they leave (oneDNN's names; the AMX ones leave all).
ONEDNN_CAPS = {
    "SSE41": set(),
    "AVX": set(),
    "AVX2": {"avx2"},
    "AVX2_VNNI": {"avx2", "avx_vnni"},
    "AVX2_VNNI_2": {"avx2", "avx_vnni"},
    "AVX512_CORE": {"avx2", "avx512f"},
    "AVX512_CORE_VNNI": {"avx2", "avx512f", "avx512_vnni"},
    "AVX512_CORE_BF16": {"avx2", "avx512f", "avx512_vnni", "avx512_bf16"},
    "AVX10_1_512": {"avx2", "avx512f", "avx512_vnni", "avx512_bf16"},
    "AVX512_CORE_FP16": {"avx2", "avx512f", "avx512_vnni", "avx512_bf16", "avx512_fp16"},
}


@dataclass(frozen=True)
class CPU:
    name: str
    flags: frozenset[str]
    capped_by: str | None = None  # "ONEDNN_MAX_CPU_ISA=AVX2" (or the CPUID mask) when the flags were masked to it
    vendor: str = ""  # "GenuineIntel", "AuthenticAMD"
    family: int | None = None
    mhz: float | None = None  # the clock /proc/cpuinfo reports (a VM's nominal clock; boost may exceed it)

    @property
    def isa(self) -> list[str]:
        """The flags of ISA_FLAGS this CPU has."""
        return [f for f in ISA_FLAGS if f in self.flags]

    @property
    def vnni(self) -> bool:
        return bool(self.flags & {"avx512_vnni", "avx_vnni", "amx_int8"})

    @property
    def bf16(self) -> bool:
        return bool(self.flags & {"avx512_bf16", "amx_bf16"})

    @property
    def amx(self) -> bool:
        return bool(self.flags & {"amx_bf16", "amx_int8"})

    @property
    def isa_class(self) -> str:
        """A short name for the class of CPU (what INT8 files are verified on): amx, avx512-vnni, avx512 or avx2."""
        if self.amx:
            return "amx"
        if "avx512f" in self.flags:
            return "avx512-vnni" if self.vnni else "avx512"
        return "avx2-vnni" if self.vnni else ("avx2" if "avx2" in self.flags else "other")

    def describe(self) -> str:
        """'AMD EPYC (avx2, avx512f, avx512_vnni, avx512_bf16)'."""
        capped = f", capped by {self.capped_by}" if self.capped_by else ""
        return f"{self.name} ({', '.join(self.isa) or 'no AVX2'}{capped})"

    @property
    def fp16(self) -> bool:
        return bool(self.flags & {"avx512_fp16", "amx_fp16"})

    def not_native(self, precision: str) -> str | None:
        """Why this CPU has no native path for ``precision`` (bf16, fp16), or None when it has one."""
        if precision == "bf16" and not self.bf16:
            return (
                f"this CPU ({self.isa_class}) has no native bf16 (AVX-512 BF16 or AMX): bf16 would be emulated "
                "(torch: about 200 x slower than fp32) or run as f32 (OpenVINO)"
            )
        if precision == "fp16" and not self.fp16:
            return (
                f"this CPU ({self.isa_class}) has no native fp16 arithmetic (AVX-512 FP16 or AMX-FP16): fp16 "
                "convolutions would run through float32 with conversions, slower than fp32"
            )
        return None

    def capabilities(self, cores: int) -> dict:
        """Per precision: whether this CPU runs it natively (else why not), how (int8: VNNI or 16-bit sums), and its
        peak GMAC/s on ``cores`` cores at the reported clock (None where the clock is unknown)."""
        peak = self.peak_gmacs(cores) or {}
        out = {}
        for precision in ("fp32", "int8", "bf16", "fp16"):
            why = self.not_native(precision)
            out[precision] = {
                "native": why is None,
                "peak_gmacs": peak.get("fp32" if precision == "fp16" else precision),
                **({"why_not": why} if why else {}),
            }
        out["int8"]["dot_product"] = "VNNI (32-bit sums)" if self.vnni else "vpmaddubsw (16-bit sums of pairs)"
        return out

    def lacks_for(self, precision: str, checked_on: dict) -> str | None:
        """One line when a ``precision`` file verified on the CPU ``checked_on`` (``to_dict()``'s form) runs here
        without what its results depended on there (INT8: VNNI; bf16: native bf16), else None."""
        then = read_cpu("flags\t: " + " ".join(checked_on.get("isa", [])))
        missing = {"int8": ("VNNI", then.vnni and not self.vnni), "bf16": ("native bf16", then.bf16 and not self.bf16)}
        what, lacks = missing.get(precision, ("", False))
        if not lacks:
            return None
        return (
            f"this {precision} file was verified on {checked_on.get('cpu', 'another CPU')} "
            f"({checked_on.get('isa_class', '?')}); this CPU ({self.isa_class}) has no {what}, so its results "
            "may differ here: `scaoed-deploy parity FILE` on this CPU is the check"
        )

    def macs_per_cycle(self) -> dict[str, int]:
        """Peak multiply-accumulates per cycle and core of the widest instruction for each precision, at two
        vector instructions a cycle (two FMA / VNNI ports; AMD's Zen 4 runs a 512-bit one as two 256-bit halves,
        so as one). AMX: one tile multiply a cycle (16 x 64 int8, 16 x 32 bf16 MACs per 16 cycles x 16)."""
        w512 = "avx512f" in self.flags and not (self.vendor == "AuthenticAMD" and (self.family or 0) < 26)
        lanes = 16 if w512 else 8  # fp32 lanes of the widest full-rate vector
        out = {
            "fp32": 2 * lanes,
            "int8": 2 * lanes * (4 if self.vnni else 2),
            "bf16": 2 * lanes * (2 if self.bf16 else 1),
        }
        if self.flags & {"amx_int8"}:
            out["int8"] = 1024
        if self.flags & {"amx_bf16"}:
            out["bf16"] = 512
        return out

    def peak_gmacs(self, cores: int) -> dict[str, float] | None:
        """cores x clock x macs_per_cycle, in GMAC/s per precision (None where the clock is unknown)."""
        if not self.mhz:
            return None
        return {p: round(cores * self.mhz / 1000 * m, 1) for p, m in self.macs_per_cycle().items()}

    def to_dict(self) -> dict:
        return {
            "cpu": self.name,
            "isa": self.isa,
            "isa_class": self.isa_class,
            **({"capped_by": self.capped_by} if self.capped_by else {}),
        }


def read_cpu(cpuinfo: str | None = None, cap: str | None = None) -> CPU:
    """The CPU described by ``cpuinfo`` (the text of /proc/cpuinfo; None: this machine's), its flags masked to
    ``cap`` (an ONEDNN_MAX_CPU_ISA value) when given."""
    name, flags = platform.processor() or platform.machine(), set()
    if cpuinfo is None:
        try:
            cpuinfo = Path("/proc/cpuinfo").read_text()
        except OSError:
            cpuinfo = ""
    first = cpuinfo.split("\n\n")[0]
    info = {k.strip(): v.strip() for k, v in (ln.split(":", 1) for ln in first.splitlines() if ":" in ln)}
    flags = set(info.get("flags", "").split()) or flags

    def number(key, kind):
        try:
            return kind(info[key])
        except (KeyError, ValueError):
            return None

    more = {"vendor": info.get("vendor_id", ""), "family": number("cpu family", int), "mhz": number("cpu MHz", float)}
    keep = ONEDNN_CAPS.get((cap or "").upper())
    if keep is None:
        return CPU(info.get("model name", name), frozenset(flags), **more)
    masked = {f for f in flags if f not in ISA_FLAGS and not f.startswith(("avx512", "amx"))} | (
        set(ISA_FLAGS) & flags & keep
    )
    return CPU(info.get("model name", name), frozenset(masked), f"ONEDNN_MAX_CPU_ISA={cap.upper()}", **more)


def mask_refusal(target: str, cpu: CPU | None = None) -> str | None:
    """Why ``--as-cpu target`` cannot run on ``cpu`` (this machine's, unmasked): it lacks what the target has."""
    cpu = cpu or read_cpu()
    lacks = sorted(AS_CPU_NEEDS[target] - cpu.flags)
    if lacks:
        return (
            f"--as-cpu {target} needs {', '.join(lacks)}, which this CPU ({cpu.name}, class {cpu.isa_class}) lacks: "
            "a mask hides instructions, it cannot add them"
        )
    return None


def masked_as() -> str | None:
    """The ``--as-cpu`` target this process runs as: its marker set and the CPUID mask preloaded, else None."""
    target = os.environ.get(AS_CPU_ENV)
    return target if target in AS_CPU_CAPS and AS_CPU_LIBRARY in os.environ.get("LD_PRELOAD", "") else None


@functools.cache
def this_cpu() -> CPU:
    """This machine's CPU, as every library sees it under ``--as-cpu``, else as capped by ONEDNN_MAX_CPU_ISA
    where it is set."""
    target = masked_as()
    if target:
        cpu = read_cpu(cap=AS_CPU_CAPS[target])
        return dataclasses.replace(cpu, capped_by=f"--as-cpu {target} (CPUID masked for every library)")
    return read_cpu(cap=os.environ.get("ONEDNN_MAX_CPU_ISA"))
