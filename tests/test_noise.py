"""Noise synthesis: the statistics follow the configured Poisson-Gaussian model."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from scaoed_deploy.noise import (
    NoiseConfig,
    correlate_channels,
    demosaic_bilinear,
    linear_to_srgb,
    mosaic,
    poisson_gaussian,
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
    cfg = NoiseConfig(shot=(a, a), read=(b, b), wb_red=(1.0, 1.0), wb_blue=(1.0, 1.0), mosaic_prob=0.0, jpeg_prob=0.0,
                      cross_channel=(0.0, 0.0))
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
    np.testing.assert_allclose(demosaic_bilinear(mosaic(flat))[..., 2:-2, 2:-2].numpy(), flat[..., 2:-2, 2:-2].numpy(), atol=1e-6)
    white = torch.randn(1, 3, 64, 64, generator=torch.Generator().manual_seed(3))
    g = demosaic_bilinear(mosaic(white))[0, 1].numpy()
    assert np.corrcoef(g[:, :-1].ravel(), g[:, 1:].ravel())[0, 1] > 0.2  # demosaicing spreads noise


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
