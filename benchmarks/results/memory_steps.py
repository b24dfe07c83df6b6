"""Peak memory of every step of a command, measured from outside, with another process holding memory beside it.

    python3 benchmarks/results/memory_steps.py NAME [--hold-gb 8] -- scaoed-deploy bench --res 512 ...

Starts a helper process that allocates and touches ``--hold-gb`` GB and holds them (a browser and an IDE beside
the command), then runs the command with its progress lines on a pipe. Every 0.5 s it sums the resident memory
of the command's whole process tree (its step children included) and files the figure under the step the
command last announced (its progress line, without the "N s spent, about M left" part). Writes
``benchmarks/results/NAME.json`` and ``NAME.md``: per step its peak tree RSS and seconds; the overall peak; the
least memory the machine had available; the command's exit code (-9: killed, by the OOM killer or otherwise).
The helper and the command are ended when this script ends; the command's own output goes to ``NAME.log``
beside the record while it runs and is removed when the record is written.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import re
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
TICK = re.compile(r": [^:]* spent, (about .* left|longer than the .* expected)$")  # eta.progress_text's tail


def tree(pid: int) -> list[int]:
    children: dict[int, list[int]] = {}
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                stat = Path(f"/proc/{entry}/stat").read_text()
                children.setdefault(int(stat.rsplit(")", 1)[1].split()[1]), []).append(int(entry))
            except (OSError, IndexError, ValueError):
                continue
    out, todo = [pid], [pid]
    while todo:
        for c in children.get(todo.pop(), []):
            out.append(c)
            todo.append(c)
    return out


def rss_mb(pids: list[int]) -> float:
    total = 0
    for pid in pids:
        try:
            m = re.search(r"VmRSS:\s+(\d+) kB", Path(f"/proc/{pid}/status").read_text())
        except OSError:
            continue
        total += int(m.group(1)) if m else 0
    return total / 1024


def available_mb() -> float:
    return int(re.search(r"MemAvailable:\s+(\d+) kB", Path("/proc/meminfo").read_text()).group(1)) / 1024


def hold(gb: float) -> subprocess.Popen | None:
    if gb <= 0:
        return None
    code = (
        "import sys, time\nb = bytearray(int(float(sys.argv[1]) * (1 << 30)))\n"
        "for i in range(0, len(b), 4096):\n    b[i] = 1\nprint('held', flush=True)\ntime.sleep(1e9)\n"
    )
    helper = subprocess.Popen([sys.executable, "-c", code, str(gb)], stdout=subprocess.PIPE, text=True)
    assert helper.stdout.readline().strip() == "held"
    return helper


def regroup(steps: list[dict]) -> list[dict]:
    """Steps as the command announced them, with its progress ticks ("N s spent, about M left") folded in."""
    merged: dict[str, dict] = {}
    for entry in steps:
        name = TICK.sub("", entry["step"])
        seen = merged.setdefault(name, {"step": name, "peak_rss_mb": 0, "seconds": 0.0})
        seen["peak_rss_mb"] = max(seen["peak_rss_mb"], entry["peak_rss_mb"])
        seen["seconds"] = round(seen["seconds"] + entry["seconds"], 1)
    return list(merged.values())


def main() -> int:
    if sys.argv[1:2] == ["--rewrite"]:  # a record made before ticks were folded in: the same figures, regrouped
        name = sys.argv[2]
        record = json.loads((HERE / f"{name}.json").read_text())
        record["steps"] = regroup(record["steps"])
        write(name, record)
        return 0
    ap = argparse.ArgumentParser(usage="memory_steps.py NAME [--hold-gb GB] -- COMMAND ...  |  --rewrite NAME")
    ap.add_argument("name")
    ap.add_argument("--hold-gb", type=float, default=8.0)
    argv = sys.argv[1:]
    if "--" not in argv:
        ap.error("put the command after --")
    at = argv.index("--")
    args, command = ap.parse_args(argv[:at]), argv[at + 1 :]
    helper = hold(args.hold_gb)
    try:
        return measure(args, command, helper)
    finally:
        if helper is not None:
            helper.kill()
            helper.wait()


def measure(args, command: list[str], helper) -> int:
    log_path = HERE / f"{args.name}.log"
    steps: dict[str, dict] = {}
    current = ["(start)"]
    lock = threading.Lock()
    t0 = time.monotonic()
    proc = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, bufsize=1)

    def read_progress():
        with open(log_path, "w") as log:
            for line in proc.stderr:
                log.write(line)
                log.flush()
                text = TICK.sub("", line.strip())
                if text and not text.startswith(("warning", "note")):
                    with lock:
                        current[0] = text[:160]
                        steps.setdefault(
                            current[0],
                            {"peak_rss_mb": 0.0, "first_s": time.monotonic() - t0, "last_s": time.monotonic() - t0},
                        )

    reader = threading.Thread(target=read_progress, daemon=True)
    reader.start()
    stdout_chunks: list[str] = []
    out_reader = threading.Thread(target=lambda: stdout_chunks.append(proc.stdout.read()), daemon=True)
    out_reader.start()
    peak, least_available = 0.0, available_mb()
    try:
        while proc.poll() is None:
            now = rss_mb(tree(proc.pid))
            least_available = min(least_available, available_mb())
            peak = max(peak, now)
            with lock:
                entry = steps.setdefault(
                    current[0], {"peak_rss_mb": 0.0, "first_s": time.monotonic() - t0, "last_s": 0.0}
                )
                entry["peak_rss_mb"] = max(entry["peak_rss_mb"], now)
                entry["last_s"] = time.monotonic() - t0
            time.sleep(0.5)
    finally:
        if proc.poll() is None:
            proc.send_signal(signal.SIGTERM)
            proc.wait(30)
    reader.join(5)
    out_reader.join(5)
    wall = time.monotonic() - t0
    record = {
        "command": " ".join(command),
        "exit_code": proc.returncode,
        "wall_s": round(wall, 1),
        "held_by_helper_gb": args.hold_gb,
        "peak_tree_rss_mb": round(peak),
        "least_available_mb": round(least_available),
        "machine": {
            "cpu": platform.processor() or platform.machine(),
            "cores": os.cpu_count(),
            "memory_total_mb": round(
                int(re.search(r"MemTotal:\s+(\d+)", Path("/proc/meminfo").read_text()).group(1)) / 1024
            ),
        },
        "steps": [
            {"step": name, "peak_rss_mb": round(v["peak_rss_mb"]), "seconds": round(v["last_s"] - v["first_s"], 1)}
            for name, v in steps.items()
        ],
        "created": time.strftime("%Y-%m-%d %H:%M:%S"),
    }
    record["steps"] = regroup(record["steps"])
    write(args.name, record)
    log_path.unlink(missing_ok=True)
    return 0 if proc.returncode == 0 else 1


def write(name: str, record: dict) -> None:
    (HERE / f"{name}.json").write_text(json.dumps(record, indent=1) + "\n")
    worst = max(record["steps"], key=lambda s: s["peak_rss_mb"])
    lines = [
        f"# Peak memory per step: `{record['command']}`",
        "",
        f"Made by `python3 benchmarks/results/memory_steps.py {name} --hold-gb {record['held_by_helper_gb']:g} -- "
        f"{record['command']}` on {record['created']}.",
        "",
        f"Exit code {record['exit_code']} after {record['wall_s'] / 60:.1f} min, with a helper process holding "
        f"{record['held_by_helper_gb']:g} GB beside it. Peak resident memory of the command's process tree: "
        f"**{record['peak_tree_rss_mb'] / 1024:.2f} GB**, in the step `{worst['step']}`; the least memory "
        f"available on the machine meanwhile: {record['least_available_mb'] / 1024:.2f} GB of "
        f"{record['machine']['memory_total_mb'] / 1024:.1f} GB.",
        "",
        "| step (as the command announced it) | peak tree RSS MB | seconds |",
        "|---|---:|---:|",
    ]
    lines += [f"| {s['step'].replace('|', '/')} | {s['peak_rss_mb']} | {s['seconds']} |" for s in record["steps"]]
    (HERE / f"{name}.md").write_text("\n".join(lines) + "\n")


if __name__ == "__main__":
    sys.exit(main())
