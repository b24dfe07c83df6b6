"""Realistic camera noise, synthesised on the fly from clean sRGB images (for training only).

The camera pipeline, run backwards then forwards on each patch:

    clean sRGB -> inverse gamma (linear RGB) -> divide by white-balance gains (sensor raw)
    -> signal-dependent Poisson-Gaussian noise -> optional Bayer mosaic + bilinear demosaic of
    the noise -> a common component shared by R, G and B (real sRGB noise correlates across
    channels, 0.3 to 0.6 on the SIDD crops) -> white-balance gains -> gamma (sRGB) -> optional JPEG

Poisson-Gaussian noise in its usual heteroscedastic Gaussian form: a raw value x
becomes x + n with n ~ N(0, a*x + b): ``a`` is the shot-noise gain and ``b``
the read-noise variance. Both are drawn per patch, log-uniformly, over ranges
that cover smartphone sensors from base ISO to high ISO (noisy SIDD crops sit
at 17.5 to 18.9 dB PSNR).
"""

from __future__ import annotations

import io
from dataclasses import asdict, dataclass

import numpy as np
import torch
import torch.nn.functional as F


@dataclass(frozen=True)
class NoiseConfig:
    shot: tuple[float, float] = (1e-3, 8e-2)  # a: raw-domain shot-noise gain, log-uniform
    read: tuple[float, float] = (1e-5, 1e-2)  # b: raw-domain read-noise variance, log-uniform
    wb_red: tuple[float, float] = (1.5, 2.5)  # white-balance gains applied after the sensor
    wb_blue: tuple[float, float] = (1.3, 2.2)
    mosaic_prob: float = 0.7  # Bayer mosaic + bilinear demosaic (spatially correlated noise)
    cross_channel: tuple[float, float] = (0.2, 0.7)  # share of noise common to R, G, B (real sRGB noise correlates)
    jpeg_prob: float = 0.25
    jpeg_quality: tuple[int, int] = (70, 95)

    def to_dict(self) -> dict:
        return asdict(self)


def srgb_to_linear(x: torch.Tensor) -> torch.Tensor:
    x = x.clamp(0, 1)
    return torch.where(x <= 0.04045, x / 12.92, ((x + 0.055) / 1.055) ** 2.4)


def linear_to_srgb(x: torch.Tensor) -> torch.Tensor:
    x = x.clamp(0, 1)
    return torch.where(x <= 0.0031308, x * 12.92, 1.055 * x.clamp_min(1e-12) ** (1 / 2.4) - 0.055)


def poisson_gaussian(x: torch.Tensor, shot: torch.Tensor, read: torch.Tensor, gen: torch.Generator) -> torch.Tensor:
    """x + N(0, shot*x + read); ``shot`` and ``read`` broadcast per sample, e.g. (B, 1, 1, 1)."""
    var = shot * x.clamp_min(0) + read
    return x + var.sqrt() * torch.randn(x.shape, generator=gen, dtype=x.dtype)


def _bayer_masks(h: int, w: int) -> torch.Tensor:
    """(3, H, W) 0/1 masks of an RGGB Bayer pattern."""
    m = torch.zeros(3, h, w)
    m[0, 0::2, 0::2] = 1
    m[1, 0::2, 1::2] = 1
    m[1, 1::2, 0::2] = 1
    m[2, 1::2, 1::2] = 1
    return m


_K_RB = torch.tensor([[0.25, 0.5, 0.25], [0.5, 1.0, 0.5], [0.25, 0.5, 0.25]])
_K_G = torch.tensor([[0.0, 0.25, 0.0], [0.25, 1.0, 0.25], [0.0, 0.25, 0.0]])


def mosaic(rgb: torch.Tensor) -> torch.Tensor:
    """(B, 3, H, W) -> (B, 3, H, W) with each pixel keeping only its Bayer colour."""
    return rgb * _bayer_masks(*rgb.shape[-2:]).to(rgb)


def demosaic_bilinear(raw3: torch.Tensor) -> torch.Tensor:
    """Bilinear demosaic of a masked RGGB mosaic (the output of ``mosaic``)."""
    kernels = torch.stack([_K_RB, _K_G, _K_RB])[:, None].to(raw3)
    return F.conv2d(F.pad(raw3, (1, 1, 1, 1), mode="reflect"), kernels, groups=3)


def correlate_channels(noise: torch.Tensor, share: torch.Tensor) -> torch.Tensor:
    """Mix a common component into R, G and B: n_c <- (1 - s) n_c + s mean(n), rescaled to keep each variance.

    For independent channels of equal variance the correlation between two channels becomes
    (2 a q + q^2) / (a^2 + 2 q^2) with q = s / 3 and a = 1 - s + q (0.43 at s = 0.45).
    """
    s = share.view(-1, 1, 1, 1)
    q = s / 3
    a = 1 - s + q
    mixed = (1 - s) * noise + s * noise.mean(dim=1, keepdim=True)
    return mixed / torch.sqrt(a * a + 2 * q * q)


def _log_uniform(lo: float, hi: float, n: int, gen: torch.Generator) -> torch.Tensor:
    u = torch.rand(n, generator=gen, dtype=torch.float64)
    return torch.exp(np.log(lo) + u * (np.log(hi) - np.log(lo))).float()


def _uniform(lo: float, hi: float, n: int, gen: torch.Generator) -> torch.Tensor:
    return lo + (hi - lo) * torch.rand(n, generator=gen)


def _jpeg(img: torch.Tensor, quality: int) -> torch.Tensor:
    from PIL import Image

    arr = (img.clamp(0, 1).permute(1, 2, 0).numpy() * 255 + 0.5).astype(np.uint8)
    buf = io.BytesIO()
    Image.fromarray(arr).save(buf, format="JPEG", quality=int(quality))
    buf.seek(0)
    out = np.asarray(Image.open(buf).convert("RGB"), dtype=np.float32) / 255
    return torch.from_numpy(out).permute(2, 0, 1)


def synthesize(clean: torch.Tensor, gen: torch.Generator, cfg: NoiseConfig = NoiseConfig()) -> torch.Tensor:
    """Noisy sRGB for a batch of clean sRGB patches (B, 3, H, W) in [0, 1] (H, W even for the mosaic)."""
    b = clean.shape[0]
    shot = _log_uniform(*cfg.shot, b, gen).view(b, 1, 1, 1)
    read = _log_uniform(*cfg.read, b, gen).view(b, 1, 1, 1)
    gains = torch.ones(b, 3, 1, 1)
    gains[:, 0, 0, 0] = _uniform(*cfg.wb_red, b, gen)
    gains[:, 2, 0, 0] = _uniform(*cfg.wb_blue, b, gen)
    use_mosaic = torch.rand(b, generator=gen) < cfg.mosaic_prob
    use_jpeg = torch.rand(b, generator=gen) < cfg.jpeg_prob
    quality = torch.randint(cfg.jpeg_quality[0], cfg.jpeg_quality[1] + 1, (b,), generator=gen)

    mix = _uniform(*cfg.cross_channel, b, gen)

    raw = srgb_to_linear(clean) / gains
    noise = poisson_gaussian(raw, shot, read, gen) - raw
    if use_mosaic.any():
        # demosaic(mosaic(raw + n)) - demosaic(mosaic(raw)) = demosaic(mosaic(n)): the clean target stays
        # un-demosaiced, as a reference rendered from averaged raw frames would be, while the noise
        # takes the demosaic's spatial correlation.
        idx = use_mosaic.nonzero().flatten()
        noise[idx] = demosaic_bilinear(mosaic(noise[idx]))
    noise = correlate_channels(noise, mix)
    noisy = linear_to_srgb((raw + noise) * gains)
    for i in use_jpeg.nonzero().flatten().tolist():
        noisy[i] = _jpeg(noisy[i], int(quality[i]))
    return noisy
