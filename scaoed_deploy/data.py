"""Where the shared evaluation data is found, and loading real noisy (and clean) images from it."""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np

_PACKAGE_ROOT = Path(__file__).resolve().parents[1]


def shared_data_dir() -> Path | None:
    """``$SCAOED_SHARED_DATA``, else ``../shared/data`` beside the working directory or the checkout."""
    candidates = []
    if os.environ.get("SCAOED_SHARED_DATA"):
        candidates.append(Path(os.environ["SCAOED_SHARED_DATA"]))
    candidates += [Path.cwd().parent / "shared" / "data", _PACKAGE_ROOT.parent / "shared" / "data"]
    return next((c for c in candidates if c.is_dir()), None)


def default_sidd_dir() -> Path | None:
    """The SIDD crops (``noisy/`` and ``clean/``), when ../shared/data is present."""
    shared = shared_data_dir()
    sidd = shared / "sidd" if shared else None
    return sidd if sidd and (sidd / "noisy").is_dir() else None


@dataclass
class Sample:
    name: str
    noisy: np.ndarray  # float32 (3, H, W) in [0, 1]
    clean: np.ndarray | None = None  # same, when a clean reference exists


def load_samples(folder: str | Path) -> list[Sample]:
    """Images of ``folder/noisy`` (or ``folder`` itself), with ``folder/clean/<same name>`` when present."""
    from .images import list_images, read_image

    folder = Path(folder)
    noisy_dir = folder / "noisy" if (folder / "noisy").is_dir() else folder
    clean_dir = folder / "clean"
    samples = []
    for p in list_images(noisy_dir):
        clean_path = clean_dir / p.name
        clean = read_image(clean_path).rgb.transpose(2, 0, 1).copy() if clean_path.is_file() else None
        samples.append(Sample(p.stem, read_image(p).rgb.transpose(2, 0, 1).copy(), clean))
    return samples


def fit_to_shape(chw: np.ndarray, static_hw: tuple[int, int] | None) -> np.ndarray | None:
    """Centre-crop to a static shape (None if the image is smaller), or to even sizes for dynamic ones."""
    h, w = chw.shape[1:]
    if static_hw:
        th, tw = static_hw
        if h < th or w < tw:
            return None
    else:
        th, tw = h // 2 * 2, w // 2 * 2
    top, left = (h - th) // 2, (w - tw) // 2
    return np.ascontiguousarray(chw[:, top : top + th, left : left + tw])
