"""The runner interface every backend implements, after polygraphy's ``BaseRunner``.

A runner takes a float32 NCHW batch in [0, 1] (H and W even) and returns the model's
outputs as float32 arrays: ``run(batch)`` every output in graph order (denoised first,
then any noise maps), ``runner(batch)`` the denoised image alone. Its lifecycle:
``activate()`` loads what is heavy (an engine, a session), ``close()`` releases it, and
``with runner:`` does both. ``limits`` says which spatial sizes and batches it accepts;
``description`` says in a few words what it runs, for the user.

``Runner.open(path, options, artifact)`` is how the registry makes a runner for a
file: each backend's runner class says there what it needs from ``RunOptions``.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from ..artifact import Artifact
from ..contract import check_outputs
from ..cpu import this_cpu
from ..errors import ScaoedError


def cpu_threads(requested: int | None = None) -> int:
    """The one thread policy of every CPU backend (torch, ONNX Runtime, OpenVINO): ``requested`` (``--threads``),
    else the cores this process may run on (its CPU affinity, which containers and taskset narrow)."""
    if requested:
        return int(requested)
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # no affinity API (macOS)
        return os.cpu_count() or 1


def busy_warning(threads: int | None = None) -> str | None:
    """One line when other work already keeps this process's cores busy (1-minute load average at or above
    the cores it may use): torch's OpenMP threads then slow down many times over, more than ONNX Runtime's."""
    if not hasattr(os, "getloadavg"):
        return None
    load, cores = os.getloadavg()[0], cpu_threads()
    if load < cores:
        return None
    return (
        f"warning: the machine is busy (load average {load:.1f} on {cores} core(s) this process may use): "
        f"timings will be slow and noisy; fewer --threads than {cpu_threads(threads)} may run faster"
    )


@dataclass
class RunOptions:
    """What a user may ask of any runner; each backend reads the fields that apply to it."""

    stages: int | None = None  # K (checkpoints only; an artifact has its own)
    device: str = "auto"
    threads: int | None = None
    weights: object | None = None  # Weights to run when no model file is given (default: the demo weights)
    amp: str | None = None  # torch: autocast bf16/fp16
    compile: bool = False  # torch: torch.compile
    check_finite: bool = True  # refuse NaN/Inf outputs (parity turns it off: it reports them)
    allow_unverified: bool = False  # run a file edited after verification (its recorded content digest differs)
    allow_cpu_fallback: bool = False  # a package without this CPU's class: run its nearest lower class's choice


@dataclass
class Limits:
    """Spatial sizes an artifact accepts: (H, W) bounds, or None where any size goes."""

    min_hw: tuple[int, int] | None = None
    max_hw: tuple[int, int] | None = None
    batch: int | None = None  # a static batch size (every call is padded up to it)
    max_batch: int | None = None  # the largest batch accepted


def verified_elsewhere(art: Artifact) -> list[str]:
    """The warning for an artifact verified on a CPU with what this one lacks (``CPU.lacks_for``), if any."""
    try:
        detail = json.loads(art.metadata.get("precision_detail") or "{}")
    except ValueError:
        return []
    # OpenVINO IRs record it in their detail, ONNX Runtime INT8 files in their int8_format
    checked_on = detail.get("checked_on") or (detail.get("int8_format") or {}).get("checked_on")
    why = this_cpu().lacks_for(art.precision, checked_on) if isinstance(checked_on, dict) else None
    return [why.replace("FILE", str(art.path))] if why else []


class BaseRunner:
    name = "base"
    input_name = "noisy"
    output_names: list[str] = []
    #: Refuse NaN/Inf outputs (``run`` raises). ``open_runner`` turns it on for what users run (denoise, bench);
    #: the export check and parity leave it off: they look at non-finite outputs themselves, and report them.
    check_finite = False
    #: Whether the runner computes on the CPU (its thread count then matters, and a busy machine slows it).
    on_cpu = True

    def __init__(self):
        self.limits = Limits()
        self.description = self.name
        self.warnings: list[str] = []  # said once by the command that opened it (verified_elsewhere)
        self.package_pick = None  # opened from an optimize package: the entry this CPU took (fleet.Pick)
        self._active = False

    @classmethod
    def open(cls, path: Path | None, options: RunOptions, artifact: Artifact | None = None) -> BaseRunner:
        """A runner for the file at ``path`` (``artifact``: the same file, already loaded), as ``options`` ask."""
        raise NotImplementedError

    @property
    def is_active(self) -> bool:
        """Whether what the runner runs is loaded (between ``activate`` and ``deactivate``)."""
        return self._active

    def activate(self) -> None:
        """Load what the runner needs (idempotent); ``run`` activates on first use."""
        if not self._active:
            self._activate()
            self._active = True

    def deactivate(self) -> None:
        """Free what ``activate`` loaded (idempotent); a later ``activate`` loads it again."""
        if self._active:
            self._active = False
            self._deactivate()

    def _activate(self) -> None:
        """What ``activate`` loads: a session, a compiled model, an engine (each runner's own)."""

    def _deactivate(self) -> None:
        """What ``deactivate`` frees."""

    def _run(self, batch: np.ndarray) -> list[np.ndarray]:
        raise NotImplementedError

    def run(self, batch: np.ndarray) -> list[np.ndarray]:
        """Every output, after the contract's shape check (a model of another network is refused, not written)."""
        self.activate()
        outs = self._run(batch)
        check_outputs(self.description, batch.shape, outs)
        return self.refuse_nonfinite(outs)

    #: What a NaN/Inf output from a finite input says about this runner (its error line names it).
    nonfinite_cause = "the model or its weights are broken"

    def refuse_nonfinite(self, outs: list[np.ndarray]) -> list[np.ndarray]:
        """``outs``, or one clear error when ``check_finite`` is on and any holds NaN/Inf."""
        if self.check_finite and not all(np.isfinite(o).all() for o in outs):
            raise ScaoedError(
                f"{self.description} gave NaN/Inf for a finite input: {self.nonfinite_cause} (nothing written)"
            )
        return outs

    def __call__(self, batch: np.ndarray) -> np.ndarray:
        return self.run(batch)[0]

    def close(self) -> None:
        """``deactivate``, by the name the Denoiser and the served model use."""
        self.deactivate()

    def __enter__(self):
        self.activate()
        return self

    def __exit__(self, *exc) -> None:
        self.close()  # deactivate; a served model's runner also closes its connection
