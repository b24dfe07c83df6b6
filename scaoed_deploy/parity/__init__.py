"""Parity: proving that an artifact computes what the eager model computes.

from scaoed_deploy.parity import load_artifact, run_parity, write_reports
"""

from ..artifact import Artifact, load_artifact
from ..compare import Agreement, agreement, psnr_against
from .harness import DEFAULT_THRESHOLDS, ParityResult, Thresholds, artifact_runner, run_parity, thresholds_for
from .report import read_parity_record, write_parity_record, write_reports

__all__ = [
    "Agreement",
    "Artifact",
    "DEFAULT_THRESHOLDS",
    "ParityResult",
    "Thresholds",
    "agreement",
    "artifact_runner",
    "load_artifact",
    "psnr_against",
    "read_parity_record",
    "run_parity",
    "thresholds_for",
    "write_parity_record",
    "write_reports",
]
