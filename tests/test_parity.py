"""Parity harness: exact artifacts pass, broken ones fail and are localised, reports are atomic."""

from __future__ import annotations

import copy
import hashlib
import json
import shutil
from pathlib import Path

import numpy as np
import onnx
import pytest
from conftest import DATA, needs_data
from onnx import TensorProto, helper, numpy_helper
from references import one_error

from scaoed_deploy import checkpoint as ckpt
from scaoed_deploy.artifact import count_nfae_epsilons, infer_onnx_precision
from scaoed_deploy.cli import main
from scaoed_deploy.errors import ScaoedError, VerificationError
from scaoed_deploy.parity import load_artifact, run_parity, thresholds_for, write_reports
from scaoed_deploy.serve import RepoOptions, make_repository


@pytest.fixture(scope="module")
def weights():
    return ckpt.random_weights(blocks=2, seed=0)


@pytest.fixture(scope="module")
def fp32_artifact(k2_maps_onnx):
    return k2_maps_onnx


def _without_nfae_epsilon(src, dst):
    """The pitfall, planted: every Add of 1e-16 removed and its consumers rewired."""
    m = onnx.load(str(src))
    eps = {
        i.name
        for i in m.graph.initializer
        if i.dims in ([], [1]) and abs(numpy_helper.to_array(i).item() - 1e-16) < 1e-20
    }
    rename, keep = {}, []
    for n in m.graph.node:
        if n.op_type == "Add" and set(n.input) & eps:
            rename[n.output[0]] = next(i for i in n.input if i not in eps)
        else:
            keep.append(n)
    for n in keep:
        for j, name in enumerate(n.input):
            n.input[j] = rename.get(name, name)
    del m.graph.node[:]
    m.graph.node.extend(keep)
    assert rename and count_nfae_epsilons(m) == 0
    onnx.save(m, str(dst))
    return dst


def _with_perturbed_conv(src, dst, name="z_net.blocks.0.head.convs.1.weight"):
    m = onnx.load(str(src))
    init = next(i for i in m.graph.initializer if i.name.endswith(name))
    init.CopyFrom(numpy_helper.from_array(numpy_helper.to_array(init) + np.float32(0.05), init.name))
    onnx.save(m, str(dst))
    return dst


def test_an_exact_fp32_export_passes(fp32_artifact, weights):
    r = run_parity(load_artifact(fp32_artifact), weights, data_dir=None)
    assert r.passed and r.artifact.precision == "fp32" and r.stages == 2
    assert {o.check for o in r.outcomes} == {"no NaN/Inf in any output", "tensor: max abs error vs eager"}
    assert {t.output for t in r.tensors} == {"denoised", "noise_map_1", "noise_map_2"}
    assert {t.case for t in r.tensors} >= {"random #1", "random #2", "random #3", "black image", "flat gray image"}
    assert max(t.max_abs for t in r.tensors) <= 1e-4 and r.localisation is None


@needs_data
def test_task_agreement_on_real_pairs(fp32_artifact, weights):
    r = run_parity(load_artifact(fp32_artifact), weights, data_dir=DATA / "sidd")
    assert [t.image for t in r.task] == ["1217", "1222", "329", "44"]
    assert all(abs(t.dpsnr) < 1e-3 and abs(t.dssim) < 1e-4 for t in r.task)
    assert r.passed


@pytest.mark.slow
def test_removed_nfae_epsilon_fails_and_is_localised(fp32_artifact, weights, tmp_path):
    broken = _without_nfae_epsilon(fp32_artifact, tmp_path / "noeps.onnx")
    r = run_parity(load_artifact(broken), weights, allow_unverified=True)  # measure the sabotaged file
    assert not r.passed
    assert [o.check for o in r.failures] == ["no NaN/Inf in any output"]
    loc = r.localisation
    assert loc["found"] and loc["nonfinite"]
    assert loc["module"] == "u_ini.nfae" and loc["op_type"] == "Div"
    assert loc["where"] == "u_ini / nfae / Div"


def test_perturbed_conv_weight_fails_and_is_localised(fp32_artifact, weights, tmp_path):
    broken = _with_perturbed_conv(fp32_artifact, tmp_path / "perturbed.onnx")
    with pytest.raises(VerificationError, match="edited after verification"):  # its content is not what was verified
        run_parity(load_artifact(broken), weights)
    r = run_parity(load_artifact(broken), weights, allow_unverified=True)
    failed = {o.check: o for o in r.failures}
    assert (
        set(failed) == {"tensor: max abs error vs eager"} and failed["tensor: max abs error vs eager"].measured > 1e-4
    )
    assert r.localisation["module"] == "z_net.blocks.0.head.convs.1" and r.localisation["op_type"] == "Conv"
    assert not r.localisation["nonfinite"]


@pytest.mark.slow
def test_thresholds_follow_precision_and_can_be_overridden(fp32_artifact, weights):
    art = load_artifact(fp32_artifact, precision="fp16")
    r = run_parity(art, weights, thresholds=thresholds_for("fp16"))
    psnr = next(o for o in r.outcomes if o.check.startswith("tensor: output PSNR"))
    assert psnr.passed and psnr.measured >= 50
    assert next(o for o in r.outcomes if o.check.startswith("task")).passed is None  # no data: not evaluated
    strict = run_parity(art, weights, thresholds=thresholds_for("fp16", min_psnr=1000.0), localise=False)
    assert not strict.passed and strict.failures[0].check.startswith("tensor: output PSNR")


def test_artifact_from_other_weights_or_k_is_refused(fp32_artifact):
    art = load_artifact(fp32_artifact)
    with pytest.raises(ScaoedError, match="other weights"):
        run_parity(art, ckpt.random_weights(blocks=2, seed=1))
    with pytest.raises(ScaoedError, match="K=2, but --stages says 3"):
        run_parity(art, ckpt.random_weights(blocks=2, seed=0), stages=3)


def test_missing_corrupt_and_unknown_artifacts(tmp_path, fp32_artifact):
    with pytest.raises(ScaoedError, match="artifact not found"):
        load_artifact(tmp_path / "none.onnx")
    data = fp32_artifact.read_bytes()
    (tmp_path / "cut.onnx").write_bytes(data[: len(data) // 3])
    with pytest.raises(ScaoedError, match="not a valid ONNX model"):
        load_artifact(tmp_path / "cut.onnx")
    (tmp_path / "x.bin").write_bytes(b"1")
    with pytest.raises(ScaoedError, match="unknown artifact type"):
        load_artifact(tmp_path / "x.bin")
    (tmp_path / "e.engine").write_bytes(b"")
    with pytest.raises(ScaoedError, match="empty engine"):
        load_artifact(tmp_path / "e.engine")


def test_engine_without_tensorrt_says_so(tmp_path, weights):
    try:
        import tensorrt  # noqa: F401

        pytest.skip("tensorrt is importable here")
    except ImportError:
        pass
    from scaoed_deploy.runtime.tensorrt import TensorRTMissing
    from scaoed_deploy.util.files import sha256_of

    (tmp_path / "m.engine").write_bytes(b"not really an engine")
    # its sidecar matches (a tampered or unbuilt engine is refused before TensorRT is even needed)
    (tmp_path / "m.json").write_text(json.dumps({"built": True, "engine_sha256": sha256_of(tmp_path / "m.engine")}))
    art = load_artifact(tmp_path / "m.engine")
    with pytest.raises(TensorRTMissing, match="TensorRT is not installed") as e:
        run_parity(art, weights, stages=2)
    assert e.value.exit_code == 4


def _tiny_graph(dtype, with_qdq=False):
    x = helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 3])
    y = helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 3])
    nodes = [
        helper.make_node("Cast", ["x"], ["h"], to=dtype),
        helper.make_node("Cast", ["h"], ["y"], to=TensorProto.FLOAT),
    ]
    inits = []
    if with_qdq:
        inits = [
            numpy_helper.from_array(np.array(0.1, np.float32), "s"),
            numpy_helper.from_array(np.array(0, np.int8), "z"),
        ]
        nodes = [
            helper.make_node("QuantizeLinear", ["x", "s", "z"], ["q"]),
            helper.make_node("DequantizeLinear", ["q", "s", "z"], ["y"]),
        ]
    return helper.make_model(helper.make_graph(nodes, "g", [x], [y], inits))


def test_precision_is_inferred_from_the_graph():
    assert infer_onnx_precision(_tiny_graph(TensorProto.FLOAT16)) == "fp16"
    assert infer_onnx_precision(_tiny_graph(TensorProto.BFLOAT16)) == "bf16"
    assert infer_onnx_precision(_tiny_graph(TensorProto.FLOAT, with_qdq=True)) == "int8"
    assert infer_onnx_precision(_tiny_graph(TensorProto.FLOAT)) == "fp32"


@pytest.mark.slow
def test_reports_are_written_and_atomic(fp32_artifact, weights, tmp_path, monkeypatch):
    r = run_parity(load_artifact(fp32_artifact), weights)
    ref = {"weights": weights.identity, "blocks": 2, "stages": 2}
    written = write_reports([r], tmp_path, ref, "scaoed-deploy parity test")
    assert sorted(p.name for p in written) == ["k2_maps.png", "parity.json", "parity.md"]
    data = json.loads((tmp_path / "parity.json").read_text())
    assert data["passed"] and data["artifacts"][0]["precision"] == "fp32"
    assert "| tensor: max abs error vs eager |" in (tmp_path / "parity.md").read_text()
    assert (tmp_path / "k2_maps.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    before = (tmp_path / "parity.md").read_text()
    import scaoed_deploy.parity.report as rep

    monkeypatch.setattr(rep, "markdown", lambda *a: (_ for _ in ()).throw(RuntimeError("disk full")))
    with pytest.raises(RuntimeError):
        write_reports([r], tmp_path, ref)
    assert (tmp_path / "parity.md").read_text() == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["k2_maps.png", "parity.json", "parity.md"]


@pytest.mark.slow
def test_cli_parity_pass_and_fail(fp32_artifact, tmp_path, capsys):
    artifact = Path(shutil.copy(fp32_artifact, tmp_path / "k2.onnx"))  # the parity record is written beside it
    code = main(["parity", str(artifact), "--report", str(tmp_path / "ok"), "--json"])
    out, err = capsys.readouterr()
    assert code == 0, err
    report = json.loads(out)
    assert report["passed"] and (tmp_path / "ok" / "parity.json").is_file()
    record = json.loads((tmp_path / "k2.parity.json").read_text())
    assert record["sha256"] == hashlib.sha256(artifact.read_bytes()).hexdigest() and record["passed"]
    assert (
        record["checks"]
        == {o["check"]: o["measured"] for o in report["artifacts"][0]["outcomes"] if o["measured"] is not None}
        != {}
    )
    # triton-repo reads the record back for exactly this file, and ignores it once the file changes
    made = make_repository([artifact], tmp_path / "repo", RepoOptions(python_backend=True))
    params = made["models"][0]["parameters"]
    assert params["parity_passed"] == "yes" and json.loads(params["parity_checks"]) == record["checks"]
    changed = onnx.load(str(artifact))
    changed.doc_string += " (edited)"
    onnx.save(changed, str(artifact))
    made = make_repository([artifact], tmp_path / "repo2", RepoOptions(python_backend=True))
    assert "parity_passed" not in made["models"][0]["parameters"]
    broken = _with_perturbed_conv(fp32_artifact, tmp_path / "bad.onnx")
    code = main(["parity", str(broken), "--report", str(tmp_path / "bad"), "--no-localise"])
    assert code == 3 and "edited after verification" in one_error(capsys.readouterr().err)
    assert not (tmp_path / "bad").exists()  # refused before any work
    code = main(["parity", str(broken), "--report", str(tmp_path / "bad"), "--no-localise", "--allow-unverified"])
    out, err = capsys.readouterr()
    assert code == 3 and "FAILED" in out and not (tmp_path / "bad.parity.json").exists()
    assert err.strip().splitlines()[-1].startswith("error: 1 of 1 artifact(s) failed parity")
    code = main(["parity", str(tmp_path / "missing.onnx")])
    _, err = capsys.readouterr()
    assert code == 1 and one_error(err) == f"error: artifact not found: {tmp_path / 'missing.onnx'}"


def test_artifact_from_a_checkpoint_needs_it(tmp_path, capsys, tiny_checkpoint, tiny_k1_onnx):
    path = tiny_k1_onnx
    code = main(["parity", str(path), "--report", str(tmp_path / "r")])
    _, err = capsys.readouterr()
    assert code == 1 and "pass it with --checkpoint" in err
    code = main(["parity", str(path), "-c", str(tiny_checkpoint), "--report", str(tmp_path / "r")])
    capsys.readouterr()
    assert code == 0


def test_localisation_compares_against_a_reference_built_like_the_artifact(fp32_artifact, weights):
    from scaoed_deploy.parity.localise import first_divergence, reference_graph

    art = load_artifact(fp32_artifact)
    ref = reference_graph(art, weights, 2)
    x = np.random.default_rng(0).random((1, 3, 32, 32), dtype=np.float32)
    same = first_divergence(copy.deepcopy(onnx.load(str(fp32_artifact))), ref, x, 1e-4)
    assert not same["found"] and same["compared_tensors"] > 100


def test_progress_names_the_artifact_by_its_final_name(fp32_artifact, weights):
    seen = []
    run_parity(
        load_artifact(fp32_artifact), weights, localise=False, step=seen.append, label="scaoednet_k2_t2_fp16.onnx"
    )
    assert seen and all(s.startswith("scaoednet_k2_t2_fp16.onnx: ") for s in seen)
