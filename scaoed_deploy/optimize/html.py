"""``report.html``: one self-contained page (every image embedded as a PNG data URI) that says everything
``report.md`` says (the markdown itself, rendered: summary, constraint, machine, busy-machine warning, the table
with its runs and notes, the front, memory, noise and finalists), plus the chart and the chosen candidate's output
beside the noisy input and fp32 K = 5's, each with its PSNR against clean, full (the zoomed area marked) and
zoomed, with the difference. It reads at phone width: a viewport tag, images and chart scaled to the page, the
table scrolled sideways in its own box."""

from __future__ import annotations

import base64
import html
import io
import re

import numpy as np

from ..images import to_uint8
from ..quality import psnr_ssim
from .report import chart_png, markdown, summary_line

DIFF_GAIN = 8  # the difference map's amplification
ZOOM = 4  # the zoomed crop: the central 1/ZOOM of each side, enlarged ZOOM x
MARK = np.array([1.0, 0.15, 0.15], dtype=np.float32)  # the zoomed area's outline on the full images

STYLE = (
    "body{font-family:sans-serif;margin:1em;max-width:1400px}p{line-height:1.4}"
    ".scroll{overflow-x:auto;max-width:100%}table{border-collapse:collapse;font-size:12px}"
    "td,th{border:1px solid #ccc;padding:2px 6px;text-align:right;white-space:nowrap}"
    "td:nth-child(-n+5),td:last-child{text-align:left}td:last-child{white-space:normal;min-width:24em}"
    "tr.chosen{background:#e8f4e8;font-weight:bold}figure{margin:0 0 1em 0}"
    ".row{display:grid;gap:6px;grid-template-columns:repeat(4,minmax(0,1fr));max-width:1100px}"
    "@media(max-width:600px){.row{grid-template-columns:repeat(2,minmax(0,1fr))}}"
    ".row figure{text-align:center;font-size:12px;margin:0}img{max-width:100%;height:auto}"
    ".row img{image-rendering:pixelated;width:100%}"
    ".warn{background:#fff3cd;padding:.4em .6em;border-left:4px solid #e0a800}"
    ".classes{display:grid;gap:1em;grid-template-columns:repeat(auto-fit,minmax(min(100%,520px),1fr))}"
    ".classes section{min-width:0}"
)


def png_data_uri(rgb: np.ndarray | bytes) -> str:
    from PIL import Image

    if isinstance(rgb, bytes):
        data = rgb
    else:
        buf = io.BytesIO()
        Image.fromarray(np.clip(np.round(rgb * 255), 0, 255).astype(np.uint8)).save(buf, format="PNG")
        data = buf.getvalue()
    return "data:image/png;base64," + base64.b64encode(data).decode("ascii")


def zoom_box(h: int, w: int) -> tuple[int, int, int, int]:
    """(y, x, height, width) of the zoomed crop: the central 1/ZOOM of each side."""
    ch, cw = max(1, h // ZOOM), max(1, w // ZOOM)
    return (h - ch) // 2, (w - cw) // 2, ch, cw


def _outlined(img: np.ndarray, box: tuple[int, int, int, int]) -> np.ndarray:
    y, x, ch, cw = box
    out = img.copy()
    t = max(1, min(img.shape[:2]) // 128)  # a line that stays visible when the page scales the image down
    for ys, xs in (
        (slice(y, y + t), slice(x, x + cw)),
        (slice(y + ch - t, y + ch), slice(x, x + cw)),
        (slice(y, y + ch), slice(x, x + t)),
        (slice(y, y + ch), slice(x + cw - t, x + cw)),
    ):
        out[ys, xs] = MARK
    return out


def panels(noisy: np.ndarray, reference: np.ndarray, chosen: np.ndarray) -> dict[str, np.ndarray]:
    """The four panels (H x W x 3 in [0, 1]) of one image, the zoomed area outlined, and their zoomed crops."""
    diff = np.clip(np.abs(chosen - reference).mean(axis=2, keepdims=True) * DIFF_GAIN, 0, 1).repeat(3, axis=2)
    full = {"noisy input": noisy, "fp32 K=5": reference, "chosen": chosen, f"|chosen - fp32 K=5| x {DIFF_GAIN}": diff}
    box = zoom_box(*noisy.shape[:2])
    y, x, ch, cw = box
    zoom = {f"{k} (zoom)": v[y : y + ch, x : x + cw].repeat(ZOOM, axis=0).repeat(ZOOM, axis=1) for k, v in full.items()}
    return {**{k: _outlined(v, box) for k, v in full.items()}, **zoom}


def _inline(text: str) -> str:
    text = html.escape(text, quote=False)
    text = re.sub(r"`([^`]*)`", r"<code>\1</code>", text)
    return re.sub(r"\*\*(.+?)\*\*", r"<b>\1</b>", text)


def markdown_html(md: str, chosen: str | None) -> str:
    """report.md as HTML: headings, paragraphs, the table (in a box that scrolls sideways), bold and code."""
    out, para, lines = [], [], md.splitlines()

    def flush():
        if para:
            text = " ".join(para)
            cls = ' class="warn"' if text.startswith("**Busy machine**") else ""
            out.append(f"<p{cls}>{_inline(text)}</p>")
            para.clear()

    i = 0
    while i < len(lines):
        line = lines[i]
        if line.startswith("|"):
            flush()
            rows = []
            while i < len(lines) and lines[i].startswith("|"):
                rows.append([cell.strip() for cell in lines[i].strip().strip("|").split(" | ")])
                i += 1
            head, body = rows[0], [r for r in rows[2:]]
            cells = [
                '<div class="scroll"><table><thead><tr>'
                + "".join(f"<th>{_inline(h)}</th>" for h in head)
                + "</tr></thead><tbody>"
            ]
            for r in body:
                cls = ' class="chosen"' if chosen and r[0].strip("*") == chosen else ""
                cells.append(f"<tr{cls}>" + "".join(f"<td>{_inline(c)}</td>" for c in r) + "</tr>")
            out.append("".join(cells) + "</tbody></table></div>")
            continue
        if line.startswith("#"):
            flush()
            level = len(line) - len(line.lstrip("#"))
            out.append(f"<h{level}>{_inline(line[level:].strip())}</h{level}>")
        elif not line.strip():
            flush()
        else:
            para.append(line)
        i += 1
    flush()
    return "\n".join(out)


def _psnr(img: np.ndarray, clean: np.ndarray | None) -> str:
    return f": {psnr_ssim(to_uint8(img), to_uint8(clean))[0]:.2f} dB" if clean is not None else ""


def class_sections(sel: dict) -> list[str]:
    """``optimize --cpus``: each CPU class's chart and summary, side by side (one column on a phone)."""
    by_cpu = sel.get("by_cpu") or {}
    if not by_cpu:
        return []
    out = ["<h2>Charts per CPU class</h2>", '<div class="classes">']
    for cls, e in by_cpu.items():
        out.append(
            f"<section><h3>class {html.escape(cls)}</h3><p>{html.escape(summary_line(e))}</p>"
            f'<figure><img alt="latency vs PSNR, class {html.escape(cls)}" src="{png_data_uri(chart_png(e))}">'
            "</figure></section>"
        )
    return [*out, "</div>"]


def report_html(sel: dict, previews: list[dict]) -> str:
    parts = [
        "<!DOCTYPE html>",
        '<html lang="en"><head><meta charset="utf-8">',
        '<meta name="viewport" content="width=device-width, initial-scale=1">',
        f"<title>ScaoedNet: what to ship</title><style>{STYLE}</style></head><body>",
        markdown_html(markdown(sel), sel.get("chosen")),
        f'<figure><img alt="latency vs PSNR" src="{png_data_uri(chart_png(sel))}"></figure>',
        *class_sections(sel),
    ]
    if previews:
        parts.append(
            f"<h2>{html.escape(sel['chosen'])} against fp32 K=5</h2>"
            "<p>PSNR against the clean image; the red box on each full image is the zoomed area.</p>"
        )
    for p in previews:
        clean = p.get("clean")
        parts.append(f'<h3>{html.escape(p["name"])}</h3><div class="row">')
        for label, img in panels(p["noisy"], p["reference"], p["chosen"]).items():
            source = {"noisy input": p["noisy"], "fp32 K=5": p["reference"], "chosen": p["chosen"]}.get(label)
            caption = label + (_psnr(source, clean) if source is not None else "")
            parts.append(
                f'<figure><img alt="{html.escape(label)}" src="{png_data_uri(img)}">'
                f"<figcaption>{html.escape(caption)}</figcaption></figure>"
            )
        parts.append("</div>")
    parts.append("</body></html>")
    return "\n".join(parts) + "\n"
