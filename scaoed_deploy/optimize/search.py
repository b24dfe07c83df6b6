"""The measurement behind ``optimize``: quality per K, then each candidate made, verified and timed in one process.

1. Quality of each K, once, on the fp32 eager model: mean PSNR/SSIM on the evaluation pairs.
2. Pruning by PSNR (``choose.quality_prune``) before anything is made.
3. K ascending; at each K eager fp32 first (every ratio is to eager in this run), then each backend, fastest
   predicted first: pruned when its lower-K latency scaled by the MACs is over a latency budget
   (``choose.latency_prune``) or slower than a measured candidate that scores at least the most it can
   (``choose.dominance_prune``); else made by build-engine's steps through bench's ``Backends`` (reused when
   made from the same weights), its parity record read for exactly this file and these pairs or parity run now
   (a failure excludes it), and timed by bench's ``measure``. Torch variants (and engines) have no file for the
   harness: their parity is task agreement with fp32 on the evaluation pairs, within the precision's parity
   limit.
4. Timing races (``race.stop_timing``): a candidate stops once its calls show it slower, beyond this run's
   noise, than a measured one scoring at least as high, or over the budget (neither can be chosen), and any
   candidate once its last calls agree; eager does not race, and its calls measure the noise.
5. The finalists (``race.settle``): the choice and the candidates within the noise of it or of the budget are
   timed again in interleaved rounds, and the choice is made on all their calls.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path

import numpy as np

from ..bench import (
    BASELINE,
    Backends,
    BenchConfig,
    LoadMeter,
    Measurement,
    Skip,
    check_inference_memory,
    machine,
    measure,
    prepare,
    quality,
    time_calls,
)
from ..checkpoint import Weights
from ..cost import model_cost
from ..errors import ScaoedError, VerificationError
from ..isolate.memory import peak_of
from ..parity import load_artifact, read_parity_record, run_parity, write_parity_record
from ..parity.report import parity_record_path
from ..runtime.torch_backend import TorchRunner
from ..runtime.variants import VARIANTS
from ..util.files import sha256_of
from .choose import Candidate, Constraint, NothingMeets, candidate_id, margin_db, pareto_front, set_dpsnr
from .race import DEFAULT as DEFAULT_RACE
from .race import RacePolicy, judged_ms, noise_of, run_noise, run_search, settle, stop_timing


@dataclass(frozen=True)
class OptimizeConfig(BenchConfig):
    """bench's settings for one resolution, with the constraint; fewer timed runs than bench by default."""

    constraint: Constraint = field(default_factory=Constraint)
    race: RacePolicy = DEFAULT_RACE
    warmup: int = 1
    iters: int = 5
    command: str | None = None


def artifact_parity(path: Path, weights: Weights, k: int, data: Path, step, command: str | None) -> dict:
    """The parity verdict of exactly this file on these pairs: its record when one was written for its sha256 and
    ``data``, else parity run now (its record written when it passes)."""
    record = read_parity_record(path, sha256_of(path))
    data_id = str(Path(data).resolve())
    if record and record.get("passed") and record.get("data") == data_id and record.get("mean_dpsnr_db") is not None:
        return {
            "passed": True,
            "source": "record",
            "record": str(parity_record_path(path)),
            "mean_dpsnr_db": record["mean_dpsnr_db"],
            "mean_ssim": record.get("mean_ssim"),
        }
    step(f"parity of {path.name}")
    result = run_parity(load_artifact(path), weights, k, data, step=step, localise=False)  # `parity` localises
    d = result.to_dict()
    out = {"passed": result.passed, "source": "run now", "mean_dpsnr_db": d["mean_dpsnr"], "mean_ssim": d["mean_ssim"]}
    if result.passed:
        out["record"] = str(write_parity_record(result, command))
    else:
        worst = result.failures[0]
        out["failure"] = (
            f"{worst.check}: {worst.measured} vs {worst.limit}; `scaoed-deploy parity {path}` "
            "names the first node that diverges"
        )
    return out


def _task_parity(fn, c: Candidate, pairs: list, fp32: dict) -> dict:
    """A runner with no file for the harness: its PSNR on the pairs within the precision's limit of fp32's."""
    psnr, ssim = quality(fn, pairs)
    d = psnr - fp32[c.k]["psnr"]
    limit = margin_db(c.precision)
    out = {
        "passed": abs(d) <= limit,
        "source": "task agreement on the evaluation pairs",
        "mean_dpsnr_db": d,
        "mean_ssim": ssim,
        "limit_db": limit,
    }
    if not out["passed"]:
        out["failure"] = f"|dPSNR| against fp32 {abs(d):.3f} dB vs {limit:g} dB"
    return out


def gmacs_by_k(cfg: OptimizeConfig, weights: Weights) -> dict[int, float]:
    """Multiply-accumulates (G) of one call at each K, at the run's resolution and batch."""
    ((h, w),) = cfg.resolutions
    return {k: model_cost(k, weights.blocks, h, w, cfg.batch).total_macs / 1e9 for k in cfg.stages}


class Search:
    def __init__(
        self,
        weights: Weights,
        cfg: OptimizeConfig,
        step: Callable[[str], None],
        advance: Callable[[Candidate, float], None],
    ):
        cfg = replace(cfg, stages=sorted(set(cfg.stages)))  # --stages 3,1,3 is K = 1 and 3, once each
        cfg, self.timing, samples = prepare(cfg)  # threads and evaluation data settled
        self.weights, self.cfg, self.step, self.advance = weights, cfg, step, advance
        check_inference_memory(cfg, weights.blocks)
        self.pairs, self.names = [(s.noisy, s.clean) for s in samples], [s.name for s in samples]
        if not self.pairs:
            raise ScaoedError(
                "optimize measures quality on real noisy/clean pairs and found none "
                f"({cfg.data or '../shared/data/sidd is absent'}): pass --data DIR with noisy/ and clean/"
            )
        (h, w), b = cfg.resolutions[0], cfg.batch
        self.x = np.random.default_rng(0).random((b, 3, h, w), dtype=np.float32)
        self.gmacs = gmacs_by_k(cfg, weights)
        order = list(dict.fromkeys([BASELINE, *cfg.backends]))  # eager first: every ratio needs it
        self.cands = [
            Candidate(candidate_id(k, n), k, n, VARIANTS[n].precision, gmacs=round(self.gmacs[k], 2))
            for k in sorted(cfg.stages)
            for n in order
        ]
        self.backends = Backends(weights, cfg, step)
        self.fp32: dict[int, dict] = {}

    def fp32_quality(self) -> None:
        for k in sorted(self.cfg.stages):
            self.step(f"K={k}: fp32 quality on {len(self.pairs)} evaluation pairs")
            with TorchRunner(self.weights, stages=k, device=self.cfg.device) as r:
                psnr, ssim = quality(r, self.pairs)
            self.fp32[k] = {"psnr": psnr, "ssim": ssim}

    def run(self) -> None:
        self.fp32_quality()
        run_search(
            self.cands,
            {k: q["psnr"] for k, q in self.fp32.items()},
            self.gmacs,
            self.cfg.constraint,
            self.measure_candidate,
            lambda c: self.advance(c, self.gmacs[c.k]),
        )

    def measure_candidate(self, c: Candidate, eager: Candidate) -> None:
        t = time.perf_counter()
        peaks: dict = {}
        with peak_of("candidate", peaks):
            self.measure(c, eager)
        c.peak_rss_mb = {**peaks, **self.backends.build_peaks}  # made, verified, timed; build steps
        self.backends.build_peaks.clear()
        c.extra["wall_s"] = round(time.perf_counter() - t, 1)  # making, parity and timing together

    def retime(self, final: list[Candidate], rounds: int) -> list[list[float]]:
        """``rounds`` calls of each finalist, in turn (A B C A B C ...), after one untimed call each."""
        fns = []
        try:
            for c in final:
                self.step(f"finalists: opening {c.id}")
                fns.append(self.backends.open(c.backend, c.k))
                fns[-1](self.x)
            calls: list[list[float]] = [[] for _ in final]
            for r in range(rounds):
                self.step(f"finalists: round {r + 1} of {rounds} over {', '.join(c.id for c in final)}")
                for i, fn in enumerate(fns):  # one call each, by bench's clock (a CUDA call waited for)
                    times, _ = time_calls(fn, self.x, 0, 1, self.cfg.device == "cuda")
                    calls[i].append(times[0] * 1000)
            return calls
        finally:
            for fn in fns:
                fn.close()

    def measured(self) -> list[Candidate]:
        return [c for c in self.cands if c.measured]

    def measure(self, c: Candidate, eager: Candidate) -> None:
        cfg = self.cfg
        self.step(f"{c.id}: setting up")
        t0 = time.perf_counter()
        try:
            fn = self.backends.open(c.backend, c.k)
        except Skip as e:
            failed = isinstance(e.__cause__, VerificationError)  # made, but failed its audit or parity
            c.status, c.reason = ("excluded" if failed else "skipped"), str(e)
            return
        try:
            c.artifact = getattr(fn, "artifact", None)
            c.runtime_precision = getattr(fn, "runtime_precision", None)
            c.parity = self.verify(c, fn)
            if not c.parity["passed"]:
                c.status, c.reason = "excluded", f"failed parity ({c.parity['failure']})"
                return
            psnr = self.fp32[c.k]["psnr"] + c.parity["mean_dpsnr_db"]
            others, race = self.measured(), c is not eager
            noise = noise_of(eager.extra.get("calls_ms", []))

            def until(times: list[float]) -> str | None:
                return stop_timing(psnr, [t * 1000 for t in times], others, cfg.constraint, race, noise, cfg.race)

            self.step(f"{c.id}: warm-up and up to {cfg.iters} timed runs")
            m = self.time(c, fn, t0, until)
        except ScaoedError as e:  # NaN/Inf from this backend, a refused file: excluded, the search goes on
            c.status, c.reason = "excluded", str(e)
            return
        finally:
            fn.close()
        c.status = "built"
        c.latency_ms = judged_ms(m.times_ms, cfg.race) if m.times_ms else m.latency_ms["median"]
        c.p90_ms = m.latency_ms["p90"]
        c.images_per_s = cfg.batch / (c.latency_ms / 1000)
        c.peak_memory_mb, c.setup_s = m.peak_memory_mb, m.setup_s
        c.psnr, c.ssim = psnr, c.parity.get("mean_ssim")
        c.extra["latency"], c.extra["calls_ms"] = m.latency_ms, [round(t, 2) for t in m.times_ms]
        if m.stopped:
            c.extra["timing_stopped"] = m.stopped
        if eager.latency_ms:
            c.ratio_to_eager = c.latency_ms / eager.latency_ms

    def verify(self, c: Candidate, fn) -> dict:
        """The parity gate of an opened candidate (see ``measure``)."""
        if c.backend == BASELINE:
            return {
                "passed": True,
                "source": "the reference (eager fp32)",
                "mean_dpsnr_db": 0.0,
                "mean_ssim": self.fp32[c.k]["ssim"],
            }
        if c.artifact:
            return artifact_parity(Path(c.artifact), self.weights, c.k, self.cfg.data, self.step, self.cfg.command)
        self.step(f"{c.id}: PSNR on the evaluation pairs")
        return _task_parity(fn, c, self.pairs, self.fp32)

    def time(self, c: Candidate, fn, t0: float, until) -> Measurement:
        """bench's timing of ``fn``, ended early when ``until`` says why (racing, see the module doc)."""
        cfg = self.cfg
        return measure(
            fn,
            self.x,
            cfg.warmup,
            cfg.iters,
            cfg.device == "cuda",
            t0,
            events=VARIANTS[c.backend].runtime == "torch",
            until=until,
        )

    def previews(self, chosen: Candidate, count: int = 2) -> list[dict]:
        """The first ``count`` evaluation images: noisy, fp32 K = 5 (the paper's largest) and the chosen output."""
        reference = TorchRunner(self.weights, stages=5, device=self.cfg.device)
        fn = reference if chosen.id == candidate_id(5, BASELINE) else self.backends.make(chosen.backend, chosen.k)
        out = []
        try:
            for i, (noisy, clean) in enumerate(self.pairs[:count]):
                self.step(f"report: evaluation image {i + 1} through {chosen.id} and fp32 K=5")
                x = noisy[None].astype(np.float32)
                out.append(
                    {
                        "name": self.names[i],
                        "noisy": noisy.transpose(1, 2, 0),
                        "clean": clean.transpose(1, 2, 0),
                        "reference": reference(x)[0].transpose(1, 2, 0),
                        "chosen": fn(x)[0].transpose(1, 2, 0),
                    }
                )
        finally:
            fn.close()
            reference.close()
        return out


def run_optimize(
    weights: Weights,
    cfg: OptimizeConfig,
    step: Callable[[str], None] = lambda s: None,
    advance: Callable[[Candidate, float], None] = lambda c, gmacs: None,
) -> tuple[dict, list[dict]]:
    """Measure every candidate and choose (``choose.choose``): the selection as a dict (``selection.json``'s
    keys, and what the report needs), and the report's preview images of the choice. ``chosen`` is None and
    ``error`` says why when nothing meets the constraint."""
    t0 = time.perf_counter()
    meter = LoadMeter()
    search = Search(weights, cfg, step, advance)
    cfg = search.cfg  # as the search settled it
    search.run()
    cands = search.cands
    best = set_dpsnr(cands)  # of PSNRs alone: the finalists' re-timing below leaves it as it is
    chosen, error, previews = None, None, []
    noise, final = run_noise(cands), []
    try:
        pick, final = settle(cands, cfg.constraint, noise, search.retime, cfg.race)
        chosen = pick.id
    except NothingMeets as e:
        error = str(e)
    meter.finish()  # the finalists' calls are timings too: the load beside them counts
    if chosen:
        previews = search.previews(pick)
    return {
        "constraint": cfg.constraint.to_dict(),
        "candidates": [c.to_dict() for c in cands],
        "pareto": pareto_front(cands),
        "chosen": chosen,
        "noise": round(noise, 3),
        "finalists": [
            {
                "id": c.id,
                "calls_ms": [round(t, 2) for t in c.extra.get("final_calls_ms", [])],
                "latency_ms": round(c.latency_ms, 2),
            }
            for c in final
        ],
        "error": error,
        "best_psnr": best,
        "fp32_quality": {str(k): v for k, v in search.fp32.items()},
        "evaluation": {"data": str(cfg.data), "pairs": len(search.pairs)},
        "machine": machine(),
        "load": meter.result,
        "warnings": [w for w in [meter.warning()] if w],
        "timing": search.timing,
        "config": {
            **{k: v for k, v in asdict(cfg).items() if k != "constraint"},
            "resolutions": [list(r) for r in cfg.resolutions],
            "data": str(cfg.data),
            "export_dir": str(cfg.export_dir),
        },
        "weights": {"identity": weights.identity, "blocks": weights.blocks, "source": weights.source},
        "command": cfg.command,
        "wall_s": round(time.perf_counter() - t0, 1),
    }, previews
