"""Noise synthesis: the statistics follow the configured Poisson-Gaussian model."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from scaoed_deploy.noise import (
    NoiseConfig,
    correlate_channels,
    demosaic_bilinear,
    demosaic_mhc,
    linear_to_srgb,
    mosaic,
    poisson_gaussian,
    random_rgb2cam,
    srgb_to_linear,
    synthesize,
)


def test_poisson_gaussian_variance_is_shot_times_signal_plus_read():
    gen = torch.Generator().manual_seed(0)
    levels = torch.tensor([0.05, 0.2, 0.5, 0.8]).view(4, 1, 1, 1)
    x = levels.expand(4, 3, 128, 128).clone()
    a, b = 0.01, 1e-4
    noisy = poisson_gaussian(x, torch.tensor(a), torch.tensor(b), gen)
    var = (noisy - x).var(dim=(1, 2, 3)).numpy()
    np.testing.assert_allclose(var, a * levels.flatten().numpy() + b, rtol=0.05)


def test_synthesised_noise_grows_with_signal_as_configured():
    """Through the whole pipeline (gamma and back), raw-domain variance follows a*x + b."""
    a, b = 0.004, 2e-4
    cfg = NoiseConfig(
        shot=(a, a),
        read=(b, b),
        wb_red=(1.0, 1.0),
        wb_blue=(1.0, 1.0),
        mosaic_prob=0.0,
        jpeg_prob=0.0,
        cross_channel=(0.0, 0.0),
        ccm_prob=0.0,
        tone_prob=0.0,
    )
    lin = torch.tensor([0.1, 0.25, 0.45, 0.65]).view(4, 1, 1, 1).expand(4, 3, 96, 96).clone()
    noisy = synthesize(linear_to_srgb(lin), torch.Generator().manual_seed(1), cfg)
    var = (srgb_to_linear(noisy) - lin).var(dim=(1, 2, 3)).numpy()
    slope, intercept = np.polyfit(lin[:, 0, 0, 0].numpy(), var, 1)
    assert slope == pytest.approx(a, rel=0.1) and intercept == pytest.approx(b, abs=1e-4)
    assert np.all(np.diff(var) > 0)


def test_noise_level_is_drawn_per_patch_within_the_range():
    cfg = NoiseConfig(mosaic_prob=0.0, jpeg_prob=0.0)
    clean = torch.full((16, 3, 32, 32), 0.5)
    noisy = synthesize(clean, torch.Generator().manual_seed(2), cfg)
    std = (noisy - clean).std(dim=(1, 2, 3))
    assert std.max() > 3 * std.min()  # log-uniform over a wide range, not one level
    assert torch.isfinite(noisy).all() and noisy.min() >= 0 and noisy.max() <= 1


def test_mosaic_demosaic_keeps_flat_colour_and_correlates_noise():
    flat = torch.tensor([0.2, 0.5, 0.7]).view(1, 3, 1, 1).expand(1, 3, 16, 16).clone()
    np.testing.assert_allclose(
        demosaic_bilinear(mosaic(flat))[..., 2:-2, 2:-2].numpy(), flat[..., 2:-2, 2:-2].numpy(), atol=1e-6
    )
    white = torch.randn(1, 3, 64, 64, generator=torch.Generator().manual_seed(3))
    g = demosaic_bilinear(mosaic(white))[0, 1].numpy()
    assert np.corrcoef(g[:, :-1].ravel(), g[:, 1:].ravel())[0, 1] > 0.2  # demosaicing spreads noise


def test_malvar_he_cutler_follows_the_published_formulas():
    """Against the ICASSP 2004 equations written out by hand at interior sites of a random RGGB mosaic."""
    raw = torch.rand(1, 3, 16, 16, generator=torch.Generator().manual_seed(7))
    cfa = mosaic(raw).sum(dim=1)[0].numpy().astype(np.float64)
    out = demosaic_mhc(mosaic(raw))[0].numpy()

    def v(i, j):
        return cfa[i, j]

    i, j = 6, 6  # red site: green = bilinear green + (4 R - sum of the R at distance 2) / 8
    g = (
        4 * v(i, j)
        + 2 * (v(i - 1, j) + v(i + 1, j) + v(i, j - 1) + v(i, j + 1))
        - (v(i - 2, j) + v(i + 2, j) + v(i, j - 2) + v(i, j + 2))
    ) / 8
    b = (
        6 * v(i, j)
        + 2 * (v(i - 1, j - 1) + v(i - 1, j + 1) + v(i + 1, j - 1) + v(i + 1, j + 1))
        - 1.5 * (v(i - 2, j) + v(i + 2, j) + v(i, j - 2) + v(i, j + 2))
    ) / 8
    assert out[1, i, j] == pytest.approx(g, abs=1e-6) and out[2, i, j] == pytest.approx(b, abs=1e-6)
    assert out[0, i, j] == pytest.approx(v(i, j), abs=1e-6)
    i, j = 6, 7  # green site in a red row: red from its left/right neighbours
    r = (
        5 * v(i, j)
        + 4 * (v(i, j - 1) + v(i, j + 1))
        - (v(i, j - 2) + v(i, j + 2))
        - (v(i - 1, j - 1) + v(i - 1, j + 1) + v(i + 1, j - 1) + v(i + 1, j + 1))
        + 0.5 * (v(i - 2, j) + v(i + 2, j))
    ) / 8
    b = (
        5 * v(i, j)
        + 4 * (v(i - 1, j) + v(i + 1, j))
        - (v(i - 2, j) + v(i + 2, j))
        - (v(i - 1, j - 1) + v(i - 1, j + 1) + v(i + 1, j - 1) + v(i + 1, j + 1))
        + 0.5 * (v(i, j - 2) + v(i, j + 2))
    ) / 8
    assert out[0, i, j] == pytest.approx(r, abs=1e-6) and out[2, i, j] == pytest.approx(b, abs=1e-6)
    i, j = 7, 6  # green site in a blue row: blue from its left/right neighbours, red from above/below
    r = (
        5 * v(i, j)
        + 4 * (v(i - 1, j) + v(i + 1, j))
        - (v(i - 2, j) + v(i + 2, j))
        - (v(i - 1, j - 1) + v(i - 1, j + 1) + v(i + 1, j - 1) + v(i + 1, j + 1))
        + 0.5 * (v(i, j - 2) + v(i, j + 2))
    ) / 8
    assert out[0, i, j] == pytest.approx(r, abs=1e-6)


def test_malvar_he_cutler_keeps_ramps_and_correlates_noise_across_channels():
    yy, xx = torch.meshgrid(torch.linspace(0, 1, 32), torch.linspace(0, 1, 32), indexing="ij")
    ramps = torch.stack([0.2 + 0.5 * yy, 0.1 + 0.3 * xx + 0.4 * yy, 0.9 - 0.6 * xx])[None]
    np.testing.assert_allclose(
        demosaic_mhc(mosaic(ramps))[..., 2:-2, 2:-2].numpy(), ramps[..., 2:-2, 2:-2].numpy(), atol=1e-5
    )
    n = demosaic_mhc(mosaic(torch.randn(1, 3, 128, 128, generator=torch.Generator().manual_seed(8))))[0].numpy()
    assert np.corrcoef(n[0].ravel(), n[2].ravel())[0, 1] > 0.4  # red and blue borrow green's gradient
    lag1 = np.corrcoef(n[1, :, :-1].ravel(), n[1, :, 1:].ravel())[0, 1]
    lag2 = np.corrcoef(n[1, :, :-2].ravel(), n[1, :, 2:].ravel())[0, 1]
    assert lag1 > 0.2 and abs(lag2) < 0.05


def test_read_noise_tied_to_shot_noise_by_default():
    """read=None: b = exp(2.18 ln a + 1.20) (jitter off), seen through the whole pipeline as the variance intercept."""
    a = 0.02
    cfg = NoiseConfig(
        shot=(a, a),
        read_fit=(2.18, 1.20, 0.0),
        wb_red=(1.0, 1.0),
        wb_blue=(1.0, 1.0),
        mosaic_prob=0.0,
        jpeg_prob=0.0,
        cross_channel=(0.0, 0.0),
        ccm_prob=0.0,
        tone_prob=0.0,
    )
    b = np.exp(2.18 * np.log(a) + 1.20)
    lin = torch.tensor([0.1, 0.25, 0.45, 0.65]).view(4, 1, 1, 1).expand(4, 3, 96, 96).clone()
    noisy = synthesize(linear_to_srgb(lin), torch.Generator().manual_seed(9), cfg)
    var = (srgb_to_linear(noisy) - lin).var(dim=(1, 2, 3)).numpy()
    slope, intercept = np.polyfit(lin[:, 0, 0, 0].numpy(), var, 1)
    assert slope == pytest.approx(a, rel=0.1) and intercept == pytest.approx(b, rel=0.3, abs=2e-4)


def test_colour_correction_matrices_keep_white_and_blend_with_the_identity():
    gen = torch.Generator().manual_seed(11)
    full = random_rgb2cam(64, gen).double()
    np.testing.assert_allclose(full.sum(dim=-1).numpy(), 1.0, atol=1e-6)  # white stays white
    assert (full.diagonal(dim1=1, dim2=2) > 0.5).all()
    cam2rgb = torch.linalg.inv(full)
    np.testing.assert_allclose(cam2rgb.sum(dim=-1).numpy(), 1.0, atol=1e-5)
    # its inverse amplifies colour differences: the colour-difference directions grow, grey does not
    diffs = torch.tensor([[1.0, -1.0, 0.0], [0.0, -1.0, 1.0]], dtype=torch.float64).T / np.sqrt(2)
    assert (torch.linalg.matrix_norm(cam2rgb @ diffs, ord=2) > 1.2).all()
    np.testing.assert_allclose(
        random_rgb2cam(4, gen, (0.0, 0.0)).numpy(), np.broadcast_to(np.eye(3), (4, 3, 3)), atol=1e-7
    )
    half = random_rgb2cam(256, gen, (0.0, 1.0)).double()
    off = (half - torch.eye(3, dtype=torch.float64)).abs().amax(dim=(1, 2))
    assert off.min() < 0.5 * off.max()  # strength drawn per matrix


@pytest.mark.parametrize("tone_prob", [0.0, 1.0])
def test_colour_correction_and_tone_curves_round_trip_the_clean_image(tone_prob):
    """With (almost) no noise the camera detour is undone exactly: only the noise goes through it."""
    cfg = NoiseConfig(
        shot=(1e-16, 1e-16), read=(1e-18, 1e-18), mosaic_prob=1.0, jpeg_prob=0.0, ccm_prob=1.0, tone_prob=tone_prob
    )
    clean = 0.05 + 0.95 * torch.rand(4, 3, 32, 32, generator=torch.Generator().manual_seed(12))
    noisy = synthesize(clean, torch.Generator().manual_seed(13), cfg)
    np.testing.assert_allclose(noisy.numpy(), clean.numpy(), atol=2e-5)


def test_colour_correction_makes_demosaiced_noise_chromatic():
    """Common (grey) noise passes the cam->sRGB matrix unchanged; colour differences are amplified."""
    base = dict(
        shot=(0.01, 0.01),
        read_fit=(2.18, 1.20, 0.0),
        wb_red=(2.0, 2.0),
        wb_blue=(1.7, 1.7),
        mosaic_prob=1.0,
        mhc_prob=1.0,
        cross_channel=(0.0, 0.0),
        jpeg_prob=0.0,
        ccm_strength=(1.0, 1.0),
        tone_prob=0.0,
    )
    lin = torch.full((8, 3, 64, 64), 0.2)

    def luma_chroma(ccm_prob):
        noisy = synthesize(
            linear_to_srgb(lin), torch.Generator().manual_seed(14), NoiseConfig(**base, ccm_prob=ccm_prob)
        )
        n = srgb_to_linear(noisy) - lin
        return n.mean(dim=1).std().item(), (n[:, 0] - n[:, 1]).std().item()

    (luma0, chroma0), (luma1, chroma1) = luma_chroma(0.0), luma_chroma(1.0)
    assert luma1 == pytest.approx(luma0, rel=0.15)
    assert chroma1 / luma1 > 1.4 * chroma0 / luma0


def test_tone_curve_noise_follows_the_model_in_its_own_linear_domain():
    """With the tone curve x^(1/g), un-toning the noisy image by x^g gives back variance a*x + b."""
    a, b, g = 0.004, 2e-4, 3.0
    cfg = NoiseConfig(
        shot=(a, a),
        read=(b, b),
        wb_red=(1.0, 1.0),
        wb_blue=(1.0, 1.0),
        mosaic_prob=0.0,
        jpeg_prob=0.0,
        cross_channel=(0.0, 0.0),
        tone_prob=1.0,
        tone_gamma=(g, g),
    )
    lin = torch.tensor([0.1, 0.25, 0.45, 0.65]).view(4, 1, 1, 1).expand(4, 3, 96, 96).clone()
    noisy = synthesize(lin ** (1 / g), torch.Generator().manual_seed(17), cfg)
    var = (noisy**g - lin).var(dim=(1, 2, 3)).numpy()
    slope, intercept = np.polyfit(lin[:, 0, 0, 0].numpy(), var, 1)
    assert slope == pytest.approx(a, rel=0.1) and intercept == pytest.approx(b, abs=1e-4)


def test_steeper_tone_curves_darken_and_amplify_shadow_noise():
    """The same raw noise through x^(1/3) instead of sRGB: larger in the shadows and biased darker (concavity)."""
    base = dict(
        shot=(0.01, 0.01),
        read_fit=(2.18, 1.20, 0.0),
        wb_red=(1.0, 1.0),
        wb_blue=(1.0, 1.0),
        mosaic_prob=0.0,
        jpeg_prob=0.0,
        cross_channel=(0.0, 0.0),
        tone_gamma=(3.0, 3.0),
    )
    clean = torch.full((4, 3, 64, 64), 0.3)
    srgb = synthesize(clean, torch.Generator().manual_seed(18), NoiseConfig(**base, tone_prob=0.0)) - clean
    steep = synthesize(clean, torch.Generator().manual_seed(18), NoiseConfig(**base, tone_prob=1.0)) - clean
    assert steep.std() > 1.2 * srgb.std()
    assert steep.mean() < srgb.mean() < 0


def test_synthesis_is_reproducible_from_the_generator():
    clean = torch.rand(4, 3, 32, 32, generator=torch.Generator().manual_seed(4))
    a = synthesize(clean, torch.Generator().manual_seed(5))
    b = synthesize(clean, torch.Generator().manual_seed(5))
    assert torch.equal(a, b)


@pytest.mark.parametrize("share", [0.0, 0.45, 0.7])
def test_channel_mixing_keeps_variance_and_sets_the_correlation(share):
    n = torch.randn(1, 3, 256, 256, generator=torch.Generator().manual_seed(6)) * 0.1
    mixed = correlate_channels(n, torch.tensor([share]))[0].reshape(3, -1).numpy()
    np.testing.assert_allclose(mixed.std(axis=1), 0.1, rtol=0.03)
    q = share / 3
    a = 1 - share + q
    expected = (2 * a * q + q * q) / (a * a + 2 * q * q)
    assert np.corrcoef(mixed)[0, 1] == pytest.approx(expected, abs=0.02)


def test_configs_saved_before_a_stage_existed_replay_without_it():
    """A training state saved before Malvar-He-Cutler existed (JSON: lists, no mhc_prob) resumes without it."""
    saved = {k: list(v) if isinstance(v, tuple) else v for k, v in NoiseConfig().to_dict().items() if k != "mhc_prob"}
    cfg = NoiseConfig.from_saved(saved)
    assert NoiseConfig().mhc_prob > 0 and cfg.mhc_prob == 0.0 and cfg.shot == NoiseConfig().shot
    clean = torch.rand(4, 3, 32, 32, generator=torch.Generator().manual_seed(15))
    explicit = NoiseConfig(**{**NoiseConfig().to_dict(), "mhc_prob": 0.0})
    assert torch.equal(
        synthesize(clean, torch.Generator().manual_seed(16), cfg),
        synthesize(clean, torch.Generator().manual_seed(16), explicit),
    )
    assert NoiseConfig.from_saved(NoiseConfig().to_dict()) == NoiseConfig()
