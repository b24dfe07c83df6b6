"""Where the shared evaluation data is found, and loading real noisy crops from it."""

from __future__ import annotations

import os
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


def noisy_images(folder: str | Path) -> list[tuple[str, np.ndarray]]:
    """(name, float32 (3, H, W) in [0, 1]) for each image in ``folder/noisy`` (or ``folder`` itself)."""
    from .images import list_images, read_image

    folder = Path(folder)
    noisy = folder / "noisy" if (folder / "noisy").is_dir() else folder
    return [(p.stem, read_image(p).rgb.transpose(2, 0, 1).copy()) for p in list_images(noisy)]
