"""Variants: one registry runtime at one precision (``onnxruntime-int8``, ``openvino-bf16``, ``torch-compile``).

The one model of what bench times, optimize races, a package ships and the CLI offers as ``--backends``: each
variant knows its name, the registry backend that runs it, the precision it computes in, where it runs, the
build-engine flags that make its artifact, and whether a CPU runs it natively. ``bench``'s tables
(``BACKENDS``, ``CPU_DEFAULT``, ...) and the package's ``BUILD_FLAGS`` are derived from ``VARIANTS``; a new
variant is one line here.
"""

from __future__ import annotations

from dataclasses import dataclass

from ..cpu import CPU

CPU_ONLY, GPU_ONLY, BOTH = frozenset({"cpu"}), frozenset({"cuda"}), frozenset({"cpu", "cuda"})


@dataclass(frozen=True)
class Variant:
    name: str
    runtime: str  # the registry backend that runs it (on CUDA, onnxruntime's is onnxruntime-cuda)
    precision: str  # what it computes in: fp32, bf16, fp16, int8
    devices: frozenset[str]  # where it can run
    cpu_default: bool = False  # in bench's and optimize's default set on the CPU
    gpu_default: int = 0  # its place in the default set on a CUDA GPU (0: not in it)
    build_flags: str | None = None  # build-engine's flags that remake its artifact (None: it runs the weights)
    amp: str | None = None  # torch: the autocast dtype
    compile: bool = False  # torch: through torch.compile

    def registry_name(self, device: str) -> str:
        """The registry backend that runs it on ``device``."""
        return "onnxruntime-cuda" if self.runtime == "onnxruntime" and device == "cuda" else self.runtime

    def artifact_target(self, device: str) -> str:
        """build-engine's ``--target`` for its artifact: ONNX Runtime's INT8 format on the CPU, OpenVINO's IR, else
        the TensorRT-ready precision ONNX."""
        if self.runtime == "openvino":
            return "openvino"
        if self.runtime == "onnxruntime" and self.precision == "int8" and device == "cpu":
            return "onnxruntime-cpu"
        return "tensorrt"

    @property
    def peak_precision(self) -> str:
        """The precision whose CPU peak its time is measured against: int8, bf16, else fp32 (fp16 runs as fp32 on a
        CPU without native fp16)."""
        return self.precision if self.precision in ("int8", "bf16") else "fp32"

    @property
    def cpu_may_emulate(self) -> bool:
        """Its precision is one a CPU may lack a native path for (bf16, fp16 off TensorRT)."""
        return self.precision in ("bf16", "fp16") and self.runtime != "tensorrt"

    def not_native(self, cpu: CPU) -> str | None:
        """Why ``cpu`` would only emulate it, or None when it runs natively (or precision is no question)."""
        return cpu.not_native(self.precision) if self.cpu_may_emulate else None


VARIANTS = {
    v.name: v
    for v in (
        Variant("torch", "torch", "fp32", BOTH, cpu_default=True, gpu_default=1),
        Variant("torch-bf16", "torch", "bf16", BOTH, cpu_default=True, gpu_default=3, amp="bf16"),
        Variant("torch-fp16", "torch", "fp16", BOTH, gpu_default=2, amp="fp16"),
        Variant("torch-compile", "torch", "fp32", BOTH, cpu_default=True, gpu_default=4, compile=True),
        Variant("onnxruntime", "onnxruntime", "fp32", BOTH, cpu_default=True, gpu_default=5),
        Variant("onnxruntime-fp16", "onnxruntime", "fp16", BOTH, cpu_default=True, gpu_default=6, build_flags="--fp16"),
        Variant("onnxruntime-bf16", "onnxruntime", "bf16", BOTH, cpu_default=True, build_flags="--bf16"),
        Variant(
            "onnxruntime-int8",
            "onnxruntime",
            "int8",
            BOTH,
            cpu_default=True,
            build_flags="--int8 --target onnxruntime-cpu",
        ),
        Variant("openvino", "openvino", "fp32", CPU_ONLY, cpu_default=True, build_flags="--fp32 --target openvino"),
        Variant(
            "openvino-bf16", "openvino", "bf16", CPU_ONLY, cpu_default=True, build_flags="--bf16 --target openvino"
        ),
        Variant(
            "openvino-int8", "openvino", "int8", CPU_ONLY, cpu_default=True, build_flags="--int8 --target openvino"
        ),
        Variant("tensorrt", "tensorrt", "fp32", GPU_ONLY, gpu_default=7, build_flags="--fp32"),
        Variant("tensorrt-fp16", "tensorrt", "fp16", GPU_ONLY, cpu_default=True, gpu_default=8, build_flags="--fp16"),
        Variant("tensorrt-int8", "tensorrt", "int8", GPU_ONLY, cpu_default=True, gpu_default=9, build_flags="--int8"),
    )
}


def default_variants(device: str) -> list[str]:
    """bench's and optimize's default set on ``device`` (on the CPU the TensorRT ones too, so that the table
    says why they were skipped)."""
    if device == "cpu":
        return [v.name for v in VARIANTS.values() if v.cpu_default]
    return [v.name for v in sorted((v for v in VARIANTS.values() if v.gpu_default), key=lambda v: v.gpu_default)]
