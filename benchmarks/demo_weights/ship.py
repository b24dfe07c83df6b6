"""Ship trained weights as the package's demo weights (float16 storage, provenance with measured figures).

    python benchmarks/demo_weights/ship.py TRAINED.safetensors [--stages K]

K defaults to the best mean SIDD PSNR in results.json beside this file (from evaluate.py).
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import torch

from scaoed_deploy.checkpoint import read_checkpoint, save_safetensors
from scaoed_deploy.weights import DEMO_PATH

HERE = Path(__file__).parent


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("trained")
    ap.add_argument("--stages", type=int, default=None)
    args = ap.parse_args()
    w = read_checkpoint(args.trained)
    results = json.loads((HERE / "results.json").read_text()) if (HERE / "results.json").is_file() else {}
    by_k = results.get("by_stages", {})
    stages = args.stages or int(results.get("best_stages", w.stages))
    provenance = dict(w.provenance)
    provenance.update({
        "notice": "demo weights trained by scaoed-deploy on synthetic noise; not the paper's weights",
        "trained_from": Path(args.trained).name,
        "trained_sha256": w.sha256,
        "storage": "float16 (read back as float32)",
        "default_stages_chosen_by": "best mean PSNR on the 4 SIDD crops over K = 1..5 (evaluation only)",
        "sidd_mean_psnr_by_stages": {k: round(v["mean_psnr"], 3) for k, v in by_k.items()},
        "sidd_mean_ssim_by_stages": {k: round(v["mean_ssim"], 4) for k, v in by_k.items()},
    })
    provenance.pop("history", None)
    provenance.pop("amp", None)  # the state records the last phase only; the phases are below
    provenance["noise_model"] = ("Poisson-Gaussian in linear raw behind WB gains, Bayer mosaic/demosaic of the noise, "
                                 "cross-channel correlation, sRGB gamma, JPEG")
    provenance["training_phases"] = ("K=2: float32 to step 1000 (cosine over 3000); bf16 autocast to 1550 (over 5000); "
                                     "bf16 to 4500 (over 4500): benchmarks/demo_weights/train.py")
    if provenance.get("init"):  # a fine-tune on top of those weights
        provenance["training_phases"] += (
            f"; then fine-tuned from {provenance['init']} for {provenance.get('steps')} steps with K drawn per batch "
            f"from {provenance.get('stages_trained')}, bf16, peak lr {provenance.get('lr')} cosine: "
            "benchmarks/demo_weights/finetune.py")
        provenance["steps_detail"] = f"4500 at K=2, then {provenance['steps']} with K drawn from 1..5"
        provenance["steps"] = 4500 + int(provenance["steps"])
    provenance.pop("default_stages", None)  # the training run's validation K; the shipped default is below
    save_safetensors(w, DEMO_PATH, stages=stages, provenance=provenance, dtype=torch.float16)
    print(f"wrote {DEMO_PATH} ({DEMO_PATH.stat().st_size / 1e6:.1f} MB), default K={stages}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
