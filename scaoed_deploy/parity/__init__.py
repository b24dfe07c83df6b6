"""Parity: proving that an artifact computes what the eager model computes."""

from .compare import Agreement, agreement, psnr_against

__all__ = ["Agreement", "agreement", "psnr_against"]
