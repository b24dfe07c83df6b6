"""Independent references, written from ARCHITECTURE.md, not from scaoed_deploy.model.

- numpy (float64) versions of NFAE, CIG-SA and CIG-CA, one sample at a time;
- ``official_forward``: the whole network as plain functions over a state dict in
  the authors' key layout (their module paths, their aliases), the way the
  authors' ``BasicConv``-wrapped modules compute it. It shares no code with the
  package, so agreement checks both the model and the key translation.
"""

from __future__ import annotations

import csv
import re
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

SHARED = Path(__file__).resolve().parents[1].parent / "shared"
TSV = SHARED / "reference" / "official_state_dict.tsv"


# ----------------------------------------------------------------------------- CLI output
def one_error(err: str) -> str:
    """The one ``error:`` line of a command's stderr, asserting there is exactly one and no traceback. Other
    lines (a busy-machine warning, a note) may stand beside it: they depend on the machine, not the input."""
    assert "Traceback" not in err, err
    errors = [ln for ln in err.strip().splitlines() if ln.startswith("error: ")]
    assert len(errors) == 1, err
    return errors[0]


# ----------------------------------------------------------------------------- numpy
def sigmoid(x):
    return 1.0 / (1.0 + np.exp(-x))


def np_conv(x, w, b):
    """x (C, H, W), w (O, C, k, k): 'same' zero-padded cross-correlation plus bias."""
    k = w.shape[-1]
    p = k // 2
    xp = np.pad(x, ((0, 0), (p, p), (p, p)))
    h, wd = x.shape[1:]
    out = np.zeros((w.shape[0], h, wd))
    for i in range(k):
        for j in range(k):
            out += np.einsum("oc,chw->ohw", w[:, :, i, j], xp[:, i : i + h, j : j + wd])
    return out + b[:, None, None]


def np_nfae(x, eps=1e-16):
    d = (x - x.mean(axis=(1, 2), keepdims=True)) ** 2
    s = d.mean(axis=(1, 2), keepdims=True)
    c = d.mean(axis=0, keepdims=True)
    return x * sigmoid(10 * d / (s + eps)) * sigmoid(10 * d / (c + eps))


def np_cig_sa(h, p):
    """p: dict of numpy weights named compress, conv, gate, out (each (w, b))."""
    pool = np.concatenate([h.mean(0, keepdims=True), h.max(0, keepdims=True), np_conv(h, *p["compress"])], 0)
    t = np_conv(pool, *p["conv"])
    gate = np_conv(t.mean(axis=(1, 2), keepdims=True), *p["gate"])
    t = t + t * sigmoid(gate)
    return h * sigmoid(np_conv(t, *p["out"]))


def np_cig_ca(h, p):
    """p: dict of numpy weights named spatial, down, up, fuse (each (w, b))."""
    h2 = h * sigmoid(np_conv(h, *p["spatial"]))
    v = np.stack([h.mean(axis=(1, 2)), h.max(axis=(1, 2)), h2.mean(axis=(1, 2)), h2.max(axis=(1, 2))], 1)  # (C, 4)
    wd, bd = p["down"]
    hidden = np.maximum(wd[:, :, 0, 0] @ v + bd[:, None], 0)  # 1x1 conv over the C axis: (4, 4)
    wu, bu = p["up"]
    v2 = wu[:, :, 0, 0] @ hidden + bu[:, None]  # (C, 4)
    wf, bf = p["fuse"]
    w = sigmoid(v2 @ wf[0, :, 0, 0] + bf[0])  # 1x1 conv over the 4 statistics: (C,)
    return h * w[:, None, None]


# ----------------------------------------------------------------------------- authors' layout
def tsv_rows():
    with open(TSV) as f:
        return list(csv.DictReader(f, delimiter="\t"))


def official_state_dict(blocks: int = 16, seed: int = 0) -> dict[str, torch.Tensor]:
    """Random weights in the authors' layout, built from the key table alone.

    Aliased keys share their tensor, as in the authors' checkpoints; a and b are
    set away from 1 so that swapping them would show.
    """
    g = torch.Generator().manual_seed(seed)
    sd: dict[str, torch.Tensor] = {}
    for row in tsv_rows():
        m = re.match(r"RE_Net\.body\.(\d+)\.", row["key"])
        if m and int(m.group(1)) >= blocks:
            continue
        if row["same_tensor_as"]:
            sd[row["key"]] = sd[row["same_tensor_as"]]
            continue
        shape = [int(s) for s in row["shape"].split("x")]
        if row["key"] in ("a", "b"):
            sd[row["key"]] = torch.tensor([0.8 if row["key"] == "a" else 1.3])
        elif row["key"].endswith(".weight"):
            fan_in = int(np.prod(shape[1:]))
            sd[row["key"]] = torch.randn(shape, generator=g) / fan_in**0.5
        else:
            sd[row["key"]] = torch.randn(shape, generator=g) * 0.05
    return sd


def _conv(sd, name, x, relu=False):
    w, b = sd[f"{name}.conv.weight"], sd[f"{name}.conv.bias"]
    y = F.conv2d(x, w, b, padding=w.shape[-1] // 2)
    return F.relu(y) if relu else y


def _nfae(x):
    d = (x - x.mean(dim=(2, 3), keepdim=True)) ** 2
    s = d.mean(dim=(2, 3), keepdim=True)
    c = d.mean(dim=1, keepdim=True)
    return x * torch.sigmoid(10 * d / (s + 1e-16)) * torch.sigmoid(10 * d / (c + 1e-16))


def _cig_sa(sd, p, h):
    pool = torch.cat([h.mean(1, keepdim=True), h.amax(1, keepdim=True), _conv(sd, f"{p}.compress.Conv", h)], 1)
    t = _conv(sd, f"{p}.conv_du.0", pool)
    t = t + t * torch.sigmoid(_conv(sd, f"{p}.conv_du.1.Conv", t.mean(dim=(2, 3), keepdim=True)))
    return h * torch.sigmoid(_conv(sd, f"{p}.conv_du.2", t))


def _cig_ca(sd, p, h):
    def stats(x):
        return torch.stack([x.mean(dim=(2, 3)), x.amax(dim=(2, 3))], 2)

    h2 = h * torch.sigmoid(_conv(sd, f"{p}.inplaceSA.Conv", h))
    v = torch.cat([stats(h), stats(h2)], 2)[..., None]
    v = _conv(sd, f"{p}.cat.1", _conv(sd, f"{p}.cat.0", v, relu=True))
    w = torch.sigmoid(_conv(sd, f"{p}.conv_du.0", v.transpose(1, 2))).transpose(1, 2)
    return h * w


def _dem(sd, p, g):
    return torch.sigmoid(_conv(sd, f"{p}.1", _conv(sd, f"{p}.0", g, relu=True)))


def _fm2arb(sd, p, a, g):
    h = a
    for i in range(4):
        h = _conv(sd, f"{p}.head.{i}", h, relu=i < 3)
    mix = _conv(sd, f"{p}.cat", torch.cat([_cig_ca(sd, f"{p}.CIG_CA", h), _cig_sa(sd, f"{p}.CIG_SA", h)], 1))
    return mix * _dem(sd, f"{p}.DEM", g) + a


def _z_net(sd, z, e, u, blocks):
    z1 = _conv(sd, "RE_Net.head_z", z)
    e1 = _conv(sd, "RE_Net.head_E", e)
    v = _conv(sd, "RE_Net.head_noisy", F.pixel_unshuffle(u, 2))
    yu = _conv(sd, "RE_Net.y_u_cat.0", torch.cat([e1, v], 1))
    fu = _conv(sd, "RE_Net.fusion.0", torch.cat([z1, yu], 1))
    g = v
    for i in range(4):
        g = _conv(sd, f"RE_Net.GR.{i}", g, relu=i < 3)
    b = fu
    for t in range(blocks):
        b = _fm2arb(sd, f"RE_Net.body.{t}", b, g)
    b = _conv(sd, "RE_Net.Conv", b) * _dem(sd, "RE_Net.DEM", g)
    return _conv(sd, "RE_Net.tail.0", b + z1)


def _u_net(sd, u, q, z):
    qh = _conv(sd, "DE_Net.head_Q", q)
    v = _conv(sd, "DE_Net.head_noisy", F.pixel_unshuffle(u, 2))
    f = _conv(sd, "DE_Net.ConvNet_f0noise.0", torch.cat([qh, z], 1))
    h = _conv(sd, "DE_Net.ConvNet_Input.0", torch.cat([v, f], 1))
    for i in range(1, 5):
        h = _conv(sd, f"DE_Net.ConvNet_Input.{i}", h, relu=True)
    return F.pixel_shuffle(_conv(sd, "DE_Net.conv1", _nfae(h)), 2)


@torch.no_grad()
def official_forward(sd, y, stages):
    """(clean estimate, [K noise maps]) from weights in the authors' layout."""
    blocks = len({k.split(".")[2] for k in sd if k.startswith("RE_Net.body.")})
    e = _conv(sd, "head.0", F.pixel_unshuffle(y, 2))
    h = F.pixel_unshuffle(y, 2)
    for i in range(4):
        h = _conv(sd, f"ini_DE_Net.ConvNet.{i}", h, relu=True)
    q = _nfae(h)
    u = F.pixel_shuffle(_conv(sd, "ini_DE_Net.conv1", q), 2)
    z = sd["a"] * _z_net(sd, e, e, u, blocks) + sd["b"] * e
    maps = [u]
    for _ in range(stages - 1):
        u = u + _u_net(sd, u, q, z)
        z = sd["a"] * _z_net(sd, z, e, u, blocks) + sd["b"] * e
        maps.append(u)
    return F.pixel_shuffle(_conv(sd, "tail.0", z), 2), maps


# ----------------------------------------------------------------------------- a tiny generated ONNX
def tiny_conv_onnx(path: Path) -> Path:
    """A foreign ONNX with the artifact's input/output names and dynamic N/H/W: denoised = noisy + conv3x3(noisy)
    (not made by scaoed-deploy: it records no verification)."""
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    w = numpy_helper.from_array((np.random.default_rng(0).standard_normal((3, 3, 3, 3)) * 0.05).astype(np.float32), "w")
    x = helper.make_tensor_value_info("noisy", TensorProto.FLOAT, ["N", 3, "H", "W"])
    y = helper.make_tensor_value_info("denoised", TensorProto.FLOAT, ["N", 3, "H", "W"])
    graph = helper.make_graph(
        [
            helper.make_node("Conv", ["noisy", "w"], ["c"], pads=[1, 1, 1, 1]),
            helper.make_node("Add", ["noisy", "c"], ["denoised"]),
        ],
        "tiny",
        [x],
        [y],
        [w],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    onnx.save(model, str(path))
    return path


def foreign_onnx(
    path: Path, input_name: str = "noisy", output_dims=("N", 3, "H", "W"), stride: int = 1, out_channels: int = 3
) -> Path:
    """An ONNX of another network (one convolution), for the denoiser contract: its input name, its output's
    declared dims (None: left to shape inference), its stride (2 halves H and W) and output channels."""
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    w = numpy_helper.from_array(np.full((out_channels, 3, 3, 3), 1 / 27, np.float32), "w")
    x = helper.make_tensor_value_info(input_name, TensorProto.FLOAT, ["N", 3, "H", "W"])
    y = helper.make_tensor_value_info("denoised", TensorProto.FLOAT, list(output_dims) if output_dims else None)
    conv = helper.make_node("Conv", [input_name, "w"], ["denoised"], pads=[1, 1, 1, 1], strides=[stride, stride])
    model = helper.make_model(
        helper.make_graph([conv], "foreign", [x], [y], [w]), opset_imports=[helper.make_opsetid("", 17)]
    )
    model.ir_version = 8
    onnx.save(model, str(path))
    return path


def sealed_onnx(path: Path, verification: bool = True, seal: bool = True) -> Path:
    """tiny_conv_onnx, recording a verification (as export does) and, with ``seal``, its content digest."""
    import json

    import onnx

    from scaoed_deploy.artifact import write_metadata
    from scaoed_deploy.seal import seal_onnx

    proto = onnx.load(str(tiny_conv_onnx(path)))
    if verification:
        write_metadata(proto, {"verification": json.dumps({"max_abs": 0.0}), "precision": "fp32"})
    if seal:
        seal_onnx(proto)
    onnx.save(proto, str(path))
    return path


def edited(path: Path, scale: float = 2.0, nan: bool = False) -> Path:
    """The file with its one weight tensor changed (metadata untouched), saved in place."""
    import onnx
    from onnx import numpy_helper

    proto = onnx.load(str(path))
    w = numpy_helper.to_array(proto.graph.initializer[0]).copy()
    w *= scale
    if nan:
        w.flat[0] = np.nan
    proto.graph.initializer[0].CopyFrom(numpy_helper.from_array(w, proto.graph.initializer[0].name))
    onnx.save(proto, str(path))
    return path
