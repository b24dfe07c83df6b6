"""Reproduce the demo weights' training run exactly as it happened (CPU, 2 threads).

    python benchmarks/demo_weights/train.py OUT.safetensors

Phases (each resumes the last, the way the run was actually made):
  1. float32, cosine schedule over 3000 steps, to step 1000;
  2. bf16 autocast (1.4x faster on this CPU), the schedule stretched to 5000 steps, to step 1550;
  3. bf16, the schedule shortened to 4500 steps (to end inside the session), to step 4500.
Data: the clean CBSD68 and McMaster images (4 held out for synthetic validation); the SIDD
crops are only reported on (--val), never trained on. Noise: v1 (NOISE_V1 below), the
defaults of scaoed_deploy.noise when this run was made; they have changed since (README.md).
"""

from __future__ import annotations

import json
import sys

import torch

from scaoed_deploy.data import shared_data_dir
from scaoed_deploy.train import TrainConfig, state_path, train

# scaoed_deploy.noise.NoiseConfig's defaults for runs 1 and 2 (noise v1).
NOISE_V1 = {
    "shot": (1e-3, 8e-2),
    "read": (1e-5, 1e-2),
    "wb_red": (1.5, 2.5),
    "wb_blue": (1.3, 2.2),
    "mosaic_prob": 0.7,
    "mhc_prob": 0.0,
    "cross_channel": (0.2, 0.7),
    "jpeg_prob": 0.25,
    "jpeg_quality": (70, 95),
    "ccm_prob": 0.0,
    "tone_prob": 0.0,
}
# Run 3's noise (v2: Malvar-He-Cutler demosaic, read noise tied to shot noise), still the defaults.
NOISE_V2 = {
    "shot": (2e-3, 5e-2),
    "read": None,
    "read_fit": (2.18, 1.20, 0.26),
    "wb_red": (1.5, 2.5),
    "wb_blue": (1.3, 2.2),
    "mosaic_prob": 0.75,
    "mhc_prob": 0.8,
    "cross_channel": (0.0, 0.5),
    "jpeg_prob": 0.2,
    "jpeg_quality": (70, 95),
    "ccm_prob": 0.0,
    "tone_prob": 0.0,
}
# The two noise models tried after run 3 and not shipped (README.md here): v2 plus colour correction, or plus
# steeper tone curves, each with less channel mixing.
NOISE_CCM = {**NOISE_V2, "cross_channel": (0.0, 0.25), "ccm_prob": 0.8, "ccm_strength": (0.0, 1.0)}
NOISE_TONE = {**NOISE_V2, "cross_channel": (0.0, 0.25), "tone_prob": 0.75, "tone_gamma": (2.2, 3.2)}
PHASES = [(3000, 1000, "none"), (5000, 1550, "bf16"), (4500, 4500, "bf16")]


class _StopAt(Exception):
    pass


def main() -> int:
    out = sys.argv[1]
    shared = shared_data_dir()
    torch.set_num_threads(2)
    resume = None
    for schedule, stop, amp in PHASES:
        cfg = TrainConfig(
            clean=[str(shared / "CBSD68"), str(shared / "McMaster")],
            stages=2,
            blocks=16,
            patch=64,
            batch=8,
            steps=schedule,
            lr=4e-4,
            seed=0,
            val_every=250,
            save_every=50,
            val_images=4,
            val=str(shared / "sidd"),
            amp=amp,
            noise=dict(NOISE_V1),
        )

        def report(d, stop=stop):
            if d["step"] % 50 == 0 or "val_psnr_synthetic" in d:
                print(json.dumps(d), flush=True)
            if d["step"] == stop + 1:  # the state saved at `stop` is where the real run was resumed from
                raise _StopAt

        try:
            train(cfg, out, resume=resume, report=report)
        except _StopAt:
            pass
        resume = state_path(out)
    return 0


if __name__ == "__main__":
    sys.exit(main())
