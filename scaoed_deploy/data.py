"""Where the shared evaluation data is found, and loading real noisy (and clean) images from it."""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from .images import list_images, read_image

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


def is_evaluation_data(folder: str | Path) -> bool:
    """The SIDD crops (or a folder inside them): the only real-noise ground truth, kept for evaluation."""
    folder = Path(folder).resolve()
    return folder.name == "sidd" or folder.parent.name == "sidd" or (folder / "noisy" / "44.png").is_file()


@dataclass
class Sample:
    name: str
    noisy: np.ndarray  # float32 (3, H, W) in [0, 1]
    clean: np.ndarray | None = None  # same, when a clean reference exists


def load_samples(folder: str | Path) -> list[Sample]:
    """Images of ``folder/noisy`` (or ``folder`` itself), with ``folder/clean/<same name>`` when present."""
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


def probe_inputs(static_hw: tuple[int, int] | None, batch: int | None, shapes: int = 2, seed: int = 0):
    """(name, NCHW float32) inputs for checking an artifact: random images at ``shapes`` sizes (batch 1 and 2
    where the batch is dynamic), a black image (every u_ini channel constant: NFAE's 0/0 case) and a flat gray one.
    """
    rng = np.random.default_rng(seed)
    if static_hw:
        sizes = [(batch or 1, 3, *static_hw)] * shapes
    else:
        sizes = [(batch or 1, 3, 64, 64), (batch or 2, 3, 48, 80), (batch or 1, 3, 96, 128)][:shapes]
    cases = [(f"random #{i + 1}", rng.random(s, dtype=np.float32)) for i, s in enumerate(sizes)]
    cases.append(("black image", np.zeros(sizes[0], np.float32)))
    cases.append(("flat gray image", np.full(sizes[0], 0.5, np.float32)))
    return cases


def real_inputs(data_dir: str | Path | None, static_hw: tuple[int, int] | None, batch: int | None):
    """([(sample, NCHW batch)], notes): real noisy images fitted to the artifact's shape."""
    notes: list[str] = []
    out = []
    samples = load_samples(data_dir) if data_dir else []
    if data_dir and not samples:
        notes.append(f"no images in {data_dir}")
    for s in samples:
        x = fit_to_shape(s.noisy, static_hw)
        if x is None:
            notes.append(f"{s.name}: smaller than the static shape {static_hw[0]}x{static_hw[1]}, skipped")
            continue
        out.append((s, np.repeat(x[None], batch or 1, axis=0)))
    return out, notes
