"""Copies an optimize recording (record.sh) into benchmarks/optimize/: the selections, reports and charts, and
the command's own wall times cold and warm."""

import json
import shutil
import sys
from pathlib import Path

from scaoed_deploy.optimize.report import chart_png

work, t0, t1, t2, t3, budget = Path(sys.argv[1]), *map(float, sys.argv[2:6]), float(sys.argv[6])
here = Path(__file__).parent
for name, run in (("front", "warm"), ("budget", "budget")):
    out = here / name
    out.mkdir(exist_ok=True)
    for f in ("selection.json", "report.md", "report.html"):
        shutil.copyfile(work / run / f, out / f)
    (out / "chart.png").write_bytes(chart_png(json.loads((work / run / "selection.json").read_text())))
cold = json.loads((work / "cold" / "selection.json").read_text())
shutil.copyfile(work / "cold" / "report.md", here / "front" / "report_cold.md")
times = {"cold_s": round(t1 - t0, 1), "warm_s": round(t2 - t1, 1), "budget_warm_s": round(t3 - t2, 1),
         "budget_ms": budget, "cold_chosen": cold["chosen"], "machine": cold["machine"], "command": cold["command"]}
(here / "times.json").write_text(json.dumps(times, indent=2) + "\n")
print(json.dumps(times, indent=2))
