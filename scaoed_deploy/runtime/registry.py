"""One registry of backends: which files each runs and how a runner is opened for them.

``open_runner(model, backend)`` is the one way in for the CLI's ``denoise``, for
``parity`` and for ``bench``, so what is checked and timed is what users run. A new
backend is one runner module in this folder (a ``BaseRunner`` with an ``open``
classmethod) plus one ``Backend`` line below. An optimize package (a folder with
``selection.json``) opens the choice of this CPU's class (``fleet.pick``), on the
backend and options of its variant; the runner's ``package_pick`` says which.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, replace
from functools import partial
from pathlib import Path

from ..artifact import ENGINE_SUFFIXES, ONNX_SUFFIXES, OPENVINO_SUFFIXES, Artifact
from ..errors import ScaoedError
from ..fleet import Pick, is_package, pick
from .base import BaseRunner, RunOptions
from .onnxruntime_backend import CPU, CUDA, OnnxRuntimeRunner
from .openvino_backend import OpenVINORunner
from .tensorrt import TensorRTRunner
from .torch_backend import TorchRunner
from .variants import VARIANTS

CHECKPOINT_SUFFIXES = frozenset({".pth", ".pt", ".ckpt", ".safetensors", ".bin"})


@dataclass(frozen=True)
class Backend:
    name: str
    suffixes: frozenset[str]
    kind: str  # what its files are, for messages: "an ONNX file"
    open: Callable[..., BaseRunner]  # (path or None, RunOptions, the loaded Artifact or None) -> runner
    default: bool = True  # picked for its files when no backend is named
    device: str | None = None  # picked for its files when RunOptions.device asks for this device


BACKENDS = {
    b.name: b
    for b in (
        Backend("torch", CHECKPOINT_SUFFIXES, "a checkpoint", TorchRunner.open),
        Backend(
            "onnxruntime", frozenset(ONNX_SUFFIXES), "an ONNX file", partial(OnnxRuntimeRunner.open, providers=CPU)
        ),
        Backend(
            "onnxruntime-cuda",
            frozenset(ONNX_SUFFIXES),
            "an ONNX file",
            partial(OnnxRuntimeRunner.open, providers=CUDA),
            default=False,
            device="cuda",
        ),
        Backend("tensorrt", frozenset(ENGINE_SUFFIXES), "a TensorRT engine", TensorRTRunner.open),
        Backend("openvino", frozenset(OPENVINO_SUFFIXES), "an OpenVINO IR", OpenVINORunner.open),
    )
}


def _model_types() -> str:
    kinds = {}
    for b in BACKENDS.values():
        kinds.setdefault(b.kind, set()).update(b.suffixes)
    return ", ".join(f"{kind} ({'/'.join(sorted(suffixes))})" for kind, suffixes in kinds.items())


def open_runner(
    model: str | Path | Artifact | None = None, backend: str | None = None, options: RunOptions | None = None
) -> BaseRunner:
    """A runner for a checkpoint or an artifact file (``model`` None: the demo weights, or ``options.weights``,
    on torch; an already loaded ``Artifact`` is not read again). ``backend`` None: the file's default backend,
    or the one made for ``options.device`` (ONNX on CUDA when it is cuda)."""
    o = options or RunOptions()
    if not isinstance(model, Artifact) and is_package(model):
        return open_package(Path(model), backend, o)
    art = model if isinstance(model, Artifact) else None
    model = art.path if art else model
    if backend is not None and backend not in BACKENDS:
        raise ScaoedError(f"unknown backend {backend!r}; use one of {', '.join(BACKENDS)}")
    path = Path(model) if model else None
    if path is not None and not path.is_file():
        raise ScaoedError(f"model not found: {model}")
    suffix = path.suffix.lower() if path else ".safetensors"
    fits = [b for b in BACKENDS.values() if suffix in b.suffixes]
    if not fits:
        raise ScaoedError(f"{model}: unknown model type {suffix or '(no extension)'}; expected {_model_types()}")
    if backend is None:
        for_device = [b for b in fits if b.device and b.device == o.device]
        backend = (for_device or [b for b in fits if b.default])[0].name
    chosen = BACKENDS[backend]
    if suffix not in chosen.suffixes:
        if path is None or suffix in CHECKPOINT_SUFFIXES:
            raise ScaoedError(
                f"--backend {backend} needs {chosen.kind} ({'/'.join(sorted(chosen.suffixes))}), not a checkpoint"
            )
        names = " or ".join(f"--backend {b.name}" for b in fits)
        raise ScaoedError(f"{model} is {fits[0].kind}: use {names}")
    runner = chosen.open(path, o, art)
    runner.check_finite = o.check_finite
    return runner


def open_package(folder: Path, backend: str | None, o: RunOptions) -> BaseRunner:
    """The runner of the package's choice for this CPU (``fleet.pick``), as its variant runs it."""
    chosen: Pick = pick(folder, allow_fallback=o.allow_cpu_fallback)
    v = VARIANTS.get(chosen.backend)
    if v is None:
        raise ScaoedError(f"package {folder}: its {chosen.cpu_class} choice runs on {chosen.backend!r}, unknown here")
    name = v.registry_name("cuda" if o.device == "cuda" else "cpu")
    if backend is not None and backend != name:
        raise ScaoedError(
            f"--backend {backend} does not apply to package {folder}: its {chosen.cpu_class} choice "
            f"{chosen.candidate} runs on {name}"
        )
    if o.stages is not None and o.stages != chosen.k:
        raise ScaoedError(
            f"--stages {o.stages} does not apply to package {folder}: its {chosen.cpu_class} choice "
            f"{chosen.candidate} is K={chosen.k}"
        )
    runner = open_runner(chosen.artifact, name, replace(o, stages=chosen.k, amp=v.amp, compile=v.compile))
    runner.package_pick = chosen
    warning = chosen.warning()  # a lower class's choice, by --allow-cpu-fallback
    runner.warnings = [*([warning] if warning else []), *runner.warnings]
    return runner
