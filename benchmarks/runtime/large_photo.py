"""Peak memory and time of denoising a 4000 x 3000 photo on CPU with tiling; tiled vs whole agreement.

    python benchmarks/runtime/large_photo.py [MODEL] > benchmarks/runtime/results.json

MODEL: a checkpoint, .onnx or .engine (default: the demo weights on torch). The photo is a
CBSD68 image upscaled to 4000 x 3000 with the training noise model on top (synthetic, so the
run needs only ../shared/data). Peak memory is the process's resident set sampled every 5 ms
(scaoed_deploy.bench.RssSampler), before (baseline) and during the denoise.
"""

from __future__ import annotations

import json
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

from scaoed_deploy.bench import RssSampler, machine
from scaoed_deploy.data import default_sidd_dir, load_samples, shared_data_dir
from scaoed_deploy.images import Image, list_images, read_image, write_image
from scaoed_deploy.noise import synthesize
from scaoed_deploy.runtime.denoiser import Denoiser, denoise_file


def synthetic_photo(path: Path, height: int = 3000, width: int = 4000) -> Path:
    """A CBSD68 image upscaled to height x width with the training noise model on top, written to ``path``."""
    src = read_image(list_images(shared_data_dir() / "CBSD68")[0]).rgb
    big = torch.nn.functional.interpolate(
        torch.from_numpy(src.transpose(2, 0, 1).copy())[None], size=(height, width), mode="bicubic", align_corners=False
    ).clamp(0, 1)
    noisy = synthesize(big, torch.Generator().manual_seed(0))[0].numpy().transpose(1, 2, 0)
    write_image(path, Image(rgb=np.ascontiguousarray(noisy)))
    return path


def main() -> int:
    model = sys.argv[1] if len(sys.argv) > 1 else None
    torch.set_num_threads(2)
    out = {"command": "python benchmarks/runtime/large_photo.py" + (f" {model}" if model else ""), "machine": machine()}

    # Tiled vs whole on the real SIDD crops (256 x 256): 128-px tiles, 32-px overlap.
    whole = Denoiser.open(model, tile=None)
    tiled = Denoiser(whole.runner, tile=128, overlap=32, limits=whole.limits)
    rows = []
    for s in load_samples(default_sidd_dir()):
        rgb = s.noisy.transpose(1, 2, 0)
        a, b = whole.denoise_array(rgb), tiled.denoise_array(rgb)
        rows.append({"image": s.name, "max_abs": float(np.abs(a - b).max()), "mean_abs": float(np.abs(a - b).mean())})
    out["tiled_vs_whole_256px_tile128_overlap32"] = rows

    with tempfile.TemporaryDirectory() as tmp:
        path = synthetic_photo(Path(tmp) / "photo_4000x3000.png")
        for tile, batch in ((512, 1), (512, 4)):
            d = Denoiser(whole.runner, tile=tile, overlap=32, tile_batch=batch, limits=whole.limits)
            base = RssSampler.rss()
            t0 = time.perf_counter()
            with RssSampler() as rss:
                denoise_file(d, path, Path(tmp) / "out.png")
            out.setdefault("photo_4000x3000", []).append(
                {
                    "model": whole.description,
                    "tile": tile,
                    "overlap": 32,
                    "tile_batch": batch,
                    "seconds": round(time.perf_counter() - t0, 1),
                    "rss_before_mb": round(base / 2**20),
                    "rss_peak_mb": round(rss.peak / 2**20),
                    "added_mb": round((rss.peak - base) / 2**20),
                }
            )
            print(json.dumps(out["photo_4000x3000"][-1]), file=sys.stderr, flush=True)
    print(json.dumps(out, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
