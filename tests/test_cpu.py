"""cpu: the ISA read from /proc/cpuinfo text, its class, what it runs natively, and ONEDNN_MAX_CPU_ISA's cap."""

from __future__ import annotations

import pytest

from scaoed_deploy.cpu import read_cpu, this_cpu


def cpuinfo(flags: str, name: str = "Test CPU") -> str:
    return f"processor\t: 0\nmodel name\t: {name}\nflags\t\t: fpu sse2 {flags}\n\nprocessor\t: 1\nflags\t\t: other\n"


@pytest.mark.parametrize(
    "flags, isa_class, vnni, bf16",
    [
        ("avx avx2 fma", "avx2", False, False),
        ("avx2 avx_vnni", "avx2-vnni", True, False),
        ("avx2 avx512f avx512bw", "avx512", False, False),
        ("avx2 avx512f avx512_vnni avx512_bf16", "avx512-vnni", True, True),
        ("avx2 avx512f avx512_vnni avx512_bf16 amx_bf16 amx_int8 amx_tile", "amx", True, True),
    ],
)
def test_the_isa_class_and_native_paths_follow_the_flags(flags, isa_class, vnni, bf16):
    cpu = read_cpu(cpuinfo(flags))
    assert (cpu.isa_class, cpu.vnni, cpu.bf16) == (isa_class, vnni, bf16)
    assert (cpu.not_native("bf16") is None) == bf16 and cpu.not_native("fp32") is None
    assert cpu.name == "Test CPU" and set(cpu.isa) <= set(flags.split())  # the first processor's block only


def test_onednn_cap_masks_what_is_above_it():
    amx = cpuinfo("avx2 avx512f avx512_vnni avx512_bf16 amx_bf16 amx_int8")
    capped = read_cpu(amx, cap="avx2")
    assert capped.isa == ["avx2"] and capped.isa_class == "avx2" and not capped.bf16 and not capped.vnni
    assert capped.capped_by == "ONEDNN_MAX_CPU_ISA=AVX2" and "capped by" in capped.describe()
    assert read_cpu(amx, cap="AVX512_CORE_VNNI").isa_class == "avx512-vnni"
    assert not read_cpu(amx, cap="AVX512_CORE_VNNI").bf16
    assert read_cpu(amx, cap="not-a-level").isa_class == "amx"  # an unknown value caps nothing


def test_this_cpu_honours_the_environment(monkeypatch):
    this_cpu.cache_clear()
    monkeypatch.setenv("ONEDNN_MAX_CPU_ISA", "AVX2")
    try:
        assert this_cpu().isa_class in ("avx2", "other") and not this_cpu().bf16
    finally:
        this_cpu.cache_clear()
        monkeypatch.delenv("ONEDNN_MAX_CPU_ISA")
    assert this_cpu().capped_by is None


def test_peak_macs_per_cycle_follow_the_vector_width_and_the_dot_product_instructions():
    """Two vector instructions a cycle: AVX2 8 fp32 lanes, AVX-512 16 (but Zen 4 splits 512-bit ones in two);
    VNNI's dot product does 4 int8 MACs per fp32 lane, AVX2's pmaddubsw 2; AMX a 1024 int8 / 512 bf16 tile step."""
    intel = read_cpu(
        "vendor_id\t: GenuineIntel\ncpu family\t: 6\ncpu MHz\t\t: 2000.0\n"
        "flags\t\t: avx2 avx512f avx512_vnni avx512_bf16\n"
    )
    assert intel.macs_per_cycle() == {"fp32": 32, "int8": 128, "bf16": 64}
    assert intel.peak_gmacs(2) == {"fp32": 128.0, "int8": 512.0, "bf16": 256.0}  # 2 cores x 2 GHz x per cycle
    amx = read_cpu(
        "vendor_id\t: GenuineIntel\ncpu family\t: 6\nflags\t\t: avx2 avx512f avx512_vnni avx512_bf16 "
        "amx_bf16 amx_int8\n"
    )
    assert amx.macs_per_cycle() == {"fp32": 32, "int8": 1024, "bf16": 512} and amx.peak_gmacs(2) is None  # no clock
    zen4 = read_cpu("vendor_id\t: AuthenticAMD\ncpu family\t: 25\nflags\t\t: avx2 avx512f avx512_vnni avx512_bf16\n")
    assert zen4.macs_per_cycle() == {"fp32": 16, "int8": 64, "bf16": 32}
    avx2 = read_cpu("vendor_id\t: AuthenticAMD\ncpu family\t: 23\nflags\t\t: avx2 fma\n")
    assert avx2.macs_per_cycle() == {"fp32": 16, "int8": 32, "bf16": 16}
