"""Checkpoints: the authors' layout loads strictly, round-trips, and bad files fail clearly."""

from __future__ import annotations

import collections
import json

import numpy as np
import pytest
import torch
from conftest import needs_reference
from references import official_state_dict, one_error, tsv_rows

from scaoed_deploy import checkpoint as ckpt
from scaoed_deploy.errors import CheckpointError
from scaoed_deploy.images import Image, write_image
from scaoed_deploy.model import ScaoedNet
from scaoed_deploy.model.layout import official_key_map
from scaoed_deploy.util.files import sha256_of

pytestmark = needs_reference


def test_layout_table_reproduces_every_official_key_shape_and_alias():
    model = ScaoedNet(stages=1, blocks=16)
    sd = model.state_dict()
    generated = {}
    for ours, names in official_key_map(sd).items():
        shape = "x".join(str(s) for s in sd[ours].shape)
        for i, name in enumerate(names):
            generated[name] = (shape, names[0] if i else "")
    table = {r["key"]: (r["shape"], r["same_tensor_as"]) for r in tsv_rows()}
    assert len(table) == 572
    assert generated == table


@pytest.mark.parametrize("wrap", ["bare", "state_dict", "model", "module_prefix"])
def test_authors_checkpoint_loads_strictly_in_every_wrapping(tmp_path, official_sd_t2, wrap):
    sd = official_sd_t2
    obj = {
        "bare": sd,
        "state_dict": {"state_dict": sd, "epoch": torch.tensor(3)},
        "model": {"model": sd},
        "module_prefix": {f"module.{k}": v for k, v in sd.items()},
    }[wrap]
    path = tmp_path / "c.pth"
    torch.save(obj, path)
    w = ckpt.read_checkpoint(path)
    assert w.layout == "official" and w.blocks == 2
    model = ckpt.build_model(w, stages=2)
    theirs = model.state_dict()
    for ours, names in official_key_map(theirs).items():
        assert torch.equal(theirs[ours], sd[names[0]])


def test_full_authors_checkpoint_round_trips_through_safetensors(tmp_path):
    sd = official_state_dict(blocks=16, seed=1)
    src = tmp_path / "official.pth"
    torch.save(sd, src)
    info = ckpt.convert(src, tmp_path / "m.safetensors", stages=3)
    assert info["parameters"] == 3_371_750
    config = json.loads((tmp_path / "m.json").read_text())
    assert config["stages"] == 3 and config["blocks"] == 16 and config["format"] == "scaoed-deploy"
    assert config["provenance"]["source_sha256"] == sha256_of(src)
    w = ckpt.read_checkpoint(tmp_path / "m.safetensors")
    assert w.stages == 3 and w.layout == "ours"
    ckpt.convert(tmp_path / "m.safetensors", tmp_path / "back.pth")
    back = torch.load(tmp_path / "back.pth", weights_only=True)
    assert back.keys() == sd.keys()
    assert all(torch.equal(back[k], sd[k]) for k in sd)
    # aliases come back as one shared tensor, as in the authors' checkpoints
    assert back["RE_Net.fusion.0.conv.weight"].data_ptr() == back["RE_Net.y_u_cat.0.conv.weight"].data_ptr()


def test_safetensors_without_sidecar_uses_embedded_config(tmp_path, official_sd_t2):
    src = tmp_path / "o.pth"
    torch.save(official_sd_t2, src)
    ckpt.convert(src, tmp_path / "m.safetensors", stages=4)
    (tmp_path / "m.json").unlink()
    assert ckpt.read_checkpoint(tmp_path / "m.safetensors").stages == 4


def test_aliased_copies_that_differ_are_refused(tmp_path, official_sd_t2):
    sd = dict(official_sd_t2)
    sd["RE_Net.body.1.CIG_SA.conv_du.1.Conv.conv.bias"] = sd["RE_Net.body.1.CIG_SA.inplaceCA.Conv.conv.bias"] + 0.01
    torch.save(sd, tmp_path / "c.pth")
    with pytest.raises(
        CheckpointError, match=r"inplaceCA\.Conv\.conv\.bias and .*conv_du\.1\.Conv\.conv\.bias.*differ"
    ):
        ckpt.read_checkpoint(tmp_path / "c.pth")


def test_truncated_file_gives_a_clear_error(tmp_path, official_sd_t2):
    torch.save(official_sd_t2, tmp_path / "c.pth")
    data = (tmp_path / "c.pth").read_bytes()
    (tmp_path / "t.pth").write_bytes(data[: len(data) // 2])
    with pytest.raises(CheckpointError, match="truncated or not a PyTorch checkpoint"):
        ckpt.read_checkpoint(tmp_path / "t.pth")


def test_truncated_safetensors_gives_a_clear_error(tmp_path, official_sd_t2):
    torch.save(official_sd_t2, tmp_path / "c.pth")
    ckpt.convert(tmp_path / "c.pth", tmp_path / "m.safetensors")
    data = (tmp_path / "m.safetensors").read_bytes()
    (tmp_path / "m.safetensors").write_bytes(data[:1000])
    with pytest.raises(CheckpointError, match="truncated or not a safetensors file"):
        ckpt.read_checkpoint(tmp_path / "m.safetensors")


def test_missing_file_and_wrong_layout(tmp_path):
    with pytest.raises(CheckpointError, match="checkpoint not found"):
        ckpt.read_checkpoint(tmp_path / "nope.pth")
    torch.save({"conv1.weight": torch.zeros(3), "fc.bias": torch.zeros(2)}, tmp_path / "other.pth")
    with pytest.raises(CheckpointError, match="unrecognised key layout"):
        ckpt.read_checkpoint(tmp_path / "other.pth")


def test_wrong_shape_missing_and_unexpected_keys_are_named(tmp_path, official_sd_t2):
    sd = dict(official_sd_t2)
    sd["RE_Net.head_E.conv.weight"] = torch.zeros(64, 64, 1, 1)
    del sd["DE_Net.conv1.conv.bias"]
    sd["RE_Net.extra.weight"] = torch.zeros(1)
    torch.save(sd, tmp_path / "c.pth")
    with pytest.raises(CheckpointError) as e:
        ckpt.read_checkpoint(tmp_path / "c.pth")
    msg = str(e.value)
    assert "1 missing: DE_Net.conv1.conv.bias" in msg
    assert "1 unexpected: RE_Net.extra.weight" in msg
    assert "RE_Net.head_E.conv.weight (64x64x1x1, expected 64x64x3x3)" in msg
    assert "\n" not in msg


class _Payload:
    def __reduce__(self):
        return (print, ("unpickled code ran",))


def test_pickled_objects_are_never_unpickled(tmp_path):
    path = tmp_path / "evil.pth"
    torch.save({"state_dict": collections.OrderedDict(a=_Payload())}, path)
    with pytest.raises(CheckpointError, match="refusing to unpickle"):
        ckpt.read_checkpoint(path)


def test_random_weights_are_seeded_and_labelled():
    a, b = ckpt.random_weights(blocks=2, seed=5), ckpt.random_weights(blocks=2, seed=5)
    assert a.identity == "random-seed-5" and a.is_random
    assert all(torch.equal(a.state_dict[k], b.state_dict[k]) for k in a.state_dict)
    assert not torch.equal(
        a.state_dict["encoder.weight"], ckpt.random_weights(blocks=2, seed=6).state_dict["encoder.weight"]
    )


def test_nan_weights_are_refused_in_one_line(tmp_path, capsys):
    from scaoed_deploy.cli import main

    w = ckpt.random_weights(blocks=1, seed=0)
    w.state_dict["z_net.tail.weight"][0, 0, 0, 0] = float("nan")
    path = tmp_path / "nan.safetensors"
    ckpt.save_safetensors(w, path, stages=1)
    with pytest.raises(CheckpointError, match="1 NaN/Inf value.*z_net.tail.weight"):
        ckpt.read_checkpoint(path)
    img = tmp_path / "in.png"
    write_image(img, Image(rgb=np.full((16, 16, 3), 0.5, np.float32)))
    assert main(["denoise", str(img), str(tmp_path / "out.png"), "-m", str(path)]) == 1
    assert "NaN/Inf" in one_error(capsys.readouterr().err) and not (tmp_path / "out.png").exists()


def test_a_backend_that_gives_nan_is_refused_and_nothing_is_written(tmp_path):
    from scaoed_deploy.errors import ScaoedError
    from scaoed_deploy.runtime import Denoiser, RunOptions, open_runner

    w = ckpt.random_weights(blocks=1, seed=0)  # damaged in memory, past the loader's check
    w.state_dict["z_net.tail.weight"][0, 0, 0, 0] = float("nan")
    runner = open_runner(None, "torch", RunOptions(stages=1, device="cpu", weights=w))
    with pytest.raises(ScaoedError, match="gave NaN/Inf"):
        runner(np.full((1, 3, 16, 16), 0.5, np.float32))
    quiet = open_runner(None, "torch", RunOptions(stages=1, device="cpu", weights=w, check_finite=False))
    assert not np.isfinite(quiet(np.full((1, 3, 16, 16), 0.5, np.float32))).all()  # parity sees it and reports it
    with pytest.raises(ScaoedError, match="gave NaN/Inf"):
        Denoiser(runner).denoise_array(np.full((16, 16, 3), 0.5, np.float32))


def test_a_round_trip_through_the_authors_layout_keeps_k_provenance_and_storage(tmp_path, capsys):
    from scaoed_deploy.cli import main
    from scaoed_deploy.weights import DEMO_PATH

    demo = ckpt.read_checkpoint(DEMO_PATH)
    assert main(["convert", str(DEMO_PATH), str(tmp_path / "a.pth")]) == 0
    assert "the authors' layout" in capsys.readouterr().out
    assert main(["convert", str(tmp_path / "a.pth"), str(tmp_path / "b.safetensors")]) == 0
    out = capsys.readouterr().out
    assert "ours" not in out and "scaoed-deploy's layout" not in out and "the authors' layout" in out
    back = ckpt.read_checkpoint(tmp_path / "b.safetensors")
    assert (back.stages, back.provenance, back.storage) == (demo.stages, demo.provenance, demo.storage)
    assert back.storage == "float16" and (tmp_path / "b.safetensors").stat().st_size < DEMO_PATH.stat().st_size * 1.1
    assert all(torch.equal(back.state_dict[k], v) for k, v in demo.state_dict.items())
