"""FP32 islands for reduced-precision conversion, chosen from a reference run.

A node stays in FP32 when, on the calibration inputs (real noisy images):
- any of its outputs leaves the low-precision range (``data_max``, 512 by default,
  as ModelOpt AutoCast uses, since the next op may overflow what this one barely fits);
- any of its constant inputs overflows, or underflows to zero, in the low
  precision: the whole constant (NFAE's 1e-16 is 0 in float16), or more than 1% of
  its values (one negligible weight rounding to zero does not count);
and every node of a module listed in ``expand`` (NFAE by default) that holds a
flagged node joins it, so that the whole layer, not half of it, runs in FP32.
The node names go to AutoCast's ``nodes_to_exclude`` (or ORT's float16
``node_block_list``).
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

import numpy as np

from ..artifact import all_tensors, module_paths

FP16_MAX = 65504.0
FP16_SMALLEST = 2.0**-24  # the smallest float16 subnormal; anything closer to zero rounds to 0
BF16_MAX = 3.39e38
BF16_SMALLEST = 9.2e-41


@dataclass
class Island:
    node: str
    op_type: str
    module: str
    reason: str

    def to_dict(self) -> dict:
        return asdict(self)


def _limits(precision: str) -> tuple[float, float]:
    if precision == "fp16":
        return FP16_MAX, FP16_SMALLEST
    if precision == "bf16":
        return BF16_MAX, BF16_SMALLEST
    raise ValueError(f"islands are for fp16 or bf16, not {precision!r}")


def _constant_problem(values: np.ndarray, largest: float, smallest: float) -> str | None:
    v = np.abs(values.astype(np.float64)).ravel()
    if v.size == 0 or not np.issubdtype(values.dtype, np.floating):
        return None
    if np.any(v > largest):
        return f"constant up to {v.max():.3g} overflows"
    nonzero = v[v > 0]
    tiny = nonzero[nonzero < smallest]
    # A constant that vanishes (NFAE's 1e-16), or a weight that loses more than 1% of its values, matters;
    # a weight with one negligible element rounding to zero does not.
    if tiny.size and (tiny.size == nonzero.size or tiny.size > 0.01 * nonzero.size):
        return f"constant {tiny.min():.3g} underflows to 0"
    return None


def select_islands(
    proto,
    inputs: list[np.ndarray],
    precision: str = "fp16",
    data_max: float = 512.0,
    expand: tuple[str, ...] = ("nfae",),
) -> list[Island]:
    """Nodes of ``proto`` to keep in FP32 (see the module doc), in graph order."""
    from onnx import numpy_helper

    largest, smallest = _limits(precision)
    peak: dict[str, float] = {}
    for x in inputs:
        for name, value in all_tensors(proto, x).items():
            finite = np.abs(value[np.isfinite(value)])
            peak[name] = max(peak.get(name, 0.0), float(finite.max()) if finite.size else 0.0)
    consts = {i.name: numpy_helper.to_array(i) for i in proto.graph.initializer}
    modules = module_paths(proto)
    flagged: dict[str, Island] = {}
    for node in proto.graph.node:
        module = modules.get(node.output[0], "") if node.output else ""
        reason = None
        worst = max((peak.get(o, 0.0) for o in node.output), default=0.0)
        if worst > min(data_max, largest):
            reason = f"values up to {worst:.3g} leave the {precision} range (data_max {data_max:g})"
        for i in node.input:
            if i in consts and reason is None:
                problem = _constant_problem(consts[i], largest, smallest)
                if problem:
                    reason = f"{problem} in {precision} ({i})"
        if reason:
            flagged[node.name] = Island(node.name, node.op_type, module, reason)
    hot = {m for m in (isl.module for isl in flagged.values()) if m and m.rsplit(".", 1)[-1] in expand}
    out = []
    for node in proto.graph.node:
        module = modules.get(node.output[0], "") if node.output else ""
        if node.name in flagged:
            out.append(flagged[node.name])
        elif module in hot:
            out.append(Island(node.name, node.op_type, module, f"part of {module}, which holds a flagged node"))
    return out
