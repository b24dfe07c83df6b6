#!/bin/sh
# Records optimize with the demo weights at 512 x 512, K = 1..5, every CPU backend that runs here:
#   front:  no constraint, cold (an empty export folder: every artifact made and verified) then warm (all reused);
#   budget: --max-latency-ms at half of eager K = 5's median from the warm run.
# Writes benchmarks/optimize/{front,budget}/ (selection.json, report.md, report.html, chart.png) and times.json.
# Usage: sh benchmarks/optimize/record.sh [WORK_DIR]   (run from the repository root on a quiet machine)
set -e
WORK=${1:-/tmp/scaoed-optimize}
rm -rf "$WORK" && mkdir -p "$WORK"
HERE=benchmarks/optimize
CMD="scaoed-deploy optimize --res 512 --stages 1,2,3,4,5 --export-dir $WORK/export"
t() { date +%s.%N; }
t0=$(t); $CMD -o "$WORK/cold" --json > "$WORK/cold.json" 2> "$WORK/cold.log"; t1=$(t)
$CMD -o "$WORK/warm" --json > "$WORK/warm.json" 2> "$WORK/warm.log"; t2=$(t)
BUDGET=$(python3 -c "import json,sys; s=json.load(open('$WORK/warm/selection.json')); \
print(round(next(c['latency_ms'] for c in s['candidates'] if c['id']=='k5-torch') / 2))")
$CMD --max-latency-ms "$BUDGET" -o "$WORK/budget" --json > "$WORK/budget.json" 2> "$WORK/budget.log"; t3=$(t)
python3 "$HERE/summarize.py" "$WORK" "$t0" "$t1" "$t2" "$t3" "$BUDGET"
