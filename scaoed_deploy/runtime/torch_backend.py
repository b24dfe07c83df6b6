"""Eager PyTorch backend: the reference every artifact is compared with."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch

from ..artifact import Artifact
from ..checkpoint import DEFAULT_STAGES, Weights, build_model, read_checkpoint
from ..errors import ScaoedError, first_line
from ..util.device import pick_device
from ..weights import demo_weights
from .base import BaseRunner, RunOptions, cpu_threads
from .cpu_memory import keep_freed_memory

AMP_DTYPES = {None: None, "fp32": None, "bf16": torch.bfloat16, "fp16": torch.float16}


class TorchRunner(BaseRunner):
    """Runs the eager model on float32 NCHW batches; ``run`` also returns the K noise maps.

    ``amp``: run under torch.autocast in bf16 or fp16; ``compile``: through ``torch.compile``.
    """

    name = "torch"

    @classmethod
    def open(cls, path: Path | None, options: RunOptions, artifact: Artifact | None = None) -> TorchRunner:
        """A checkpoint file, else ``options.weights``, else the demo weights."""
        o = options
        weights = read_checkpoint(path) if path else (o.weights if o.weights is not None else demo_weights())
        runner = cls(weights, stages=o.stages, device=o.device, amp=o.amp, compile=o.compile, threads=o.threads)
        runner.activate()  # the model built (a bad K, torch.compile refused) before any output is planned
        return runner

    def __init__(
        self,
        weights: Weights | None,
        stages: int | None = None,
        device: str = "auto",
        model=None,
        amp: str | None = None,
        compile: bool = False,
        threads: int | None = None,
    ):
        """Run ``weights`` at K = ``stages``, or an already built ``model`` (the exporter's). Cheap: the model is
        built by ``activate`` (``open`` and the first call make it)."""
        super().__init__()
        if amp not in AMP_DTYPES:
            raise ScaoedError(f"unknown autocast precision {amp!r}; use bf16 or fp16")
        self.weights, self._given, self._compile = weights, model, compile
        self.device = pick_device(device)
        self.on_cpu = self.device.type == "cpu"
        self.threads = None
        if self.on_cpu:  # process settings, no I/O: malloc keeps freed memory, torch's thread count
            keep_freed_memory()  # eager calls otherwise fault their activations in afresh each time
            self.threads = cpu_threads(threads)
            torch.set_num_threads(self.threads)
        self.stages = model.stages if model is not None else (stages or weights.stages or DEFAULT_STAGES)
        self.dtype = AMP_DTYPES[amp]
        self.model = self._forward = None
        if compile:
            self.nonfinite_cause = (
                "torch.compile's kernels are wrong where eager's are not (a stale Inductor "
                "cache, TORCHINDUCTOR_CACHE_DIR, can cause it)"
            )
        self.output_names = ["denoised"] + [f"noise_map_{i + 1}" for i in range(self.stages)]
        source = Path(weights.source).name if weights is not None else "the model"
        self.description = (
            f"{source} on torch{'.compile' if compile else ''} ({self.device}, K={self.stages}"
            f"{', ' + amp if self.dtype else ''})"
        )

    def _activate(self) -> None:
        given = self._given
        self.model = (given if given is not None else build_model(self.weights, self.stages)).to(self.device).eval()
        self._forward = self.model
        if self._compile:
            try:
                self._forward = torch.compile(self.model)
            except Exception as e:  # noqa: BLE001 - torch.compile's failures have many types
                raise ScaoedError(f"torch.compile failed: {first_line(e)}") from e

    def _deactivate(self) -> None:
        self.model = self._forward = None

    def _autocast(self):
        return torch.autocast(self.device.type, dtype=self.dtype or torch.float32, enabled=self.dtype is not None)

    @torch.inference_mode()
    def _run(self, batch: np.ndarray) -> list[np.ndarray]:
        """[denoised, noise map 1, ..., noise map K]."""
        x = torch.from_numpy(np.ascontiguousarray(batch, dtype=np.float32)).to(self.device)
        with self._autocast():
            out, maps = self.model(x, return_noise_maps=True)
        return [t.float().cpu().numpy() for t in (out, *maps)]

    @torch.inference_mode()
    def __call__(self, batch: np.ndarray) -> np.ndarray:
        self.activate()
        x = torch.from_numpy(np.ascontiguousarray(batch, dtype=np.float32)).to(self.device)
        with self._autocast():
            try:
                y = self._forward(x)
            except Exception as e:  # torch.compile compiles at the first call (and at a new shape): a C++ compiler
                if self._forward is self.model:  # may fail there, with failures of many types; eager's go as they are
                    raise
                raise ScaoedError(f"torch.compile failed: {first_line(e)}") from e
        return self.refuse_nonfinite([y.float().cpu().numpy()])[0]
