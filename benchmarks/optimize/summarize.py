"""Copies an optimize recording (record.sh) into benchmarks/optimize/: each step's selection, reports and chart,
and the command's own wall time per step (times.json; a step not in this recording keeps its entry), with the
commit that ran it."""

import json
import shutil
import subprocess
import sys
from pathlib import Path

from scaoed_deploy.optimize.report import chart_png

work, here = Path(sys.argv[1]), Path(__file__).parent  # summarize.py WORK [STEP ...]
times_json = here / "times.json"
times = json.loads(times_json.read_text()) if times_json.is_file() else {}
for entry in times.values():  # older recordings kept one machine for every step at the top
    if isinstance(entry, dict) and "command_s" in entry:
        entry.setdefault("machine", times.get("machine"))
times.pop("machine", None)
commit = subprocess.run(["git", "rev-parse", "--short", "HEAD"], capture_output=True, text=True).stdout.strip()
for name in sys.argv[2:] or ("front", "budget", "warm"):  # record.sh passes the steps it ran
    if not (work / name / "selection.json").is_file():
        continue
    out = here / name
    out.mkdir(exist_ok=True)
    for f in ("selection.json", "report.md", "report.html"):
        shutil.copyfile(work / name / f, out / f)
    sel = json.loads((work / name / "selection.json").read_text())
    (out / "chart.png").write_bytes(chart_png(sel))
    t0, t1 = map(float, (work / f"{name}.times").read_text().split())
    times[name] = {
        "command_s": round(t1 - t0, 1),
        "search_s": sel["wall_s"],
        "chosen": sel["chosen"],
        "command": sel["command"],
        "built": sum(c["status"] == "built" for c in sel["candidates"]),
        "pruned": sum(c["status"] == "pruned" for c in sel["candidates"]),
        "commit": commit,
        "machine": sel["machine"],
    }
    if sel.get("by_cpu"):  # optimize --cpus: each class's choice, as measured
        times[name]["by_cpu"] = {
            cls: {
                "chosen": e["chosen"],
                "measured_as": e["machine"].get("isa_capped_by") or "this CPU",
                **{
                    k: c[k]
                    for c in e["candidates"]
                    if c["id"] == e["chosen"]
                    for k in ("latency_ms", "ratio_to_eager", "psnr", "dpsnr")
                },
            }
            for cls, e in sel["by_cpu"].items()
        }
(here / "times.json").write_text(json.dumps(times, indent=2) + "\n")
print(json.dumps({k: {f: x for f, x in v.items() if f != "machine"} for k, v in times.items()}, indent=2))
