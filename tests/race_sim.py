"""A simulated optimize search: the real order of work, pruning, racing and finalists (``optimize.race``) over
candidates with known true latencies and PSNRs (a backend's dPSNR against fp32 alike at every K within 0.01 dB, as
measured: the pruning from a lower K relies on it), each timed call drawn with heavy-tailed noise (a share of calls
some factor slower, and a few percent of jitter); the choice compared with brute force (``choose`` on the true
figures of every candidate). Used by tests/test_optimize_race.py and benchmarks/optimize/race_simulation.py."""

from __future__ import annotations

import random

from scaoed_deploy.bench.candidates import BACKEND_PRECISION
from scaoed_deploy.optimize.choose import Candidate, Constraint, NothingMeets, candidate_id, choose
from scaoed_deploy.optimize.race import RacePolicy, judged_ms, noise_of, run_noise, run_search, settle, stop_timing

GMACS = {1: 212.0, 3: 640.0, 5: 1071.0}
BACKENDS = ["torch", "onnxruntime-int8", "openvino-int8", "openvino-bf16", "torch-bf16", "onnxruntime", "openvino"]
DPSNR = {"int8": (-0.15, -0.02), "bf16": (-0.01, 0.0), "fp32": (-1e-4, 1e-4)}
SEPARATION = 1.04  # any two true latencies (and a budget against each) at least this far apart: resolvable


def case(rng: random.Random, kind: str | None) -> tuple[dict, dict, Constraint]:
    """(true figures by id, fp32 PSNR by K, a constraint) for one random machine."""
    fp32 = {1: 28.9 + rng.uniform(-0.1, 0.1), 3: 29.3 + rng.uniform(-0.1, 0.1), 5: 29.45 + rng.uniform(-0.1, 0.1)}
    while True:
        per_gmac = {b: rng.uniform(1.0, 8.0) for b in BACKENDS}
        loss = {b: rng.uniform(*DPSNR[BACKEND_PRECISION[b]]) for b in BACKENDS}  # a backend's, about alike at any K
        truth = {}
        for k in GMACS:
            for b in BACKENDS:
                lo, hi = DPSNR[BACKEND_PRECISION[b]]
                d = min(hi, max(lo, loss[b] + rng.uniform(-0.01, 0.01)))
                truth[candidate_id(k, b)] = (
                    k,
                    b,
                    per_gmac[b] * GMACS[k] * rng.uniform(0.85, 1.15),
                    fp32[k] + (0.0 if b == "torch" else d),
                )
        lat = sorted(v[2] for v in truth.values())
        if all(b / a >= SEPARATION for a, b in zip(lat, lat[1:])):
            break
    if kind == "max_latency_ms":
        while True:
            value = rng.uniform(lat[0], lat[-1])
            if all(max(value / t, t / value) >= SEPARATION for t in lat):
                break
    elif kind == "min_psnr":
        value = rng.uniform(min(v[3] for v in truth.values()), max(v[3] for v in truth.values()))
    elif kind == "max_dpsnr":
        value = rng.uniform(0.01, 0.3)
    else:
        value = None
    return truth, fp32, Constraint(kind, value)


def call(rng: random.Random, true_ms: float, slow_share: float, slow_factor: float) -> float:
    return true_ms * (slow_factor if rng.random() < slow_share else 1.0) * (1 + rng.gauss(0, 0.02))


def simulate(
    rng: random.Random,
    truth: dict,
    fp32: dict,
    constraint: Constraint,
    policy: RacePolicy,
    iters: int = 5,
    slow_share: float = 0.2,
    slow_factor: float = 2.0,
) -> tuple[str | None, int]:
    """(the simulated search's choice or None when nothing meets, timed calls made)."""
    cands = [Candidate(cid, k, b, BACKEND_PRECISION[b]) for cid, (k, b, _, _) in truth.items()]
    calls = 0

    def measure(c: Candidate, eager: Candidate) -> None:
        nonlocal calls
        _, _, true_ms, psnr = truth[c.id]
        noise = noise_of(eager.extra.get("calls_ms", [])) if c is not eager else 0.0
        others = [d for d in cands if d.measured]
        times: list[float] = []
        for _ in range(iters):
            times.append(call(rng, true_ms, slow_share, slow_factor))
            if stop_timing(psnr, times, others, constraint, c is not eager, noise, policy):
                break
        calls += len(times)
        c.status, c.psnr, c.latency_ms = "built", psnr, judged_ms(times, policy)
        c.extra["calls_ms"] = times

    def retime(final: list[Candidate], rounds: int) -> list[list[float]]:
        nonlocal calls
        calls += rounds * len(final)
        return [[call(rng, truth[c.id][2], slow_share, slow_factor) for _ in range(rounds)] for c in final]

    run_search(cands, fp32, GMACS, constraint, measure)
    try:
        return settle(cands, constraint, run_noise(cands), retime, policy)[0].id, calls
    except NothingMeets:
        return None, calls


def brute_force(truth: dict, constraint: Constraint) -> str | None:
    cands = [
        Candidate(cid, k, b, BACKEND_PRECISION[b], status="built", latency_ms=ms, psnr=psnr)
        for cid, (k, b, ms, psnr) in truth.items()
    ]
    try:
        return choose(cands, constraint).id
    except NothingMeets:
        return None


def agreement(policy: RacePolicy, kind: str | None, cases: int = 300, seed: int = 0, **noise) -> dict:
    """How often the simulated search picks what brute force picks, over ``cases`` random machines."""
    rng = random.Random(f"{seed}-{kind}")
    right = calls = 0
    for _ in range(cases):
        truth, fp32, constraint = case(rng, kind)
        picked, n = simulate(rng, truth, fp32, constraint, policy, **noise)
        right += picked == brute_force(truth, constraint)
        calls += n
    return {"rate": right / cases, "calls_per_case": calls / cases}
