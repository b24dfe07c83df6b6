"""``build-engine``: fp32 ONNX -> precision ONNX -> TensorRT lint -> parity -> engine.

(``target="openvino"``: fp32 ONNX -> OpenVINO IR (fp32, bf16, or INT8 by NNCF;
``precision/openvino.py``) -> read-back audit -> parity on OpenVINO; no lint, no engine.)

1. the fp32 ONNX: given (``onnx=``), reused from ``export/`` when it was made from the
   same weights at the same K, or exported (and verified) on the fly; with no K given,
   the newest fp32 export of the weights in ``export/``, else their default K;
2. the precision ONNX (``precision/convert.py``), calibrated on real noisy images;
3. the TensorRT lint (``precision/lint.py``) against the engine's profile;
4. the read-back audit of the written file (``audit.py``): its float32 compute nodes must be
   exactly the FP32 islands (INT8: its float convolutions exactly the kept ones), and no
   weight may be stored twice; then parity through the harness on ONNX Runtime (a failing
   artifact is not kept);
5. the engine with its sidecar when ``tensorrt`` imports (``build/tensorrt.py``: the build half of TensorRT);
   otherwise the sidecar is written as the build plan (with the trtexec line) and ``tensorrt_missing`` says why.

Steps 2-4 work on a temporary file: the precision ONNX lands in ``export/`` only
once it has passed lint (TensorRT target), the audit and parity.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from ..artifact import OPENVINO_PRECISIONS, PRECISIONS, TARGETS, load_artifact, precision_filename, read_metadata
from ..audit import audit, audit_ir, check_int8_convs, check_islands, check_weights
from ..checkpoint import DEFAULT_STAGES, Weights
from ..data import default_sidd_dir
from ..errors import ScaoedError, VerificationError
from ..export import ExportSpec, default_filename, export_onnx
from ..isolate.memory import peak_of
from ..parity import run_parity, write_parity_record
from ..precision.calibration import calibration_set, check_sources
from ..precision.convert import make_precision_onnx
from ..precision.lint import errors, lint
from ..precision.openvino import atomic_ir, make_openvino_ir, save_ir
from ..runtime.tensorrt import TensorRTMissing
from ..seal import seal_ir, seal_onnx
from .tensorrt import BuildPlan, ShapeProfile, build_engine, write_sidecar
from ..util.files import atomic_path


@dataclass(frozen=True)
class BuildRequest:
    precision: str
    weights: Weights
    stages: int | None = None  # None: the newest fp32 export of the weights in export_dir, else their default K
    onnx: Path | None = None  # an fp32 ONNX to start from
    target: str = "tensorrt"  # or "openvino" (fp32, bf16, int8), or "onnxruntime-cpu" (int8 only)
    calib: list[str] | None = None  # calibration sources (precision/calibration.py); None: the default set
    calib_count: int = 32
    calib_method: str = "entropy"
    exclude: list[str] = field(default_factory=list)  # INT8: nodes kept in FP32 on request
    int8_rounds: int = 2  # INT8: rounds of keeping the most sensitive convolutions in float below the held-out target
    profile: ShapeProfile = field(default_factory=ShapeProfile)
    timing_cache: Path | None = None
    workspace_mib: int | None = None
    export_dir: Path = Path("export")
    engine: Path | None = None  # default engines/<precision onnx stem>.engine
    data: Path | None = None  # real noisy/clean pairs for parity (default: the SIDD crops)
    command: str | None = None
    engine_step: bool = True  # False: stop after parity (bench only needs the precision ONNX)


@dataclass
class BuildOutcome:
    fp32_onnx: Path
    fp32_reused: bool
    precision_onnx: Path | None = None
    conversion: dict | None = None
    lint: list = field(default_factory=list)
    parity: object | None = None  # ParityResult
    plan: BuildPlan | None = None
    engine: dict | None = None  # the sidecar, when built
    audit: dict | None = None  # the precision ONNX read back from its file (audit.py)
    tensorrt_missing: str | None = None
    seconds: dict = field(default_factory=dict)
    peak_rss_mb: dict = field(default_factory=dict)  # per step, as `seconds`: its own peak (a child's included)
    target: str = "tensorrt"

    def to_dict(self) -> dict:
        return {
            "fp32_onnx": str(self.fp32_onnx),
            "fp32_onnx_bytes": self.fp32_onnx.stat().st_size if self.fp32_onnx.is_file() else None,
            "fp32_reused": self.fp32_reused,
            "target": self.target,
            "precision_onnx": str(self.precision_onnx) if self.precision_onnx else None,  # or the IR's .xml
            "conversion": self.conversion,
            "audit": self.audit,
            "lint": lint_summary(self.lint),
            "parity": self.parity.to_dict() if self.parity else None,
            "engine": self.engine,
            "build_plan": self.plan.sidecar_path.as_posix() if self.plan else None,
            "trtexec": self.plan.trtexec() if self.plan else None,
            "tensorrt_missing": self.tensorrt_missing,
            "seconds": self.seconds,
            "peak_rss_mb": self.peak_rss_mb,
        }


def lint_summary(violations, first: int = 20) -> dict:
    """Counts by severity and rule, and the first violations (an ORT CPU INT8 graph has thousands, by design)."""
    by_rule: dict[str, int] = {}
    for v in violations:
        by_rule[v.rule] = by_rule.get(v.rule, 0) + 1
    return {
        "errors": sum(v.severity == "error" for v in violations),
        "warnings": sum(v.severity != "error" for v in violations),
        "by_rule": by_rule,
        "first": [
            {"rule": v.rule, "where": v.where, "message": v.message, "severity": v.severity} for v in violations[:first]
        ],
    }


def made_from(path: Path, weights: Weights, stages: int) -> bool:
    """Whether ``path`` exists and was made from these weights at this K, so it can be reused."""
    if not path.is_file():
        return False
    meta = read_metadata(path)
    return meta.get("weights") == weights.identity and meta.get("stages") == str(stages)


def _fp32_onnx(req: BuildRequest, step) -> tuple[Path, bool, int]:
    if req.onnx:
        meta = read_metadata(req.onnx)
        if meta.get("precision", "fp32") != "fp32":
            raise ScaoedError(f"{req.onnx} is {meta['precision']}; build-engine starts from an fp32 export")
        if "stages" not in meta:
            raise ScaoedError(f"{req.onnx} was not made by scaoed-deploy export (no scaoed.stages metadata)")
        k = int(meta["stages"])
        if req.stages and req.stages != k:
            raise ScaoedError(f"{req.onnx} has K={k}, but --stages says {req.stages}")
        return Path(req.onnx), True, k
    stages = req.stages
    if not stages:  # `export --stages 5` then `build-engine --fp16`: build what was just exported
        found = newest_export(req.export_dir, req.weights)
        if found:
            step(
                f"using {found[0]}, the newest fp32 export of these weights "
                f"(K={found[1]}; --stages or --onnx to choose)"
            )
            return found[0], True, found[1]
        stages = req.weights.stages or DEFAULT_STAGES
        step(
            f"no fp32 export of these weights in {req.export_dir}: "
            f"exporting their default K={stages} (--stages to choose)"
        )
    path = req.export_dir / default_filename(stages, req.weights.blocks)
    if made_from(path, req.weights, stages):
        step(f"reusing {path} (same weights, K={stages})")
        return path, True, stages
    export_onnx(req.weights, ExportSpec(stages=stages), path, req.data, step=step, command=req.command)
    return path, False, stages


def _keep_if_verified(
    req: BuildRequest,
    out: BuildOutcome,
    tmp: Path,
    final: Path,
    read_back,
    kind: str,
    checks: Callable,
    stages: int,
    data,
    step,
    t: float,
) -> None:
    """Step 4 on the temporary file ``tmp``: its read-back audit (no weight stored twice, then ``checks``), then
    parity; raises when any fails, so that ``tmp`` is never renamed onto ``final``."""
    out.audit = read_back.to_dict()
    what = f"the {req.precision} {kind} (nothing written)"
    check_weights(read_back, what)
    checks(read_back, what)
    out.parity = run_parity(
        load_artifact(tmp), req.weights, stages, data, step=step, read_back=out.audit, label=final.name
    )
    out.seconds["parity"] = round(time.perf_counter() - t, 1)
    if not out.parity.passed:
        worst = out.parity.failures[0]
        raise VerificationError(
            f"{req.precision} {kind} failed parity ({worst.check}: {worst.measured} vs {worst.limit}); not kept"
        )


def _ir_checks(kept: list[dict]) -> Callable:
    """INT8 IR: its float convolutions are exactly the ones kept (NNCF's own included), no kept node quantized."""

    def check(a, what: str) -> None:
        if not kept:
            return  # fp32 / bf16: nothing quantized, nothing kept
        check_int8_convs(a, kept, what)
        quantized = {n for n, _, p in a.nodes if p == "int8"}
        hit = [k["node"] for k in kept if k["node"] in quantized]
        if hit:
            raise VerificationError(f"{what}: {len(hit)} node(s) kept in float were quantized (first: {hit[0]})")

    return check


def _build_openvino(req: BuildRequest, out: BuildOutcome, fp32: Path, stages: int, data, step) -> None:
    """Steps 2-4 for an OpenVINO IR: convert (INT8: calibrate), write to a temporary IR, audit it, parity."""
    t = time.perf_counter()
    calib = None
    if req.precision == "int8":
        step(f"collecting {req.calib_count} calibration images")
        calib = calibration_set(req.calib, count=req.calib_count)
    with peak_of("precision_ir", out.peak_rss_mb):
        ir = make_openvino_ir(fp32, req.precision, calib, step, rounds=req.int8_rounds)
    out.conversion = ir.summary()
    out.conversion["kept_fp32_nodes"] = ir.kept_float
    out.seconds["precision_ir"] = round(time.perf_counter() - t, 1)
    final = req.export_dir / precision_filename(stages, req.weights.blocks, req.precision, "openvino")
    t = time.perf_counter()
    with atomic_ir(final) as tmp, peak_of("parity", out.peak_rss_mb):  # kept only if audit and parity pass
        save_ir(ir, tmp)
        seal_ir(tmp)  # what parity verifies next is bound to this content
        step("reading the IR back: precision per layer, weights")
        _keep_if_verified(
            req, out, tmp, final, audit_ir(tmp), "OpenVINO IR", _ir_checks(ir.kept_float), stages, data, step, t
        )
    out.parity.artifact.path = final
    write_parity_record(out.parity, req.command)
    out.precision_onnx = final


def newest_export(export_dir: Path, weights: Weights) -> tuple[Path, int] | None:
    """The fp32 export in ``export_dir`` (under `export`'s default name) made from these weights that was
    written last, with its K; files that are not readable exports are passed over."""
    found = []
    for path in Path(export_dir).glob(f"scaoednet_k*_t{weights.blocks}_fp32.onnx"):
        try:
            meta = read_metadata(path)
            k = int(meta["stages"])
        except Exception:  # not an export of ours, or damaged: never a candidate
            continue
        if meta.get("weights") == weights.identity and meta.get("precision", "fp32") == "fp32":
            found.append((path.stat().st_mtime, path.name, path, k))
    return max(found)[2:] if found else None


def build(req: BuildRequest, step: Callable[[str], None] = lambda s: None) -> BuildOutcome:
    """Run the steps (see the module doc). Raises VerificationError when lint or parity fails."""
    import onnx

    data = req.data or default_sidd_dir()
    if req.precision not in PRECISIONS:
        raise ScaoedError(f"unknown precision {req.precision!r}; use {', '.join(PRECISIONS)}")
    if req.target not in TARGETS:
        raise ScaoedError(f"unknown target {req.target!r}; use {', '.join(TARGETS)}")
    if req.target == "onnxruntime-cpu" and req.precision != "int8":
        raise ScaoedError("--target onnxruntime-cpu is for --int8 only")
    if req.target == "openvino" and req.precision not in OPENVINO_PRECISIONS:
        raise ScaoedError(
            f"--target openvino takes {', '.join('--' + p for p in OPENVINO_PRECISIONS)} "
            f"(OpenVINO's CPU plugin has no {req.precision} inference)"
        )
    if req.precision == "int8":
        check_sources(req.calib)  # a refused calibration folder fails before the export, not after it
    t0 = time.perf_counter()
    peaks: dict = {}
    with peak_of("fp32_onnx", peaks):
        fp32, reused, stages = _fp32_onnx(req, step)
    out = BuildOutcome(
        fp32, reused, seconds={"fp32_onnx": round(time.perf_counter() - t0, 1)}, target=req.target, peak_rss_mb=peaks
    )
    if req.target == "openvino":
        _build_openvino(req, out, fp32, stages, data, step)
        out.seconds["total"] = round(time.perf_counter() - t0, 1)
        return out

    if req.precision == "fp32":
        final = fp32
        proto = onnx.load(str(fp32))
    else:
        t = time.perf_counter()
        step(f"collecting {req.calib_count} calibration images")
        calib = calibration_set(req.calib, count=req.calib_count)
        with peak_of("precision_onnx", out.peak_rss_mb):
            converted = make_precision_onnx(
                fp32, req.precision, calib, req.target, req.calib_method, req.exclude, step, rounds=req.int8_rounds
            )
        out.conversion = converted.summary()
        out.conversion["kept_fp32_nodes"] = converted.kept_fp32
        proto = converted.proto
        final = req.export_dir / precision_filename(stages, req.weights.blocks, req.precision, req.target)
        out.seconds["precision_onnx"] = round(time.perf_counter() - t, 1)

    step("TensorRT lint")
    with peak_of("lint", out.peak_rss_mb):
        out.lint = lint(proto, req.profile.lint_profile(proto.graph.input[0].name))
    if req.target == "tensorrt" and errors(out.lint):
        bad = errors(out.lint)
        raise VerificationError(f"TensorRT lint: {len(bad)} violation(s), first: {bad[0]}; nothing written")

    if req.precision == "fp32":
        out.audit = audit(final).to_dict()
    else:
        t = time.perf_counter()
        with atomic_path(final) as tmp, peak_of("parity", out.peak_rss_mb):  # kept only if audit and parity pass
            seal_onnx(proto)  # what parity verifies next is bound to this content
            onnx.save(proto, str(tmp))
            step("reading the file back: precision per node, weights")
            kept = converted.kept_fp32
            checks = (
                (lambda a, what: check_int8_convs(a, kept, what))
                if req.precision == "int8"
                else (lambda a, what: check_islands(a, kept, what))
            )
            _keep_if_verified(req, out, tmp, final, audit(tmp), "ONNX", checks, stages, data, step, t)
        out.parity.artifact.path = final
        write_parity_record(out.parity, req.command)
    out.precision_onnx = final

    if req.target == "onnxruntime-cpu" or not req.engine_step:
        return out  # an ONNX Runtime CPU artifact (or the caller wants no engine)
    engine = req.engine or Path("engines") / (final.stem + ".engine")
    out.plan = BuildPlan(
        final,
        engine,
        req.precision,
        stages,
        req.weights.blocks,
        req.profile,
        proto.graph.input[0].name,
        req.timing_cache,
        req.workspace_mib,
    )
    t = time.perf_counter()
    try:
        with peak_of("engine", out.peak_rss_mb):
            out.engine = build_engine(out.plan, step)
    except TensorRTMissing as e:
        write_sidecar(out.plan)
        out.tensorrt_missing = str(e)
    out.seconds["engine"] = round(time.perf_counter() - t, 1)
    out.seconds["total"] = round(time.perf_counter() - t0, 1)
    return out
