"""Writing a bench result: the Markdown table, the latency-by-K plot, and the JSON beside them."""

from __future__ import annotations

from pathlib import Path

from ..util.files import atomic_path
from ..util.jsonio import dumps
from .candidates import peak_precision


def _peak_note(m: dict, c: dict) -> list[str]:
    """What the % peak column is measured against (CPU runs)."""
    p = m.get("peak") or {}
    if c["device"] != "cpu" or not p.get("gmacs_per_s_per_core"):
        return []
    per = ", ".join(f"{k} {v}" for k, v in p["macs_per_cycle_per_core"].items())
    peaks = ", ".join(f"{k} {v * c['threads']:.0f}" for k, v in p["gmacs_per_s_per_core"].items())
    return [
        f"% peak: the model's MACs per second over this CPU's peak for the row's precision (fp16 counts as fp32): "
        f"{c['threads']} threads x {p['clock_mhz']:.0f} MHz x MACs per cycle and core ({per}) = {peaks} GMAC/s. "
        "Above 100 %: the kernel multiplies less than a direct convolution (Winograd) or the clock boosts."
    ]


def _floor_note(result: dict) -> list[str]:
    """Per K, the x eager a row of each precision would reach at this CPU's peak for it (CPU runs)."""
    floors: dict = {}
    for r in result["rows"]:
        if r["status"] == "ok" and r.get("ratio_at_peak") is not None:
            key = (f"{r['height']}x{r['width']}", r["stages"])
            floors.setdefault(key, {})[peak_precision(r["backend"])] = r["ratio_at_peak"]
    if not floors:
        return []
    return [
        "At peak: the x eager a row would reach running at this CPU's peak for its precision (eager fp32's "
        "achieved MACs/s over that peak at the reported clock): "
        + "; ".join(
            f"{res}, K = {k}: " + ", ".join(f"{p} {v:.2f} x" for p, v in sorted(f.items()))
            for (res, k), f in floors.items()
        )
        + "."
    ]


def fmt(v, spec: str) -> str:
    """``v`` formatted, or '-' where it is missing (a table cell)."""
    return format(v, spec) if v is not None else "-"


def percent(fraction: float | None) -> float | None:
    return fraction * 100 if fraction is not None else None


def markdown(result: dict) -> str:
    m, c = result["machine"], result["config"]
    lines = [
        f"# ScaoedNet benchmark ({c['device']})",
        "",
        f"Command: `{result.get('command', '')}`",
        "",
        f"Machine: {m['cpu']}, {m['cores']} cores ({', '.join(m['isa'])}"
        + (
            f"; torch and OpenVINO's convolutions capped by {m['isa_capped_by']}"
            if (m.get("isa_capped_by") or "").startswith("ONEDNN")
            else f"; run {m['isa_capped_by']}"
            if m.get("isa_capped_by")
            else ""
        )
        + ")"
        + (f"; GPU {m['gpu']['name']}" if m.get("gpu") else "; no GPU")
        + f". {result['timing']}.",
        f"Weights: `{result['weights']['source']}` (T={result['weights']['blocks']}). "
        f"Batch {c['batch']}, {c['warmup']} warm-up + {c['iters']} timed runs per row.",
        "",
        *(["**Interrupted** (Ctrl-C): the rows finished before it, no more.", ""] if result.get("interrupted") else []),
        "| res | K | backend | median ms | p90 ms | p99 ms | std ms | x eager | img/s | MP/s | TFLOP/s | % peak | "
        "peak MB | GMAC (paper) | paper RTX 3090 s | SIDD PSNR | dPSNR |",
        "|---|---:|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]

    for r in result["rows"]:
        if r["status"] != "ok":
            continue
        lat = r["latency_ms"]
        paper = f" ({r['paper_gmacs']:.0f})" if r["paper_gmacs"] else ""
        lines.append(
            f"| {r['height']}x{r['width']} | {r['stages']} | {r['backend']} | {lat['median']:.1f} | {lat['p90']:.1f} | "
            f"{lat['p99']:.1f} | {lat['std']:.1f} | {fmt(r['ratio_to_eager'], '.2f')} | {r['images_per_s']:.2f} | "
            f"{r['megapixels_per_s']:.3f} | {r['tflops']:.3f} | "
            f"{fmt(percent(r.get('peak_fraction')), '.0f')} | {fmt(r['peak_memory_mb'], '.0f')} | "
            f"{r['gmacs']:.1f}{paper} | {fmt(r['paper_latency_s'], '.2f')} | {fmt(r['sidd_psnr'], '.2f')} | "
            f"{fmt(r['dpsnr'], '+.3f')} |"
        )
    skipped = {}
    for r in result["rows"]:
        if r["status"] in ("skipped", "failed"):
            skipped.setdefault(r["backend"], ("failed: " if r["status"] == "failed" else "") + r["reason"])
    if skipped:
        lines += ["", "Skipped:", ""] + [f"- `{b}`: {why}" for b, why in skipped.items()]
    load = result.get("load")
    if load and load.get("other_processes_cores") is not None:
        lines += [
            "",
            f"Load: other processes took {load['other_processes_cores']:.2f} cores on average during "
            f"the run (load average {load['loadavg_1min_start']:.2f} at the start, "
            f"{load['loadavg_1min_end']:.2f} at the end)"
            + ("; **busy: do not quote these ratios**" if load["busy"] else "."),
        ]
    lines += _memory_section(result["rows"])
    ran = {r["backend"]: r["runtime_precision"] for r in result["rows"] if r.get("runtime_precision")}
    if ran:
        lines += ["", "What OpenVINO compiled (from the compiled model): "] + [
            f"- `{b}`: inference precision {p['inference_precision']}, {p['threads']} threads; executed layers by "
            f"runtime precision: " + ", ".join(f"{k} {v}" for k, v in p["layers_by_runtime_precision"].items())
            for b, p in ran.items()
        ]
    lines += [
        "",
        f"Threads: {c['threads']} for every CPU backend. x eager: median latency over torch eager fp32's "
        "in the same run (same resolution and K). "
        "The RTX 3090 column is the paper's figure at 512x512, not ours. dPSNR: mean PSNR on the SIDD crops "
        "minus eager's.",
        *_peak_note(m, c),
        *_floor_note(result),
        "",
    ]
    return "\n".join(lines)


def _memory_section(rows: list[dict]) -> list[str]:
    """Each row's own peak (artifact made, opened, timed) and its build steps' peaks, where the record has them."""
    measured = [r for r in rows if r.get("row_peak_rss_mb")]
    if not measured:
        return []
    lines = [
        "",
        "Memory: each row's own peak resident memory (MB; from making its artifact to closing its runner; a "
        "build step's child process counted), and each build step's where the row made its artifact:",
        "",
        "| res | K | backend | row peak MB | build steps (peak MB) |",
        "|---|---:|---|---:|---|",
    ]
    for r in measured:
        steps = ", ".join(f"{k} {v}" for k, v in (r.get("build_peak_rss_mb") or {}).items()) or "-"
        lines.append(
            f"| {r['height']}x{r['width']} | {r['stages']} | {r['backend']} | {r['row_peak_rss_mb']:.0f} | {steps} |"
        )
    return lines


def plot(result: dict, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    ok = [r for r in result["rows"] if r["status"] == "ok"]
    resolutions = sorted({(r["height"], r["width"]) for r in ok})
    fig, axes = plt.subplots(1, max(1, len(resolutions)), figsize=(6 * max(1, len(resolutions)), 4.2), squeeze=False)
    for ax, (h, w) in zip(axes[0], resolutions):
        for backend in dict.fromkeys(r["backend"] for r in ok):
            pts = sorted(
                (r["stages"], r["latency_ms"]["median"])
                for r in ok
                if r["backend"] == backend and (r["height"], r["width"]) == (h, w)
            )
            if pts:
                ax.plot(*zip(*pts), marker="o", label=backend)
        ax.set(title=f"{h}x{w}, {result['config']['device']}", xlabel="stages K", ylabel="median latency (ms)")
        ax.set_yscale("log")
        ax.set_xticks(sorted({r["stages"] for r in ok}))  # K is a count: no 1.5-stage ticks
        ax.grid(alpha=0.3)
        ax.legend(fontsize=8)
    fig.tight_layout()
    with atomic_path(path) as tmp:
        fig.savefig(tmp, dpi=110)
    plt.close(fig)


def write_results(result: dict, out_dir: str | Path, name: str) -> list[Path]:
    out_dir = Path(out_dir)
    paths = [out_dir / f"{name}.json", out_dir / f"{name}.md", out_dir / f"{name}.png"]
    with atomic_path(paths[0]) as tmp:
        tmp.write_text(dumps(result) + "\n")
    with atomic_path(paths[1]) as tmp:
        tmp.write_text(markdown(result))
    plot(result, paths[2])
    return paths
