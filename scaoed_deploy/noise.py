"""Realistic camera noise, synthesised on the fly from clean sRGB images (for training only).

The camera pipeline, run backwards then forwards on each patch:

    clean sRGB -> inverse tone curve (linear RGB) -> optional inverse colour correction (camera
    RGB) -> divide by white-balance gains (sensor raw) -> signal-dependent Poisson-Gaussian noise
    -> optional Bayer mosaic + demosaic of the noise (Malvar-He-Cutler, the gradient-corrected
    linear demosaic of MATLAB's ``demosaic``, or bilinear) -> an optional common component shared
    by R, G and B -> white-balance gains -> colour correction -> tone curve -> optional JPEG

The tone curve is the sRGB curve or (``tone_prob``, off by default) a power curve x^(1/g)
with g drawn from 2.2..3.2, steeper in the shadows than sRGB, as camera tone curves that
lift shadows are. A steeper curve amplifies the noise there and, by its concavity, darkens
the noisy mean (the mean of a concave function of noisy values is below the function
of the mean). In the dark region of SIDD crop 44 (measured there, never trained on) the
noisy image sits 13/9/11 levels below the clean one at a noise std of 44/32/41; the
sRGB curve at that noise std gives only 9/6/7, while g = 3 matches both. The clean
image is untouched: it is taken to be the tone-mapped scene, and only the noise goes
behind the curve. Yet fine-tuning the demo weights with it (tone_prob 0.75) helped that
crop a little and cost the other three 0.4 to 1.4 dB (K = 3 and 5), so it stays
available but off.

Poisson-Gaussian noise in its usual heteroscedastic Gaussian form: a raw value x
becomes x + n with n ~ N(0, a*x + b): ``a`` is the shot-noise gain and ``b``
the read-noise variance. ``a`` is drawn per patch, log-uniformly, over a range
that covers smartphone sensors from base ISO to high ISO (noisy SIDD crops sit
at 17.5 to 18.9 dB PSNR). By default ``b`` follows ``a`` as on real sensors
(both grow with the analogue gain): log b = 2.18 log a + 1.20 + N(0, 0.26^2),
the fit to smartphone sensors of Brooks et al., "Unprocessing Images for
Learned Raw Denoising" (CVPR 2019); ``read=(lo, hi)`` draws it log-uniformly
instead.

Demosaicing is what makes real sRGB noise spatially and cross-channel
correlated: Malvar-He-Cutler on white raw noise gives neighbouring-pixel
correlation 0.36 (none beyond one pixel) and 0.6 between channels, because it
borrows the green gradient for red and blue; bilinear gives 0.58 and 0.13 at
one and two pixels and no cross-channel correlation.

Colour correction (off by default) makes it chromatic: a camera's cam->sRGB matrix has
rows summing to one (white stays white) and negative off-diagonal terms, so it
passes noise common to R, G and B unchanged but amplifies their differences.
The matrices are Brooks et al.'s (a random convex combination of four cameras'
XYZ->camera matrices, Adobe DNG data, times sRGB->XYZ, rows normalised to one),
blended with the identity by a strength drawn per patch. Without colour
correction the synthetic noise was luma-dominated (std of R-G 0.85x that of the
mean of R, G, B, Malvar-He-Cutler plus channel mixing), where the real noise of
the SIDD crops is chroma-dominated (1.3x; measured there, never trained on);
Brooks et al.'s full matrices give 2x, the strengths in between span both. Yet
fine-tuning the demo weights with it (ccm_prob 0.8) lowered their SIDD PSNR by
1 dB in 1100 steps, so it stays available but off. (Both experiments are in
benchmarks/demo_weights/README.md.) The defaults are the noise the shipped demo
weights were last trained on.
"""

from __future__ import annotations

import io
from dataclasses import asdict, dataclass

import numpy as np
import torch
import torch.nn.functional as F


@dataclass(frozen=True)
class NoiseConfig:
    shot: tuple[float, float] = (2e-3, 5e-2)  # a: raw-domain shot-noise gain, log-uniform
    read: tuple[float, float] | None = None  # b: read-noise variance, log-uniform; None: tied to a (see above)
    read_fit: tuple[float, float, float] = (2.18, 1.20, 0.26)  # log b = s log a + c + N(0, sd^2) when read is None
    wb_red: tuple[float, float] = (1.5, 2.5)  # white-balance gains applied after the sensor
    wb_blue: tuple[float, float] = (1.3, 2.2)
    mosaic_prob: float = 0.75  # Bayer mosaic + demosaic of the noise (spatially correlated noise)
    mhc_prob: float = 0.8  # of those, Malvar-He-Cutler; the rest bilinear
    cross_channel: tuple[float, float] = (0.0, 0.5)  # share of noise common to R, G, B
    ccm_prob: float = 0.0  # colour correction (camera RGB -> sRGB) after the noise (tried, off: see above)
    ccm_strength: tuple[float, float] = (0.0, 1.0)  # t: matrix (1 - t) I + t M, uniform; 1 is Brooks et al.'s M
    jpeg_prob: float = 0.2
    jpeg_quality: tuple[int, int] = (70, 95)
    tone_prob: float = 0.0  # a camera tone curve x^(1/g) in place of the sRGB curve (tried, off: see above)
    tone_gamma: tuple[float, float] = (2.2, 3.2)  # g, uniform: steeper (more concave) in the shadows than sRGB

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_saved(cls, d: dict) -> "NoiseConfig":
        """A config saved by an earlier version: stages it lacks were added after it, so they stay off."""
        d = {k: tuple(v) if isinstance(v, list) else v for k, v in d.items()}
        return cls(**{**_ADDED_LATER_OFF, **d})


# stages added after the first noise model, each with the value that leaves it out (and draws no random numbers)
_ADDED_LATER_OFF = {"mhc_prob": 0.0, "ccm_prob": 0.0, "tone_prob": 0.0}


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


# Malvar-He-Cutler 5x5 filters (ICASSP 2004), /8: green at red/blue sites; red (blue) at green sites in a
# red (blue) row; the same at green sites in a red (blue) column; red at blue sites and blue at red sites.
_MHC = (
    torch.tensor(
        [
            [[0, 0, -1, 0, 0], [0, 0, 2, 0, 0], [-1, 2, 4, 2, -1], [0, 0, 2, 0, 0], [0, 0, -1, 0, 0]],
            [[0, 0, 0.5, 0, 0], [0, -1, 0, -1, 0], [-1, 4, 5, 4, -1], [0, -1, 0, -1, 0], [0, 0, 0.5, 0, 0]],
            [[0, 0, -1, 0, 0], [0, -1, 4, -1, 0], [0.5, 0, 5, 0, 0.5], [0, -1, 4, -1, 0], [0, 0, -1, 0, 0]],
            [[0, 0, -1.5, 0, 0], [0, 2, 0, 2, 0], [-1.5, 0, 6, 0, -1.5], [0, 2, 0, 2, 0], [0, 0, -1.5, 0, 0]],
        ]
    )
    / 8
)


def demosaic_mhc(raw3: torch.Tensor) -> torch.Tensor:
    """Malvar-He-Cutler demosaic of a masked RGGB mosaic (the output of ``mosaic``)."""
    h, w = raw3.shape[-2:]
    cfa = raw3.sum(dim=1, keepdim=True)
    g_at_rb, in_row, in_col, rb_at_br = F.conv2d(
        F.pad(cfa, (2, 2, 2, 2), mode="reflect"), _MHC[:, None].to(raw3)
    ).unbind(1)
    c = cfa[:, 0]
    m = _bayer_masks(h, w).to(torch.bool)
    red, blue = m[0], m[2]
    even_row = torch.zeros(h, w, dtype=torch.bool)
    even_row[0::2] = True
    g_red_row, g_blue_row = m[1] & even_row, m[1] & ~even_row
    r = torch.where(red, c, torch.where(g_red_row, in_row, torch.where(g_blue_row, in_col, rb_at_br)))
    g = torch.where(m[1], c, g_at_rb)
    b = torch.where(blue, c, torch.where(g_blue_row, in_row, torch.where(g_red_row, in_col, rb_at_br)))
    return torch.stack([r, g, b], dim=1)


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


# XYZ -> camera matrices of four cameras (Adobe DNG data), as published with Brooks et al.'s unprocessing code.
_XYZ2CAMS = torch.tensor(
    [
        [[1.0234, -0.2969, -0.2266], [-0.5625, 1.6328, -0.0469], [-0.0703, 0.2188, 0.6406]],
        [[0.4913, -0.0541, -0.0202], [-0.6130, 1.3513, 0.2906], [-0.1564, 0.2151, 0.7183]],
        [[0.8380, -0.2630, -0.0639], [-0.2887, 1.0725, 0.2496], [-0.0627, 0.1427, 0.5438]],
        [[0.6596, -0.2079, -0.0562], [-0.4782, 1.3016, 0.1933], [-0.0970, 0.1581, 0.5181]],
    ],
    dtype=torch.float64,
)
# linear sRGB (D65) -> XYZ, IEC 61966-2-1
_RGB2XYZ = torch.tensor(
    [[0.4124564, 0.3575761, 0.1804375], [0.2126729, 0.7151522, 0.0721750], [0.0193339, 0.1191920, 0.9503041]],
    dtype=torch.float64,
)


def random_rgb2cam(n: int, gen: torch.Generator, strength: tuple[float, float] = (1.0, 1.0)) -> torch.Tensor:
    """(n, 3, 3) linear sRGB -> camera RGB matrices with rows summing to one (white maps to white).

    Brooks et al.'s random convex combination of the four cameras, blended with the identity
    by a strength t drawn uniformly from ``strength`` (1: theirs; smaller: a milder colour
    correction, as on phones whose sensors' colour filters are closer to sRGB)."""
    w = torch.rand(n, len(_XYZ2CAMS), 1, 1, generator=gen, dtype=torch.float64)
    xyz2cam = (w * _XYZ2CAMS).sum(dim=1) / w.sum(dim=1)
    rgb2cam = xyz2cam @ _RGB2XYZ
    rgb2cam = rgb2cam / rgb2cam.sum(dim=-1, keepdim=True)
    t = strength[0] + (strength[1] - strength[0]) * torch.rand(n, 1, 1, generator=gen, dtype=torch.float64)
    return ((1 - t) * torch.eye(3, dtype=torch.float64) + t * rgb2cam).float()


def apply_ccm(rgb: torch.Tensor, ccm: torch.Tensor) -> torch.Tensor:
    """(B, 3, H, W) colours times per-sample (B, 3, 3) matrices."""
    return torch.einsum("bij,bjhw->bihw", ccm, rgb)


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
    shot = _log_uniform(*cfg.shot, b, gen)
    if cfg.read is None:
        slope, intercept, sd = cfg.read_fit
        read = torch.exp(slope * shot.log() + intercept + sd * torch.randn(b, generator=gen))
    else:
        read = _log_uniform(*cfg.read, b, gen)
    shot, read = shot.view(b, 1, 1, 1), read.view(b, 1, 1, 1)
    gains = torch.ones(b, 3, 1, 1)
    gains[:, 0, 0, 0] = _uniform(*cfg.wb_red, b, gen)
    gains[:, 2, 0, 0] = _uniform(*cfg.wb_blue, b, gen)
    use_mosaic = torch.rand(b, generator=gen) < cfg.mosaic_prob
    # drawn only when used, so configs without Malvar-He-Cutler replay the generator as before it existed
    use_mhc = torch.rand(b, generator=gen) < cfg.mhc_prob if cfg.mhc_prob > 0 else torch.zeros(b, dtype=torch.bool)
    use_jpeg = torch.rand(b, generator=gen) < cfg.jpeg_prob
    quality = torch.randint(cfg.jpeg_quality[0], cfg.jpeg_quality[1] + 1, (b,), generator=gen)

    mix = _uniform(*cfg.cross_channel, b, gen)
    # drawn only when used, so configs without colour correction or tone curves replay the generator as before
    use_ccm = torch.zeros(b, dtype=torch.bool)
    if cfg.ccm_prob > 0:
        use_ccm = torch.rand(b, generator=gen) < cfg.ccm_prob
        rgb2cam = random_rgb2cam(b, gen, cfg.ccm_strength)
    ccm_idx = use_ccm.nonzero().flatten()
    tone_idx = torch.zeros(0, dtype=torch.long)
    if cfg.tone_prob > 0:
        tone_idx = (torch.rand(b, generator=gen) < cfg.tone_prob).nonzero().flatten()
        gamma = _uniform(*cfg.tone_gamma, b, gen).view(b, 1, 1, 1)

    linear = srgb_to_linear(clean)
    if len(tone_idx):
        linear[tone_idx] = clean[tone_idx].clamp(0, 1) ** gamma[tone_idx]
    if len(ccm_idx):
        linear[ccm_idx] = apply_ccm(linear[ccm_idx], rgb2cam[ccm_idx])  # camera RGB
    raw = linear / gains
    noise = poisson_gaussian(raw, shot, read, gen) - raw
    if use_mosaic.any():
        # demosaic(mosaic(raw + n)) - demosaic(mosaic(raw)) = demosaic(mosaic(n)): the clean target stays
        # un-demosaiced, as a reference rendered from averaged raw frames would be, while the noise
        # takes the demosaic's spatial correlation.
        for chosen, demosaic in ((use_mosaic & use_mhc, demosaic_mhc), (use_mosaic & ~use_mhc, demosaic_bilinear)):
            idx = chosen.nonzero().flatten()
            if len(idx):
                noise[idx] = demosaic(mosaic(noise[idx]))
    noise = correlate_channels(noise, mix)
    noisy = (raw + noise) * gains
    if len(ccm_idx):
        noisy[ccm_idx] = apply_ccm(noisy[ccm_idx], torch.linalg.inv(rgb2cam[ccm_idx]))  # back to linear sRGB
    toned = linear_to_srgb(noisy)
    if len(tone_idx):
        toned[tone_idx] = noisy[tone_idx].clamp(0, 1) ** (1 / gamma[tone_idx])
    noisy = toned
    for i in use_jpeg.nonzero().flatten().tolist():
        noisy[i] = _jpeg(noisy[i], int(quality[i]))
    return noisy
