#!/usr/bin/env python3
"""What a `denoise --ray` run costs beyond the images: the fixed cost of a run on a warm cluster, part by part, and
the driver's time and memory at 100,000 paths.

    python3 benchmarks/cluster/driver_cost.py [--paths 100000] [--small 44]

(--paths 0 or --small 0 leaves that part out; the record is then driver_cost_fixed or driver_cost_scale.)

1. **Fixed cost**: --small SIDD crops of 256 x 256 (flipped and rotated), the K = 1 demo weights: local `denoise`
   with 2 threads, then `--ray 127.0.0.1:6379 --workers 2 --threads 1` against a head started once with
   `ray start --head` (warm: its processes up, nothing of this run's). Each part the summary times: planning,
   connecting, the first result (the actors' start, the model load, the first image), the run; and the command's
   whole time against local.
2. **Scale**: --paths tiny images (8 x 8 PNG, copies of one file): `plan_jobs` into an empty folder and into a
   folder where every output exists (listed and skipped), each with its time and the growth of this process's
   peak resident memory; then the whole `--ray` run over all of them (2 workers x 1 thread), with the driver's
   peak resident memory and the manifest it wrote.

Ray runs on loopback only: the script re-executes itself inside a private network and PID namespace (`unshare`,
as root), which also ends every Ray process with it. Records driver_cost.json and .md beside this script.
"""

from __future__ import annotations

import argparse
import os
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
from common import inside, rerun_inside, timed_cli, write_record

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent.parent
SIDD = ROOT.parent / "shared" / "data" / "sidd" / "noisy"
ADDRESS = "127.0.0.1:6379"


def peak_mb() -> float:
    """This process's peak resident memory so far (VmHWM)."""
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def cli(args: list[str]) -> tuple[float, dict]:
    seconds, summary, _ = timed_cli(args)
    return seconds, summary


def small_set(root: Path, count: int) -> Path:
    from scaoed_deploy.images import Image, read_image, write_image

    crops = [read_image(p).rgb for p in sorted(SIDD.glob("*.png"))]
    if not crops:
        raise SystemExit(f"error: no SIDD crops in {SIDD}")
    root.mkdir(parents=True)
    for i in range(count):
        c = np.rot90(crops[i % len(crops)], k=(i // len(crops)) % 4)
        c = c[:, ::-1] if (i // (4 * len(crops))) % 2 else c
        write_image(root / f"s{i:03d}.png", Image(rgb=np.ascontiguousarray(c[:256, :256])))
    return root


def fixed_cost(tmp: Path, count: int) -> dict:
    folder = small_set(tmp / "small", count)
    common = ["--stages", "1", "--json"]
    local_s, _ = cli(["denoise", str(folder), str(tmp / "out_local"), "--threads", "2", *common])
    ray_s, summary = cli(
        ["denoise", str(folder), str(tmp / "out_ray"), "--ray", ADDRESS, "--workers", "2", "--threads", "1", *common]
    )
    t = summary["timings"]  # after the first result, the workers run side by side
    per_image = (t["run_s"] - t["first_result_s"]) / max(1, count - 1) * summary["workers"]
    return {
        "images": count,
        "local_s": round(local_s, 2),
        "ray_s": round(ray_s, 2),
        "extra_s": round(ray_s - local_s, 2),
        "timings": summary["timings"],
        "per_worker": summary["per_worker"],
        "seconds_per_image_per_worker": round(per_image, 3),
    }


def scale(tmp: Path, count: int) -> dict:
    from PIL import Image as PILImage

    from scaoed_deploy.runtime.jobs import plan_jobs

    src, dst, full = tmp / "many", tmp / "many_out", tmp / "many_full"
    src.mkdir()
    full.mkdir()
    one = tmp / "one.png"
    PILImage.fromarray((np.random.default_rng(0).random((8, 8, 3)) * 255).astype(np.uint8)).save(one)
    data = one.read_bytes()
    t = time.perf_counter()
    for i in range(count):  # copies: a file takes at most 65,000 hard links
        (src / f"{i:06d}.png").write_bytes(data)
        (full / f"{i:06d}.png").write_bytes(data)
    made_s = time.perf_counter() - t
    rows = {}
    for name, out in (("plan, none exists", dst), ("plan, every output exists", full)):
        before = peak_mb()
        t = time.perf_counter()
        plan = plan_jobs(src, out)
        rows[name] = {
            "seconds": round(time.perf_counter() - t, 2),
            "peak_growth_mb": round(peak_mb() - before, 1),
            "jobs": len(plan.jobs),
            "skipped": len(plan.skipped),
        }
        del plan
    before = peak_mb()
    seconds, summary = cli(
        ["denoise", str(src), str(dst), "--stages", "1", "--ray", ADDRESS, "--workers", "2", "--threads", "1", "--json"]
    )
    manifest = dst / "scaoed-denoise.jsonl"
    rows["whole --ray run"] = {
        "seconds": round(seconds, 1),
        "peak_growth_mb": round(peak_mb() - before, 1),
        "driver_peak_mb": round(peak_mb(), 1),
        "done": summary["done"],
        "failed": summary["failed"],
        "timings": summary["timings"],
        "manifest_lines": sum(1 for _ in manifest.open()),
        "images_per_s": summary["images_per_s"],
    }
    return {"paths": count, "made_in_s": round(made_s, 1), "rows": rows}


def run(args) -> dict:
    from scaoed_deploy.bench import machine

    ray = str(Path(sys.executable).with_name("ray"))
    t = time.perf_counter()
    subprocess.run(
        [
            ray,
            "start",
            "--head",
            "--port=6379",
            "--node-ip-address=127.0.0.1",
            "--num-cpus=2",
            "--include-dashboard=false",
            "--disable-usage-stats",
        ],
        check=True,
        capture_output=True,
    )
    head_s = time.perf_counter() - t
    with tempfile.TemporaryDirectory() as tmp:
        fixed = fixed_cost(Path(tmp), args.small) if args.small else None
        print(f"fixed cost: {fixed}", file=sys.stderr)
        big = scale(Path(tmp), args.paths) if args.paths else None
    import ray as ray_module

    return {
        "command": "python3 benchmarks/cluster/driver_cost.py " + " ".join(sys.argv[1:]),
        "created": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        "machine": machine(),
        "ray": ray_module.__version__,
        "head_start_s": round(head_s, 1),
        "fixed_cost": fixed,
        "scale": big,
        "load_average_at_end": os.getloadavg(),
    }


def markdown(r: dict) -> str:
    m, f, s = r["machine"], r["fixed_cost"], r["scale"]
    lines = [
        "# What a `denoise --ray` run costs beyond its images",
        "",
        f"`{r['command'].strip()}`",
        "",
        f"Machine: {m['cpu']} ({', '.join(m['isa'])}), {m['cores']} cores; Ray {r['ray']}, one head of 2 CPUs "
        f"on 127.0.0.1 started once ({r['head_start_s']} s, not counted). Load average at the end: "
        f"{', '.join(f'{x:.1f}' for x in r['load_average_at_end'])}.",
        "",
    ]
    if f:
        lines += _fixed_lines(f)
    if s:
        lines += _scale_lines(s)
    return "\n".join(lines + [""])


def _fixed_lines(f: dict) -> list[str]:
    t = f["timings"]
    return [
        f"## Fixed cost: {f['images']} SIDD crops of 256 x 256, K = 1 demo weights",
        "",
        "| part | seconds |",
        "|---|---:|",
        f"| local `denoise`, 2 threads, whole command | {f['local_s']} |",
        f"| `--ray`, 2 workers x 1 thread, whole command | {f['ray_s']} |",
        f"| of which: planning | {t['plan_s']} |",
        f"| of which: connecting to the cluster | {t['connect_s']} |",
        f"| of which: until the first result (actors start, model load, first image) | {t['first_result_s']} |",
        f"| of which: the run, first result to last | {round(t['run_s'] - t['first_result_s'], 2)} |",
        f"| `--ray` minus local | {f['extra_s']} |",
        "",
        f"Per image and worker, after the first result: {f['seconds_per_image_per_worker']} s.",
        "",
    ]


def _scale_lines(s: dict) -> list[str]:
    lines = [
        f"## The driver at {s['paths']:,} paths (8 x 8 PNG, made in {s['made_in_s']} s)",
        "",
        "| step | seconds | driver's peak growth MB | what |",
        "|---|---:|---:|---|",
    ]
    for name, row in s["rows"].items():
        what = (
            f"{row['jobs']:,} jobs, {row['skipped']:,} skipped"
            if "jobs" in row
            else f"done {row['done']:,}, failed {row['failed']}, {row['images_per_s']} img/s, manifest "
            f"{row['manifest_lines']:,} lines, driver peak {row['driver_peak_mb']} MB; timings {row['timings']}"
        )
        lines.append(f"| {name} | {row['seconds']} | {row['peak_growth_mb']} | {what} |")
    return lines


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--paths", type=int, default=100_000)
    ap.add_argument("--small", type=int, default=44)
    args = ap.parse_args()
    if not inside():  # loopback only: a private network (and PID) namespace of its own
        return rerun_inside(__file__, sys.argv[1:])
    result = run(args)
    name = "driver_cost" + ("" if args.paths and args.small else "_fixed" if args.small else "_scale")
    write_record(name, result, markdown(result))
    return 0


if __name__ == "__main__":
    sys.exit(main())
