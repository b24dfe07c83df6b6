"""Markdown table of benchmarks/precision/k*_*.json (build-engine --json outputs)."""

from __future__ import annotations

import json
import sys
from pathlib import Path

HERE = Path(__file__).parent


def _size(path: Path) -> int | None:
    return path.stat().st_size if path.is_file() else None


def main() -> int:
    rows = [
        "# Precision artifacts on CPU (demo weights, T=16, SIDD crops 256x256)",
        "",
        "Command: `bash benchmarks/precision/run.sh && python benchmarks/precision/summarize.py > "
        "benchmarks/precision/results.md`",
        "",
        "| K | artifact | kept FP32 | lint errors | NaN/Inf | worst PSNR vs eager (all probes) | "
        "worst PSNR vs eager (SIDD) | mean dPSNR (SIDD) | per-crop dPSNR | parity | seconds |",
        "|---:|---|---:|---:|---:|---:|---:|---:|---|---|---:|",
    ]
    audit_rows = [
        "## What each file holds, read back from the file (`scaoed_deploy/audit.py`)",
        "",
        "| K | artifact | compute nodes by precision | float32 compute by module | Cast | Q / DQ | "
        "unique weights | weight MB | stored twice | file MB | x fp32 file |",
        "|---:|---|---|---|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for path in sorted(HERE.glob("k*_*.json"), key=lambda p: (int(p.stem[1:].split("_")[0]), p.stem)):
        try:
            d = json.loads(path.read_text())
        except json.JSONDecodeError:
            rows.append(f"| {path.stem} | (no result: see .{path.stem}.log) |||||||||")
            continue
        par = d["parity"]
        tensors = [t for t in par["tensors"] if t["output"] == "denoised"]
        finite = [t for t in tensors if t["finite"]]
        nan = len(tensors) - len(finite)
        worst = min(t["psnr"] for t in finite)
        sidd = min(t["psnr"] for t in finite if t["case"].startswith("real noise"))
        crops = " / ".join(f"{r['dpsnr']:+.3f}" for r in par["task"])
        conv = d["conversion"]
        name = Path(d["precision_onnx"]).name
        errors = d["lint"]["errors"]
        target = "" if conv["target"] == "tensorrt" or conv["precision"] != "int8" else " (ORT CPU: not for TensorRT)"
        a = d.get("audit")
        if a:
            fp32_bytes = d.get("fp32_onnx_bytes") or _size(Path(d["fp32_onnx"]))
            modules = sorted(a["float32_by_module"].items(), key=lambda kv: -kv[1])
            where = ", ".join(f"{m} {n}" for m, n in modules[:2]) + (
                f", +{len(modules) - 2} modules" if len(modules) > 2 else ""
            )
            audit_rows.append(
                f"| {par['stages']} | `{name}` | {', '.join(f'{n} {p}' for p, n in a['totals'].items())} | {where} | "
                f"{a['casts']} | {a['quantize']} / {a['dequantize']} | {a['weights']['unique']} | "
                f"{a['weights']['bytes'] / 1e6:.2f} | {len(a['duplicated_weights'])} | {a['file_bytes'] / 1e6:.2f} | "
                + (f"{a['file_bytes'] / fp32_bytes:.2f} |" if fp32_bytes else "- |")
            )
        rows.append(
            f"| {par['stages']} | `{name}`{target} | {conv['kept_fp32']} | {errors} | {nan} | {worst:.1f} dB | "
            f"{sidd:.1f} dB | {par['mean_dpsnr']:+.3f} | {crops} | {'pass' if par['passed'] else 'FAIL'} | "
            f"{sum(v for k, v in d['seconds'].items() if k != 'total'):.0f} |"
        )
    rows += [
        "",
        "Probes: random images at three sizes, a black and a flat gray image (NFAE's constant-channel case), "
        "and the 4 SIDD crops. fp16/bf16 are run emulated on ONNX Runtime CPU (every low-precision tensor rounded "
        "where it is made; scaoed_deploy/precision/emulate.py). dPSNR: artifact minus eager against the clean "
        "crops. Thresholds: fp16 PSNR >= 50 dB and |dPSNR| <= 0.05 dB; bf16 >= 40 dB and <= 0.1 dB "
        "(provisional); int8 |dPSNR| <= 0.3 dB. Kept FP32: the islands (fp16/bf16), or the convolutions left "
        "unquantized (int8: ModelOpt's own small-channel rule plus any kept for sensitivity).",
        "",
    ]
    rows += audit_rows + [
        "",
        "float32 compute of an fp16/bf16 file: exactly its islands (the build fails otherwise); "
        "I/O Casts are not compute. int8: every node whose operands all come through "
        "DequantizeLinear is counted int8. x fp32 file: size over the fp32 export of the same K.",
        "",
    ]
    sys.stdout.write("\n".join(rows))
    return 0


if __name__ == "__main__":
    sys.exit(main())
