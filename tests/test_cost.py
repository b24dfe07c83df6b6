"""Cost model: parameters and MACs against the paper and against an analytic count from the spec."""

from __future__ import annotations

import pytest

from scaoed_deploy.cost import PAPER_GMACS, count_parameters, model_cost


def spec_conv_macs(stages: int, blocks: int, h: int, w: int) -> int:
    """Convolution MACs written out from ARCHITECTURE.md (every conv runs at H/2 x W/2 unless noted)."""
    n = (h // 2) * (w // 2)
    m = 64

    def c(cin, cout, k, positions=n):
        return cin * cout * k * k * positions

    encoder, decoder = c(12, m, 3), c(m, 12, 3)
    u_ini = c(12, m, 3) + 3 * c(m, m, 3) + c(m, 4, 3)
    u_net = c(m, m, 3) + c(4, m, 3) + 2 * c(2 * m, m, 1) + 4 * c(m, m, 3) + c(m, 4, 3)
    cig_sa = c(m, 2, 1) + c(4, 4, 3) + c(4, 4, 1, positions=1) + c(4, 1, 1)
    # CIG-CA's 1x1 convs run on the (C, 4) statistics: 4 positions, then 64 positions after the transpose
    cig_ca = c(m, 1, 3) + c(m, 4, 1, positions=4) + c(4, m, 1, positions=4) + c(4, 1, 1, positions=m)
    fm2arb = 4 * c(m, m, 3) + cig_ca + cig_sa + c(2 * m, m, 1) + 2 * c(m, m, 1)
    z_net = (
        2 * c(m, m, 3)  # z and E heads
        + c(4, m, 3)  # noise head
        + 2 * c(2 * m, m, 1)  # F, used twice
        + 4 * c(m, m, 3)  # G-module
        + blocks * fm2arb
        + c(m, m, 3)
        + 2 * c(m, m, 3)
        + c(m, m, 3)  # body conv, DEM (two 3x3), tail
    )
    return encoder + decoder + u_ini + stages * z_net + (stages - 1) * u_net


@pytest.mark.parametrize("stages,blocks,h,w", [(1, 16, 512, 512), (3, 2, 64, 96), (5, 16, 512, 512), (2, 1, 30, 42)])
def test_convolution_macs_match_the_spec(stages, blocks, h, w):
    assert model_cost(stages, blocks, h, w).conv_macs == spec_conv_macs(stages, blocks, h, w)


@pytest.mark.parametrize("stages", [1, 3, 5])
def test_macs_within_3_percent_of_the_paper(stages):
    cost = model_cost(stages, 16, 512, 512)
    assert cost.paper_gmacs == PAPER_GMACS[stages]
    assert abs(cost.total_macs / (PAPER_GMACS[stages] * 1e9) - 1) <= 0.03
    assert cost.parameters == 3_371_750


def test_elementwise_work_is_counted_and_grows_with_k():
    c1, c3 = model_cost(1, 16, 512, 512), model_cost(3, 16, 512, 512)
    assert 0 < c1.other_macs < 0.05 * c1.conv_macs
    assert c3.other_macs > 2 * c1.other_macs


def test_cost_scales_with_pixels_and_batch():
    small, big = model_cost(2, 2, 64, 64), model_cost(2, 2, 128, 128, batch=2)
    assert big.conv_macs == pytest.approx(8 * small.conv_macs, rel=1e-3)
    assert big.paper_gmacs is None


def test_parameters_do_not_depend_on_resolution():
    assert count_parameters(16) == model_cost(1, 16, 8, 8).parameters == 3_371_750


def test_odd_sizes_are_refused():
    with pytest.raises(ValueError, match="even"):
        model_cost(1, 2, 31, 32)
