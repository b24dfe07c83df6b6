"""Copies an optimize recording (record.sh) into benchmarks/optimize/: each step's selection, reports and chart,
and the command's own wall time per step (times.json)."""

import json
import shutil
import sys
from pathlib import Path

from scaoed_deploy.optimize.report import chart_png

work, here = Path(sys.argv[1]), Path(__file__).parent
times = {}
for name in ("front", "budget", "warm"):
    if not (work / name / "selection.json").is_file():
        continue
    out = here / name
    out.mkdir(exist_ok=True)
    for f in ("selection.json", "report.md", "report.html"):
        shutil.copyfile(work / name / f, out / f)
    sel = json.loads((work / name / "selection.json").read_text())
    (out / "chart.png").write_bytes(chart_png(sel))
    t0, t1 = map(float, (work / f"{name}.times").read_text().split())
    times[name] = {"command_s": round(t1 - t0, 1), "search_s": sel["wall_s"], "chosen": sel["chosen"],
                   "command": sel["command"], "built": sum(c["status"] == "built" for c in sel["candidates"]),
                   "pruned": sum(c["status"] == "pruned" for c in sel["candidates"])}
    times["machine"] = sel["machine"]
(here / "times.json").write_text(json.dumps(times, indent=2) + "\n")
print(json.dumps({k: v for k, v in times.items() if k != "machine"}, indent=2))
