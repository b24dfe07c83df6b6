"""Fine-tune the K=2 demo weights so that every K from 1 to 5 denoises (CPU, 1 thread, bf16).

    python benchmarks/demo_weights/finetune.py INIT.safetensors OUT.safetensors [STEPS]

K is drawn per batch from 1..5 (the modules are shared across stages, but weights trained at one K
did not transfer to the others). Same data and noise model as train.py; the SIDD crops are only
reported on (--val), never trained on. Equivalent CLI:

    scaoed-deploy train --clean ../shared/data/CBSD68,../shared/data/McMaster --val ../shared/data/sidd \
        --init INIT.safetensors --stages 2 --stage-choices 1,2,3,4,5 --steps 1200 --lr 2e-4 --amp bf16 -o OUT
"""

from __future__ import annotations

import json
import sys

import torch

from scaoed_deploy.data import shared_data_dir
from scaoed_deploy.train import TrainConfig, train


def main() -> int:
    init, out = sys.argv[1], sys.argv[2]
    steps = int(sys.argv[3]) if len(sys.argv) > 3 else 1200
    shared = shared_data_dir()
    torch.set_num_threads(1)
    cfg = TrainConfig(clean=[str(shared / "CBSD68"), str(shared / "McMaster")], stages=2, blocks=16, patch=64,
                      batch=8, steps=steps, lr=2e-4, seed=1, val_every=200, save_every=50, val_images=4,
                      val=str(shared / "sidd"), amp="bf16", init=init, stage_choices=[1, 2, 3, 4, 5])

    def report(d):
        if d["step"] % 25 == 0 or "val_psnr_synthetic" in d:
            print(json.dumps(d), flush=True)

    train(cfg, out, report=report)
    return 0


if __name__ == "__main__":
    sys.exit(main())
