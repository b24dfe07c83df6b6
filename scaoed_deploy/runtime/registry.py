"""One registry of backends: which files each runs and how a runner is opened for them.

``open_runner(model, backend)`` is the one way in for the CLI's ``denoise``, for
``parity`` and for ``bench``, so what is checked and timed is what users run. A new
backend is one runner module in this folder plus one ``Backend`` line below.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from ..artifact import ENGINE_SUFFIXES, ONNX_SUFFIXES, Artifact, load_artifact
from ..checkpoint import read_checkpoint
from ..errors import ScaoedError
from ..weights import demo_weights
from .base import BaseRunner
from .onnxruntime_backend import CPU, CUDA, OnnxRuntimeRunner
from .tensorrt import TensorRTRunner
from .torch_backend import TorchRunner

CHECKPOINT_SUFFIXES = {".pth", ".pt", ".ckpt", ".safetensors", ".bin"}


@dataclass
class RunOptions:
    stages: int | None = None  # K (checkpoints only; an artifact has its own)
    device: str = "auto"
    threads: int | None = None
    weights: object | None = None  # Weights to run when no model file is given (default: the demo weights)
    amp: str | None = None  # torch: autocast bf16/fp16
    compile: bool = False  # torch: torch.compile


def _torch(model: Path | None, o: RunOptions, art: Artifact | None = None) -> BaseRunner:
    weights = read_checkpoint(model) if model else (o.weights if o.weights is not None else demo_weights())
    return TorchRunner(weights, stages=o.stages, device=o.device, amp=o.amp, compile=o.compile,
                                     threads=o.threads)


def _onnxruntime(providers: list[str]) -> Callable[..., BaseRunner]:
    def open_(model: Path, o: RunOptions, art: Artifact | None = None) -> BaseRunner:
        art = art or load_artifact(model)  # one clear line for a corrupt file, before ONNX Runtime's
        runner = OnnxRuntimeRunner(model, providers=providers, threads=o.threads)
        runner.description = f"{model} on ONNX Runtime ({'CUDA' if providers is CUDA else 'CPU'}, {art.precision})"
        return runner

    return open_


def _tensorrt(model: Path, o: RunOptions, art: Artifact | None = None) -> BaseRunner:
    return TensorRTRunner(model)


@dataclass(frozen=True)
class Backend:
    name: str
    suffixes: frozenset[str]
    open: Callable[..., BaseRunner]  # (path or None, RunOptions, the loaded Artifact or None) -> runner
    default: bool = True  # picked for its files when no backend is named


BACKENDS = {b.name: b for b in (
    Backend("torch", frozenset(CHECKPOINT_SUFFIXES), _torch),
    Backend("onnxruntime", frozenset(ONNX_SUFFIXES), _onnxruntime(CPU)),
    Backend("onnxruntime-cuda", frozenset(ONNX_SUFFIXES), _onnxruntime(CUDA), default=False),
    Backend("tensorrt", frozenset(ENGINE_SUFFIXES), _tensorrt),
)}


def _kind(suffix: str) -> str:
    if suffix in ONNX_SUFFIXES:
        return "an ONNX file"
    if suffix in ENGINE_SUFFIXES:
        return "a TensorRT engine"
    return "a checkpoint"


def open_runner(model: str | Path | Artifact | None = None, backend: str | None = None,
                options: RunOptions | None = None) -> BaseRunner:
    """A runner for a checkpoint, an .onnx file or a TensorRT engine (``model`` None: the demo weights, or
    ``options.weights``, on torch; an already loaded ``Artifact`` is not read again). ``backend`` None: the
    file's default backend (ONNX on CUDA when ``options.device`` is cuda)."""
    o = options or RunOptions()
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
        raise ScaoedError(f"{model}: unknown model type {suffix or '(no extension)'}; expected a checkpoint "
                          "(.pth/.safetensors), an .onnx file or a TensorRT .engine")
    if backend is None:
        if suffix in ONNX_SUFFIXES and o.device == "cuda":
            backend = "onnxruntime-cuda"
        else:
            backend = next(b.name for b in fits if b.default)
    chosen = BACKENDS[backend]
    if suffix not in chosen.suffixes:
        if path is None or suffix in CHECKPOINT_SUFFIXES:
            raise ScaoedError(f"--backend {backend} needs a matching model file (.onnx or .engine), not a checkpoint")
        names = " or ".join(f"--backend {b.name}" for b in fits)
        raise ScaoedError(f"{model} is {_kind(suffix)}: use {names}")
    return chosen.open(path, o, art)
