"""Fine-tune demo weights so that every K from 1 to 5 denoises (CPU, bf16).

    python benchmarks/demo_weights/finetune.py INIT.safetensors OUT.safetensors [--steps N] [--patch P]
        [--batch B] [--threads T] [--lr LR] [--seed S] [--noise v1|v2|ccm|tone]

K is drawn per batch from 1..5 (the modules are shared across stages, but weights trained at one K
did not transfer to the others). Same data as train.py, noise from scaoed_deploy.noise's defaults;
the SIDD crops are only reported on (--val), never trained on. Equivalent CLI:

    scaoed-deploy train --clean ../shared/data/CBSD68,../shared/data/McMaster --val ../shared/data/sidd \\
        --init INIT.safetensors --stages 5 --stage-choices 1,2,3,4,5 --steps N --patch P --batch B \\
        --lr LR --amp bf16 -o OUT

Runs recorded in README.md here: run 2 (--threads 1 --noise v1, on run 1's weights), run 3 (--noise v2,
the defaults: Malvar-He-Cutler demosaic, read noise tied to shot noise, on run 2's weights), and two
experiments on run 3's weights that were stopped and not shipped (--noise ccm, --noise tone, --seed 2).
"""

from __future__ import annotations

import argparse
import json
import sys

import torch

from scaoed_deploy.data import shared_data_dir
from scaoed_deploy.train import TrainConfig, train


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("init")
    ap.add_argument("out")
    ap.add_argument("--steps", type=int, default=1200)
    ap.add_argument("--patch", type=int, default=64)
    ap.add_argument("--batch", type=int, default=8)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--lr", type=float, default=2e-4)
    ap.add_argument("--val-every", type=int, default=200)
    ap.add_argument("--seed", type=int, default=1)
    ap.add_argument(
        "--noise",
        choices=["v1", "v2", "ccm", "tone"],
        default="v2",
        help="v1: run 2's noise; v2: run 3's (the defaults); ccm, tone: the experiments (train.NOISE_*)",
    )
    args = ap.parse_args()
    shared = shared_data_dir()
    torch.set_num_threads(args.threads)
    cfg = TrainConfig(
        clean=[str(shared / "CBSD68"), str(shared / "McMaster")],
        stages=5,
        blocks=16,
        patch=args.patch,
        batch=args.batch,
        steps=args.steps,
        lr=args.lr,
        seed=args.seed,
        val_every=args.val_every,
        save_every=50,
        val_images=4,
        val=str(shared / "sidd"),
        amp="bf16",
        init=args.init,
        stage_choices=[1, 2, 3, 4, 5],
    )

    def report(d):
        if d["step"] % 25 == 0 or "val_psnr_synthetic" in d:
            print(json.dumps(d), flush=True)

    import train as recorded  # benchmarks/demo_weights/train.py, beside this file

    cfg.noise = dict(getattr(recorded, f"NOISE_{args.noise.upper()}"))
    train(cfg, args.out, report=report)
    return 0


if __name__ == "__main__":
    sys.exit(main())
