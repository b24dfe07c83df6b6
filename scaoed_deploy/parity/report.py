"""Parity reports: ``parity.json``, ``parity.md`` and one PNG per artifact, each written atomically; and the
parity record beside an artifact that passed (``NAME.parity.json``: its sha256 and figures), which later steps
(``triton-repo``) read back for exactly that file."""

from __future__ import annotations

import datetime as _dt
import json
import math
from pathlib import Path

import numpy as np

from ..audit import audit_line
from ..cpu import this_cpu
from ..util.files import atomic_path, sha256_of
from ..util.jsonio import dumps, json_safe
from .harness import ParityResult, format_measured


def report_dict(results: list[ParityResult], reference: dict, command: str | None) -> dict:
    return json_safe(
        {
            "command": command,
            "created": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
            "reference": reference,
            "checked_on": this_cpu().to_dict(),  # the CPU (and ISA) whose kernels ran the artifact
            "passed": all(r.passed for r in results),
            "artifacts": [r.to_dict() for r in results],
        }
    )


def parity_record_path(artifact: str | Path) -> Path:
    return Path(artifact).with_name(Path(artifact).stem + ".parity.json")


def write_parity_record(result: ParityResult, command: str | None = None) -> Path | None:
    """``NAME.parity.json`` beside an artifact that passed: its sha256, verdict and figures (none when it failed)."""
    if not result.passed:
        return None
    d = result.to_dict()
    record = {
        "artifact": result.artifact.path.name,
        "sha256": sha256_of(result.artifact.path),
        "passed": True,
        "precision": d["precision"],
        "stages": d["stages"],
        "mean_dpsnr_db": d["mean_dpsnr"],
        "mean_psnr_db": d["mean_psnr"],
        "mean_ssim": d["mean_ssim"],
        "eager_mean_psnr_db": d["eager_mean_psnr"],
        "data": d["data"],  # the pairs the task figures come from
        "checks": {o["check"]: o["measured"] for o in d["outcomes"] if o["measured"] is not None},
        "command": command,
        "checked_on": this_cpu().to_dict(),
        "created": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
    }
    path = parity_record_path(result.artifact.path)
    with atomic_path(path) as tmp:
        tmp.write_text(dumps(record) + "\n")
    return path


def read_parity_record(artifact: str | Path, sha256: str) -> dict | None:
    """The parity record of exactly this file (``sha256``), or None (none, unreadable, or another file's)."""
    path = parity_record_path(artifact)
    try:
        record = json.loads(path.read_text())
    except (OSError, ValueError):  # missing, not UTF-8, not JSON
        return None
    return record if isinstance(record, dict) and record.get("sha256") == sha256 else None


def _pass_word(passed) -> str:
    return {True: "pass", False: "**FAIL**", None: "n/a"}[passed]


def markdown(results: list[ParityResult], reference: dict, command: str | None) -> str:
    lines = ["# Parity report", ""]
    if command:
        lines += [f"Command: `{command}`", ""]
    lines += [
        f"Reference: eager PyTorch fp32, K={reference['stages']}, T={reference['blocks']}, "
        f"weights `{reference['weights']}`",
        "",
    ]
    lines += [f"Checked on: {this_cpu().describe()}, class {this_cpu().isa_class}", ""]
    for r in results:
        lines += [
            f"## `{r.artifact.path.name}` ({r.artifact.kind}, {r.artifact.precision}): "
            f"{'passed' if r.passed else 'FAILED'}",
            "",
        ]
        if r.audit:
            lines += [f"Read back: {audit_line(r.audit)}", ""]
        lines += ["| check | measured | limit | result | detail |", "|---|---:|---|---|---|"]
        for o in r.outcomes:
            lines.append(f"| {o.check} | {format_measured(o)} | {o.limit} | {_pass_word(o.passed)} | {o.detail} |")
        lines.append("")
        if r.task:
            lines += [
                "| image | eager PSNR | eager SSIM | artifact PSNR | artifact SSIM | dPSNR (dB) |",
                "|---|---:|---:|---:|---:|---:|",
            ]
            for t in r.task:
                lines.append(
                    f"| {t.image} | {t.eager_psnr:.2f} | {t.eager_ssim:.4f} | {t.artifact_psnr:.2f} | "
                    f"{t.artifact_ssim:.4f} | {t.dpsnr:+.3f} |"
                )
            lines.append("")
        lines += ["| input | output | shape | max abs | mean abs | PSNR vs eager |", "|---|---|---|---:|---:|---:|"]
        for c in r.tensors:
            psnr = "inf" if c.psnr == math.inf else f"{c.psnr:.1f}"
            lines.append(
                f"| {c.case} | {c.output} | {'x'.join(map(str, c.shape))} | {c.max_abs:.3g} | "
                f"{c.mean_abs:.3g} | {psnr} |"
            )
        lines.append("")
        if r.localisation:
            lines += [f"First divergent node: {localisation_line(r.localisation)}", ""]
        lines += [f"- {n}" for n in r.notes] + ([""] if r.notes else [])
        lines += [f"![{r.artifact.path.name}]({image_name(r)})", ""]
    return "\n".join(lines)


def localisation_line(loc: dict) -> str:
    if loc.get("skipped"):
        return f"not looked for: {loc['skipped']}"
    if not loc.get("found"):
        return f"not found ({loc.get('detail', '')}; {loc.get('compared_tensors', 0)} tensors compared)"
    what = "NaN/Inf where the reference is finite" if loc["nonfinite"] else f"max abs error {loc['max_abs']:.3g}"
    return f"{loc['where']} (node {loc['node']}, tensor {loc['tensor']}): {what}, on input '{loc.get('input', '?')}'"


def image_name(r: ParityResult) -> str:
    return f"{r.artifact.path.stem}.png"


def save_preview(r: ParityResult, path: Path) -> None:
    """noisy | eager | artifact | amplified |artifact - eager|, for one image."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    p = r.preview
    show = lambda a: np.clip(np.nan_to_num(a, nan=0.0), 0, 1)  # noqa: E731
    diff = np.abs(np.nan_to_num(p["artifact"], nan=1e3) - p["eager"]).mean(axis=2)
    peak = float(diff.max())
    gain = 1.0 / peak if peak > 0 else 1.0
    fig, axes = plt.subplots(1, 4, figsize=(14, 4), dpi=100)
    panels = [
        (show(p["noisy"]), f"noisy ({p['name']})"),
        (show(p["eager"]), "eager fp32"),
        (show(p["artifact"]), f"{r.artifact.path.name}"),
        (np.clip(diff * gain, 0, 1), f"|difference| x {gain:.3g}"),
    ]
    for ax, (img, title) in zip(axes, panels):
        ax.imshow(img, cmap="magma" if img.ndim == 2 else None, vmin=0, vmax=1)
        ax.set_title(title, fontsize=9)
        ax.axis("off")
    fig.suptitle(f"{r.artifact.precision} artifact vs eager: {'passed' if r.passed else 'FAILED'}", fontsize=10)
    fig.tight_layout()
    with atomic_path(path) as tmp:
        fig.savefig(tmp, format="png")
    plt.close(fig)


def write_reports(
    results: list[ParityResult], out_dir: str | Path, reference: dict, command: str | None = None
) -> list[Path]:
    out_dir = Path(out_dir)
    written = []
    with atomic_path(out_dir / "parity.json") as tmp:
        tmp.write_text(dumps(report_dict(results, reference, command)) + "\n")
    written.append(out_dir / "parity.json")
    with atomic_path(out_dir / "parity.md") as tmp:
        tmp.write_text(markdown(results, reference, command))
    written.append(out_dir / "parity.md")
    for r in results:
        if r.preview is not None:
            save_preview(r, out_dir / image_name(r))
            written.append(out_dir / image_name(r))
    return written
