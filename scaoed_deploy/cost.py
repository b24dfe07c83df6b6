"""Cost model: parameters and multiply-accumulates (MACs) of ScaoedNet.

Convolutions are counted by ``torch.utils.flop_counter`` (which reports 2 FLOPs
per MAC); what it does not see is counted by a small dispatch mode that runs
alongside it: one operation per output element of every pointwise op (ReLU,
sigmoid, the residual adds and gating products, NFAE's arithmetic), one per
input element of every reduction (means, maxima), and one per output element
for each convolution's bias. Data movement (cat, pixel (un)shuffle, views)
costs nothing.

The model runs on the ``meta`` device: shapes only, no memory and no time, so
the count at 512 x 512 (or 4K) is exact and instant.
"""

from __future__ import annotations

import functools
from dataclasses import asdict, dataclass

import torch
from torch.utils._python_dispatch import TorchDispatchMode
from torch.utils.flop_counter import FlopCounterMode

from .model import ScaoedNet

#: The paper's figures at 512 x 512 output, in G multiply-accumulates ("FLOPs" in the paper).
PAPER_GMACS = {1: 212.0, 3: 640.0, 5: 1071.0}
#: The paper's RTX 3090 latency at 512 x 512, in seconds.
PAPER_LATENCY_S = {1: 0.07, 3: 0.15, 5: 0.28}

_aten = torch.ops.aten
_REDUCTIONS = {_aten.mean.dim, _aten.amax.default, _aten.sum.dim_IntList, _aten.max.dim}
_CONVOLUTIONS = {_aten.convolution.default}
_FREE = {_aten.cat.default, _aten.pixel_shuffle.default, _aten.pixel_unshuffle.default}


class ElementwiseCounter(TorchDispatchMode):
    """Counts the elementwise and reduction work that FlopCounterMode leaves out."""

    def __init__(self):
        super().__init__()
        self.ops = 0
        self.by_op: dict[str, int] = {}

    def _add(self, name: str, n: int) -> None:
        self.ops += n
        self.by_op[name] = self.by_op.get(name, 0) + n

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        out = func(*args, **(kwargs or {}))
        packet = func.overloadpacket
        if func in _FREE:
            return out
        first = out[0] if isinstance(out, (tuple, list)) else out
        if func in _CONVOLUTIONS:
            bias = args[2] if len(args) > 2 else (kwargs or {}).get("bias")
            if bias is not None:
                self._add("conv_bias", first.numel())
        elif func in _REDUCTIONS:
            self._add(packet.__name__, args[0].numel())
        elif torch.Tag.pointwise in func.tags and isinstance(first, torch.Tensor):
            self._add(packet.__name__, first.numel())
        return out


@dataclass
class Cost:
    stages: int
    blocks: int
    height: int
    width: int
    parameters: int
    conv_macs: int
    other_macs: int
    paper_gmacs: float | None

    @property
    def total_macs(self) -> int:
        return self.conv_macs + self.other_macs

    @property
    def vs_paper(self) -> float | None:
        """Relative difference of our total from the paper's figure (at 512 x 512 only)."""
        if self.paper_gmacs is None:
            return None
        return self.total_macs / (self.paper_gmacs * 1e9) - 1.0

    def to_dict(self) -> dict:
        d = asdict(self)
        d.update(total_macs=self.total_macs, vs_paper=self.vs_paper)
        return d


def count_parameters(blocks: int = 16) -> int:
    with torch.device("meta"):
        model = ScaoedNet(stages=1, blocks=blocks)
    return sum(p.numel() for p in model.parameters())


def model_cost(stages: int, blocks: int = 16, height: int = 512, width: int = 512, batch: int = 1) -> Cost:
    """Parameters and MACs of one forward pass at (batch, 3, height, width)."""
    if height % 2 or width % 2:
        raise ValueError(f"height and width must be even, got {height} x {width}")
    with torch.device("meta"):
        model = ScaoedNet(stages=stages, blocks=blocks).eval()
        x = torch.empty(batch, 3, height, width)
    flops = FlopCounterMode(display=False)
    rest = ElementwiseCounter()
    with torch.no_grad(), flops, rest:
        model(x)
    paper = PAPER_GMACS.get(stages) if (height, width, batch, blocks) == (512, 512, 1, 16) else None
    return Cost(
        stages=stages,
        blocks=blocks,
        height=height,
        width=width,
        parameters=sum(p.numel() for p in model.parameters()),
        conv_macs=flops.get_total_flops() // 2,
        other_macs=rest.ops,
        paper_gmacs=paper,
    )


class _TensorBytes(TorchDispatchMode):
    """The bytes of every tensor the ops of a forward pass make, and the largest of them."""

    def __init__(self):
        super().__init__()
        self.total = self.largest = 0

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        out = func(*args, **(kwargs or {}))
        for t in out if isinstance(out, (tuple, list)) else (out,):
            if isinstance(t, torch.Tensor):
                n = t.numel() * t.element_size()
                self.total += n
                self.largest = max(self.largest, n)
        return out


@dataclass(frozen=True)
class Footprint:
    """Activation memory of one fp32 forward pass, in MB: every tensor it makes (what a step that keeps them all
    holds: a calibration pass, a reference run), and the largest one (an inference keeps a few alive at once)."""

    all_tensors_mb: float
    largest_mb: float

    def inference_mb(self) -> float:
        """What running it takes beyond the weights: a residual block's inputs, outputs and gates alive at once."""
        return 12 * self.largest_mb


@functools.lru_cache(maxsize=64)
def model_footprint(stages: int, blocks: int = 16, height: int = 512, width: int = 512, batch: int = 1) -> Footprint:
    """The activation memory of one forward pass at (batch, 3, height, width), on the ``meta`` device (about 1.7 s
    at K = 5, T = 16: a calibration's check asks for three sizes, and bench's rows ask again; kept per size)."""
    with torch.device("meta"):
        model = ScaoedNet(stages=stages, blocks=blocks).eval()
        x = torch.empty(batch, 3, height + height % 2, width + width % 2)
    counter = _TensorBytes()
    with torch.no_grad(), counter:
        model(x)
    return Footprint(counter.total / 2**20, counter.largest / 2**20)
