"""``report.md`` and the chart of an optimize selection: the table of every candidate and what was chosen."""

from __future__ import annotations

import io
import math

from ..bench.report import fmt
from .race import STABLE_RUNS, STABLE_SPREAD

NUMERIC = ("latency_ms", "p90_ms", "ratio_to_eager", "images_per_s", "peak_memory_mb", "psnr", "ssim", "dpsnr")


def chosen_of(sel: dict) -> dict:
    """The chosen candidate's entry of a selection."""
    return next(c for c in sel["candidates"] if c["id"] == sel["chosen"])


def summary_line(sel: dict) -> str:
    """One line: what was chosen, under what, with its figures (or why nothing was)."""
    if not sel["chosen"]:
        return sel["error"] or "nothing chosen"
    c = chosen_of(sel)
    under = {
        "max_latency_ms": "the best PSNR within",
        "min_psnr": "the fastest within",
        "max_dpsnr": "the fastest within",
    }
    why = (
        f"{under[sel['constraint']['kind']]} {constraint_text(sel)}"
        if sel["constraint"]["kind"]
        else "the fastest point of the Pareto front within 0.05 dB of the best PSNR"
    )
    return (
        f"chosen: {c['id']} ({why}): {c['latency_ms']:.1f} ms median, {fmt(c['ratio_to_eager'], '.2f')} x eager, "
        f"{c['psnr']:.2f} dB ({c['dpsnr']:+.3f} dB against the best)"
    )


def constraint_text(sel: dict) -> str:
    kind, v = sel["constraint"]["kind"], sel["constraint"]["value"]
    if kind is None:
        return "no constraint"
    return {"max_latency_ms": f"{v:g} ms", "min_psnr": f"PSNR >= {v:g} dB", "max_dpsnr": f"{v:g} dB of the best"}[kind]


def table(sel: dict) -> list[str]:
    front = set(sel["pareto"])
    lines = [
        "| candidate | K | backend | precision | status | median ms | p90 ms | runs | x eager | img/s | peak MB | "
        "PSNR | SSIM | dPSNR | parity | front | note |",
        "|---|---:|---|---|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---|---|---|",
    ]
    for c in sel["candidates"]:
        par = c["parity"] or {}
        parity = ("pass" if par.get("passed") else "FAIL") + f" ({par['source']})" if par else "-"
        mark = "**" if c["id"] == sel["chosen"] else ""
        runs = (c["extra"].get("latency") or {}).get("iters")
        note = "; ".join(n for n in (c["reason"], c["extra"].get("timing_stopped")) if n)
        if not note and c["status"] == "built" and runs:
            note = f"timed in full: {runs} calls, none stopped it early"
        lines.append(
            f"| {mark}{c['id']}{mark} | {c['k']} | {c['backend']} | {c['precision']} | {c['status']} | "
            f"{fmt(c['latency_ms'], '.1f')} | {fmt(c['p90_ms'], '.1f')} | {fmt(runs, 'd')} | "
            f"{fmt(c['ratio_to_eager'], '.2f')} | "
            f"{fmt(c['images_per_s'], '.2f')} | {fmt(c['peak_memory_mb'], '.0f')} | {fmt(c['psnr'], '.3f')} | "
            f"{fmt(c['ssim'], '.4f')} | {fmt(c['dpsnr'], '+.3f')} | {parity} | {'yes' if c['id'] in front else ''} | "
            f"{note.replace('|', '/')} |"
        )
    return lines


def memory_lines(sel: dict) -> list[str]:
    """Each measured candidate's own peak resident memory, and its build steps' where it made its artifact."""
    parts = []
    for c in sel["candidates"]:
        peaks = dict(c.get("peak_rss_mb") or {})
        own = peaks.pop("candidate", None)
        if own is not None:
            steps = ", ".join(f"{k} {v}" for k, v in peaks.items())
            parts.append(f"{c['id']} {own:.0f}" + (f" ({steps})" if steps else ""))
    if not parts:
        return []
    return [
        "Peak memory (MB) of each candidate made, verified and timed, with its build steps': " + "; ".join(parts) + ".",
        "",
    ]


def _finalist_lines(sel: dict) -> list[str]:
    """The run's noise and the finalists' interleaved re-timing (see ``race``)."""
    out = [f"Noise: eager's slowest call {sel.get('noise', 0.0):.0%} over its fastest."] if "noise" in sel else []
    if sel.get("finalists"):
        out.append(
            "Finalists timed again, interleaved: "
            + "; ".join(
                f"{f['id']} {', '.join(f'{t:.0f}' for t in f['calls_ms'])} ms (latency now {f['latency_ms']:.1f} ms)"
                for f in sel["finalists"]
            )
            + "."
        )
    return out


def markdown(sel: dict) -> str:
    m, cfg = sel["machine"], sel["config"]
    ((h, w),) = cfg["resolutions"]
    lines = [
        "# ScaoedNet: what to ship",
        "",
        f"Command: `{sel.get('command', '')}`",
        "",
        f"**{summary_line(sel)}**",
        "",
        f"Constraint: {constraint_text(sel)}. Candidates: K = {', '.join(map(str, cfg['stages']))} x "
        f"{', '.join(cfg['backends'])}, at {h}x{w}, batch {cfg['batch']} on {cfg['device']}.",
        f"Machine: {m['cpu']}, {m['cores']} cores ({', '.join(m['isa'])}; class {m['isa_class']})"
        + (f"; GPU {m['gpu']['name']}" if m.get("gpu") else "")
        + f". {sel['timing']}; "
        f"{cfg['warmup']} warm-up + up to {cfg['iters']} timed runs per candidate (runs: how many; a candidate "
        "stops once it is slower, beyond the run's noise, than one that scores at least as high, or over the "
        f"budget, and any once its last {STABLE_RUNS} agree within {STABLE_SPREAD:.0%}: the note says which).",
        *_finalist_lines(sel),
        f"Quality: mean PSNR/SSIM against clean on {sel['evaluation']['pairs']} pairs of "
        f"`{sel['evaluation']['data']}`; "
        "fp32's per K measured once, each artifact's from its parity run (dPSNR there added to fp32's). "
        "dPSNR: against the best candidate.",
        "",
        *table(sel),
        "",
        "Pareto front (latency vs PSNR, fastest first): " + (", ".join(sel["pareto"]) or "-"),
        "",
        *memory_lines(sel),
        f"The command took {sel['wall_s']:.0f} s.",
        *class_lines(sel),
    ]
    load = sel.get("load") or {}
    if load.get("busy"):
        lines += [
            "",
            f"**Busy machine**: other processes took {load['other_processes_cores']:.2f} cores on average; "
            "do not quote these latencies.",
        ]
    return "\n".join(lines) + "\n"


def class_lines(sel: dict) -> list[str]:
    """``optimize --cpus``: a row per CPU class, then each other class's candidates."""
    by_cpu, native = sel.get("by_cpu") or {}, sel["machine"]["isa_class"]
    if not by_cpu:
        return []
    lines = [
        "",
        "## One choice per CPU class",
        "",
        f"Class {native} is this machine's own. Every other class was searched by "
        "`scaoed-deploy --as-cpu CLASS optimize` with the same settings: its INT8 files and IRs made and verified "
        "with that class's instructions, and timed on this machine's cores running them, not on such a machine. "
        "`scaoed-deploy denoise -m PACKAGE` (and a served or Ray run of it) takes the entry of the CPU it runs on.",
        "",
        "| class | measured as | chosen | median ms | x eager | PSNR | dPSNR | file |",
        "|---|---|---|---:|---:|---:|---:|---|",
    ]
    for cls, e in by_cpu.items():
        c = next((d for d in e["candidates"] if d["id"] == e["chosen"]), None)
        where = e["machine"].get("isa_capped_by") or "this CPU"
        if c is None:
            lines.append(f"| class {cls} | {where} | nothing met the constraint | | | | | |")
            continue
        lines.append(
            f"| class {cls} | {where} | {c['id']} | {fmt(c['latency_ms'], '.1f')} | "
            f"{fmt(c['ratio_to_eager'], '.2f')} | {fmt(c['psnr'], '.3f')} | {fmt(c['dpsnr'], '+.3f')} | "
            f"{(e['run'] or {}).get('artifact') or '-'} |"
        )
    for cls, e in by_cpu.items():
        if cls != native:
            lines += ["", f"### Class {cls}: every candidate", "", f"**{summary_line(e)}**", "", *table(e)]
    return lines


def labelled_points(done: list[dict], pareto: list[str]) -> list[dict]:
    """The points whose K is written beside them: the front's first, then the others, leaving out a point whose K
    label would sit on the same K's label of a point already kept (within 15 % in latency and 3 % of the PSNR
    range): one label says the K of a huddle of points of different backends."""
    span = (max(c["psnr"] for c in done) - min(c["psnr"] for c in done)) if done else 0.0
    kept: list[dict] = []
    for c in sorted(done, key=lambda c: (c["id"] not in pareto, c["latency_ms"])):
        near = any(
            o["k"] == c["k"]
            and abs(math.log10(o["latency_ms"] / c["latency_ms"])) < math.log10(1.15)
            and abs(o["psnr"] - c["psnr"]) <= 0.03 * span
            for o in kept
        )
        if not near:
            kept.append(c)
    return kept


def chart_png(sel: dict) -> bytes:
    """Latency (log) against PSNR: a colour per backend, points labelled by K, the front and the constraint drawn,
    the chosen point ringed."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import matplotlib.ticker

    done = [c for c in sel["candidates"] if c["status"] == "built" and c["latency_ms"] and c["psnr"] is not None]
    fig, ax = plt.subplots(figsize=(7.5, 4.8))
    colours = plt.rcParams["axes.prop_cycle"].by_key()["color"]
    for i, backend in enumerate(dict.fromkeys(c["backend"] for c in done)):
        pts = [c for c in done if c["backend"] == backend]
        ax.scatter(
            [c["latency_ms"] for c in pts],
            [c["psnr"] for c in pts],
            color=colours[i % len(colours)],
            label=backend,
            zorder=3,
        )
    for c in labelled_points(done, sel["pareto"]):
        # below and right of the point: the front's steps run right and then up from each point it passes
        ax.annotate(f"K{c['k']}", (c["latency_ms"], c["psnr"]), textcoords="offset points", xytext=(5, -11), fontsize=8)
    front = [c for cid in sel["pareto"] for c in done if c["id"] == cid]
    if front:
        ax.step(
            [c["latency_ms"] for c in front],
            [c["psnr"] for c in front],
            where="post",
            color="0.3",
            linestyle="--",
            linewidth=1,
            label="Pareto front",
            zorder=2,
        )
    kind, v = sel["constraint"]["kind"], sel["constraint"]["value"]
    if kind == "max_latency_ms":
        ax.axvline(v, color="crimson", linewidth=1, label=f"budget {v:g} ms")
    elif kind == "min_psnr":
        ax.axhline(v, color="crimson", linewidth=1, label=f"PSNR >= {v:g} dB")
    elif kind == "max_dpsnr" and sel["best_psnr"] is not None:
        ax.axhline(sel["best_psnr"] - v, color="crimson", linewidth=1, label=f"best - {v:g} dB")
    chosen = [c for c in done if c["id"] == sel["chosen"]]
    if chosen:
        ax.scatter(
            [chosen[0]["latency_ms"]],
            [chosen[0]["psnr"]],
            s=220,
            facecolors="none",
            edgecolors="black",
            linewidths=1.5,
            label=f"chosen: {chosen[0]['id']}",
            zorder=4,
        )
    ax.set_xscale("log")
    lats = [c["latency_ms"] for c in done] or [1.0]
    ticks = [m * 10**e for e in range(-1, 7) for m in (1, 2, 5) if min(lats) / 1.5 <= m * 10**e <= max(lats) * 1.5]
    ax.set_xticks(ticks or [min(lats)], [f"{t:g}" for t in ticks or [min(lats)]])  # 1-2-5 steps, not 10^x
    ax.xaxis.set_minor_formatter(matplotlib.ticker.NullFormatter())
    ax.set(xlabel="median latency (ms, log)", ylabel="mean PSNR (dB)", title="latency vs PSNR per candidate")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=7, loc="lower right")
    fig.tight_layout()
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=100)
    plt.close(fig)
    return buf.getvalue()
