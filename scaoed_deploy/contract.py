"""The denoiser contract: what a model file must take and give to be run as ScaoedNet.

One input ``noisy``: float (float32, or float16 for a reduced-precision file) N x 3 x H x W. Outputs:
``denoised`` first, float N x 3 x H x W with the input's H and W, then optionally the noise maps
``noise_map_1..K``, float N x 1 x H x W. Every runner checks the file it opens against this
(``check_signature``, before any image is read) and every batch it runs (``check_outputs``), so a
model of another network (half-size output, one channel, other names) is refused in one line
instead of writing a wrong image.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from .errors import ScaoedError

INPUT_NAME = "noisy"
OUTPUT_NAME = "denoised"
NOISE_MAP_PREFIX = "noise_map_"
FLOAT_TYPES = ("float32", "float16")


class ContractError(ScaoedError):
    """A model that is not a denoiser of this contract: every image would fail (or be wrong) the same way."""


@dataclass
class Tensor:
    """A graph input or output as a runtime reports it: dims are ints, names of dynamic dims, or None."""

    name: str
    dtype: str  # "float32", "float16", ...
    dims: Sequence | None  # None: the rank is unknown


def _dims(dims) -> str:
    return "x".join("?" if d is None else str(d) for d in dims) if dims is not None else "unknown"


def _plain(dim) -> bool:
    """A dim that can be compared as it is: a number, or a named dynamic dim ('H'). An expression the exporter
    wrote ('2*((height//2))', equal to 'height' for the even sizes the model takes) is left to ``check_outputs``."""
    return isinstance(dim, int) or (isinstance(dim, str) and dim.isidentifier())


def check_signature(where: str, inputs: Sequence[Tensor], outputs: Sequence[Tensor]) -> None:
    """Refuse, in one line naming what differs, a model whose inputs and outputs break the contract."""

    def refuse(what: str):
        raise ContractError(
            f"{where} is not a ScaoedNet denoiser: {what} (expected one float input "
            f"'{INPUT_NAME}' N x 3 x H x W and an output '{OUTPUT_NAME}' of the same shape)"
        )

    if len(inputs) != 1:
        refuse(f"it takes {len(inputs)} inputs ({', '.join(i.name for i in inputs)})")
    x = inputs[0]
    if x.name != INPUT_NAME:
        refuse(f"its input is named {x.name!r}")
    if x.dtype not in FLOAT_TYPES:
        refuse(f"its input is {x.dtype}")
    if x.dims is not None and (len(x.dims) != 4 or x.dims[1] not in (3, None)):
        refuse(f"its input is {_dims(x.dims)}")
    if not outputs:
        refuse("it has no output")
    for i, y in enumerate(outputs):
        image = i == 0
        if image and y.name != OUTPUT_NAME:
            refuse(f"its first output is named {y.name!r}")
        if not image and not y.name.startswith(NOISE_MAP_PREFIX):
            refuse(f"output {y.name!r} is neither '{OUTPUT_NAME}' nor a noise map ({NOISE_MAP_PREFIX}K)")
        if y.dtype not in FLOAT_TYPES:
            refuse(f"output {y.name!r} is {y.dtype}")
        if y.dims is None:
            continue
        channels = 3 if image else 1
        if len(y.dims) != 4 or y.dims[1] not in (channels, None):
            refuse(f"output {y.name!r} is {_dims(y.dims)}, not N x {channels} x H x W")
        if x.dims is not None:
            for axis, label in ((2, "height"), (3, "width")):
                a, b = x.dims[axis], y.dims[axis]
                if _plain(a) and _plain(b) and a != b:
                    refuse(f"output {y.name!r} has {label} {b} where the input has {a}")


def check_outputs(where: str, batch_shape: tuple, outs: Sequence) -> None:
    """Refuse outputs of a run whose shapes are not the input's (N x 3 x H x W; noise maps N x 1 x H x W)."""
    n, _, h, w = batch_shape
    for i, o in enumerate(outs):
        want = (n, 3 if i == 0 else 1, h, w)
        if tuple(o.shape) != want:
            what = "the denoised image" if i == 0 else f"output {i + 1}"
            raise ContractError(
                f"{where} is not a ScaoedNet denoiser: {what} came back "
                f"{'x'.join(map(str, o.shape))} for an input of {'x'.join(map(str, batch_shape))} "
                f"(expected {'x'.join(map(str, want))}); nothing written"
            )
