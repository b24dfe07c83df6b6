#!/usr/bin/env bash
# The demo weights' full configuration (T = 16, K drawn from 1..5, default K = 5) on a GPU, as a run split into
# jobs of fixed length (CALL_MIN minutes each), each one resumable.
#
# Data: the clean training images and the SIDD crops (validation only) in $DATA, by default .traindata/ in the
# checkout (git-ignored; never committed):
#     mkdir -p .traindata && cp -r ../shared/data/CBSD68 ../shared/data/McMaster ../shared/data/sidd .traindata/
# Then, once per job, on the GPU machine:
#     bash benchmarks/demo_weights/gpu_train.sh
# The first job times 50 steps and plans the cosine over BUDGET_MIN minutes of training; each job trains
# CALL_MIN minutes (`train --max-minutes`) and leaves its state in $RUN, which the next job resumes exactly.
# Every job copies the weights so far to $OUT (float32, 13.5 MB). On a fresh machine (no $RUN state), start a
# new plan from those weights with INIT=path/to/demo.safetensors (INIT is used only when no plan exists).
# What it gave on one NVIDIA H200 (0.3-0.4 s per step, data loading included): INIT=the shipped weights,
# BUDGET_MIN=4, CALL_MIN=5.2, LR=1e-4: 600 steps in 3 min, SIDD mean at K = 3 from 29.17 to 29.48 dB.
# Then here: evaluate.py --weights, and ship.py as in README.md.
set -euo pipefail
cd "$(dirname "$0")/../.."
DATA=${DATA:-.traindata}
RUN=${RUN:-.train/gpu}
BUDGET_MIN=${BUDGET_MIN:-22}   # training minutes over all jobs
CALL_MIN=${CALL_MIN:-8.5}      # minutes of this job (the probe included)
DEVICE=${DEVICE:-cuda}
PATCH=${PATCH:-128}
BATCH=${BATCH:-16}
LR=${LR:-2e-4}
INIT=${INIT:-}
OUT=${OUT:-$RUN/out}
export PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}" PYTHONUNBUFFERED=1
[ -d "$DATA/CBSD68" ] && [ -d "$DATA/McMaster" ] || { echo "no training data in $DATA (see the top of $0)" >&2; exit 1; }
mkdir -p "$RUN" "$OUT"
python3 -c "import torch; print('torch', torch.__version__, torch.cuda.get_device_name() if torch.cuda.is_available() else 'no GPU')"

train() {
    python3 -m scaoed_deploy.cli train --clean "$DATA/CBSD68,$DATA/McMaster" --stages 5 --stage-choices 1,2,3,4,5 \
        --patch "$PATCH" --batch "$BATCH" --lr "$LR" --device "$DEVICE" --amp bf16 --json "$@"
}

state="$RUN/demo.train-state.pt"
if [ ! -f "$RUN/steps" ]; then  # a new plan: the first job, or a fresh machine (INIT, if given, starts it)
    rm -f "$state"
    train --steps 50 --val-every 10 -o "$RUN/probe.safetensors" > "$RUN/probe-result.json"
    python3 - "$RUN/probe-result.json" "$BUDGET_MIN" "$RUN/steps" <<'EOF'
import json, sys
h = {e["step"]: e["seconds"] for e in json.load(open(sys.argv[1]))["history"]}
per_step = (h[50] - h[10]) / 40  # past cuDNN's autotuning and the allocator's warm-up
steps = int(float(sys.argv[2]) * 60 / per_step)
open(sys.argv[3], "w").write(f"{steps}\n")
print(f"probe: {per_step:.4f} s/step; planned {steps} steps")
EOF
fi
steps=$(cat "$RUN/steps")
if [ -f "$state" ]; then
    from=(--resume "$state")
elif [ -n "$INIT" ]; then
    from=(--init "$INIT")
else
    from=()
fi
minutes=$(python3 -c "print(max(0.5, $CALL_MIN - $SECONDS / 60))")
train --steps "$steps" --val-every 500 --val "$DATA/sidd" --max-minutes "$minutes" "${from[@]}" \
    -o "$RUN/demo.safetensors" > "$RUN/demo-result.json"
python3 - "$RUN/demo-result.json" <<'EOF'
import json, sys
r = json.load(open(sys.argv[1]))
print(f"step {r['steps']} of {r['planned_steps']} ({'done' if r['complete'] else 'run the next job to continue'})")
for e in r["history"]:
    print({k: round(v, 4) if isinstance(v, float) else v for k, v in e.items()})
EOF
cp "$RUN/demo.safetensors" "$RUN/demo.json" "$RUN/demo-result.json" "$OUT/"
