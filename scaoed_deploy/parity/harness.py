"""The parity harness: does an artifact denoise like the fp32 eager model?

For each artifact, against eager PyTorch fp32 on the same inputs:
- tensor agreement on random inputs at several shapes, a black and a flat gray
  image (NFAE's constant-channel case), and every real noisy image: max / mean
  abs error and PSNR of the artifact's output against eager's;
- task agreement on real noisy/clean pairs: PSNR and SSIM of eager and artifact
  against the clean image, as the paper evaluates, and the difference in dB;
- stage-wise agreement of the noise maps when the artifact outputs them;
- NaN/Inf on every output.

Thresholds depend on the artifact's precision and can be overridden. When an
ONNX artifact fails, ``localise`` names the first node that leaves tolerance.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path

import numpy as np

from ..artifact import Artifact
from ..audit import audit, audit_ir
from ..checkpoint import Weights
from ..compare import Agreement, agreement
from ..data import fit_to_shape, probe_inputs, real_inputs
from ..errors import ScaoedError
from ..images import to_uint8
from ..precision.emulate import emulated_bytes
from ..quality import psnr_ssim
from ..runtime.base import RunOptions
from ..runtime.onnxruntime_backend import OnnxRuntimeRunner
from ..runtime.registry import open_runner
from ..runtime.torch_backend import TorchRunner
from ..seal import check_seal
from .localise import localise_failure


@dataclass(frozen=True)
class Thresholds:
    max_abs: float | None = None  # max abs error vs eager, every output and input (fp32)
    min_psnr: float | None = None  # PSNR (dB) of the output against eager's, every input
    max_dpsnr: float | None = None  # |mean PSNR(artifact) - PSNR(eager)| against clean images (dB)
    local_rtol: float = 1e-4  # localisation: a tensor leaves tolerance above this error / max(1, |ref|)


#: By precision (the issue's figures; bf16 has none there: ours is provisional, between fp16 and int8).
DEFAULT_THRESHOLDS = {
    "fp32": Thresholds(max_abs=1e-4, local_rtol=1e-4),
    "fp16": Thresholds(min_psnr=50.0, max_dpsnr=0.05, local_rtol=0.05),
    "bf16": Thresholds(min_psnr=40.0, max_dpsnr=0.1, local_rtol=0.1),
    "int8": Thresholds(max_dpsnr=0.3, local_rtol=0.25),
}


@dataclass
class Outcome:
    check: str
    measured: float | None
    limit: str
    passed: bool | None  # None: not evaluated (say why in detail)
    detail: str = ""


@dataclass
class TaskRow:
    """One real noisy/clean pair: eager and artifact against the clean image."""

    image: str
    eager_psnr: float
    eager_ssim: float
    artifact_psnr: float
    artifact_ssim: float

    @property
    def dpsnr(self) -> float:
        return self.artifact_psnr - self.eager_psnr

    @property
    def dssim(self) -> float:
        return self.artifact_ssim - self.eager_ssim


@dataclass
class ParityResult:
    artifact: Artifact
    stages: int
    thresholds: Thresholds
    tensors: list[Agreement]
    task: list[TaskRow]
    outcomes: list[Outcome]
    notes: list[str] = field(default_factory=list)
    localisation: dict | None = None
    preview: dict | None = None  # name, noisy, eager, artifact (H, W, 3) for the report's picture
    audit: dict | None = None  # ONNX: what the file computes, read back (scaoed_deploy/audit.py)
    data: str | None = None  # the folder of real noisy/clean pairs the task figures come from (resolved)

    @property
    def passed(self) -> bool:
        return all(o.passed is not False for o in self.outcomes)

    @property
    def failures(self) -> list[Outcome]:
        return [o for o in self.outcomes if o.passed is False]

    def to_dict(self) -> dict:
        return {
            "artifact": str(self.artifact.path),
            "kind": self.artifact.kind,
            "precision": self.artifact.precision,
            "stages": self.stages,
            "passed": self.passed,
            "thresholds": asdict(self.thresholds),
            "outcomes": [asdict(o) for o in self.outcomes],
            "tensors": [t.to_dict() for t in self.tensors],
            "task": [dict(asdict(r), dpsnr=r.dpsnr, dssim=r.dssim) for r in self.task],
            "mean_dpsnr": _mean([r.dpsnr for r in self.task]),
            "mean_psnr": _mean([r.artifact_psnr for r in self.task]),
            "mean_ssim": _mean([r.artifact_ssim for r in self.task]),
            "eager_mean_psnr": _mean([r.eager_psnr for r in self.task]),
            "data": self.data,
            "localisation": self.localisation,
            "audit": self.audit,
            "notes": self.notes,
        }


def _mean(values):
    return float(np.mean(values)) if values else None


def thresholds_for(precision: str, **overrides) -> Thresholds:
    base = DEFAULT_THRESHOLDS.get(precision)
    if base is None:
        raise ScaoedError(f"unknown precision {precision!r}; use one of {', '.join(DEFAULT_THRESHOLDS)}")
    return replace(base, **{k: v for k, v in overrides.items() if v is not None})


def check_consistency(artifact: Artifact, weights: Weights, stages: int | None) -> int:
    """The stage count to compare at; refuses an artifact made from other weights or another K/T."""
    k = stages or artifact.stages
    if k is None:
        raise ScaoedError(f"{artifact.path}: records no stage count; pass --stages")
    if artifact.stages is not None and artifact.stages != k:
        raise ScaoedError(f"{artifact.path} was exported with K={artifact.stages}, but --stages says {k}")
    if artifact.blocks is not None and artifact.blocks != weights.blocks:
        raise ScaoedError(f"{artifact.path} has T={artifact.blocks} blocks, the reference weights T={weights.blocks}")
    recorded = artifact.metadata.get("weights")
    if recorded and recorded != weights.identity:
        hint = "pass the same --checkpoint" if not recorded.startswith("random-seed-") else f"it used {recorded}"
        raise ScaoedError(
            f"{artifact.path} was exported from other weights ({recorded[:16]}...), "
            f"not {weights.identity[:16]}...: {hint}"
        )
    return k


def _compare_outputs(case, names, eager_outs, got_outs) -> list[Agreement]:
    """Match the artifact's outputs to eager's by name: 'denoised' first, then 'noise_map_i'."""
    checks = []
    for i, (name, got) in enumerate(zip(names, got_outs)):
        if name.startswith("noise_map_"):
            idx = int(name.rsplit("_", 1)[1])
        elif i == 0:
            idx = 0
        else:
            continue
        if idx < len(eager_outs):
            checks.append(agreement(case, name if i else "denoised", eager_outs[idx], got))
    return checks


# Parity reports non-finite outputs as a failed check, and measures the file it is given: run_parity refused an
# edited one already, unless asked to measure it all the same.
_REPORTS_NAN = RunOptions(check_finite=False, allow_unverified=True)


def _read_back(artifact: Artifact) -> dict | None:
    if artifact.kind == "onnx":
        return audit(artifact.path).to_dict()
    if artifact.kind == "openvino":
        return audit_ir(artifact.path).to_dict()
    return None


def artifact_runner(artifact: Artifact, providers: list[str] | None = None):
    """The runner parity checks an artifact with: the registry's, except that an fp16/bf16 ONNX on the CPU
    provider runs emulated (every low-precision tensor rounded where it is made: precision/emulate.py),
    since ONNX Runtime's CPU provider would compute it in float32 or not at all."""
    if artifact.emulated(providers):
        return OnnxRuntimeRunner(emulated_bytes(artifact.path), providers=providers)
    if artifact.kind == "onnx" and providers and "CUDAExecutionProvider" in providers:
        return open_runner(artifact, "onnxruntime-cuda", _REPORTS_NAN)
    return open_runner(artifact, options=_REPORTS_NAN)


def run_parity(
    artifact: Artifact,
    weights: Weights,
    stages: int | None = None,
    data_dir: str | Path | None = None,
    thresholds: Thresholds | None = None,
    localise: bool = True,
    step: Callable[[str], None] = lambda s: None,
    read_back: dict | None = None,
    label: str | None = None,
    allow_unverified: bool = False,
) -> ParityResult:
    """``read_back``: the artifact's audit (``audit.audit(...).to_dict()``) when the caller has read it already;
    ``label``: the name progress lines give the artifact (build-engine checks a temporary file: its final name);
    ``allow_unverified``: measure a file edited after its verification instead of refusing it."""
    label = label or artifact.path.name
    check_seal(artifact.path, artifact.metadata, allow_unverified)
    k = check_consistency(artifact, weights, stages)
    thresholds = thresholds or thresholds_for(artifact.precision)
    eager = TorchRunner(weights, stages=k, device="cpu")
    runner = artifact_runner(artifact)
    names = list(getattr(runner, "output_names", None) or artifact.output_names)
    notes: list[str] = []
    if artifact.emulated():
        notes.append(
            f"{artifact.precision} arithmetic emulated on ONNX Runtime CPU: every {artifact.precision} tensor "
            "rounded where it is made, ops computed in float32 (precision/emulate.py)"
        )
    tensors: list[Agreement] = []
    inputs: dict[str, np.ndarray] = {}
    for case, x in probe_inputs(artifact.static_hw, artifact.static_batch, shapes=3, seed=1234):
        step(f"{label}: {case}")
        inputs[case] = x
        tensors += _compare_outputs(case, names, eager.run(x), runner.run(x))

    task: list[TaskRow] = []
    preview = None
    real, real_notes = real_inputs(data_dir, artifact.static_hw, artifact.static_batch)
    notes += real_notes
    for s, batch in real:
        step(f"{label}: real noise {s.name}")
        case = f"real noise {s.name}"
        inputs[case] = batch
        ref_outs, got_outs = eager.run(batch), runner.run(batch)
        tensors += _compare_outputs(case, names, ref_outs, got_outs)
        ref_img, got_img = ref_outs[0][0].transpose(1, 2, 0), got_outs[0][0].transpose(1, 2, 0)
        if preview is None:
            preview = {"name": s.name, "noisy": batch[0].transpose(1, 2, 0), "eager": ref_img, "artifact": got_img}
        if s.clean is not None:
            clean = to_uint8(fit_to_shape(s.clean, artifact.static_hw).transpose(1, 2, 0))
            (ep, es), (ap, as_) = psnr_ssim(to_uint8(ref_img), clean), psnr_ssim(to_uint8(got_img), clean)
            task.append(TaskRow(s.name, ep, es, ap, as_))
    if not real:
        notes.append("no real noisy/clean pairs (../shared/data/sidd or --data): task agreement not measured")
    if preview is None:
        x = inputs["random #1"][:1]
        preview = {
            "name": "random #1",
            "noisy": x[0].transpose(1, 2, 0),
            "eager": eager(x)[0].transpose(1, 2, 0),
            "artifact": runner(x)[0].transpose(1, 2, 0),
        }

    runner.close()  # the session or engine is not needed for the verdict or the localisation
    outcomes = evaluate(tensors, task, thresholds)
    result = ParityResult(
        artifact,
        k,
        thresholds,
        tensors,
        task,
        outcomes,
        notes,
        None,
        preview,
        read_back or _read_back(artifact),
        str(Path(data_dir).resolve()) if task else None,
    )
    if not result.passed and localise and artifact.kind == "onnx":
        step(f"{label}: localising the first divergent node")
        worst = _worst_case(tensors, result)
        result.localisation = localise_failure(artifact, weights, k, inputs[worst], thresholds.local_rtol)
        result.localisation["input"] = worst
    return result


def _worst_case(tensors: list[Agreement], result: ParityResult) -> str:
    broken = [t for t in tensors if not t.finite]
    if broken:
        return broken[0].case
    if any(o.check == "task: |mean dPSNR| vs clean" and o.passed is False for o in result.outcomes):
        real = [t for t in tensors if t.case.startswith("real noise")]
        if real:
            return min(real, key=lambda t: t.psnr).case
    return max(tensors, key=lambda t: t.max_abs).case


def evaluate(tensors: list[Agreement], task: list[TaskRow], t: Thresholds) -> list[Outcome]:
    out = []
    bad = [f"{c.case}/{c.output}" for c in tensors if not c.finite]
    out.append(
        Outcome(
            "no NaN/Inf in any output",
            float(len(bad)),
            "0 outputs",
            not bad,
            ("non-finite: " + ", ".join(bad[:4])) if bad else "",
        )
    )
    finite = [c for c in tensors if c.finite]
    if t.max_abs is not None and finite:
        worst = max(finite, key=lambda c: c.max_abs)
        out.append(
            Outcome(
                "tensor: max abs error vs eager",
                worst.max_abs,
                f"<= {t.max_abs:g}",
                worst.max_abs <= t.max_abs,
                f"worst: {worst.case}/{worst.output}",
            )
        )
    denoised = [c for c in finite if c.output == "denoised"]
    if t.min_psnr is not None and denoised:
        worst = min(denoised, key=lambda c: c.psnr)
        out.append(
            Outcome(
                "tensor: output PSNR vs eager (dB)",
                worst.psnr,
                f">= {t.min_psnr:g}",
                worst.psnr >= t.min_psnr,
                f"worst: {worst.case}",
            )
        )
    if t.max_dpsnr is not None:
        if task:
            d = _mean([r.dpsnr for r in task])
            out.append(
                Outcome(
                    "task: |mean dPSNR| vs clean",
                    d,
                    f"|d| <= {t.max_dpsnr:g} dB",
                    abs(d) <= t.max_dpsnr,
                    f"mean over {len(task)} real pairs; eager {_mean([r.eager_psnr for r in task]):.2f} dB",
                )
            )
        else:
            out.append(
                Outcome(
                    "task: |mean dPSNR| vs clean",
                    None,
                    f"|d| <= {t.max_dpsnr:g} dB",
                    None,
                    "not evaluated: no real noisy/clean pairs",
                )
            )
    return out


def format_measured(o: Outcome) -> str:
    if o.measured is None:
        return "-"
    if isinstance(o.measured, float) and math.isinf(o.measured):
        return "inf" if o.measured > 0 else "-inf"
    if o.check.startswith("no NaN"):
        return str(int(o.measured))
    return f"{o.measured:.3g}" if abs(o.measured) < 0.01 or o.check.startswith("tensor: max") else f"{o.measured:.3f}"
