"""Translation between our parameter names and the authors' checkpoint layout.

The authors wrap every convolution in a ``BasicConv`` (``<name>.conv.weight``),
number layers inside ``nn.Sequential`` containers, and register two modules twice,
so their checkpoints hold two keys for one tensor:

- ``RE_Net.fusion.0`` and ``RE_Net.y_u_cat.0`` (the shared 1x1 fusion conv F);
- ``RE_Net.body.N.CIG_SA.inplaceCA.Conv`` and ``RE_Net.body.N.CIG_SA.conv_du.1.Conv``.

Each rule below maps one of our module paths to the authors' path(s); the first
official name is the canonical one, any further names are aliases.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterable

# (our module path regex, function of the match -> official module paths)
_Rule = tuple[re.Pattern, Callable[[re.Match], list[str]]]


def _rule(pattern: str, *targets: str) -> _Rule:
    """targets are format strings over the match groups ({1}, {1+} for index + 1)."""

    def build(m: re.Match) -> list[str]:
        out = []
        for t in targets:
            t = re.sub(r"\{(\d)\+\}", lambda g: str(int(m.group(int(g.group(1)))) + 1), t)
            out.append(t.format(*([m.group(0)] + list(m.groups()))))
        return out

    return re.compile(f"^{pattern}$"), build


_B = r"z_net\.blocks\.(\d+)"
_RULES: list[_Rule] = [
    _rule(r"encoder", "head.0.conv"),
    _rule(r"decoder", "tail.0.conv"),
    # u_ini-Net
    _rule(r"u_ini\.features\.convs\.(\d)", "ini_DE_Net.ConvNet.{1}.conv"),
    _rule(r"u_ini\.noise_out", "ini_DE_Net.conv1.conv"),
    # u-Net: the authors' ConvNet_Input holds the 1x1 input fusion first, then the 4 CR layers
    _rule(r"u_net\.q_head", "DE_Net.head_Q.conv"),
    _rule(r"u_net\.noise_head", "DE_Net.head_noisy.conv"),
    _rule(r"u_net\.qz_fuse", "DE_Net.ConvNet_f0noise.0.conv"),
    _rule(r"u_net\.input_fuse", "DE_Net.ConvNet_Input.0.conv"),
    _rule(r"u_net\.features\.convs\.(\d)", "DE_Net.ConvNet_Input.{1+}.conv"),
    _rule(r"u_net\.noise_out", "DE_Net.conv1.conv"),
    # z-Net
    _rule(r"z_net\.z_head", "RE_Net.head_z.conv"),
    _rule(r"z_net\.e_head", "RE_Net.head_E.conv"),
    _rule(r"z_net\.noise_head", "RE_Net.head_noisy.conv"),
    _rule(r"z_net\.fuse", "RE_Net.fusion.0.conv", "RE_Net.y_u_cat.0.conv"),
    _rule(r"z_net\.g_module\.convs\.(\d)", "RE_Net.GR.{1}.conv"),
    _rule(r"z_net\.body_conv", "RE_Net.Conv.conv"),
    _rule(r"z_net\.dem\.hidden", "RE_Net.DEM.0.conv"),
    _rule(r"z_net\.dem\.gate", "RE_Net.DEM.1.conv"),
    _rule(r"z_net\.tail", "RE_Net.tail.0.conv"),
    # FM2ARB blocks
    _rule(_B + r"\.head\.convs\.(\d)", "RE_Net.body.{1}.head.{2}.conv"),
    _rule(_B + r"\.mix", "RE_Net.body.{1}.cat.conv"),
    _rule(_B + r"\.dem\.hidden", "RE_Net.body.{1}.DEM.0.conv"),
    _rule(_B + r"\.dem\.gate", "RE_Net.body.{1}.DEM.1.conv"),
    _rule(_B + r"\.cig_ca\.spatial_gate", "RE_Net.body.{1}.CIG_CA.inplaceSA.Conv.conv"),
    _rule(_B + r"\.cig_ca\.mlp_down", "RE_Net.body.{1}.CIG_CA.cat.0.conv"),
    _rule(_B + r"\.cig_ca\.mlp_up", "RE_Net.body.{1}.CIG_CA.cat.1.conv"),
    _rule(_B + r"\.cig_ca\.stat_fuse", "RE_Net.body.{1}.CIG_CA.conv_du.0.conv"),
    _rule(_B + r"\.cig_sa\.channel_compress", "RE_Net.body.{1}.CIG_SA.compress.Conv.conv"),
    _rule(_B + r"\.cig_sa\.conv", "RE_Net.body.{1}.CIG_SA.conv_du.0.conv"),
    _rule(
        _B + r"\.cig_sa\.channel_gate",
        "RE_Net.body.{1}.CIG_SA.inplaceCA.Conv.conv",
        "RE_Net.body.{1}.CIG_SA.conv_du.1.Conv.conv",
    ),
    _rule(_B + r"\.cig_sa\.weight_out", "RE_Net.body.{1}.CIG_SA.conv_du.2.conv"),
]


def official_names(our_key: str) -> list[str]:
    """Official key(s) of one of our parameter keys: canonical first, then aliases."""
    if our_key in ("a", "b"):
        return [our_key]
    module, _, leaf = our_key.rpartition(".")
    for pattern, build in _RULES:
        m = pattern.match(module)
        if m:
            return [f"{name}.{leaf}" for name in build(m)]
    raise KeyError(f"no official name for parameter {our_key!r}")


def official_key_map(our_keys: Iterable[str]) -> dict[str, list[str]]:
    """{our key: [official key, aliases...]} for every key of our model."""
    return {k: official_names(k) for k in our_keys}


#: Markers that tell the two layouts apart.
OFFICIAL_MARKER = "head.0.conv.weight"
OURS_MARKER = "encoder.weight"

_BLOCK_RE = re.compile(r"^(?:RE_Net\.body|z_net\.blocks)\.(\d+)\.")


def count_blocks(keys: Iterable[str]) -> int:
    """T, the number of FM2ARB blocks, from the block indices present in either layout."""
    idx = {int(m.group(1)) for k in keys if (m := _BLOCK_RE.match(k))}
    return max(idx) + 1 if idx else 0
