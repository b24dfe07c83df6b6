"""``scaoed-deploy optimize``: which K, precision and backend to ship under a latency or quality budget,
decided by measurement on this machine, in one command.

Every K asked x every backend that runs here (bench's names and skips) is a candidate. Each is made by
build-engine's steps (reused when made from the same weights), must pass parity, and is timed with bench's
measurement core, eager fp32 beside it in the same process (``search``), racing and re-timing finalists so that
no single call slowed by another job's load decides (``race``). Candidates that cannot meet the
constraint are pruned before they are made. The choice (``choose``): with a latency budget the best PSNR
within it (ties of PSNR: the faster); with a PSNR floor or a dPSNR ceiling the fastest within it; with
none, the fastest point of the latency-vs-PSNR Pareto front within 0.05 dB of the best. The result is a
package (``package``): ``selection.json``, the chosen artifact and its parity record, ``reproduce.sh``,
``report.md`` and a self-contained ``report.html``.
"""

from .choose import Candidate, Constraint, NothingMeets, choose, pareto_front
from .package import default_output, write_package
from .search import OptimizeConfig, run_optimize

__all__ = [
    "Candidate",
    "Constraint",
    "NothingMeets",
    "OptimizeConfig",
    "choose",
    "default_output",
    "pareto_front",
    "run_optimize",
    "write_package",
]
