"""``--tile auto``: the tile size and tile batch that fit this machine's free memory for one image.

A run holds the image's own buffers plus, per tile pixel in flight, the model's activations. Both were measured
(``benchmarks/runtime/``: a 4000 x 3000 photo at K = 5 on the CPU took about 60 bytes a pixel plus 170 MB per
512 x 512 tile in a batch, 650 bytes a tile pixel); the figures below round them up by half for other backends.
The choice is the largest tile, then the largest batch, whose activations fit in half of what the image's
buffers leave of the memory available (``MemAvailable``, or the cgroup's limit when lower): larger tiles
waste less on overlaps, and batches keep every core busy between tiles.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

from ..errors import ScaoedError
from ..isolate.memory import available_mb

#: Resident memory per pixel of one image run whole, the process's baseline included: K = 5 at 512 x 512 peaked
#: at 1050 MB on the CPU (benchmarks/results/cpu_512.md), about 4 KB a pixel (serve sizes requests with it).
BYTES_PER_PIXEL = 4096
#: Activations per tile pixel in flight (650 measured, K = 5) and the image's own buffers per pixel (60).
TILE_BYTES_PER_PIXEL = 1024
IMAGE_BYTES_PER_PIXEL = 90
TILES = (1024, 768, 512, 384, 256, 128, 64)
BATCHES = (4, 2, 1)


@dataclass(frozen=True)
class TileChoice:
    tile: int
    tile_batch: int
    available_mb: float
    tiles_mb: float  # what the chosen tiles' activations are expected to take

    def to_dict(self) -> dict:
        return asdict(self)


def available_memory() -> int | None:
    """Bytes this process can still take: MemAvailable, or the room under its cgroup or RLIMIT_AS when lower."""
    mb, _ = available_mb()
    return None if mb == float("inf") else int(mb * 2**20)


def auto_tile(h: int, w: int, overlap: int, available: int, max_batch: int | None = None) -> TileChoice:
    """The largest tile (then batch) for an H x W image whose activations fit in half the memory the image's own
    buffers leave; one clear error when even the smallest does not fit."""
    budget = (available - h * w * IMAGE_BYTES_PER_PIXEL) / 2
    for tile in TILES:
        if tile <= 2 * overlap:
            continue
        th, tw = min(tile, h), min(tile, w)
        for batch in BATCHES if (th, tw) != (h, w) else (1,):  # a whole image is one run
            if max_batch and batch > max_batch:
                continue
            need = batch * th * tw * TILE_BYTES_PER_PIXEL
            if need <= budget:
                return TileChoice(tile, batch, round(available / 2**20), round(need / 2**20))
    raise ScaoedError(
        f"not enough memory for a {w}x{h} image: {available / 2**20:.0f} MB available, "
        f"{h * w * IMAGE_BYTES_PER_PIXEL / 2**20:.0f} MB for the image's own buffers and "
        f"{TILES[-1] ** 2 * TILE_BYTES_PER_PIXEL / 2**20:.0f} MB for the smallest tile"
    )
