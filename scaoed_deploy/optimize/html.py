"""``report.html``: one self-contained page (every image embedded as a PNG data URI): the chart, the table, and
the chosen candidate's output beside the noisy input and fp32 K = 5's, full and zoomed, with the difference."""

from __future__ import annotations

import base64
import html
import io

import numpy as np

from ..bench.report import fmt
from .report import chart_png, constraint_text, summary_line

DIFF_GAIN = 8  # the difference map's amplification
ZOOM = 4  # the zoomed crop: the central 1/ZOOM of each side, enlarged ZOOM x


def png_data_uri(rgb: np.ndarray | bytes) -> str:
    from PIL import Image

    if isinstance(rgb, bytes):
        data = rgb
    else:
        buf = io.BytesIO()
        Image.fromarray(np.clip(np.round(rgb * 255), 0, 255).astype(np.uint8)).save(buf, format="PNG")
        data = buf.getvalue()
    return "data:image/png;base64," + base64.b64encode(data).decode("ascii")


def panels(noisy: np.ndarray, reference: np.ndarray, chosen: np.ndarray) -> dict[str, np.ndarray]:
    """The four panels (H x W x 3 in [0, 1]) of one image, and their zoomed crops."""
    diff = np.clip(np.abs(chosen - reference).mean(axis=2, keepdims=True) * DIFF_GAIN, 0, 1).repeat(3, axis=2)
    full = {"noisy input": noisy, "fp32 K=5": reference, "chosen": chosen, f"|chosen - fp32 K=5| x {DIFF_GAIN}": diff}
    h, w = noisy.shape[:2]
    ch, cw = max(1, h // ZOOM), max(1, w // ZOOM)
    y, x = (h - ch) // 2, (w - cw) // 2
    zoom = {f"{k} (zoom)": v[y:y + ch, x:x + cw].repeat(ZOOM, axis=0).repeat(ZOOM, axis=1) for k, v in full.items()}
    return {**full, **zoom}


def _table(sel: dict) -> str:
    head = ["candidate", "K", "backend", "precision", "status", "median ms", "p90 ms", "x eager", "img/s", "peak MB",
            "PSNR", "SSIM", "dPSNR", "parity", "front", "note"]
    rows = []
    for c in sel["candidates"]:
        par = c["parity"] or {}
        cells = [c["id"], c["k"], c["backend"], c["precision"], c["status"], fmt(c["latency_ms"], ".1f"),
                 fmt(c["p90_ms"], ".1f"), fmt(c["ratio_to_eager"], ".2f"), fmt(c["images_per_s"], ".2f"),
                 fmt(c["peak_memory_mb"], ".0f"), fmt(c["psnr"], ".3f"), fmt(c["ssim"], ".4f"), fmt(c["dpsnr"], "+.3f"),
                 ("pass" if par.get("passed") else "FAIL") if par else "-", "yes" if c["id"] in sel["pareto"] else "",
                 c["reason"]]
        cls = ' class="chosen"' if c["id"] == sel["chosen"] else ""
        rows.append(f"<tr{cls}>" + "".join(f"<td>{html.escape(str(v))}</td>" for v in cells) + "</tr>")
    return ("<table><thead><tr>" + "".join(f"<th>{h}</th>" for h in head) + "</tr></thead><tbody>"
            + "".join(rows) + "</tbody></table>")


def report_html(sel: dict, previews: list[dict]) -> str:
    m = sel["machine"]
    parts = ["<!DOCTYPE html>", '<html lang="en"><head><meta charset="utf-8"><title>ScaoedNet: what to ship</title>',
             "<style>body{font-family:sans-serif;margin:1.5em;max-width:1400px}table{border-collapse:collapse;"
             "font-size:12px}td,th{border:1px solid #ccc;padding:2px 6px;text-align:right}td:nth-child(-n+5),"
             "td:last-child{text-align:left}tr.chosen{background:#e8f4e8;font-weight:bold}figure{margin:0 0 1em 0}"
             ".row{display:flex;gap:6px;flex-wrap:wrap}.row figure{text-align:center;font-size:12px}"
             "img{image-rendering:pixelated}</style></head><body>",
             "<h1>ScaoedNet: what to ship</h1>",
             f"<p><b>{html.escape(summary_line(sel))}</b></p>",
             f"<p>Constraint: {html.escape(constraint_text(sel))}. Machine: {html.escape(m['cpu'])}, {m['cores']} cores "
             f"({html.escape(', '.join(m['isa']))}). Command: <code>{html.escape(sel.get('command') or '')}</code>. "
             f"It took {sel['wall_s']:.0f} s.</p>",
             f'<figure><img alt="latency vs PSNR" src="{png_data_uri(chart_png(sel))}"></figure>',
             _table(sel)]
    if previews:
        parts.append(f"<h2>{html.escape(sel['chosen'])} against fp32 K=5</h2>")
    for p in previews:
        parts.append(f"<h3>{html.escape(p['name'])}</h3><div class=\"row\">")
        for label, img in panels(p["noisy"], p["reference"], p["chosen"]).items():
            parts.append(f'<figure><img alt="{html.escape(label)}" src="{png_data_uri(img)}">'
                         f"<figcaption>{html.escape(label)}</figcaption></figure>")
        parts.append("</div>")
    parts.append("</body></html>")
    return "\n".join(parts) + "\n"
