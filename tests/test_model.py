"""The reference model against the spec: numpy layers, the authors'-layout forward pass, K semantics."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from conftest import needs_reference
from references import np_cig_ca, np_cig_sa, np_nfae, official_forward, official_state_dict

from scaoed_deploy.checkpoint import official_to_ours
from scaoed_deploy.model import NFAE, CIGChannelAttention, CIGSpatialAttention, ScaoedNet


def _wb(conv):
    return conv.weight.detach().double().numpy(), conv.bias.detach().double().numpy()


def _randomise(module, seed):
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in module.parameters():
            p.copy_(torch.randn(p.shape, generator=g) * 0.3)


@pytest.mark.parametrize("seed", [0, 1])
def test_nfae_matches_numpy_with_a_constant_channel(seed):
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(2, 6, 9, 7, generator=g).double()
    x[0, 2] = 0.37  # a constant channel: d = s = 0 there
    x[1, 4] = 0.0  # a dead ReLU channel
    out = NFAE()(x).numpy()
    assert np.isfinite(out).all()
    for b in range(2):
        np.testing.assert_allclose(out[b], np_nfae(x[b].numpy()), rtol=1e-10, atol=1e-12)
    # On a constant channel the spatial gate is sigmoid(0) = 1/2, never NaN.
    assert out[0, 2].max() <= 0.37 * 0.5 + 1e-12


def test_nfae_on_a_flat_feature_map_is_finite():
    x = torch.full((1, 4, 8, 8), 2.0)  # every channel constant: s = c = 0 everywhere
    out = NFAE()(x)
    assert torch.isfinite(out).all()
    torch.testing.assert_close(out, x * 0.25)  # sigmoid(0) * sigmoid(0)


@pytest.mark.parametrize("seed", [0, 1])
def test_cig_sa_matches_numpy(seed):
    m = CIGSpatialAttention(ch=8).double()
    _randomise(m, seed)
    h = torch.randn(2, 8, 6, 10, generator=torch.Generator().manual_seed(seed + 10)).double()
    out = m(h).detach().numpy()
    p = {
        "compress": _wb(m.channel_compress),
        "conv": _wb(m.conv),
        "gate": _wb(m.channel_gate),
        "out": _wb(m.weight_out),
    }
    for b in range(2):
        np.testing.assert_allclose(out[b], np_cig_sa(h[b].numpy(), p), rtol=1e-9, atol=1e-12)


@pytest.mark.parametrize("seed", [0, 1])
def test_cig_ca_matches_numpy(seed):
    m = CIGChannelAttention(ch=8).double()
    _randomise(m, seed)
    h = torch.randn(2, 8, 7, 5, generator=torch.Generator().manual_seed(seed + 20)).double()
    out = m(h).detach().numpy()
    p = {"spatial": _wb(m.spatial_gate), "down": _wb(m.mlp_down), "up": _wb(m.mlp_up), "fuse": _wb(m.stat_fuse)}
    for b in range(2):
        np.testing.assert_allclose(out[b], np_cig_ca(h[b].numpy(), p), rtol=1e-9, atol=1e-12)


def test_cig_attentions_stay_finite_on_a_constant_map():
    h = torch.full((1, 64, 8, 8), 0.5)
    assert torch.isfinite(CIGChannelAttention()(h)).all()
    assert torch.isfinite(CIGSpatialAttention()(h)).all()


@pytest.mark.parametrize("stages", [1, 3, 5, 8])
def test_parameter_count_is_independent_of_k(stages):
    model = ScaoedNet(stages=stages, blocks=16)
    assert sum(p.numel() for p in model.parameters()) == 3_371_750


@needs_reference
def test_parameter_count_matches_the_key_table():
    from references import tsv_rows

    unique = sum(int(np.prod([int(s) for s in r["shape"].split("x")])) for r in tsv_rows() if not r["same_tensor_as"])
    assert unique == sum(p.numel() for p in ScaoedNet(blocks=16).parameters())


@pytest.mark.parametrize("stages", [1, 2, 4])
def test_k_semantics(stages):
    """K = 1 runs no loop: u_ini and the z-Net once; each further stage runs u-Net and z-Net once more."""
    model = ScaoedNet(stages=stages, blocks=1).eval()
    calls = {"u_ini": 0, "u_net": 0, "z_net": 0}
    for name in calls:
        getattr(model, name).register_forward_hook(lambda *a, n=name: calls.__setitem__(n, calls[n] + 1))
    with torch.no_grad():
        x, maps = model(torch.rand(1, 3, 16, 16), return_noise_maps=True)
    assert calls == {"u_ini": 1, "u_net": stages - 1, "z_net": stages}
    assert len(maps) == stages
    assert x.shape == (1, 3, 16, 16) and all(m.shape == (1, 1, 16, 16) for m in maps)


def test_bad_stage_and_block_counts_are_refused():
    with pytest.raises(ValueError, match="1 to 8"):
        ScaoedNet(stages=0)
    with pytest.raises(ValueError, match="1 to 8"):
        ScaoedNet(stages=9)
    with pytest.raises(ValueError, match="at least 1"):
        ScaoedNet(blocks=0)


def _ours_from_official(sd, stages):
    model = ScaoedNet(stages=stages, blocks=len({k.split(".")[2] for k in sd if k.startswith("RE_Net.body.")}))
    model.load_state_dict(official_to_ours(sd), strict=True)
    return model.eval()


@needs_reference
@pytest.mark.parametrize("stages", [1, 2, 3])
def test_matches_the_authors_layout_forward_pass(official_sd_t2, stages):
    """Same weights through the authors'-layout functional forward and through ours: 1e-5 max abs."""
    model = _ours_from_official(official_sd_t2, stages)
    y = torch.rand(2, 3, 24, 32, generator=torch.Generator().manual_seed(stages))
    with torch.no_grad():
        ours, our_maps = model(y, return_noise_maps=True)
    ref, ref_maps = official_forward(official_sd_t2, y, stages)
    assert (ours - ref).abs().max().item() <= 1e-5
    assert len(our_maps) == len(ref_maps) == stages
    for a, b in zip(our_maps, ref_maps):
        assert (a - b).abs().max().item() <= 1e-5


@needs_reference
def test_matches_the_authors_layout_forward_pass_at_full_depth():
    """T = 16, K = 5, as the paper configures it, on a small image."""
    sd = official_state_dict(blocks=16, seed=3)
    model = _ours_from_official(sd, 5)
    y = torch.rand(1, 3, 16, 16, generator=torch.Generator().manual_seed(7))
    with torch.no_grad():
        ours = model(y)
    ref, _ = official_forward(sd, y, 5)
    assert (ours - ref).abs().max().item() <= 1e-5


def test_flat_image_gives_finite_output():
    model = ScaoedNet(stages=2, blocks=1).eval()
    with torch.no_grad():
        out = model(torch.full((1, 3, 16, 16), 0.5))
    assert torch.isfinite(out).all()
