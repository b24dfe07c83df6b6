"""ONNX export per stage count, verified against the eager model before it is written.

Pipeline for one K:

1. ``torch.onnx.export(dynamo=True, optimize=False)``: dynamic batch, height and
   width by default (H and W must be even), or a static shape.
2. ``onnx.checker`` (full check) and strict shape inference.
3. Simplification with onnxslim, kept only when it keeps parity; else the
   unsimplified graph is written and the summary says so.
4. A structural check that every NFAE still adds its 1e-16, then ONNX Runtime
   (CPU) against the eager model: random inputs at two shapes, a black image
   (every u_ini channel constant: NFAE's 0/0 case), a dead-channel weight case
   (a constant channel inside every NFAE), and the real SIDD crops when present.
   NaN/Inf or a max abs error above the tolerance fails the export.
5. Metadata (``metadata_props``), then an atomic write: a failed export leaves no file.

Why the exporter's own optimiser is off: onnxscript's no-op rewrite rules treat
a scalar constant as zero when ``math.isclose(c, 0, abs_tol=1e-8)``, so NFAE's
``s + 1e-16`` is rewritten to ``s`` and a constant channel then gives 0/0 = NaN
in ONNX Runtime. The fix belongs in the optimisation step, not in the model
(clamping instead of adding would change the authors' numbers): we export
unoptimised and simplify with onnxslim, whose eliminations are exact, and the
epsilon check below guards against any optimiser that drops it again.
"""

from __future__ import annotations

import contextlib
import copy
import io
import json
import logging
import os
import time
import warnings
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch

from . import artifact
from .artifact import carry_module_tags, check_nfae_epsilon, tag_module_paths, write_metadata
from .checkpoint import Weights, build_model
from .compare import Agreement, agreement
from .cost import model_cost
from .data import probe_inputs, real_inputs
from .errors import ScaoedError, VerificationError, first_line
from .runtime.onnxruntime_backend import OnnxRuntimeRunner
from .runtime.torch_backend import TorchRunner
from .seal import seal_onnx
from .util.files import atomic_path

DEFAULT_OPSET = 18
MIN_OPSET = 17
INPUT_NAME = "noisy"
OUTPUT_NAME = "denoised"
DEFAULT_TOLERANCE = 1e-4
OPTIMIZERS = ("onnxslim", "none", "onnxscript")
# Graphs tried in order: a simplified graph that fails verification falls back to the unsimplified one.
_CANDIDATES = {"onnxslim": ("onnxslim", "none"), "none": ("none",), "onnxscript": ("onnxscript",)}


@dataclass
class ExportSpec:
    stages: int
    static_hw: tuple[int, int] | None = None  # None: dynamic height and width
    batch: int | None = None  # None: dynamic batch
    opset: int = DEFAULT_OPSET
    noise_maps: bool = False
    optimizer: str = "onnxslim"  # "none": unsimplified; "onnxscript": the exporter's optimiser (drops NFAE's eps)
    tolerance: float = DEFAULT_TOLERANCE

    def __post_init__(self):
        if not 1 <= self.stages <= 8:
            raise ScaoedError(f"stages must be 1 to 8, got {self.stages}")
        if self.opset < MIN_OPSET:
            raise ScaoedError(f"opset {self.opset} is too old; ScaoedNet exports need opset {MIN_OPSET} or newer")
        if self.static_hw and any(s < 2 or s % 2 for s in self.static_hw):
            raise ScaoedError(f"static height and width must be even, got {self.static_hw[0]}x{self.static_hw[1]}")
        if self.batch is not None and self.batch < 1:
            raise ScaoedError(f"batch must be at least 1, got {self.batch}")
        if self.optimizer not in OPTIMIZERS:
            raise ScaoedError(f"unknown optimizer {self.optimizer!r}; use one of {', '.join(OPTIMIZERS)}")

    @property
    def output_names(self) -> list[str]:
        maps = [f"noise_map_{i + 1}" for i in range(self.stages)] if self.noise_maps else []
        return [OUTPUT_NAME, *maps]


def default_filename(stages: int, blocks: int, spec: ExportSpec | None = None, precision: str = "fp32") -> str:
    """export/'s name for an export of ``spec`` (the artifact layer's naming scheme)."""
    if spec is None:
        return artifact.default_filename(stages, blocks, precision=precision)
    return artifact.default_filename(stages, blocks, spec.static_hw, spec.batch, spec.noise_maps, precision)


@dataclass
class ExportResult:
    path: Path
    stages: int
    blocks: int
    simplified: bool
    checks: list[Agreement]
    metadata: dict[str, str]
    notes: list[str] = field(default_factory=list)
    seconds: float = 0.0

    def to_dict(self) -> dict:
        return {
            "path": str(self.path),
            "stages": self.stages,
            "blocks": self.blocks,
            "simplified": self.simplified,
            "bytes": self.path.stat().st_size if self.path.exists() else None,
            "seconds": round(self.seconds, 2),
            "max_abs": max(c.max_abs for c in self.checks),
            "min_psnr": min(c.psnr for c in self.checks),
            "checks": [c.to_dict() for c in self.checks],
            "notes": self.notes,
            "metadata": self.metadata,
        }


# ---------------------------------------------------------------------------- export
class _WithNoiseMaps(torch.nn.Module):
    """Exports the K noise maps as extra outputs."""

    def __init__(self, model):
        super().__init__()
        self.model = model

    def forward(self, y):
        x, maps = self.model(y, return_noise_maps=True)
        return (x, *maps)


def torch_export(model, spec: ExportSpec):
    """torch.onnx.export (dynamo, unoptimised) of ``model`` as ``spec`` says, its nodes tagged with their modules."""
    h, w = spec.static_hw or (64, 96)  # unequal, and batch 2: torch.export specialises sizes of 1 and equal dims
    example = torch.rand(spec.batch or 2, 3, h, w)
    dims: dict[int, object] = {}
    if spec.batch is None:
        dims[0] = torch.export.Dim("batch")
    if spec.static_hw is None:
        dims[2], dims[3] = torch.export.Dim("height"), torch.export.Dim("width")
    module = _WithNoiseMaps(model) if spec.noise_maps else model
    quiet = io.StringIO()
    try:
        with contextlib.redirect_stdout(quiet), warnings.catch_warnings(), _quiet_loggers():
            warnings.simplefilter("ignore")
            program = torch.onnx.export(
                module,
                (example,),
                dynamo=True,
                optimize=False,
                opset_version=spec.opset,
                input_names=[INPUT_NAME],
                output_names=spec.output_names,
                dynamic_shapes=(dims,) if dims else None,
                verbose=False,
            )
    except Exception as e:
        first = first_line(e, 300)
        raise ScaoedError(f"torch.onnx.export failed for K={spec.stages}: {first}") from e
    proto = program.model_proto
    tag_module_paths(proto, wrapper="model" if spec.noise_maps else "")
    return proto


@contextlib.contextmanager
def _quiet_loggers():
    names = ["torch.onnx", "torch.export", "torch._export", "onnxscript"]
    levels = [logging.getLogger(n).level for n in names]
    for n in names:
        logging.getLogger(n).setLevel(logging.ERROR)
    try:
        yield
    finally:
        for n, lvl in zip(names, levels):
            logging.getLogger(n).setLevel(lvl)


def simplify(proto, optimizer: str):
    """``proto`` simplified by ``optimizer`` (onnxslim keeps the module tags by tensor name)."""
    if optimizer == "onnxslim":
        import onnxslim

        with contextlib.redirect_stdout(io.StringIO()), warnings.catch_warnings():
            warnings.simplefilter("ignore")
            slim = onnxslim.slim(copy.deepcopy(proto))
        carry_module_tags(proto, slim, by="tensor")
        return slim
    if optimizer == "onnxscript":
        import onnxscript.optimizer

        return onnxscript.optimizer.optimize(copy.deepcopy(proto))
    return proto


def _check_graph(proto):
    """Full ONNX check and strict shape inference; returns the model with inferred shapes."""
    import onnx

    try:
        onnx.checker.check_model(proto, full_check=True)
        return onnx.shape_inference.infer_shapes(proto, check_type=True, strict_mode=True, data_prop=True)
    except (onnx.checker.ValidationError, onnx.shape_inference.InferenceError) as e:
        first = first_line(e, 300)
        raise VerificationError(f"ONNX checker rejected the graph: {first}") from e


# ---------------------------------------------------------------------------- verification
def verification_inputs(spec: ExportSpec, data_dir: Path | None) -> tuple[list[tuple[str, np.ndarray]], list[str]]:
    """(case name, NCHW float32 input) pairs, and notes on what was left out."""
    cases = probe_inputs(spec.static_hw, spec.batch, shapes=2)
    real, notes = real_inputs(data_dir, spec.static_hw, spec.batch)
    return cases + [(f"real noise {sample.name}", x) for sample, x in real], notes


DEAD_CHANNEL_CASE = "dead NFAE channel"
_DEAD_CHANNEL_BIASES = ("u_ini.features.convs.3.bias", "u_net.features.convs.3.bias")


def _dead_channel_variant(proto, model, stages: int):
    """The same graph and eager model with one feature channel forced to 0 before every NFAE."""
    from onnx import numpy_helper

    names = _DEAD_CHANNEL_BIASES[: 1 if stages == 1 else 2]

    def graph_name(init_name: str) -> str | None:  # wrappers prefix the names ("model.u_ini...")
        return next((n for n in names if init_name == n or init_name.endswith("." + n)), None)

    if not set(names) <= {graph_name(i.name) for i in proto.graph.initializer}:
        return None
    variant = copy.deepcopy(proto)
    eager = copy.deepcopy(model)
    params = dict(eager.named_parameters())
    for init in variant.graph.initializer:
        if graph_name(init.name):
            arr = numpy_helper.to_array(init).copy()
            arr[0] = -1e4  # ReLU(conv + bias) is 0 everywhere: d = s = 0 in NFAE
            init.CopyFrom(numpy_helper.from_array(arr, init.name))
    with torch.no_grad():
        for n in names:
            params[n][0] = -1e4
    return variant, eager


def _eager_outputs(model, x: np.ndarray, noise_maps: bool) -> list[np.ndarray]:
    """The eager reference through the torch runner: the denoised image, then the noise maps if exported."""
    outs = TorchRunner(None, model=model, device="cpu").run(x)
    return outs if noise_maps else outs[:1]


def verify_onnx(proto, model, spec: ExportSpec, data_dir: Path | None, step: Callable[[str], None] = lambda s: None):
    """Run ``proto`` with ONNX Runtime against the eager ``model``; returns (agreements, notes)."""
    cases, notes = verification_inputs(spec, data_dir)
    runner = OnnxRuntimeRunner(proto.SerializeToString())
    checks = []
    for name, x in cases:
        step(f"verifying: {name}")
        for out_name, ref, got in zip(spec.output_names, _eager_outputs(model, x, spec.noise_maps), runner.run(x)):
            checks.append(agreement(name, out_name, ref, got))
    variant = _dead_channel_variant(proto, model, spec.stages)
    if variant is None:
        notes.append("dead-channel weight case skipped: parameter names not found in the graph")
    else:
        step(f"verifying: {DEAD_CHANNEL_CASE}")
        v_proto, v_model = variant
        x = cases[0][1]
        v_runner = OnnxRuntimeRunner(v_proto.SerializeToString())
        for out_name, ref, got in zip(spec.output_names, _eager_outputs(v_model, x, spec.noise_maps), v_runner.run(x)):
            checks.append(agreement(DEAD_CHANNEL_CASE, out_name, ref, got))
    return checks, notes


def _failures(checks: list[Agreement], tolerance: float) -> list[Agreement]:
    return [c for c in checks if not c.passed(tolerance)]


def _describe(c: Agreement) -> str:
    if not c.finite:
        return f"{c.case} / {c.output}: NaN or Inf in the ONNX output"
    return f"{c.case} / {c.output}: max abs error {c.max_abs:.3g}"


# ---------------------------------------------------------------------------- metadata
def _versions() -> dict[str, str]:
    from importlib.metadata import PackageNotFoundError, version

    out = {}
    for pkg in ("scaoed-deploy", "torch", "onnx", "onnxscript", "onnxslim", "onnxruntime"):
        with contextlib.suppress(PackageNotFoundError):
            out[pkg] = version(pkg)
    return out


def build_metadata(
    weights: Weights, spec: ExportSpec, blocks: int, simplified: bool, checks, command: str | None
) -> dict[str, str]:
    """The scaoed.* metadata of an export (keys without the prefix)."""
    shapes = []
    shapes.append(f"batch {spec.batch}" if spec.batch is not None else "dynamic batch")
    shapes.append(f"{spec.static_hw[0]}x{spec.static_hw[1]}" if spec.static_hw else "dynamic height and width (even)")
    outputs = f"{OUTPUT_NAME}: float32 (N, 3, H, W), clamp to [0, 1] before quantising"
    if spec.noise_maps:
        outputs += f"; noise_map_1..noise_map_{spec.stages}: float32 (N, 1, H, W), the noise maps u of each stage"
    meta = {
        "model": "ScaoedNet",
        "stages": str(spec.stages),
        "blocks": str(blocks),
        "precision": "fp32",
        "input": f"{INPUT_NAME}: float32 (N, 3, H, W) RGB in [0, 1]; H and W even",
        "outputs": outputs,
        "shapes": ", ".join(shapes),
        "weights": weights.identity,
        "weights_source": Path(weights.source).name if not weights.is_random else "seeded random initialisation",
        "macs_512x512": str(model_cost(spec.stages, blocks, 512, 512).total_macs),
        "exporter": "torch.onnx.export(dynamo=True, optimize=False)" + (f" + {spec.optimizer}" if simplified else ""),
        "versions": json.dumps(_versions(), sort_keys=True),
        "verification": json.dumps(
            {
                "backend": "onnxruntime CPU vs eager torch fp32",
                "tolerance_max_abs": spec.tolerance,
                "max_abs": max(c.max_abs for c in checks),
                "cases": sorted({c.case for c in checks}),
            }
        ),
    }
    if command:
        meta["command"] = command
    return meta


# ---------------------------------------------------------------------------- entry point
def check_writable(path: Path) -> None:
    """Fail before a long export when the output cannot be written."""
    parent = path.parent
    probe = parent
    while not probe.exists():
        probe = probe.parent
    if not probe.is_dir() or not os.access(probe, os.W_OK):
        raise ScaoedError(f"cannot write {path}: {probe} is not a writable folder")
    if path.is_dir():
        raise ScaoedError(f"cannot write {path}: it is a folder")


def export_onnx(
    weights: Weights,
    spec: ExportSpec,
    path: str | Path,
    data_dir: str | Path | None = None,
    step: Callable[[str], None] = lambda s: None,
    command: str | None = None,
) -> ExportResult:
    """Export, check, simplify, verify, then write ``path`` atomically (see the module doc)."""
    path = Path(path)
    check_writable(path)
    t0 = time.perf_counter()
    model = build_model(weights, spec.stages).cpu().eval()
    step(f"exporting K={spec.stages} with torch.onnx (dynamo)")
    raw = torch_export(model, spec)
    notes: list[str] = []
    last_error: VerificationError | None = None
    for optimizer in _CANDIDATES[spec.optimizer]:
        simplified = optimizer != "none"
        try:
            step(f"simplifying with {optimizer}" if simplified else "checking the unsimplified graph")
            proto = _check_graph(simplify(raw, optimizer) if simplified else raw)
            check_nfae_epsilon(proto, spec.stages)
            checks, case_notes = verify_onnx(proto, model, spec, Path(data_dir) if data_dir else None, step)
            failed = _failures(checks, spec.tolerance)
            if failed:
                worst = max(failed, key=lambda c: c.max_abs)
                raise VerificationError(
                    f"ONNX Runtime disagrees with eager on {len(failed)} check(s); worst: {_describe(worst)} "
                    f"(tolerance {spec.tolerance:g})"
                )
        except VerificationError as e:
            last_error = e
            if optimizer == "onnxslim":
                notes.append(f"onnxslim's graph failed verification ({e}); kept the unsimplified export")
            continue
        notes.extend(case_notes)
        meta = build_metadata(weights, spec, weights.blocks, simplified, checks, command)
        write_metadata(proto, meta)
        seal_onnx(proto)  # the verification is bound to this graph and these weights
        step(f"writing {path}")
        import onnx

        with atomic_path(path) as tmp:
            onnx.save(proto, str(tmp))
        return ExportResult(
            path, spec.stages, weights.blocks, simplified, checks, meta, notes, time.perf_counter() - t0
        )
    raise VerificationError(f"K={spec.stages}: {last_error}; nothing written") from last_error
