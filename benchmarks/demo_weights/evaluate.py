"""Evaluate demo weights: SIDD PSNR/SSIM per crop for K = 1..5, fp16-storage parity, RNI15 contact sheet.

    python benchmarks/demo_weights/evaluate.py [--weights W.safetensors] [--fp32 W_fp32.safetensors]

Writes results.json, results.md and rni15_contact_sheet.png beside this file. The
SIDD crops are only evaluated here, never trained on. Metrics are the paper's:
8-bit output, scikit-image PSNR and Gaussian-weighted SSIM.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np
import torch

from scaoed_deploy.checkpoint import read_checkpoint
from scaoed_deploy.data import load_samples, shared_data_dir
from scaoed_deploy.images import read_image, to_uint8
from scaoed_deploy.quality import psnr_ssim
from scaoed_deploy.runtime import Denoiser, TorchRunner
from scaoed_deploy.util.files import atomic_path
from scaoed_deploy.weights import DEMO_PATH

HERE = Path(__file__).parent
RNI15_PICKS = ["Audrey_Hepburn.jpg", "Bears.png", "Dog.png", "Flowers.png", "Postcards.png"]


def sidd_scores(weights, stages: int, samples, ensemble: bool = False) -> list[dict]:
    denoiser = Denoiser(TorchRunner(weights, stages=stages, device="cpu"), ensemble=ensemble)
    rows = []
    for s in samples:
        out = np.clip(denoiser.denoise_array(s.noisy.transpose(1, 2, 0)), 0, 1)
        clean = to_uint8(s.clean.transpose(1, 2, 0))
        p_in, s_in = psnr_ssim(to_uint8(s.noisy.transpose(1, 2, 0)), clean)
        p, ss = psnr_ssim(to_uint8(out), clean)
        rows.append({"image": s.name, "psnr_in": p_in, "ssim_in": s_in, "psnr": p, "ssim": ss})
    return rows


def contact_sheet(weights, stages: int, rni15: Path, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    denoiser = Denoiser(TorchRunner(weights, stages=stages, device="cpu"))
    picks = [rni15 / n for n in RNI15_PICKS if (rni15 / n).is_file()]
    fig, axes = plt.subplots(len(picks), 2, figsize=(8, 4 * len(picks)), dpi=100)
    for row, p in zip(np.atleast_2d(axes), picks):
        img = read_image(p)
        h, w = img.height, img.width
        top, left = max(0, (h - 256) // 2), max(0, (w - 256) // 2)
        crop = img.rgb[top : top + 256, left : left + 256]
        out = np.clip(denoiser.denoise_array(crop), 0, 1)
        for ax, im, title in zip(row, (crop, out), (f"{p.name} (real noise)", f"denoised, K={stages}")):
            ax.imshow(im if not img.gray else im.mean(axis=2), cmap="gray" if img.gray else None, vmin=0, vmax=1)
            ax.set_title(title, fontsize=10)
            ax.axis("off")
    fig.suptitle("RNI15: noisy beside denoised (scaoed-deploy demo weights, 256 px centre crops)", fontsize=10)
    fig.tight_layout(rect=(0, 0, 1, 0.985))
    with atomic_path(path) as tmp:
        fig.savefig(tmp, format="png")
    plt.close(fig)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--weights", default=str(DEMO_PATH))
    ap.add_argument("--fp32", default=None, help="the same weights in float32, to check fp16 storage")
    ap.add_argument("--stages", default="1,2,3,4,5")
    ap.add_argument(
        "--ensemble", action="store_true", help="also the x8 self-ensemble (denoise --ensemble) at the best K"
    )
    args = ap.parse_args()
    torch.set_num_threads(2)
    shared = shared_data_dir()
    if shared is None:
        print("../shared/data is absent", file=sys.stderr)
        return 1
    weights = read_checkpoint(args.weights)
    samples = load_samples(shared / "sidd")
    results = {
        "command": "python " + " ".join(sys.argv),
        "weights": Path(args.weights).name,
        "weights_sha256": weights.identity,
        "trained_stages": weights.stages,
        "by_stages": {},
    }
    for k in [int(v) for v in args.stages.split(",")]:
        t = time.perf_counter()
        rows = sidd_scores(weights, k, samples)
        results["by_stages"][k] = {
            "rows": rows,
            "mean_psnr": float(np.mean([r["psnr"] for r in rows])),
            "mean_ssim": float(np.mean([r["ssim"] for r in rows])),
            "seconds": round(time.perf_counter() - t, 1),
        }
        print(
            f"K={k}: mean PSNR {results['by_stages'][k]['mean_psnr']:.2f} dB, "
            f"SSIM {results['by_stages'][k]['mean_ssim']:.4f}",
            flush=True,
        )
    best = max(results["by_stages"], key=lambda k: results["by_stages"][k]["mean_psnr"])
    results["best_stages"] = best
    if args.ensemble:
        rows = sidd_scores(weights, best, samples, ensemble=True)
        results["ensemble"] = {
            "stages": best,
            "rows": rows,
            "mean_psnr": float(np.mean([r["psnr"] for r in rows])),
            "mean_ssim": float(np.mean([r["ssim"] for r in rows])),
        }
        print(f"K={best} x8 self-ensemble: mean PSNR {results['ensemble']['mean_psnr']:.2f} dB", flush=True)
    if args.fp32:
        ref = sidd_scores(read_checkpoint(args.fp32), weights.stages, samples)
        ours = results["by_stages"].get(weights.stages, {}).get("rows") or sidd_scores(weights, weights.stages, samples)
        results["fp16_storage"] = {
            "stages": weights.stages,
            "mean_psnr_fp32": float(np.mean([r["psnr"] for r in ref])),
            "mean_psnr_fp16_storage": float(np.mean([r["psnr"] for r in ours])),
            "max_abs_dpsnr": float(max(abs(a["psnr"] - b["psnr"]) for a, b in zip(ref, ours))),
        }
    with atomic_path(HERE / "results.json") as tmp:
        tmp.write_text(json.dumps(results, indent=2) + "\n")
    lines = [
        "# Demo weights on the 4 SIDD crops (real noise)",
        "",
        f"Command: `{results['command']}`",
        "",
        "| K | " + " | ".join(s.name for s in samples) + " | mean PSNR | mean SSIM |",
        "|---|" + "---:|" * (len(samples) + 2),
    ]
    noisy_row = "| noisy | " + " | ".join(
        f"{r['psnr_in']:.2f} / {r['ssim_in']:.4f}" for r in next(iter(results["by_stages"].values()))["rows"]
    )
    noisy_mean = np.mean([r["psnr_in"] for r in next(iter(results["by_stages"].values()))["rows"]])
    lines.append(noisy_row + f" | {noisy_mean:.2f} | |")
    for k, v in results["by_stages"].items():
        cells = " | ".join(f"{r['psnr']:.2f} / {r['ssim']:.4f}" for r in v["rows"])
        lines.append(f"| {k} | {cells} | **{v['mean_psnr']:.2f}** | {v['mean_ssim']:.4f} |")
    if "ensemble" in results:
        v = results["ensemble"]
        cells = " | ".join(f"{r['psnr']:.2f} / {r['ssim']:.4f}" for r in v["rows"])
        lines.append(f"| {v['stages']}, x8 ensemble | {cells} | **{v['mean_psnr']:.2f}** | {v['mean_ssim']:.4f} |")
    lines += ["", "Cells: PSNR (dB) / SSIM, 8-bit output, scikit-image PSNR and Gaussian SSIM.", ""]
    if "fp16_storage" in results:
        f = results["fp16_storage"]
        lines += [
            f"fp16 storage: K={f['stages']} mean PSNR {f['mean_psnr_fp16_storage']:.3f} dB vs "
            f"{f['mean_psnr_fp32']:.3f} dB with float32 weights (max per-crop |dPSNR| {f['max_abs_dpsnr']:.4f} dB)",
            "",
        ]
    with atomic_path(HERE / "results.md") as tmp:
        tmp.write_text("\n".join(lines))
    contact_sheet(weights, best, shared / "RNI15", HERE / "rni15_contact_sheet.png")
    print(f"best K = {best}; wrote results.json, results.md, rni15_contact_sheet.png under {HERE}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
