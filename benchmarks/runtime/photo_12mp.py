"""A 12 MP photo (4000 x 3000) through several models with the same tiling: time, peak memory, and how far each
output is from the first model's (eager fp32, the reference).

    python benchmarks/runtime/photo_12mp.py NAME MODEL [MODEL...] [--stages K] [--tile 512] [--tile-batch 4]

MODEL: ``torch`` (the demo weights, eager fp32) or an artifact file. Writes benchmarks/runtime/NAME.json.
The photo is large_photo.py's (a CBSD68 image upscaled, with the training noise model on top).
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))
from large_photo import synthetic_photo  # noqa: E402

from scaoed_deploy.bench import RssSampler, machine  # noqa: E402
from scaoed_deploy.images import read_image, to_uint8
from scaoed_deploy.quality import psnr_ssim
from scaoed_deploy.runtime.denoiser import Denoiser, denoise_file  # noqa: E402


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("name")
    ap.add_argument("models", nargs="+")
    ap.add_argument("--stages", type=int, default=None)
    ap.add_argument("--tile", type=int, default=512)
    ap.add_argument("--tile-batch", type=int, default=4)
    args = ap.parse_args()
    out = {
        "command": "python benchmarks/runtime/photo_12mp.py " + " ".join(sys.argv[1:]),
        "machine": machine(),
        "tile": args.tile,
        "overlap": 32,
        "tile_batch": args.tile_batch,
        "rows": [],
    }
    with tempfile.TemporaryDirectory() as tmp:
        photo = synthetic_photo(Path(tmp) / "photo.png")
        reference = None
        for i, model in enumerate(args.models):
            d = Denoiser.open(
                None if model == "torch" else model,
                stages=args.stages if model == "torch" else None,
                tile=args.tile,
                overlap=32,
                tile_batch=args.tile_batch,
            )
            dst = Path(tmp) / f"out{i}.png"
            base = RssSampler.rss()
            t0 = time.perf_counter()
            with d, RssSampler() as rss:
                denoise_file(d, photo, dst)
            seconds = time.perf_counter() - t0
            img = to_uint8(read_image(dst).rgb)
            reference = img if reference is None else reference
            row = {
                "model": model,
                "description": d.description,
                "seconds": round(seconds, 1),
                "rss_before_mb": round(base / 2**20),
                "rss_peak_mb": round(rss.peak / 2**20),
                "psnr_vs_first": None if img is reference else round(psnr_ssim(img, reference)[0], 2),
            }
            row["x_first"] = round(seconds / out["rows"][0]["seconds"], 3) if out["rows"] else 1.0
            out["rows"].append(row)
            print(json.dumps(row), file=sys.stderr, flush=True)
    path = Path(__file__).parent / f"{args.name}.json"
    path.write_text(json.dumps(out, indent=2) + "\n")
    print(json.dumps(out, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
