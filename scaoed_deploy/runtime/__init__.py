"""Denoising real images with ScaoedNet: the ``Denoiser`` API behind ``scaoed-deploy denoise``."""

from .denoiser import Denoiser, TorchRunner, denoise_file

__all__ = ["Denoiser", "TorchRunner", "denoise_file"]
