"""Timing candidates on a machine that is not quiet: the search's order of work, when a candidate may stop being
timed, and which candidates are timed again, side by side, before the choice. Pure functions of call times.

- **Noise**: each K's eager baseline is timed in full first; how far its slowest call lies above its fastest is
  this run's noise, and every racing margin widens to it (``margin``).
- **Racing** (``stop_timing``): a candidate stops once its fastest call is beyond the margin of a measured
  candidate that scores at least as high, or of a latency budget: after ``MIN_CALLS`` calls when it is within
  ``CLOSE_FACTOR`` of it, after one call only when it is further (so one call slowed by a load spike, even
  twice as slow, never decides).
- **Finalists** (``finalists``): the choice and every candidate whose latency, or the budget, lies within the
  noise of it are timed again in rounds, one call each in turn (A B C A B C ...), so a change of load hits all
  alike; their latency becomes the median of all their calls (spikes left out: ``robust_ms``) and the
  choice is made again.
- ``run_search`` is the search's order of work (prunes, eager first at each K, then the others fastest-predicted
  first; a candidate is not made when a measured one already beats both its latency and its PSNR predicted from
  its backend at a lower K: ``choose.likely_reach``), with measuring left to its caller: the real search
  (``search.py``) makes, verifies and times; the simulation in the tests draws noisy calls from true figures.
"""

from __future__ import annotations

import statistics
from dataclasses import dataclass

from ..bench import BASELINE
from .choose import (
    Candidate,
    Constraint,
    choose,
    dominance_prune,
    dominator,
    latency_prune,
    likely_reach,
    predicted_order,
    quality_prune,
)


@dataclass(frozen=True)
class RacePolicy:
    race_factor: float = 1.15  # the least margin: slower than this times the reference
    min_calls: int = 3  # calls before a candidate close to its reference may be stopped
    close_factor: float = 2.2  # "close": within this of the reference (a call twice as slow stays within it)
    follow_noise: bool = True  # widen the margin to the noise eager's calls show
    final_rounds: int = 3  # interleaved rounds over the finalists (0: none)
    final_band: float = 1.25  # finalists: within this (or the noise, if wider) of the choice or the budget
    max_finalists: int = 4
    leave_out_spikes: bool = True  # judge a candidate's latency without its load spikes (``robust_ms``)


#: The rules before issue 39: one call decides, the plain median, no finalists.
SINGLE_CALL = RacePolicy(min_calls=1, close_factor=0.0, follow_noise=False, final_rounds=0, leave_out_spikes=False)
DEFAULT = RacePolicy()
#: Timing also stops once the last STABLE_RUNS timed calls lie within STABLE_SPREAD of their median.
STABLE_RUNS, STABLE_SPREAD = 3, 0.05
#: A call more than this over a candidate's fastest is a load spike: left out of the latency the choice uses.
SPIKE_FACTOR = 1.3


def robust_ms(times_ms: list[float]) -> float:
    """The latency a candidate is judged by: the median of its calls, load spikes left out (calls more than
    ``SPIKE_FACTOR`` over its fastest; load only ever adds time). On a quiet machine, the plain median."""
    fastest = min(times_ms)
    return statistics.median([t for t in times_ms if t <= SPIKE_FACTOR * fastest])


def judged_ms(times_ms: list[float], policy: RacePolicy = DEFAULT) -> float:
    """The latency a candidate's calls are judged by under ``policy``."""
    return robust_ms(times_ms) if policy.leave_out_spikes else statistics.median(times_ms)


def run_noise(cands: list[Candidate]) -> float:
    """The run's noise: the largest spread of an eager baseline's calls (its ``calls_ms``)."""
    return max((noise_of(c.extra.get("calls_ms", [])) for c in cands if c.backend == BASELINE), default=0.0)


def noise_of(times_ms: list[float]) -> float:
    """How far the slowest of a baseline's calls lies above its fastest, as a fraction (0 with fewer than 2)."""
    return max(times_ms) / min(times_ms) - 1 if len(times_ms) > 1 and min(times_ms) > 0 else 0.0


def margin(noise: float, policy: RacePolicy = DEFAULT) -> float:
    return max(policy.race_factor, 1 + noise) if policy.follow_noise else policy.race_factor


def stop_timing(
    psnr: float,
    times_ms: list[float],
    done: list[Candidate],
    constraint: Constraint,
    race: bool = True,
    noise: float = 0.0,
    policy: RacePolicy = DEFAULT,
) -> str | None:
    """Why a candidate scoring ``psnr`` needs no more timed calls after ``times_ms`` (see the module doc), or its
    last ``STABLE_RUNS`` calls agree within ``STABLE_SPREAD``; None: time on. (A K's eager baseline does not
    race: every ratio at that K divides by it, and its calls measure the noise.)"""
    best, m = min(times_ms), margin(noise, policy)

    def beyond(reference: float) -> bool:
        return best > m * reference and (len(times_ms) >= policy.min_calls or best > policy.close_factor * reference)

    if race:
        beaten = [d for d in done if d.measured and d.psnr >= psnr and beyond(d.latency_ms)]
        if beaten:
            d = dominator(psnr, float("inf"), beaten)
            return (
                f"dominated: {best:.1f} ms at best in {len(times_ms)} call(s) against {d.id}'s "
                f"{d.latency_ms:.1f} ms at {d.psnr:.3f} dB or more (margin {m:.2f}x)"
            )
        if constraint.kind == "max_latency_ms" and beyond(constraint.value):
            return (
                f"over the budget: {best:.1f} ms at best in {len(times_ms)} call(s) against "
                f"{constraint.describe()} (margin {m:.2f}x)"
            )
    last = sorted(times_ms[-STABLE_RUNS:])
    if len(last) == STABLE_RUNS and (last[-1] - last[0]) <= STABLE_SPREAD * last[len(last) // 2]:
        return f"stable: the last {STABLE_RUNS} calls within {STABLE_SPREAD:.0%} of their median"
    return None


def run_search(
    cands: list[Candidate],
    fp32_psnr: dict[int, float],
    gmacs: dict[int, float],
    constraint: Constraint,
    measure,
    advance=lambda c: None,
) -> None:
    """The search's order of work over ``cands`` (each K's eager baseline first in the list): prune what cannot
    meet the constraint, then at each K measure eager, then the others in predicted order, pruning those a
    measured candidate already beats. ``measure(c, eager)`` makes, verifies and times ``c`` (setting its status
    and figures); ``advance(c)`` is told when each candidate is settled."""
    for c in cands:
        why = quality_prune(c, fp32_psnr, constraint)
        if why:
            c.status, c.reason, c.extra["fp32_psnr"] = "pruned", why, fp32_psnr[c.k]
    for k in sorted({c.k for c in cands}):
        at_k = [c for c in cands if c.k == k]
        for c in at_k:
            why = c.status == "pending" and latency_prune(c, cands, gmacs, constraint)
            if why:
                c.status, c.reason, c.extra["latency_pruned"] = "pruned", why, True
        eager = at_k[0]
        if eager.status == "pruned" and any(c.status == "pending" for c in at_k[1:]):
            eager.status = "pending"  # timed all the same: the ratios at this K need it
            eager.reason = f"timed as K={k}'s baseline, though {eager.reason}"
            eager.extra.pop("fp32_psnr", None)
            eager.extra.pop("latency_pruned", None)  # it is measured: a higher K scales from its latency
        measured = [c for c in cands if c.measured]
        for c in [eager, *predicted_order(at_k[1:], measured, gmacs)]:
            if c.status == "pending" and c is not eager:
                measured = [d for d in cands if d.measured]
                why = dominance_prune(c, measured, gmacs, likely_reach(c, measured, fp32_psnr))
                if why:
                    c.status, c.reason = "pruned", why
            if c.status == "pending":
                measure(c, eager)
            advance(c)


def finalists(
    cands: list[Candidate], chosen: Candidate, constraint: Constraint, noise: float, policy: RacePolicy = DEFAULT
) -> list[Candidate]:
    """The candidates the choice could turn on under this noise: the chosen one, and every measured one whose
    latency lies within the band (the policy's, or the noise's if wider) of the chosen one's or of the budget;
    the closest ``max_finalists`` of them."""
    if not policy.final_rounds:
        return []
    band = max(policy.final_band, 1 + noise) if policy.follow_noise else policy.final_band
    refs = [chosen.latency_ms] + ([constraint.value] if constraint.kind == "max_latency_ms" else [])

    def closeness(c: Candidate) -> float:
        return min(max(c.latency_ms / r, r / c.latency_ms) for r in refs)

    near = [c for c in cands if c.measured and c is not chosen and closeness(c) <= band]
    return [chosen, *sorted(near, key=lambda c: (closeness(c), c.id))[: policy.max_finalists - 1]]


def settle(cands: list[Candidate], constraint: Constraint, noise: float, retime, policy: RacePolicy = DEFAULT):
    """Choose; time the finalists again (``retime(finalists, rounds)`` -> each one's new calls in ms, taken in
    turn); their latency becomes the median of all their calls; choose again. Returns (choice, finalists)."""
    first = choose(cands, constraint)
    final = finalists(cands, first, constraint, noise, policy)
    if len(final) < 2:
        return first, []
    for c, calls in zip(final, retime(final, policy.final_rounds)):
        c.extra["calls_ms"] = c.extra.get("calls_ms", []) + list(calls)
        c.latency_ms = judged_ms(c.extra["calls_ms"], policy)
        c.extra["final_calls_ms"] = list(calls)
    return choose(cands, constraint), final
