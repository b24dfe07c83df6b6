#!/usr/bin/env bash
# The demo weights' full configuration (T = 16, K drawn from 1..5, default K = 5) on a lent GPU, in
# `device` calls of at most 10 minutes each. Not run yet: no task of this project has been lent a GPU.
#
# Here, once (the data travel in a git-ignored folder, never committed):
#     mkdir -p .traindata && cp -r ../shared/data/CBSD68 ../shared/data/McMaster ../shared/data/sidd .traindata/
# Then the device tool's run, once per call, back to back (about 44 MB travel; 64 MiB is the limit):
#     run(command="bash benchmarks/demo_weights/gpu_train.sh", carry=[".traindata"], timeout_s=600)
# The first call times 50 steps and plans the cosine over BUDGET_MIN minutes of training; each call trains
# CALL_MIN minutes (`train --max-minutes`) and leaves its state in .train/ on the machine, which the next
# call resumes exactly while the machine is still warm. Every call returns the weights so far under $OUT
# (float32, 13.5 MB; the 41 MB state is over $OUT's 16 MiB per file). If the machine went back between
# calls, copy the returned weights into .train-init/demo.safetensors and run with INIT=.train-init/demo.safetensors
# and carry=[".traindata", ".train-init"]: a new plan from those weights with a fresh optimiser (INIT is used
# only when no plan is on the machine, so later calls may keep it).
# Then here: evaluate.py --weights, and ship.py as in README.md.
set -euo pipefail
cd "$(dirname "$0")/../.."
DATA=${DATA:-.traindata}
RUN=${RUN:-.train/gpu}
BUDGET_MIN=${BUDGET_MIN:-22}   # training minutes over all calls (30 min device time less starts, probe and transfers)
CALL_MIN=${CALL_MIN:-8.5}      # training minutes in this call
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
if [ ! -f "$RUN/steps" ]; then  # a new plan: the first call, or the machine went back (INIT, if given, starts it)
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
print(f"step {r['steps']} of {r['planned_steps']} ({'done' if r['complete'] else 'call again to continue'})")
for e in r["history"]:
    print({k: round(v, 4) if isinstance(v, float) else v for k, v in e.items()})
EOF
cp "$RUN/demo.safetensors" "$RUN/demo.json" "$RUN/demo-result.json" "$OUT/"
