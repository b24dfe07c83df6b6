"""ScaoedNet, the blind real-image denoiser of Ren, Pan and Huang (NeurIPS 2022).

"Enhanced Latent Space Blind Model for Real Image Denoising via Alternative
Optimization". This file reads side by side with ``shared/reference/ARCHITECTURE.md``:
each class is one box of the paper's figure and each ``forward`` is the
pseudo-code of that section, line by line.

Module names say what a module is in the paper; ``scaoed_deploy.model.layout``
translates them to and from the authors' checkpoint keys (``head.0.conv.weight``,
``RE_Net.body.3.CIG_SA.conv_du.0.conv.bias``, ...).

Numerics follow the authors' release exactly (same operations in the same
order), so that the same weights give the same numbers:
- spatial means are taken over W, then over H (``x.mean(3).mean(2)``);
- NFAE divides by ``mean + 1e-16``;
- CIG-CA stacks its statistics in the order mean h, max h, mean h2, max h2.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

#: Feature channels everywhere in the network (m in the paper).
FEATURES = 64
#: NFAE's guard against 0/0 on a constant channel. In float16 it rounds to 0.
NFAE_EPS = 1e-16


def conv(cin: int, cout: int, k: int) -> nn.Conv2d:
    """k x k convolution with bias, stride 1, 'same' zero padding."""
    return nn.Conv2d(cin, cout, k, padding=k // 2, bias=True)


def spatial_mean(x: torch.Tensor) -> torch.Tensor:
    """mean over H and W, keeping dims; W first, as the authors reduce."""
    return x.mean(3, keepdim=True).mean(2, keepdim=True)


class NFAE(nn.Module):
    """Noise-feature attention enhancement: no parameters.

    d = (x - mean_HW x)^2 ; s = mean_HW d ; c = mean_C d
    out = x * sigmoid(10 d / (s + eps)) * sigmoid(10 d / (c + eps))
    """

    def __init__(self, eps: float = NFAE_EPS):
        super().__init__()
        self.eps = eps

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        d = (x - spatial_mean(x)).pow(2)
        s = spatial_mean(d)
        c = d.mean(1, keepdim=True)
        spatial_weight = torch.sigmoid((10 * d) / (s + self.eps))
        channel_weight = torch.sigmoid((10 * d) / (c + self.eps))
        return x * (spatial_weight * channel_weight)


class ConvStack(nn.Module):
    """n convolutions, ReLU after all but (optionally) the last one."""

    def __init__(self, cin: int, cout: int, n: int, k: int = 3, relu_last: bool = True):
        super().__init__()
        self.convs = nn.ModuleList(conv(cin if i == 0 else cout, cout, k) for i in range(n))
        self.relu_last = relu_last

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        last = len(self.convs) - 1
        for i, layer in enumerate(self.convs):
            x = layer(x)
            if i < last or self.relu_last:
                x = F.relu(x)
        return x


class DEM(nn.Module):
    """Degradation-estimation modulation: a sigmoid gate computed from the guidance g.

    Conv k, ReLU, Conv k, sigmoid (k = 1 inside FM2ARB, k = 3 at the end of the z-Net).
    """

    def __init__(self, k: int, ch: int = FEATURES):
        super().__init__()
        self.hidden = conv(ch, ch, k)
        self.gate = conv(ch, ch, k)

    def forward(self, g: torch.Tensor) -> torch.Tensor:
        return torch.sigmoid(self.gate(F.relu(self.hidden(g))))


class CIGSpatialAttention(nn.Module):
    """CIG-SA: spatial attention guided by channel information."""

    def __init__(self, ch: int = FEATURES):
        super().__init__()
        self.channel_compress = conv(ch, 2, 1)  # learned channel pooling, beside mean_C and max_C
        self.conv = conv(4, 4, 3)
        self.channel_gate = conv(4, 4, 1)  # "inplaceCA": channel re-weighting of the 4 maps
        self.weight_out = conv(4, 1, 1)

    def forward(self, h: torch.Tensor) -> torch.Tensor:
        p = torch.cat((h.mean(1, keepdim=True), h.amax(1, keepdim=True), self.channel_compress(h)), 1)
        t = self.conv(p)
        t = t + t * torch.sigmoid(self.channel_gate(spatial_mean(t)))
        w = torch.sigmoid(self.weight_out(t))
        return h * w


def _mean_max_stats(x: torch.Tensor) -> torch.Tensor:
    """(B, C, H, W) -> (B, C, 2): spatial mean and spatial max per channel."""
    return torch.cat((x.mean(3).mean(2, keepdim=True), x.amax(3).amax(2, keepdim=True)), 2)


class CIGChannelAttention(nn.Module):
    """CIG-CA: channel attention guided by spatial information."""

    def __init__(self, ch: int = FEATURES):
        super().__init__()
        self.spatial_gate = conv(ch, 1, 3)  # "inplaceSA": h2 = h * sigmoid(conv(h))
        self.mlp_down = conv(ch, 4, 1)  # acts on the C axis of the (B, C, 4, 1) statistics
        self.mlp_up = conv(4, ch, 1)
        self.stat_fuse = conv(4, 1, 1)  # fuses the 4 statistics of each channel

    def forward(self, h: torch.Tensor) -> torch.Tensor:
        h2 = h * torch.sigmoid(self.spatial_gate(h))
        v = torch.cat((_mean_max_stats(h), _mean_max_stats(h2)), 2).unsqueeze(3)  # (B, C, 4, 1)
        v = self.mlp_up(F.relu(self.mlp_down(v)))  # (B, C, 4, 1)
        w = torch.sigmoid(self.stat_fuse(v.transpose(1, 2))).transpose(1, 2)  # (B, C, 1, 1)
        return h * w


class FM2ARB(nn.Module):
    """Feature multiple-modulation attention residual block."""

    def __init__(self, ch: int = FEATURES):
        super().__init__()
        self.head = ConvStack(ch, ch, 4, relu_last=False)
        self.cig_ca = CIGChannelAttention(ch)
        self.cig_sa = CIGSpatialAttention(ch)
        self.mix = conv(2 * ch, ch, 1)
        self.dem = DEM(k=1, ch=ch)

    def forward(self, a: torch.Tensor, g: torch.Tensor) -> torch.Tensor:
        h = self.head(a)
        mix = self.mix(torch.cat((self.cig_ca(h), self.cig_sa(h)), 1))
        return mix * self.dem(g) + a


class InitialDegradationNet(nn.Module):
    """u_ini-Net: the first noise map u0 and the enhanced noise feature map Q."""

    def __init__(self, ch: int = FEATURES):
        super().__init__()
        self.features = ConvStack(12, ch, 4, relu_last=True)
        self.nfae = NFAE()
        self.noise_out = conv(ch, 4, 3)

    def forward(self, y: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        q = self.nfae(self.features(F.pixel_unshuffle(y, 2)))
        u0 = F.pixel_shuffle(self.noise_out(q), 2)
        return u0, q


class DegradationNet(nn.Module):
    """u-Net: one step of degradation (noise map) estimation; shared by all stages."""

    def __init__(self, ch: int = FEATURES):
        super().__init__()
        self.q_head = conv(ch, ch, 3)
        self.noise_head = conv(4, ch, 3)
        self.qz_fuse = conv(2 * ch, ch, 1)
        self.input_fuse = conv(2 * ch, ch, 1)
        self.features = ConvStack(ch, ch, 4, relu_last=True)
        self.nfae = NFAE()
        self.noise_out = conv(ch, 4, 3)

    def forward(self, u: torch.Tensor, q: torch.Tensor, z: torch.Tensor) -> torch.Tensor:
        """Returns du; the caller adds it to u."""
        v = self.noise_head(F.pixel_unshuffle(u, 2))
        f = self.qz_fuse(torch.cat((self.q_head(q), z), 1))
        h = self.features(self.input_fuse(torch.cat((v, f), 1)))
        return F.pixel_shuffle(self.noise_out(self.nfae(h)), 2)


class ReconstructionNet(nn.Module):
    """z-Net: one step of latent reconstruction; shared by all stages; holds the G-module."""

    def __init__(self, blocks: int = 16, ch: int = FEATURES):
        super().__init__()
        self.z_head = conv(ch, ch, 3)
        self.e_head = conv(ch, ch, 3)
        self.noise_head = conv(4, ch, 3)
        self.fuse = conv(2 * ch, ch, 1)  # F: one 1x1 conv used twice (shared weights)
        self.g_module = ConvStack(ch, ch, 4, relu_last=False)  # G: guidance information
        self.blocks = nn.ModuleList(FM2ARB(ch) for _ in range(blocks))
        self.body_conv = conv(ch, ch, 3)
        self.dem = DEM(k=3, ch=ch)
        self.tail = conv(ch, ch, 3)

    def forward(self, z_in: torch.Tensor, e_in: torch.Tensor, u: torch.Tensor) -> torch.Tensor:
        z1 = self.z_head(z_in)
        e1 = self.e_head(e_in)
        v = self.noise_head(F.pixel_unshuffle(u, 2))
        fu = self.fuse(torch.cat((z1, self.fuse(torch.cat((e1, v), 1))), 1))
        g = self.g_module(v)
        b = fu
        for block in self.blocks:
            b = block(b, g)
        b = self.body_conv(b) * self.dem(g)
        return self.tail(b + z1)


class ScaoedNet(nn.Module):
    """ScaoedNet with K stages (1 to 8) and T FM2ARB blocks.

    Input: noisy RGB in [0, 1], (B, 3, H, W) with H and W even.
    Output: the clean estimate (B, 3, H, W), unclamped; with
    ``return_noise_maps=True`` also the K noise maps u (B, 1, H, W), u_ini's first.
    """

    MAX_STAGES = 8

    def __init__(self, stages: int = 5, blocks: int = 16):
        super().__init__()
        if not 1 <= int(stages) <= self.MAX_STAGES:
            raise ValueError(f"stages (K) must be 1 to {self.MAX_STAGES}, got {stages}")
        if int(blocks) < 1:
            raise ValueError(f"blocks (T) must be at least 1, got {blocks}")
        self.stages = int(stages)
        self.blocks = int(blocks)
        self.encoder = conv(12, FEATURES, 3)  # E: latent-space encoding
        self.u_ini = InitialDegradationNet()
        self.u_net = DegradationNet()
        self.z_net = ReconstructionNet(blocks)
        self.decoder = conv(FEATURES, 12, 3)  # D: latent-space decoding
        self.a = nn.Parameter(torch.ones(1))
        self.b = nn.Parameter(torch.ones(1))

    def forward(self, y: torch.Tensor, return_noise_maps: bool = False):
        e0 = self.encoder(F.pixel_unshuffle(y, 2))
        u, q = self.u_ini(y)
        z = self.a * self.z_net(e0, e0, u) + self.b * e0
        noise_maps = [u]
        for _ in range(self.stages - 1):
            u = u + self.u_net(u, q, z)
            z = self.a * self.z_net(z, e0, u) + self.b * e0
            noise_maps.append(u)
        x = F.pixel_shuffle(self.decoder(z), 2)
        if return_noise_maps:
            return x, noise_maps
        return x

    def extra_repr(self) -> str:
        return f"stages(K)={self.stages}, blocks(T)={self.blocks}"
