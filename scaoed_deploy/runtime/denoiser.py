"""The Denoiser: image in, image out, through any artifact, at any size.

A runner is anything callable on a float32 NCHW batch in [0, 1] (H and W even)
that returns the model's float32 NCHW output: one from the backend registry
(``registry.open_runner`` picks it from the model file and ``backend``), or any
function for tests.

Large images are denoised in overlapping tiles, batched, and blended with a
smooth (raised-cosine) ramp across each overlap, so there are no seams: every
output pixel is the weighted mean of the tiles that cover it. Tiling starts when
the image exceeds ``tile`` or the artifact's largest profile shape; images
smaller than an engine's smallest profile shape are padded up and cropped back.
The accumulators are float32 (H x W x 3 plus H x W weights) and only
``tile_batch`` tiles run at a time, which bounds peak memory.

``ensemble=True`` is the paper's self-ensemble (its dagger results): the 8
flips/rotations, each denoised and transformed back, averaged.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from ..errors import ImageError, ScaoedError, UsageError
from ..images import Image, read_image, to_uint8, write_image
from ..isolate.memory import peak_of
from ..quality import psnr_ssim
from ..storage import is_url, local_copy, staged_output
from .base import Limits, RunOptions
from .registry import open_runner
from .tiling import auto_tile, available_memory

DEFAULT_TILE = 512
DEFAULT_OVERLAP = 32


def pad_even(x: torch.Tensor) -> tuple[torch.Tensor, tuple[int, int]]:
    """Replicate-pad H and W on the bottom/right up to even sizes (the model needs even)."""
    h, w = x.shape[-2:]
    ph, pw = h % 2, w % 2
    if ph or pw:
        x = F.pad(x, (0, pw, 0, ph), mode="replicate")
    return x, (h, w)


def _ramp(n: int, overlap: int, start: bool, end: bool) -> np.ndarray:
    """1-D blending weights: a raised-cosine ramp over ``overlap`` pixels at the ends that meet another tile."""
    w = np.ones(n, np.float32)
    if overlap > 0:
        r = np.sin(0.5 * math.pi * (np.arange(overlap) + 0.5) / overlap).astype(np.float32) ** 2
        if start:
            w[:overlap] = r
        if end:
            w[n - overlap :] = np.minimum(w[n - overlap :], r[::-1])
    return w


def tile_starts(size: int, tile: int, overlap: int) -> list[int]:
    """Tile origins along one axis: stride tile - overlap, the last tile flush with the end."""
    if size <= tile:
        return [0]
    stride = tile - overlap
    starts = list(range(0, size - tile, stride)) + [size - tile]
    return sorted(set(starts))


@dataclass(frozen=True)
class DenoiseOptions:
    """One denoise job's options, built once (by the CLI) and passed whole: to ``Denoiser.from_options``, to a
    cluster run and to each of its workers. ``model`` None: the demo weights."""

    model: str | None = None
    backend: str | None = None
    stages: int | None = None
    device: str = "auto"
    threads: int | None = None
    allow_unverified: bool = False
    allow_cpu_fallback: bool = False  # a package without this CPU's class: its nearest lower class's choice
    tile: int | str | None = DEFAULT_TILE
    overlap: int = DEFAULT_OVERLAP
    tile_batch: int = 4
    ensemble: bool = False
    bit_depth: int | None = None  # of the outputs (None: each input's own)

    def check(self) -> None:
        """The tiling options' usage errors, before any model loads."""
        Denoiser.check_options(self.tile, self.overlap, self.tile_batch)


class Denoiser:
    """Denoise images of any size with a runner (see the module doc)."""

    def __init__(
        self,
        runner,
        tile: int | str | None = DEFAULT_TILE,
        overlap: int = DEFAULT_OVERLAP,
        tile_batch: int = 4,
        ensemble: bool = False,
        limits: Limits | None = None,
        description: str | None = None,
    ):
        """``tile="auto"``: the tile and tile batch are chosen per image from the memory available
        (``tiling.auto_tile``); ``tile_choice`` then says what was chosen for the last image."""
        self.auto = tile == "auto"
        tile = None if self.auto else tile
        self.check_options(tile, overlap, tile_batch)
        self.runner, self.tile, self.overlap, self.tile_batch = runner, tile, overlap, tile_batch
        self.tile_choice = None
        self.on_tiles = None  # on_tiles(done, total) after each batch of tiles: progress within one large image
        self.ensemble = ensemble
        self.limits = limits or getattr(runner, "limits", None) or Limits()
        self.description = description if description is not None else getattr(runner, "description", "")
        if self.limits.batch:
            self.tile_batch = self.limits.batch
        elif self.limits.max_batch:
            self.tile_batch = min(self.tile_batch, self.limits.max_batch)

    @staticmethod
    def check_options(tile: int | None, overlap: int, tile_batch: int) -> None:
        """Refuse tiling options that do not fit together (a usage error), before any model loads."""
        tile = None if tile == "auto" else tile  # auto: chosen per image, within the same rules
        if tile is not None and (tile < 16 or tile % 2):
            raise UsageError(f"--tile must be even and at least 16, got {tile}")
        if overlap < 0 or (tile is not None and overlap * 2 >= tile):
            limit = f" (at most {(tile - 1) // 2} for --tile {tile})" if tile is not None else ""
            raise UsageError(f"--overlap must be at least 0 and less than half of --tile{limit}, got {overlap}")
        if tile_batch < 1:
            raise UsageError(f"--tile-batch must be at least 1, got {tile_batch}")

    @classmethod
    def open(
        cls,
        model: str | Path | None = None,
        backend: str | None = None,
        stages: int | None = None,
        device: str = "auto",
        threads: int | None = None,
        allow_unverified: bool = False,
        allow_cpu_fallback: bool = False,
        **options,
    ) -> Denoiser:
        """A Denoiser over a checkpoint, an .onnx file, an engine or an IR (None: the demo weights), or an optimize
        package (the choice of this CPU's class: ``fleet.pick``; ``allow_cpu_fallback``: the nearest lower class's
        where the package lacks this one); ``allow_unverified`` runs a file edited after its verification
        (refused otherwise)."""
        runner = open_runner(
            model,
            backend,
            RunOptions(
                stages=stages,
                device=device,
                threads=threads,
                allow_unverified=allow_unverified,
                allow_cpu_fallback=allow_cpu_fallback,
            ),
        )
        return cls(runner, **options)

    @classmethod
    def from_options(cls, o: DenoiseOptions) -> Denoiser:
        """``open`` with a job's options."""
        return cls.open(
            o.model,
            backend=o.backend,
            stages=o.stages,
            device=o.device,
            threads=o.threads,
            allow_unverified=o.allow_unverified,
            allow_cpu_fallback=o.allow_cpu_fallback,
            tile=o.tile,
            overlap=o.overlap,
            tile_batch=o.tile_batch,
            ensemble=o.ensemble,
        )

    def close(self) -> None:
        """Release the runner (its session or engine)."""
        close = getattr(self.runner, "close", None)
        if close is not None:
            close()

    def __enter__(self) -> Denoiser:
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    # ------------------------------------------------------------------ one pass
    def _tile_hw(self, h: int, w: int) -> tuple[int, int]:
        """The tile size for an (even) H x W image: ``tile``, capped by the artifact's max and the image."""
        if self.limits.min_hw and self.limits.min_hw == self.limits.max_hw:
            th, tw = self.limits.min_hw  # static shape: tiles are exactly it (_run pads up a smaller image)
        else:
            th = tw = self.tile or max(h, w)
            if self.limits.max_hw:
                th, tw = min(th, self.limits.max_hw[0]), min(tw, self.limits.max_hw[1])
        return min(th, h), min(tw, w)

    def choose_tile(self, h: int, w: int, available: int | None = None) -> None:
        """``tile="auto"``: set the tile and tile batch for an H x W image from the memory available."""
        available = available or available_memory()
        if available is None:  # no /proc: the defaults
            self.tile, self.tile_batch = DEFAULT_TILE, 4
            return
        max_batch = self.limits.batch or self.limits.max_batch
        self.tile_choice = auto_tile(h, w, self.overlap, available, max_batch)
        self.tile, self.tile_batch = self.tile_choice.tile, self.limits.batch or self.tile_choice.tile_batch

    def _run(self, batch: np.ndarray) -> np.ndarray:
        """Run, padding up to the artifact's minimum (or static) shape and batch, then cropping back."""
        n, _, h, w = batch.shape
        mh, mw = self.limits.min_hw or (h, w)
        ph, pw = max(0, mh - h), max(0, mw - w)
        x = batch
        if ph or pw:
            x = np.pad(x, ((0, 0), (0, 0), (0, ph), (0, pw)), mode="reflect" if ph < h and pw < w else "edge")
        if self.limits.batch and n < self.limits.batch:
            x = np.concatenate([x, np.repeat(x[-1:], self.limits.batch - n, axis=0)])
        return np.asarray(self.runner(np.ascontiguousarray(x, dtype=np.float32)))[:n, :, :h, :w]

    def _denoise_chw(self, x: np.ndarray) -> np.ndarray:
        """(3, H, W) with H, W even -> (3, H, W): whole, or tiled and blended."""
        _, h, w = x.shape
        if self.auto:
            self.choose_tile(h, w)
        th, tw = self._tile_hw(h, w)
        if (th, tw) == (h, w):
            return self._run(x[None])[0]
        out = np.zeros((3, h, w), np.float32)
        weight = np.zeros((h, w), np.float32)
        ys, xs = tile_starts(h, th, self.overlap), tile_starts(w, tw, self.overlap)
        boxes = [(y, x0) for y in ys for x0 in xs]
        for i in range(0, len(boxes), self.tile_batch):
            chunk = boxes[i : i + self.tile_batch]
            batch = np.stack([x[:, y : y + th, x0 : x0 + tw] for y, x0 in chunk])
            result = self._run(batch)
            if self.on_tiles is not None:
                self.on_tiles(i + len(chunk), len(boxes))
            for (y, x0), tile_out in zip(chunk, result):
                wy = _ramp(th, self.overlap, y > 0, y + th < h)
                wx = _ramp(tw, self.overlap, x0 > 0, x0 + tw < w)
                wt = wy[:, None] * wx[None, :]
                out[:, y : y + th, x0 : x0 + tw] += tile_out * wt
                weight[y : y + th, x0 : x0 + tw] += wt
        return out / weight

    # ------------------------------------------------------------------ public
    def denoise_array(self, rgb: np.ndarray) -> np.ndarray:
        """(H, W, 3) float in [0, 1] -> (H, W, 3) float, unclamped model output."""
        x = torch.from_numpy(np.ascontiguousarray(rgb.transpose(2, 0, 1), dtype=np.float32))[None]
        x, (h, w) = pad_even(x)
        chw = x[0].numpy()
        if not self.ensemble:
            return self._denoise_chw(chw)[:, :h, :w].transpose(1, 2, 0)
        acc = np.zeros_like(chw)
        for mode in range(8):
            acc += inverse_transform(self._denoise_chw(transform(chw, mode)), mode)
        return (acc / 8)[:, :h, :w].transpose(1, 2, 0)

    def denoise_image(self, image: Image) -> Image:
        return image.with_rgb(np.clip(self.denoise_array(image.rgb), 0.0, 1.0))


def transform(chw: np.ndarray, mode: int) -> np.ndarray:
    """Mode 0..7: rotate by 90 * (mode % 4) degrees, then flip left-right when mode >= 4."""
    y = np.rot90(chw, k=mode % 4, axes=(1, 2))
    return np.ascontiguousarray(y[:, :, ::-1] if mode >= 4 else y)


def inverse_transform(chw: np.ndarray, mode: int) -> np.ndarray:
    y = chw[:, :, ::-1] if mode >= 4 else chw
    return np.ascontiguousarray(np.rot90(y, k=-(mode % 4), axes=(1, 2)))


def denoise_file(
    denoiser: Denoiser,
    src: str | Path,
    dst: str | Path,
    reference: str | Path | None = None,
    bit_depth: int | None = None,
) -> dict:
    """Denoise one file; with ``reference``, also PSNR/SSIM of input and output against it. Everything that can
    fail (the input, the reference and its size, the model, the metrics) is done before the output is written,
    so a failed image leaves no output and a rerun redoes it."""
    peaks: dict = {}
    with peak_of("image", peaks):
        if not any(is_url(x) for x in (src, dst, reference)):
            result = _denoise_file(denoiser, src, dst, reference, bit_depth)
        else:  # object storage: local copies in, one object out once it is whole (storage/)
            with local_copy(src) as s, local_copy(reference) as r, staged_output(dst) as d:
                try:
                    result = _denoise_file(denoiser, s, d, r, bit_depth)
                except ScaoedError as e:  # name the object, not its temporary copy
                    raise type(e)(str(e).replace(str(s), str(src)).replace(str(r), str(reference))) from e
            result.update(input=str(src), output=str(dst), **({"reference": str(reference)} if reference else {}))
    result["peak_rss_mb"] = peaks["image"]  # this image's own peak: read, denoised, scored, written
    return result


def _denoise_file(denoiser: Denoiser, src, dst, reference, bit_depth: int | None) -> dict:
    image = read_image(src)
    ref_image = read_image(reference) if reference is not None else None
    if ref_image is not None and (ref_image.height, ref_image.width) != (image.height, image.width):
        raise ImageError(
            f"{reference}: the reference is {ref_image.width}x{ref_image.height}, the input {src} "
            f"{image.width}x{image.height}; nothing written"
        )
    out = denoiser.denoise_image(image)
    result = {"input": str(src), "height": image.height, "width": image.width, "bit_depth_in": image.bit_depth}
    if denoiser.tile_choice is not None:  # --tile auto: what this image was run with
        result["tile_choice"] = denoiser.tile_choice.to_dict()
    if ref_image is not None:
        # Compare what is written: grayscale images as their one gray channel.
        gray = image.gray and ref_image.gray

        def pixels(im):
            return to_uint8(im.rgb.mean(axis=2) if gray else im.rgb)

        ref = pixels(ref_image)
        psnr_in, ssim_in = psnr_ssim(pixels(image), ref)
        psnr_out, ssim_out = psnr_ssim(pixels(out), ref)
        result.update(reference=str(reference), psnr_in=psnr_in, ssim_in=ssim_in, psnr=psnr_out, ssim=ssim_out)
    written = write_image(dst, out, bit_depth=bit_depth)
    result.update(
        output=written["path"],
        bit_depth_out=written["bit_depth"],
        channels_out=written["channels"],
        metadata_kept=written["metadata"],
    )
    if image.warnings:  # what reading changed (a dropped profile, clipped samples): said, never silent
        result["warnings"] = list(image.warnings)
    return result
