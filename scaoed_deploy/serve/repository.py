"""A Triton Inference Server model repository from verified artifacts (``scaoed-deploy triton-repo``).

One model per artifact, one version (``NAME/1/``) holding the artifact, and a ``config.pbtxt``
built as Triton's own ``ModelConfig`` protobuf (``tritonclient.grpc.model_config_pb2``), written
in its text format and parsed back before the model is renamed into place:

- a TensorRT engine: ``platform: "tensorrt_plan"``, ``1/model.plan``; max batch and H/W from the
  engine's optimisation profile (its sidecar), GPU instances;
- an ONNX file: ``backend: "onnxruntime"``, ``1/model.onnx``; GPU or CPU instances;
- an OpenVINO IR: ``backend: "openvino"``, ``1/model.xml`` + ``model.bin`` (bf16 IRs ask for bf16
  through the backend's ``HINT_BF16``), CPU instances, ``max_batch_size: 0`` with dynamic N/H/W (that
  backend fixes the batch at ``max_batch_size`` and refuses or pads every other batch);
- ``python_backend=True``: Triton's python backend running the artifact through this project's
  runner registry (``triton_model.py``, copied as ``1/model.py``, with the artifact beside it) -
  the variant a ``tritonserver`` with only the python backend (the one bundled in the
  ``nvidia-pytriton`` wheel) can serve.

Every batching model has dynamic batching (preferred sizes: powers of two up to the max batch), the input
and output names, types and dims read from the artifact, and in its ``parameters`` what the
artifact records of itself: sha256, precision, K and T, weights, and its verification figures.
"""

from __future__ import annotations

import json
import os
import shutil
import tempfile
from collections.abc import Callable
from dataclasses import dataclass, field
from importlib.metadata import version
from pathlib import Path

from ..artifact import Artifact, load_artifact, read_metadata
from ..errors import ScaoedError
from ..fleet import is_package
from ..ir import read_ir
from ..parity import read_parity_record
from ..runtime.tensorrt import check_engine_sidecar
from ..runtime.tiling import BYTES_PER_PIXEL
from ..seal import check_seal
from ..util.files import current_umask, sha256_of
from .config import CONFIG, check_config, config_text, model_config_pb2, read_config
from .package import plan_package

PYTHON_MODEL = Path(__file__).with_name("triton_model.py")
NATIVE = {"engine": "tensorrt_plan", "onnx": "onnxruntime", "openvino": "openvino"}  # platform or backend
ONNX_TYPES = {1: "TYPE_FP32", 10: "TYPE_FP16", 16: "TYPE_BF16"}


@dataclass
class RepoOptions:
    python_backend: bool = False  # serve through scaoed-deploy's runners in Triton's python backend
    max_batch: int = 8  # for artifacts with a dynamic batch (an engine's comes from its profile)
    max_queue_delay_us: int = 2000  # how long the dynamic batcher may hold a request to fill a batch
    instances: int = 1
    device: str = "auto"  # ONNX: "cuda" (GPU instances) or "cpu"; auto: GPU natively, CPU in the python backend
    threads: int | None = None  # CPU threads per instance (ONNX Runtime, OpenVINO, the python backend's runner)
    allow_unverified: bool = False  # serve an artifact that records no verification (a foreign ONNX)
    overwrite: bool = False  # replace a model of the same name already in the repository
    max_side: int | None = None  # the largest H or W a request may have (dynamic sizes; default: default_max_side)


def default_max_side(max_batch: int, memory_bytes: int | None = None) -> int:
    """The largest image side such that a full batch of such images fits in half this machine's memory (a
    multiple of 32): a request past it is refused before any buffer is made, instead of taking the server down."""
    if memory_bytes is None:
        memory_bytes = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
    side = int((memory_bytes / 2 / max(1, max_batch) / BYTES_PER_PIXEL) ** 0.5)
    return max(64, side // 32 * 32)


@dataclass
class TensorSpec:
    name: str
    data_type: str  # TYPE_FP32 ...
    dims: list[int]  # without the batch dimension when the model batches; -1 where dynamic


@dataclass
class ModelEntry:
    name: str
    artifact: Artifact
    platform: str  # tensorrt_plan / onnxruntime / openvino / python
    max_batch: int
    inputs: list[TensorSpec]
    outputs: list[TensorSpec]
    parameters: dict[str, str] = field(default_factory=dict)
    files: dict[str, Path] = field(default_factory=dict)  # name in 1/ -> source
    kind: str = "KIND_CPU"

    def to_dict(self) -> dict:
        return {
            "name": self.name,
            "artifact": str(self.artifact.path),
            "platform": self.platform,
            "max_batch_size": self.max_batch,
            "instance_kind": self.kind,
            "inputs": [vars(t) for t in self.inputs],
            "outputs": [vars(t) for t in self.outputs],
            "files": sorted(self.files),
            "parameters": self.parameters,
        }


# ---------------------------------------------------------------------------- what each artifact serves as
def model_name(art: Artifact) -> str:
    return art.path.stem


def _onnx_io(path: Path, batched: bool) -> tuple[list[TensorSpec], list[TensorSpec]]:
    import onnx

    graph = onnx.load(str(path), load_external_data=False).graph

    def spec(v) -> TensorSpec:
        dims = [
            d.dim_value if d.HasField("dim_value") and d.dim_value > 0 else -1 for d in v.type.tensor_type.shape.dim
        ]
        t = v.type.tensor_type.elem_type
        if t not in ONNX_TYPES:
            raise ScaoedError(f"{path}: tensor {v.name} has ONNX element type {t}, which this repository does not map")
        return TensorSpec(v.name, ONNX_TYPES[t], dims[1:] if batched else dims)

    return [spec(v) for v in graph.input], [spec(v) for v in graph.output]


def _ir_io(art: Artifact, batched: bool) -> tuple[list[TensorSpec], list[TensorSpec]]:
    model = read_ir(art.path)
    types = {"f32": "TYPE_FP32", "f16": "TYPE_FP16", "bf16": "TYPE_BF16"}

    def spec(port) -> TensorSpec:
        shape = port.get_partial_shape()
        dims = [shape[i].get_length() if shape[i].is_static else -1 for i in range(shape.rank.get_length())]
        return TensorSpec(
            port.get_any_name(),
            types.get(port.get_element_type().get_type_name(), "TYPE_FP32"),
            dims[1:] if batched else dims,
        )

    return [spec(p) for p in model.inputs], [spec(p) for p in model.outputs]


def _engine_io(art: Artifact, sidecar: dict) -> tuple[int, list[TensorSpec], list[TensorSpec], dict]:
    """Max batch, I/O and profile parameters of an engine, from its sidecar and the ONNX it was built from."""
    prof = sidecar.get("profile") or {}
    lo, hi = prof.get("min"), prof.get("max")
    if not (lo and hi and len(lo) == 4 and len(hi) == 4):
        raise ScaoedError(f"{art.path}: its sidecar records no optimisation profile; rebuild it with build-engine")
    hw = [hi[i] if lo[i] == hi[i] else -1 for i in (2, 3)]
    onnx_path = Path(sidecar.get("onnx", ""))
    outputs = [TensorSpec("denoised", "TYPE_FP32", [3, *hw])]
    in_type = "TYPE_FP32"
    if onnx_path.is_file():  # the names and types the engine was built with
        ins, outs = _onnx_io(onnx_path, batched=True)
        in_type = ins[0].data_type
        outputs = [TensorSpec(o.name, o.data_type, [3, *hw]) for o in outs]
    params = {f"profile_{k}": "x".join(map(str, prof[k])) for k in ("min", "opt", "max") if k in prof}
    return int(hi[0]), [TensorSpec(sidecar.get("input", "noisy"), in_type, [3, *hw])], outputs, params


def _recorded(art: Artifact, sidecar: dict | None) -> dict[str, str]:
    """What the artifact records of itself, for the model's parameters (strings, as Triton's are)."""
    meta = art.metadata
    sha = sha256_of(art.path)
    out = {
        "sha256": sha,
        "kind": art.kind,
        "precision": art.precision,
        "source": str(art.path.resolve()),
        "made_with": f"scaoed-deploy {version('scaoed-deploy')}",
    }
    for key in ("stages", "blocks", "weights", "weights_source", "verification", "command"):
        if meta.get(key):
            out[key] = str(meta[key])
    detail = meta.get("precision_detail")
    if detail:
        try:
            check = json.loads(detail).get("check_psnr_vs_fp32")
        except json.JSONDecodeError:
            check = None
        if check is not None:
            out["check_psnr_vs_fp32"] = f"{check:.2f}"
    parity = read_parity_record(art.path, sha)  # build-engine's or parity's figures for exactly this file
    if parity:
        out["parity_passed"] = "yes"
        if parity.get("mean_dpsnr_db") is not None:
            out["parity_mean_dpsnr_db"] = f"{parity['mean_dpsnr_db']:+.3f}"
        out["parity_checks"] = json.dumps(parity.get("checks", {}), sort_keys=True)
    if sidecar:
        for key in ("onnx_sha256", "tensorrt", "gpu", "compute_capability", "stages", "blocks"):
            if sidecar.get(key) is not None:
                out[key] = str(sidecar[key])
        onnx_path = Path(sidecar.get("onnx", ""))
        if onnx_path.is_file():  # what the engine's ONNX records of its own verification
            onnx_meta = read_metadata(onnx_path)
            for key in ("verification", "weights", "weights_source"):
                if onnx_meta.get(key):
                    out.setdefault(key, onnx_meta[key])
    return out


def plan_model(path: str | Path, options: RepoOptions) -> ModelEntry:
    """What ``path`` serves as (checked, nothing written)."""
    art = load_artifact(path)
    sidecar = None
    if art.kind == "engine":
        sidecar = check_engine_sidecar(art.path)  # a tampered or never-built engine: refused (no TensorRT needed)
    elif not check_seal(art.path, art.metadata, options.allow_unverified) and not options.allow_unverified:
        if "verification" not in art.metadata:
            raise ScaoedError(
                f"{art.path} records no verification (it was not made by scaoed-deploy export or "
                "build-engine); verify it, or pass --allow-unverified to serve it as it is"
            )
        raise ScaoedError(
            f"{art.path} records a verification but no content digest binding it to the file (made "
            "before artifacts were sealed): export or build it again, or pass --allow-unverified"
        )
    if options.device == "cuda" and art.kind == "openvino":
        raise ScaoedError(f"{art.path}: an OpenVINO IR is served on CPU instances; drop --device cuda for it")
    if options.device == "cpu" and art.kind == "engine":
        raise ScaoedError(f"{art.path}: a TensorRT engine runs on a GPU; drop --device cpu for it")
    params = _recorded(art, sidecar)
    if art.kind == "engine":
        max_batch, inputs, outputs, extra = _engine_io(art, sidecar)
        params.update(extra)
    else:
        # Triton's OpenVINO backend fixes the batch at max_batch_size and refuses (or pads) any other batch: an IR
        # it serves is unbatched, N dynamic like H and W, and clients send their own batches.
        native_ir = art.kind == "openvino" and not options.python_backend
        batched = not art.static_batch and not native_ir
        max_batch = options.max_batch if batched else 0
        inputs, outputs = _ir_io(art, batched) if art.kind == "openvino" else _onnx_io(art.path, batched)
    if options.threads:
        params["threads"] = str(options.threads)
    dynamic = [d for t in inputs for d in t.dims[-2:] if d < 0]
    if dynamic:  # the largest side a request may have, checked before any buffer is made (serve's guard, the model)
        params["max_side"] = str(options.max_side or default_max_side(max(1, max_batch)))
    entry = ModelEntry(model_name(art), art, "", max_batch, inputs, outputs, params)
    gpu = art.kind == "engine" or (options.device == "cuda" and art.kind == "onnx")
    if options.python_backend:
        entry.platform = "python"
        entry.kind = "KIND_GPU" if gpu else "KIND_CPU"
        backend = {"engine": "tensorrt", "openvino": "openvino"}.get(
            art.kind, "onnxruntime-cuda" if gpu else "onnxruntime"
        )
        params.update(artifact=art.path.name, backend=backend)
        if options.allow_unverified:  # the model's runner would refuse a file edited after verification
            params["allow_unverified"] = "yes"
        # The runners take and give float32 whatever the artifact computes in.
        entry.inputs = [TensorSpec(t.name, "TYPE_FP32", t.dims) for t in inputs]
        entry.outputs = [TensorSpec(t.name, "TYPE_FP32", t.dims) for t in outputs]
        entry.files = {"model.py": PYTHON_MODEL, art.path.name: art.path}
        if art.kind == "openvino":
            entry.files[art.path.with_suffix(".bin").name] = art.path.with_suffix(".bin")
        if art.kind == "engine":
            entry.files[art.path.with_suffix(".json").name] = art.path.with_suffix(".json")
        return entry
    entry.platform = NATIVE[art.kind]
    # auto: an ONNX file on GPU instances, but for one made for ONNX Runtime's CPU provider (its INT8)
    cpu_made = art.metadata.get("precision_target") == "onnxruntime-cpu"
    entry.kind = "KIND_GPU" if gpu or (art.kind == "onnx" and options.device == "auto" and not cpu_made) else "KIND_CPU"
    if art.kind == "engine":
        entry.files = {"model.plan": art.path}
    elif art.kind == "onnx":
        entry.files = {"model.onnx": art.path}
        if options.threads:
            params["intra_op_thread_count"] = str(options.threads)
    else:
        entry.files = {"model.xml": art.path, "model.bin": art.path.with_suffix(".bin")}
        if art.metadata.get("inference_precision") == "bf16" or art.precision == "bf16":
            params["HINT_BF16"] = "YES"
        if options.threads:
            params["INFERENCE_NUM_THREADS"] = str(options.threads)
    return entry


# ---------------------------------------------------------------------------- config.pbtxt
def preferred_batches(max_batch: int) -> list[int]:
    sizes, b = [], 2
    while b <= max_batch:
        sizes.append(b)
        b *= 2
    return sizes


def model_config(entry: ModelEntry, options: RepoOptions):
    """The entry's ``ModelConfig`` message."""
    pb = model_config_pb2()
    cfg = pb.ModelConfig(name=entry.name, max_batch_size=entry.max_batch)
    if entry.platform == "tensorrt_plan":
        cfg.platform = entry.platform
        cfg.default_model_filename = "model.plan"
    else:
        cfg.backend = entry.platform
    for specs, add in ((entry.inputs, cfg.input.add), (entry.outputs, cfg.output.add)):
        for t in specs:
            m = add()
            m.name, m.data_type = t.name, pb.DataType.Value(t.data_type)
            m.dims.extend(t.dims)
    group = cfg.instance_group.add()
    group.count, group.kind = options.instances, pb.ModelInstanceGroup.Kind.Value(entry.kind)
    if entry.max_batch > 0:
        cfg.dynamic_batching.preferred_batch_size.extend(preferred_batches(entry.max_batch))
        cfg.dynamic_batching.max_queue_delay_microseconds = options.max_queue_delay_us
    for k, v in sorted(entry.parameters.items()):
        cfg.parameters[k].string_value = v
    return cfg


# ---------------------------------------------------------------------------- writing
def _write_model(entry: ModelEntry, options: RepoOptions, repo: Path) -> Path:
    """Write NAME/ into a temporary folder inside ``repo``, parse its config back, then rename it into place."""
    final = repo / entry.name
    if final.exists() and not options.overwrite:
        raise ScaoedError(f"{final} exists; --overwrite to replace it")
    cfg = model_config(entry, options)
    # Beside the repository, not in it: Triton takes every folder of a repository for a model (hidden ones too),
    # so a folder left by a killed run must not be inside it.
    tmp = Path(tempfile.mkdtemp(prefix=f".{repo.name}.{entry.name}.tmp-", dir=repo.resolve().parent))
    try:
        tmp.chmod(0o777 & ~current_umask())  # mkdtemp's 0700 would hide the model from a server running as another user
        (tmp / "1").mkdir()
        for name, src in entry.files.items():
            (tmp / "1" / name).parent.mkdir(parents=True, exist_ok=True)  # a package's by_cpu/CLASS/ files
            shutil.copyfile(src, tmp / "1" / name)
        (tmp / CONFIG).write_text(config_text(cfg))
        back = read_config(tmp / CONFIG)
        if back != cfg:
            raise ScaoedError(f"{entry.name}/{CONFIG} does not read back as written")
        check_config(back, tmp, entry.name)
        if final.exists():
            old = tmp.with_name(f".{repo.name}.{entry.name}.old-{os.getpid()}")
            os.replace(final, old)
            os.replace(tmp, final)
            shutil.rmtree(old, ignore_errors=True)
        else:
            os.replace(tmp, final)
    finally:
        if tmp.exists():
            shutil.rmtree(tmp, ignore_errors=True)
    return final


def make_repository(
    artifacts: list[str | Path],
    repo: str | Path,
    options: RepoOptions | None = None,
    step: Callable[[str], None] = lambda s: None,
) -> dict:
    """Write one model per artifact into ``repo`` (see the module doc); returns what was written."""
    options = options or RepoOptions()
    if options.max_batch < 1:
        raise ScaoedError(f"--max-batch must be at least 1, got {options.max_batch}")
    if options.instances < 1:
        raise ScaoedError(f"--instances must be at least 1, got {options.instances}")
    repo = Path(repo)
    if repo.exists() and not repo.is_dir():
        raise ScaoedError(f"{repo} is a file; a model repository is a folder")
    # every artifact checked before anything is written; a package is one model of all its classes' choices
    entries = [
        plan_package(Path(a), options, plan_model) if is_package(a) else plan_model(a, options) for a in artifacts
    ]
    names = [e.name for e in entries]
    clash = sorted({n for n in names if names.count(n) > 1})
    if clash:
        raise ScaoedError(f"two artifacts would both be model {clash[0]!r}; write them to separate repositories")
    try:
        repo.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        raise ScaoedError(f"cannot create {repo}: {e.strerror}") from e
    written = []
    for e in entries:
        step(f"writing {repo / e.name} ({e.platform}, max batch {e.max_batch})")
        try:
            written.append(_write_model(e, options, repo))
        except OSError as err:
            raise ScaoedError(f"cannot write {repo / e.name}: {err.strerror or err}") from err
    return {
        "repository": str(repo),
        "python_backend": options.python_backend,
        "models": [e.to_dict() for e in entries],
        "written": [str(p) for p in written],
    }
