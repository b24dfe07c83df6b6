"""cpu: the ISA read from /proc/cpuinfo text, its class, what it runs natively, and ONEDNN_MAX_CPU_ISA's cap."""

from __future__ import annotations

import pytest

from scaoed_deploy.cpu import read_cpu, this_cpu


def cpuinfo(flags: str, name: str = "Test CPU") -> str:
    return f"processor\t: 0\nmodel name\t: {name}\nflags\t\t: fpu sse2 {flags}\n\nprocessor\t: 1\nflags\t\t: other\n"


@pytest.mark.parametrize("flags, isa_class, vnni, bf16", [
    ("avx avx2 fma", "avx2", False, False),
    ("avx2 avx_vnni", "avx2-vnni", True, False),
    ("avx2 avx512f avx512bw", "avx512", False, False),
    ("avx2 avx512f avx512_vnni avx512_bf16", "avx512-vnni", True, True),
    ("avx2 avx512f avx512_vnni avx512_bf16 amx_bf16 amx_int8 amx_tile", "amx", True, True),
])
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
