"""Quality against a clean reference, as the paper measures it: PSNR and SSIM of 8-bit images by scikit-image's
metrics (imported on first use)."""

from __future__ import annotations

import numpy as np

from .errors import ImageError


def psnr_ssim(output: np.ndarray, reference: np.ndarray) -> tuple[float, float]:
    """PSNR (dB) and SSIM of 8-bit ``output`` against 8-bit ``reference``, as the paper evaluates.

    scikit-image PSNR with data_range 255; SSIM with Gaussian weights (sigma 1.5) and
    population covariance, over the colour channels.
    """
    from skimage.metrics import peak_signal_noise_ratio, structural_similarity

    if output.shape != reference.shape:
        raise ImageError(f"reference size {reference.shape[:2]} differs from output size {output.shape[:2]}")
    with np.errstate(divide="ignore"):  # identical images: PSNR is +inf, not a warning
        psnr = peak_signal_noise_ratio(reference, output, data_range=255)
    ssim = structural_similarity(
        reference,
        output,
        data_range=255,
        gaussian_weights=True,
        use_sample_covariance=False,
        channel_axis=-1 if output.ndim == 3 else None,
    )
    return float(psnr), float(ssim)
