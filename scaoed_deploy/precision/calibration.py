"""Calibration inputs for precision conversion: real noisy images, never the evaluation pairs.

Default set (``calibration_set()``): crops of the RNI15 real noisy photos plus
synthetic-camera-noise crops of the clean CBSD68 and McMaster images (the
training noise model), at several sizes, seeded. Folders given with ``--calib``
replace it: each folder's images are used as they are (real noisy images), or,
for a folder of clean images marked ``clean:DIR``, with synthetic noise.

The SIDD crops are refused: they are the only real-noise ground truth and
stay for evaluation (parity reports its task figures on them).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np

from ..artifact import read_metadata
from ..cost import model_footprint
from ..data import is_evaluation_data, shared_data_dir
from ..errors import ScaoedError
from ..images import list_images, read_image
from ..isolate.memory import check_fits
from ..noise import synthesize

DEFAULT_SIZES = (96, 128, 160)


@dataclass
class CalibSample:
    name: str
    x: np.ndarray  # (1, 3, H, W) float32 in [0, 1]


MIN_SIZE = 16


def _crop(chw: np.ndarray, size: int, rng: np.random.Generator) -> np.ndarray | None:
    """A random size x size crop; images smaller than that give their largest even square."""
    h, w = chw.shape[1:]
    size = min(size, h // 2 * 2, w // 2 * 2)
    if size < MIN_SIZE:
        return None
    top, left = rng.integers(0, h - size + 1), rng.integers(0, w - size + 1)
    return np.ascontiguousarray(chw[:, top : top + size, left : left + size])


def _image_files(folder: Path) -> list[Path]:
    if not folder.is_dir():
        raise ScaoedError(f"calibration folder not found: {folder}")
    if is_evaluation_data(folder):
        raise ScaoedError(f"{folder}: the SIDD crops are evaluation data; calibrate on other real noisy images")
    files = list_images(folder / "noisy" if (folder / "noisy").is_dir() else folder)
    if not files:
        raise ScaoedError(f"no images in calibration folder {folder}")
    return files


def _images(folder: Path) -> list[tuple[str, np.ndarray]]:
    return [(p.stem, read_image(p).rgb.transpose(2, 0, 1).astype(np.float32)) for p in _image_files(folder)]


def _folders(sources: list[str]) -> list[tuple[Path, bool]]:
    return [(Path(s[len("clean:") :]), True) if s.startswith("clean:") else (Path(s), False) for s in sources]


def check_sources(sources: list[str] | None = None) -> None:
    """Raise what ``calibration_set`` would about its folders (missing, empty, evaluation data), before
    any slow step runs: ``build-engine --int8`` checks its sources before exporting."""
    for folder, _ in _folders(sources or default_sources()):
        _image_files(folder)


def _with_noise(chw: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    import torch

    gen = torch.Generator().manual_seed(int(rng.integers(2**31)))
    return synthesize(torch.from_numpy(chw[None].copy()), gen)[0].numpy()


def default_sources() -> list[str]:
    """``RNI15`` (real noise) and ``clean:CBSD68``, ``clean:McMaster`` from ../shared/data."""
    shared = shared_data_dir()
    if shared is None:
        raise ScaoedError("no calibration data: ../shared/data is absent; pass --calib DIR (real noisy images)")
    return [str(shared / "RNI15"), f"clean:{shared / 'CBSD68'}", f"clean:{shared / 'McMaster'}"]


def calibration_set(
    sources: list[str] | None = None, count: int = 32, sizes: tuple[int, ...] = DEFAULT_SIZES, seed: int = 0
) -> list[CalibSample]:
    """``count`` crops spread over the sources (half real noise, half synthetic, by default), sizes cycling."""
    sources = sources or default_sources()
    rng = np.random.default_rng(seed)
    pools = []
    for folder, clean in _folders(sources):
        pools.append((folder.name, clean, _images(folder)))
    out: list[CalibSample] = []
    attempts = 0
    while len(out) < count:
        attempts += 1
        if attempts > 20 * count:
            raise ScaoedError(f"calibration images must be at least {MIN_SIZE}x{MIN_SIZE} pixels")
        label, clean, images = pools[len(out) % len(pools)]
        name, chw = images[int(rng.integers(len(images)))]
        size = sizes[len(out) % len(sizes)]
        crop = _crop(chw, size, rng)
        if crop is None:
            continue
        x = _with_noise(crop, rng) if clean else crop
        out.append(CalibSample(f"{label}/{name}@{x.shape[1]}{' +noise' if clean else ''}", x[None].astype(np.float32)))
    return out


def describe(samples: list[CalibSample]) -> dict:
    sizes = sorted({s.x.shape[2] for s in samples})
    sources = sorted(
        {s.name.split("/")[0] + (" (synthetic noise)" if s.name.endswith("+noise") else "") for s in samples}
    )
    return {"count": len(samples), "sizes": sizes, "sources": sources}


def common_shape(calib: list[CalibSample]) -> list[CalibSample]:
    """The samples of the most common size (tools that batch calibration data need one shape)."""
    sizes = [c.x.shape[2:] for c in calib]
    common = max(set(sizes), key=sizes.count)
    return [c for c in calib if c.x.shape[2:] == common]


#: The crop the runs that hold every tensor of the graph use: the islands' reference run (the largest value of
#: each tensor), and the INT8 rounds' per-tensor sensitivity (two graphs at once). At K = 5 every tensor of a
#: 160 px crop is 2.8 GB, of a 96 px one 1 GB.
SENSITIVITY_SIDE = 96
#: What a calibration step's process holds besides the tensors (the runtime, the graph, the crops).
STEP_BASE_MB = 400


def sensitivity_input(x: np.ndarray, side: int = SENSITIVITY_SIDE) -> np.ndarray:
    """The centre of a (1, 3, H, W) crop, at most ``side`` square (even): enough to rank the convolutions."""
    h, w = x.shape[2:]
    sh, sw = min(h, side) // 2 * 2, min(w, side) // 2 * 2
    top, left = (h - sh) // 2, (w - sw) // 2
    return np.ascontiguousarray(x[:, :, top : top + sh, left : left + sw])


def check_calibration_memory(
    step: str, model_path, calib: list[CalibSample], per_crop: float, common_batch: int = 1
) -> float:
    """Refuse, before it starts, a calibration step that would not fit in the memory this machine has free: it
    holds ``per_crop`` times every tensor of the model on its largest crop (or ``common_batch`` crops of the
    most common size at once), and two graphs' tensors on the sensitivity crop. Returns the need in MB."""
    meta = read_metadata(model_path)
    k, t = int(meta.get("stages", 5)), int(meta.get("blocks", 16))
    h, w = max((c.x.shape[2], c.x.shape[3]) for c in calib)
    common = common_shape(calib)[0].x.shape[2:]
    per = model_footprint(k, t, h, w).all_tensors_mb
    need = STEP_BASE_MB + max(
        per_crop * per,
        common_batch * model_footprint(k, t, *common).all_tensors_mb,
        2 * model_footprint(k, t, SENSITIVITY_SIDE, SENSITIVITY_SIDE).all_tensors_mb,
    )
    check_fits(
        step,
        need,
        f"it holds every tensor of a {h}x{w} crop at once (about {per:.0f} MB at K={k}, T={t}); "
        "free memory, or use fewer --stages",
    )
    return need
