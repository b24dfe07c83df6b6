#!/bin/sh
# Records optimize with the demo weights at 512 x 512, every CPU backend that runs here:
#   front:  K = 1..5, no constraint, cold (an empty export folder: every artifact made and verified);
#   budget: K = 1..5, --max-latency-ms at half of eager K = 5's median in the front run (warm: all reused);
#   warm:   K = 1, 3, 5, no constraint, warm.
#   fleet:  K = 1, 3, 5, no constraint, --cpus native and every class below this CPU (each masked class makes its
#           own INT8 files and IRs in export/bench/as-CLASS/ the first time).
# STEPS picks the steps (default "front budget warm"); without front, WORK's export folder is kept (warm runs
# reuse it) and the budget comes from the recorded front (benchmarks/optimize/front/selection.json).
# Each step's wall time goes to WORK/<step>.times; summarize.py copies the selections, reports and charts
# into benchmarks/optimize/{front,budget,warm}/ and the times into benchmarks/optimize/times.json (steps not
# run keep their entry); screenshots.py renders each report.html in headless Chromium (screens/).
# Usage: [STEPS="budget warm"] sh benchmarks/optimize/record.sh [WORK_DIR]   (repository root, quiet machine)
set -e
WORK=${1:-/tmp/scaoed-optimize}
STEPS=${STEPS:-front budget warm}
case " $STEPS " in
    *" front "*) rm -rf "$WORK" && mkdir -p "$WORK" ;;
    *) for s in $STEPS; do rm -rf "$WORK/$s" "$WORK/$s.times" "$WORK/$s.json" "$WORK/$s.log"; done ;;
esac
CMD="scaoed-deploy optimize --res 512 --export-dir $WORK/export"
step() {  # step NAME ARGS...: run optimize into WORK/NAME, its wall time into WORK/NAME.times
    name=$1; shift
    case " $STEPS " in *" $name "*) ;; *) return 0 ;; esac
    t0=$(date +%s.%N)
    $CMD "$@" -o "$WORK/$name" --json > "$WORK/$name.json" 2> "$WORK/$name.log"
    echo "$t0 $(date +%s.%N)" > "$WORK/$name.times"
}
step front --stages 1,2,3,4,5
FRONT=$WORK/front/selection.json
[ -f "$FRONT" ] || FRONT=benchmarks/optimize/front/selection.json
BUDGET=$(python3 -c "import json; s=json.load(open('$FRONT')); \
print(round(next(c['latency_ms'] for c in s['candidates'] if c['id'] == 'k5-torch') / 2))")
step budget --stages 1,2,3,4,5 --max-latency-ms "$BUDGET"
step warm --stages 1,3,5
BELOW=$(python3 -c "from scaoed_deploy.cpu import AS_CPU_CAPS, mask_refusal, read_cpu; \
print(','.join(['native'] + [c for c in AS_CPU_CAPS if c != read_cpu().isa_class and not mask_refusal(c)]))")
step fleet --stages 1,3,5 --cpus "$BELOW"
python3 benchmarks/optimize/summarize.py "$WORK" $STEPS
# each report.html looked at in headless Chromium at desktop and phone widths (screens/ beside it)
for s in $STEPS; do
    if [ -x "${CHROMIUM:-/usr/bin/chromium}" ]; then python3 benchmarks/optimize/screenshots.py "benchmarks/optimize/$s"
    else echo "no Chromium: benchmarks/optimize/$s/report.html not looked at"; fi
done
