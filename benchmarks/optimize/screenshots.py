"""Render an optimize package's report.html in headless Chromium at desktop and phone widths.

    python3 benchmarks/optimize/screenshots.py benchmarks/optimize/warm

Needs Debian's Chromium (`apt-get install chromium`) and Playwright's Python client (`pip install playwright`;
its own browser download is not used). Writes `screens/{desktop,phone}.jpg` (full page) and `screens/layout.json`
beside the report: for each width, whether the page scrolls sideways, the widest image against the viewport, the
table's scroll box, every image that failed to decode, and the text of the busy warning and notes, so the record
says what was checked, not only what it looked like. Exits 1 when a check fails.
"""

from __future__ import annotations

import json
import os
import pathlib
import sys

WIDTHS = {"desktop": (1280, 900), "phone": (420, 860)}
CHROMIUM = os.environ.get("CHROMIUM", "/usr/bin/chromium")
FLAGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]

MEASURE = """() => {
  const vw = document.documentElement.clientWidth;
  const imgs = [...document.images];
  const scroll = document.querySelector('.scroll');
  return {
    viewport_width: vw,
    page_width: document.documentElement.scrollWidth,
    images: imgs.length,
    images_broken: imgs.filter(i => !(i.complete && i.naturalWidth > 0)).map(i => i.alt),
    widest_image_right: Math.max(...imgs.map(i => i.getBoundingClientRect().right)),
    chart_width: imgs.length ? imgs[0].getBoundingClientRect().width : 0,
    table_box_width: scroll ? scroll.getBoundingClientRect().width : null,
    table_scrolls_inside: scroll ? scroll.scrollWidth > scroll.clientWidth : null,
    captions_with_psnr: [...document.querySelectorAll('figcaption')].filter(c => / dB$/.test(c.textContent)).length,
    has_runs_column: [...document.querySelectorAll('th')].some(t => t.textContent === 'runs'),
    notes_filled: [...document.querySelectorAll('tbody tr')].filter(r => r.lastElementChild.textContent.trim()).length,
    rows: document.querySelectorAll('tbody tr').length,
  };
}"""


def main(folder: str) -> int:
    from playwright.sync_api import sync_playwright

    report = pathlib.Path(folder) / "report.html"
    out = report.parent / "screens"
    out.mkdir(exist_ok=True)
    facts, failed = {}, []
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, args=FLAGS)
        try:
            for name, (width, height) in WIDTHS.items():
                page = browser.new_page(viewport={"width": width, "height": height})
                page.goto(report.resolve().as_uri())
                page.wait_for_load_state("load")
                m = page.evaluate(MEASURE)
                page.screenshot(path=str(out / f"{name}.jpg"), full_page=True, type="jpeg", quality=70)
                page.close()
                m["chromium"] = browser.version
                facts[name] = m
                if m["page_width"] > m["viewport_width"]:
                    failed.append(f"{name}: page scrolls sideways ({m['page_width']} > {m['viewport_width']} px)")
                if m["widest_image_right"] > m["viewport_width"]:
                    failed.append(f"{name}: an image ends at {m['widest_image_right']:.0f} px, past the viewport")
                if m["images_broken"]:
                    failed.append(f"{name}: images that did not decode: {m['images_broken']}")
        finally:
            browser.close()
    facts["failed"] = failed
    (out / "layout.json").write_text(json.dumps(facts, indent=1) + "\n")
    for name in WIDTHS:
        m = facts[name]
        print(
            f"{name}: viewport {m['viewport_width']} px, page {m['page_width']} px, chart {m['chart_width']:.0f} px, "
            f"{m['images']} images ({len(m['images_broken'])} broken), table scrolls inside: "
            f"{m['table_scrolls_inside']}, {m['captions_with_psnr']} captions with PSNR, "
            f"{m['notes_filled']}/{m['rows']} notes filled"
        )
    for line in failed:
        print("FAILED", line)
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1] if len(sys.argv) > 1 else "benchmarks/optimize/warm"))
