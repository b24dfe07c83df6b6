#!/bin/sh
# Times the test suite as CI runs it, from a fresh clone beside ../shared: the README's second command whole,
# then `-m "not slow"`, each once, on an otherwise idle machine. Writes benchmarks/suite/times.json (one entry per
# run: commit, CPU, ISA class, cores, seconds, counts) and prints it.
# Usage: sh benchmarks/suite/record.sh [CLONE_DIR]   (repository root; CLONE_DIR beside ../shared, default ../suite-clone)
set -e
ROOT=$(pwd)
CLONE=${1:-$ROOT/../suite-clone}
rm -rf "$CLONE" && git clone -q "$ROOT" "$CLONE"
cd "$CLONE"
python3 -m pip install -q torch==2.13.0 && python3 -m pip install -q -e ".[test,ray,s3]" \
    && python3 -m pip install -q --no-deps nvidia-pytriton==0.7.0
t0=$(date +%s.%N); python3 -m ruff check -q && python3 -m ruff format --check -q && python3 -m pytest -q -p no:cacheprovider > "$CLONE/full.log" 2>&1; t1=$(date +%s.%N)
python3 -m pytest -q -p no:cacheprovider -m "not slow" > "$CLONE/fast.log" 2>&1; t2=$(date +%s.%N)
cd "$ROOT" && python3 -m pip install -q --no-deps -e .  # the editable install back on this checkout
python3 - "$CLONE" "$t0" "$t1" "$t2" <<'PY'
import json, re, subprocess, sys, pathlib
from scaoed_deploy.cpu import this_cpu
clone, t0, t1, t2 = sys.argv[1], *map(float, sys.argv[2:])
def counts(log):
    last = pathlib.Path(clone, log).read_text().strip().splitlines()[-1]
    return {k: int(v) for v, k in re.findall(r"(\d+) (passed|failed|skipped|deselected|error)", last)}
cpu = this_cpu()
entry = {"commit": subprocess.run(["git", "-C", clone, "rev-parse", "--short", "HEAD"], capture_output=True,
                                  text=True).stdout.strip(),
         "cpu": cpu.name, "isa": cpu.isa, "isa_class": cpu.isa_class, "cores": len(__import__("os").sched_getaffinity(0)),
         "full_s": round(t1 - t0, 1), "full": counts("full.log"),
         "not_slow_s": round(t2 - t1, 1), "not_slow": counts("fast.log")}
path = pathlib.Path("benchmarks/suite/times.json")
runs = json.loads(path.read_text()) if path.exists() else []
runs.append(entry)
path.write_text(json.dumps(runs, indent=1) + "\n")
print(json.dumps(entry, indent=1))
PY
