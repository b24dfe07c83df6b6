"""The decision: candidates, the user's constraint, the Pareto front of latency against PSNR, the choice, and
the pruning rules that skip candidates which cannot meet the constraint. Pure functions of measured figures."""

from __future__ import annotations

from dataclasses import asdict, dataclass, field

from ..errors import ScaoedError
from ..parity import thresholds_for

#: Two PSNRs closer than this are a tie (far below what 8-bit outputs on a few images resolve; an fp32 artifact
#: and eager differ by about 1e-5 dB), so a tie goes to the faster candidate.
PSNR_TIE_DB = 0.005
#: With no constraint: the fastest point of the front within this of the best PSNR.
NEAR_BEST_DB = 0.05
#: The largest PSNR gain over fp32 a candidate of each precision can show and still pass parity (parity's
#: own limit on |dPSNR|; fp32 candidates agree with eager to 1e-4, so a hundredth of a dB bounds them).
FP32_MARGIN_DB = 0.01
#: A backend's dPSNR against fp32 at a higher K is taken to be within this of what it showed at a lower K.
LOWER_K_SLACK_DB = 0.02
#: Latency pruning predicts a candidate at K from the same backend at a lower K scaled by the MACs; it prunes
#: only when this fraction of the prediction is already over the budget (fixed costs make the scaling high).
LATENCY_PRUNE_FRACTION = 0.9

STATUSES = ("built", "pruned", "excluded", "skipped")


class NothingMeets(ScaoedError):
    """No measured candidate meets the constraint; the message names the closest one."""


@dataclass(frozen=True)
class Constraint:
    kind: str | None = None  # "max_latency_ms", "min_psnr", "max_dpsnr", or None (the front)
    value: float | None = None

    def to_dict(self) -> dict:
        return {"kind": self.kind, "value": self.value}

    def describe(self) -> str:
        return {
            "max_latency_ms": f"--max-latency-ms {self.value:g}",
            "min_psnr": f"--min-psnr {self.value:g}",
            "max_dpsnr": f"--max-dpsnr {self.value:g}",
        }.get(self.kind, "no constraint")


@dataclass
class Candidate:
    id: str
    k: int
    backend: str
    precision: str
    status: str = "pending"  # then one of STATUSES
    reason: str = ""
    artifact: str | None = None
    latency_ms: float | None = None  # median
    p90_ms: float | None = None
    images_per_s: float | None = None
    peak_memory_mb: float | None = None
    peak_rss_mb: dict | None = None  # its own peak per step: "candidate" (made, verified, timed), build steps
    setup_s: float | None = None
    ratio_to_eager: float | None = None
    gmacs: float | None = None
    psnr: float | None = None
    ssim: float | None = None
    dpsnr: float | None = None  # against the best built candidate
    parity: dict | None = None
    runtime_precision: dict | None = None
    extra: dict = field(default_factory=dict)

    @property
    def measured(self) -> bool:
        return self.status == "built" and self.latency_ms is not None and self.psnr is not None

    def to_dict(self) -> dict:
        return asdict(self)


def candidate_id(k: int, backend: str) -> str:
    return f"k{k}-{backend}"


def pareto_front(cands: list[Candidate]) -> list[str]:
    """Ids of the measured candidates no other one beats on both latency (lower) and PSNR (higher, beyond the
    ``PSNR_TIE_DB`` tie), fastest first: sorted by latency, a point is on the front when its PSNR is more than the
    tie above every faster point's (a slower point within the tie of a faster one is no better)."""
    pts = sorted((c for c in cands if c.measured), key=lambda c: (c.latency_ms, -c.psnr, c.id))
    front: list[Candidate] = []
    best = None  # the highest PSNR of the points before this one
    for c in pts:
        if (
            best is None
            or c.psnr > best + PSNR_TIE_DB
            or (c.psnr, c.latency_ms) == (front[-1].psnr, front[-1].latency_ms)
        ):
            front.append(c)
        best = c.psnr if best is None else max(best, c.psnr)
    return [c.id for c in front]


def set_dpsnr(cands: list[Candidate]) -> float | None:
    """Each measured candidate's dPSNR against the best measured PSNR; returns that best."""
    best = max((c.psnr for c in cands if c.measured), default=None)
    for c in cands:
        c.dpsnr = c.psnr - best if c.measured and best is not None else None
    return best


def _fastest(pool: list[Candidate]) -> Candidate:
    return min(pool, key=lambda c: (c.latency_ms, -c.psnr, c.id))


def choose(cands: list[Candidate], constraint: Constraint) -> Candidate:
    """The candidate to ship under ``constraint`` (see the module doc of ``optimize``), or NothingMeets."""
    done = [c for c in cands if c.measured]
    if not done:
        pruned = [c for c in cands if "fp32_psnr" in c.extra]
        if pruned:  # pruned on fp32's quality alone: the K nearest to the floor is the closest
            c = max(pruned, key=lambda c: (c.extra["fp32_psnr"], c.id))
            raise NothingMeets(
                f"no candidate meets {constraint.describe()}: the closest is {c.id}, fp32 at K={c.k} "
                f"scoring {c.extra['fp32_psnr']:.2f} dB (every candidate was pruned before it was made)"
            )
        raise NothingMeets("no candidate could be measured: every one was skipped, pruned or excluded (see the table)")
    best = max(c.psnr for c in done)
    kind, v = constraint.kind, constraint.value
    if kind == "max_latency_ms":
        pool = [c for c in done if c.latency_ms <= v]
        if not pool:
            c = _fastest(done)
            raise NothingMeets(
                f"no candidate meets {constraint.describe()}: the closest is {c.id} at "
                f"{c.latency_ms:.1f} ms ({c.psnr:.2f} dB)"
            )
        top = max(c.psnr for c in pool)
        return _fastest([c for c in pool if c.psnr >= top - PSNR_TIE_DB])
    if kind == "min_psnr":
        pool = [c for c in done if c.psnr >= v]
        if not pool:
            c = max(done, key=lambda c: (c.psnr, -c.latency_ms))
            raise NothingMeets(
                f"no candidate meets {constraint.describe()}: the closest is {c.id} at "
                f"{c.psnr:.2f} dB ({c.latency_ms:.1f} ms)"
            )
        return _fastest(pool)
    if kind == "max_dpsnr":
        return _fastest([c for c in done if c.psnr >= best - v])
    front = set(pareto_front(done))
    return _fastest([c for c in done if c.id in front and c.psnr >= best - NEAR_BEST_DB])


# ---------------------------------------------------------------------------- pruning
def margin_db(precision: str) -> float:
    """How far above fp32 a ``precision`` candidate's PSNR can be and still pass parity."""
    return thresholds_for(precision).max_dpsnr or FP32_MARGIN_DB


def reach(c: Candidate, fp32_psnr: dict[int, float]) -> float:
    """The most ``c`` can score and still pass parity: fp32's PSNR at its K plus its precision's margin."""
    return fp32_psnr[c.k] + margin_db(c.precision)


def likely_reach(c: Candidate, done: list[Candidate], fp32_psnr: dict[int, float]) -> float:
    """The most ``c`` is expected to score: where its backend was measured at a lower K, fp32's PSNR at ``c``'s K
    plus the dPSNR against fp32 it showed there and ``LOWER_K_SLACK_DB`` (a backend's loss of quality is about the
    same at every K: ONNX Runtime INT8 -0.085 / -0.108 / -0.099 dB at K = 1 / 3 / 5); else ``reach``. Never more
    than ``reach``."""
    most = reach(c, fp32_psnr)
    lower = [d for d in done if d.backend == c.backend and d.k < c.k and d.measured and d.k in fp32_psnr]
    if not lower:
        return most
    d = max(lower, key=lambda d: d.k)
    return min(most, fp32_psnr[c.k] + (d.psnr - fp32_psnr[d.k]) + LOWER_K_SLACK_DB)


def quality_prune(c: Candidate, fp32_psnr: dict[int, float], constraint: Constraint) -> str | None:
    """Why ``c`` cannot meet a PSNR constraint, from fp32's quality at its K alone (measured once per K), or None."""
    at_k, most = fp32_psnr[c.k], reach(c, fp32_psnr)
    if constraint.kind == "min_psnr" and most < constraint.value:
        return (
            f"fp32 at K={c.k} scores {at_k:.2f} dB and a {c.precision} candidate passes parity only within "
            f"{margin_db(c.precision):g} dB of it: below {constraint.describe()}"
        )
    if constraint.kind == "max_dpsnr":
        floor = max(fp32_psnr.values()) - constraint.value
        if most < floor:
            return (
                f"fp32 at K={c.k} scores {at_k:.2f} dB, more than {constraint.value:g} dB (+{margin_db(c.precision):g} "
                f"parity margin) below fp32 at its best K ({max(fp32_psnr.values()):.2f} dB)"
            )
    return None


def latency_prune(c: Candidate, done: list[Candidate], gmacs: dict[int, float], constraint: Constraint) -> str | None:
    """Why ``c`` cannot meet a latency budget: the same backend at the nearest lower K, scaled by the MACs, is
    already over it (or was pruned for it); None otherwise."""
    if constraint.kind != "max_latency_ms":
        return None
    lower = [
        d
        for d in done
        if d.backend == c.backend and d.k < c.k and (d.latency_ms is not None or d.extra.get("latency_pruned"))
    ]
    if not lower:
        return None
    d = max(lower, key=lambda d: d.k)
    if d.extra.get("latency_pruned"):
        return f"{c.backend} at K={d.k} was already pruned for {constraint.describe()}"
    predicted = d.latency_ms * gmacs[c.k] / gmacs[d.k]
    if predicted * LATENCY_PRUNE_FRACTION <= constraint.value:
        return None
    return (
        f"{c.backend} took {d.latency_ms:.1f} ms at K={d.k}; scaled by the MACs ({gmacs[c.k] / gmacs[d.k]:.2f}x) "
        f"K={c.k} needs about {predicted:.0f} ms, over {constraint.describe()}"
    )


def _predicted_ms(c: Candidate, done: list[Candidate], gmacs: dict[int, float]) -> tuple[Candidate, float] | None:
    """The same backend measured at the nearest lower K, and its latency scaled by the MACs to ``c``'s K."""
    lower = [d for d in done if d.backend == c.backend and d.k < c.k and d.latency_ms is not None]
    if not lower:
        return None
    d = max(lower, key=lambda d: d.k)
    return d, d.latency_ms * gmacs[c.k] / gmacs[d.k]


def dominator(psnr: float, slower_than_ms: float, done: list[Candidate]) -> Candidate | None:
    """The fastest measured candidate scoring at least ``psnr`` and faster than ``slower_than_ms``."""
    pool = [d for d in done if d.measured and d.psnr >= psnr and d.latency_ms < slower_than_ms]
    return _fastest(pool) if pool else None


def dominance_prune(c: Candidate, done: list[Candidate], gmacs: dict[int, float], psnr_bound: float) -> str | None:
    """Why ``c`` need not be made: a measured candidate scores at least ``psnr_bound`` (the most ``c`` can score:
    fp32's PSNR at its K plus its precision's parity margin) and is faster than ``LATENCY_PRUNE_FRACTION`` of
    ``c``'s latency predicted from a lower K, so ``c`` is off the front and never chosen; None otherwise."""
    seen = _predicted_ms(c, done, gmacs)
    if seen is None:
        return None
    low, predicted = seen
    d = dominator(psnr_bound, predicted * LATENCY_PRUNE_FRACTION, done)
    if d is None:
        return None
    return (
        f"{c.backend} took {low.latency_ms:.1f} ms at K={low.k}; scaled by the MACs K={c.k} needs about "
        f"{predicted:.0f} ms, and {d.id} scores at least as high ({d.psnr:.3f} dB, {c.precision} at K={c.k} "
        f"at most {psnr_bound:.3f}) in {d.latency_ms:.1f} ms: off the front, never chosen"
    )


def predicted_order(cands: list[Candidate], done: list[Candidate], gmacs: dict[int, float]) -> list[Candidate]:
    """The order to time ``cands`` (one K) in so that racing stops the most: by latency predicted from a lower K,
    else by precision (int8, bf16, fp16, fp32 are usually fastest first); the order given breaks ties."""
    rank = {"int8": 0, "bf16": 1, "fp16": 2, "fp32": 3}

    def key(ic):
        i, c = ic
        seen = _predicted_ms(c, done, gmacs)
        return (0, seen[1], i) if seen else (1, rank.get(c.precision, 4), i)

    return [c for _, c in sorted(enumerate(cands), key=key)]
