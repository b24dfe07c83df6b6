"""Ship trained weights as the package's demo weights (float16 storage, provenance with measured figures).

    python benchmarks/demo_weights/ship.py TRAINED.safetensors [--stages K] [--init-config INIT.json]

K defaults to the best mean SIDD PSNR in results.json beside this file (from evaluate.py).
When TRAINED was fine-tuned from earlier weights (``--init``), pass those weights' JSON config as
--init-config (by default the package's current demo config when the names match): its training
phases and steps are carried over, so the shipped JSON describes the whole history. A run continued
with ``train --resume`` is one phase (its steps count from its init; its JSON's ``resumed_from_step``
says where it was resumed).
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import torch

from scaoed_deploy.checkpoint import read_checkpoint, save_safetensors
from scaoed_deploy.train import NOISE_MODEL
from scaoed_deploy.weights import DEMO_PATH

HERE = Path(__file__).parent
# The first run (benchmarks/demo_weights/train.py), which had no init.
FIRST_PHASES = [
    "K=2: float32 to step 1000 (cosine over 3000); bf16 autocast to 1550 (over 5000); bf16 to 4500 "
    "(over 4500), noise v1: benchmarks/demo_weights/train.py"
]


def _phase(p: dict, script: str = "benchmarks/demo_weights/finetune.py") -> str:
    resumed = (
        f" (run to step {p['resumed_from_step']}, then resumed from its training state with the cosine "
        f"restarted over {p['steps']} steps: scaoed-deploy train --resume)"
        if p.get("resumed_from_step")
        else ""
    )
    return (
        f"fine-tuned from {p['init']} for {p['steps']} steps{resumed}, K drawn per batch from "
        f"{p.get('stages_trained')}, {p.get('patch')} px x {p.get('batch')}, bf16, peak lr {p.get('lr')} cosine, "
        f"noise {p.get('noise')}: {script}"
    )


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("trained")
    ap.add_argument("--stages", type=int, default=None)
    ap.add_argument("--init-config", default=None, help="JSON config of the weights TRAINED was fine-tuned from")
    ap.add_argument(
        "--script",
        default="benchmarks/demo_weights/finetune.py",
        help="what ran this phase, as the provenance should name it",
    )
    args = ap.parse_args()
    w = read_checkpoint(args.trained)
    results = json.loads((HERE / "results.json").read_text()) if (HERE / "results.json").is_file() else {}
    by_k = results.get("by_stages", {})
    stages = args.stages or int(results.get("best_stages", w.stages))
    provenance = dict(w.provenance)
    phases, total = list(FIRST_PHASES), 4500
    if provenance.get("init"):
        init_json = Path(args.init_config) if args.init_config else DEMO_PATH.with_suffix(".json")
        if not args.init_config and provenance["init"] != DEMO_PATH.name:
            print(
                f"{args.trained} was fine-tuned from {provenance['init']}: pass its JSON as --init-config",
                file=sys.stderr,
            )
            return 2
        before = json.loads(init_json.read_text())["provenance"]
        old = before.get("training_phases", [])
        if not isinstance(old, list):  # shipped before phases were a list: its steps were run 1's 4500 + its own
            old = FIRST_PHASES + [_phase(dict(before, steps=int(before["steps"]) - 4500))]
        phases = old + [_phase(provenance, args.script)]
        total = int(before["steps"]) + int(provenance["steps"])
    provenance.update(
        {
            "noise_model": NOISE_MODEL,  # as the noise module that trained them describes itself (parameters: "noise")
            "notice": "demo weights trained by scaoed-deploy on synthetic noise; not the paper's weights",
            "trained_from": Path(args.trained).name,
            "trained_sha256": w.sha256,
            "storage": "float16 (read back as float32)",
            "default_stages_chosen_by": "best mean PSNR on the 4 SIDD crops over K = 1..5 (evaluation only)",
            "sidd_mean_psnr_by_stages": {k: round(v["mean_psnr"], 3) for k, v in by_k.items()},
            "sidd_mean_ssim_by_stages": {k: round(v["mean_ssim"], 4) for k, v in by_k.items()},
            "training_phases": phases,
            "steps_this_phase": provenance.get("steps"),
            "steps": total,
        }
    )
    provenance.pop("history", None)
    provenance.pop("default_stages", None)  # the training run's validation K; the shipped default is below
    save_safetensors(w, DEMO_PATH, stages=stages, provenance=provenance, dtype=torch.float16)
    print(f"wrote {DEMO_PATH} ({DEMO_PATH.stat().st_size / 1e6:.1f} MB), default K={stages}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
