"""seal: verification bound to content. An edit of the graph or weights breaks the recorded digest (runners,
parity and triton-repo refuse the file), an edit of the metadata does not; exports and IRs record it."""

from __future__ import annotations

import numpy as np
import onnx
import pytest
from references import edited, one_error, sealed_onnx, tiny_conv_onnx

from scaoed_deploy.artifact import load_artifact, metadata_of, read_metadata, write_metadata
from scaoed_deploy.cli import main
from scaoed_deploy.errors import ScaoedError, VerificationError
from scaoed_deploy.images import Image, write_image
from scaoed_deploy.runtime import RunOptions, open_runner
from scaoed_deploy.seal import SEAL_KEY, check_seal, content_digest, ir_digest, onnx_digest, seal_ir
from scaoed_deploy.serve import RepoOptions, make_repository


def test_the_digest_covers_graph_and_weights_not_metadata(tmp_path):
    path = sealed_onnx(tmp_path / "m.onnx")
    meta = read_metadata(path)
    assert meta[SEAL_KEY] == content_digest(path) and check_seal(path, meta)
    proto = onnx.load(str(path))
    write_metadata(proto, dict(metadata_of(proto), command="edited by hand"))  # metadata only
    proto.doc_string = "another description"
    onnx.save(proto, str(path))
    assert check_seal(path, read_metadata(path))
    edited(path)
    with pytest.raises(VerificationError, match="edited after verification"):
        check_seal(path, read_metadata(path))
    assert check_seal(path, read_metadata(path), allow_unverified=True) is False


def test_a_digest_is_independent_of_the_serialisation_order_of_metadata(tmp_path):
    a = onnx.load(str(sealed_onnx(tmp_path / "a.onnx", seal=False)))
    b = onnx.ModelProto()
    b.CopyFrom(a)
    write_metadata(b, {"x": "1", "y": "2"})
    assert onnx_digest(a) == onnx_digest(b)


def test_runners_refuse_an_edited_file_unless_allowed(tmp_path):
    path = edited(sealed_onnx(tmp_path / "m.onnx"))
    with pytest.raises(VerificationError, match="edited after verification"):
        open_runner(path)
    x = np.random.default_rng(0).random((1, 3, 8, 8), dtype=np.float32)
    assert open_runner(path, options=RunOptions(allow_unverified=True))(x).shape == x.shape
    foreign = tiny_conv_onnx(tmp_path / "f.onnx")  # records no digest: nothing to differ from
    assert open_runner(foreign)(x).shape == x.shape


def test_denoise_and_triton_repo_refuse_a_verified_file_with_a_nan_weight(tmp_path, capsys):
    path = edited(sealed_onnx(tmp_path / "e.onnx"), scale=1.0, nan=True)
    write_image(tmp_path / "in.png", Image(rgb=np.random.default_rng(0).random((8, 8, 3), dtype=np.float32)))
    assert main(["denoise", str(tmp_path / "in.png"), str(tmp_path / "out.png"), "-m", str(path)]) == 3
    assert "e.onnx was edited after verification" in one_error(capsys.readouterr().err)
    assert main(["triton-repo", str(path), "-o", str(tmp_path / "repo")]) == 3
    assert "edited after verification" in one_error(capsys.readouterr().err)
    assert not (tmp_path / "out.png").exists() and not (tmp_path / "repo").exists()
    made = make_repository([path], tmp_path / "repo", RepoOptions(python_backend=True, allow_unverified=True))
    assert made["models"][0]["parameters"]["allow_unverified"] == "yes"  # its runner would refuse it otherwise


def test_triton_repo_refuses_a_verification_claim_without_a_digest(tmp_path):
    path = sealed_onnx(tmp_path / "old.onnx", seal=False)
    with pytest.raises(ScaoedError, match="no content digest"):
        make_repository([path], tmp_path / "repo", RepoOptions(python_backend=True))
    sealed = sealed_onnx(tmp_path / "new.onnx")
    assert make_repository([sealed], tmp_path / "repo", RepoOptions(python_backend=True))["models"]


def test_an_ir_is_sealed_over_its_xml_less_rt_info_and_its_weights(tmp_path):
    ov = pytest.importorskip("openvino")
    from openvino import opset13 as ops

    x = ops.parameter([1, 3, 4, 4], np.float32, name="noisy")
    w = ops.constant(np.full((3, 3, 1, 1), 0.5, np.float32))
    y = ops.convolution(x, w, [1, 1], [0, 0], [0, 0], [1, 1])
    y.output(0).get_tensor().set_names({"denoised"})
    model = ov.Model([ops.result(y)], [x], "tiny")
    model.set_rt_info("fp32", ["scaoed", "precision"])
    model.set_rt_info("stale", ["scaoed", SEAL_KEY])  # a copied digest is replaced, not kept
    ov.save_model(model, str(tmp_path / "m.xml"), compress_to_fp16=False)
    digest = seal_ir(tmp_path / "m.xml")
    art = load_artifact(tmp_path / "m.xml")
    assert art.metadata[SEAL_KEY] == digest == ir_digest(tmp_path / "m.xml") and check_seal(art.path, art.metadata)
    assert (tmp_path / "m.xml").read_text().count(SEAL_KEY) == 1
    weights = bytearray((tmp_path / "m.bin").read_bytes())
    weights[0] ^= 0xFF
    (tmp_path / "m.bin").write_bytes(bytes(weights))
    with pytest.raises(VerificationError, match="edited after verification"):
        check_seal(art.path, art.metadata)


def test_an_export_records_its_content_digest(tiny_k1_onnx):
    meta = read_metadata(tiny_k1_onnx)
    assert "verification" in meta and meta[SEAL_KEY] == content_digest(tiny_k1_onnx)
