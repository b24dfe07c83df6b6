"""ONNX export: verified files per K, dynamic shapes, the NFAE epsilon pitfall, metadata, failures."""

from __future__ import annotations

import copy
import json

import numpy as np
import onnx
import pytest
import torch
from conftest import DATA, needs_data
from references import official_forward

from scaoed_deploy import checkpoint as ckpt
from scaoed_deploy import export as ex
from scaoed_deploy.artifact import count_nfae_epsilons, module_paths, read_metadata
from scaoed_deploy.cli import main
from scaoed_deploy.cost import model_cost
from scaoed_deploy.errors import ScaoedError, VerificationError
from scaoed_deploy.runtime import OnnxRuntimeRunner


@pytest.fixture(scope="module")
def weights(tiny_checkpoint, official_sd_t2):
    """T = 2 weights in the authors' layout (from the key table), read back through the loader: the session's tiny
    checkpoint, so that its K = 1 export (tiny_k1_onnx) is this module's too."""
    return ckpt.read_checkpoint(tiny_checkpoint), official_sd_t2


@pytest.fixture(scope="module")
def exported(weights, exports):
    """One export per K (T = 2; K = 2 has every module K = 5 has), made once for the run; K = 1 is also checked on
    the SIDD crops when present."""
    w, _ = weights
    sidd = DATA / "sidd" if (DATA / "sidd").is_dir() else None
    return {k: exports(w, ex.ExportSpec(stages=k), data_dir=sidd if k == 1 else None) for k in (1, 2)}


@pytest.fixture(scope="module")
def raw_k2(weights):
    """The exporter's raw (unoptimised) graph of the T = 2 weights at K = 2: the tests of export's later steps
    (optimiser, verification failure, simplifier fallback) start from it instead of exporting again."""
    w, _ = weights
    return ex.torch_export(ckpt.build_model(w, 2), ex.ExportSpec(stages=2))


@pytest.mark.parametrize("stages", [1, 2])
def test_each_k_exports_a_verified_file(exported, stages):
    r = exported[stages]
    assert r.path.name == f"scaoednet_k{stages}_t2_fp32.onnx" and r.path.is_file()
    onnx.checker.check_model(str(r.path), full_check=True)
    cases = {c.case for c in r.checks}
    assert {"random #1", "random #2", "black image", ex.DEAD_CHANNEL_CASE} <= cases
    assert all(c.finite and c.max_abs <= 1e-4 for c in r.checks)
    assert count_nfae_epsilons(onnx.load(str(r.path))) == 2 * stages


@pytest.mark.parametrize("stages", [1, 2])
def test_dynamic_shapes_two_sizes_and_batch_2_through_one_file(exported, weights, stages):
    _, sd = weights
    runner = OnnxRuntimeRunner(exported[stages].path)
    dims = [d.dim_param for d in onnx.load(str(exported[stages].path)).graph.input[0].type.tensor_type.shape.dim]
    assert dims[0] and dims[2] and dims[3] and dims[1] == ""
    rng = np.random.default_rng(stages)
    for shape in [(1, 3, 32, 32), (2, 3, 40, 56)]:
        x = rng.random(shape, dtype=np.float32)
        ref, _ = official_forward(sd, torch.from_numpy(x), stages)
        got = runner(x)
        assert got.shape == shape
        assert np.abs(got - ref.numpy()).max() <= 1e-4


def test_constant_channels_stay_finite(exported, weights):
    _, sd = weights
    x = np.zeros((1, 3, 32, 32), np.float32)  # every u_ini channel constant: NFAE's 0/0 case
    got = OnnxRuntimeRunner(exported[2].path)(x)
    ref, _ = official_forward(sd, torch.from_numpy(x), 2)
    assert np.isfinite(got).all() and np.abs(got - ref.numpy()).max() <= 1e-4


@pytest.mark.slow
def test_the_exporters_optimiser_drops_the_epsilon_and_verification_catches_it(weights, raw_k2, tmp_path, monkeypatch):
    w, _ = weights
    spec = ex.ExportSpec(stages=2, optimizer="onnxscript")
    model = ckpt.build_model(w, 2)
    raw = raw_k2
    # Without the structural guard, the numerical checks see the NaN.
    pitfall = ex.simplify(copy.deepcopy(raw), "onnxscript")
    checks, _ = ex.verify_onnx(pitfall, model, spec, None)
    broken = {c.case for c in checks if not c.finite}
    assert {"black image", ex.DEAD_CHANNEL_CASE} <= broken
    # export_onnx's own pipeline on the same exporter output (one dynamo export for both halves).
    monkeypatch.setattr(ex, "torch_export", lambda m, s: copy.deepcopy(raw))
    with pytest.raises(VerificationError, match=r"1e-16' is missing .*0 of 4"):
        ex.export_onnx(w, spec, tmp_path / "k2.onnx")
    assert list(tmp_path.iterdir()) == []


def test_metadata_round_trip(exported, weights):
    w, _ = weights
    meta = read_metadata(exported[2].path)
    assert meta["stages"] == "2" and meta["blocks"] == "2" and meta["precision"] == "fp32"
    assert meta["weights"] == w.sha256 and len(w.sha256) == 64
    assert meta["macs_512x512"] == str(model_cost(2, 2, 512, 512).total_macs)
    assert "H and W even" in meta["input"] and "[0, 1]" in meta["input"]
    assert "torch" in json.loads(meta["versions"]) and "onnxslim" in meta["exporter"]
    assert json.loads(meta["verification"])["max_abs"] <= 1e-4


def test_nodes_carry_their_module_paths(exported):
    model = onnx.load(str(exported[2].path))
    paths = module_paths(model)
    assert len(paths) >= 0.9 * sum(len(n.output) for n in model.graph.node)
    by_module = {}
    for node in model.graph.node:
        by_module.setdefault(paths.get(node.output[0]), set()).add(node.op_type)
    assert {"Div", "Sigmoid", "ReduceMean"} <= by_module["u_ini.nfae"]
    assert "Div" in by_module["u_net.nfae"]
    assert "ReduceMax" in by_module["z_net.blocks.1.cig_sa"]
    assert "Conv" in by_module["z_net.blocks.0.head.convs.2"]


def _corrupt(proto):
    """Perturb one convolution weight: a wrong graph that still runs."""
    from onnx import numpy_helper

    for init in proto.graph.initializer:
        if init.name == "z_net.tail.weight":
            arr = numpy_helper.to_array(init) + 0.05
            init.CopyFrom(numpy_helper.from_array(arr.astype(np.float32), init.name))
            return proto
    raise AssertionError("z_net.tail.weight not found")


@pytest.mark.slow
def test_a_corrupted_graph_fails_and_leaves_no_file(weights, raw_k2, tmp_path, monkeypatch):
    w, _ = weights
    monkeypatch.setattr(ex, "torch_export", lambda model, spec: _corrupt(copy.deepcopy(raw_k2)))
    target = tmp_path / "out" / "k2.onnx"
    with pytest.raises(VerificationError, match="max abs error"):
        ex.export_onnx(w, ex.ExportSpec(stages=2), target)
    assert not target.exists()
    assert not (tmp_path / "out").exists() or list((tmp_path / "out").iterdir()) == []


@pytest.mark.slow
def test_a_simplifier_that_breaks_parity_falls_back_to_the_unsimplified_graph(weights, raw_k2, tmp_path, monkeypatch):
    w, _ = weights
    real = ex.simplify
    monkeypatch.setattr(ex, "torch_export", lambda model, spec: copy.deepcopy(raw_k2))
    monkeypatch.setattr(ex, "simplify", lambda proto, opt: _corrupt(real(proto, opt)))
    r = ex.export_onnx(w, ex.ExportSpec(stages=2), tmp_path / "k2.onnx")
    assert not r.simplified and any("onnxslim" in n for n in r.notes)
    assert all(c.max_abs <= 1e-4 for c in r.checks)


def test_unwritable_output_path_fails_before_exporting(weights, tmp_path):
    w, _ = weights
    blocker = tmp_path / "file"
    blocker.write_text("x")
    with pytest.raises(ScaoedError, match="not a writable folder"):
        ex.export_onnx(w, ex.ExportSpec(stages=1), blocker / "sub" / "k1.onnx")


@pytest.mark.slow
def test_static_shape_and_batch(weights, tmp_path):
    w, sd = weights
    spec = ex.ExportSpec(stages=1, static_hw=(32, 48), batch=2)
    r = ex.export_onnx(w, spec, tmp_path / ex.default_filename(1, 2, spec))
    assert r.path.name == "scaoednet_k1_t2_fp32_s32x48_b2.onnx"
    dims = [d.dim_value for d in onnx.load(str(r.path)).graph.input[0].type.tensor_type.shape.dim]
    assert dims == [2, 3, 32, 48]
    x = np.random.default_rng(0).random((2, 3, 32, 48), dtype=np.float32)
    ref, _ = official_forward(sd, torch.from_numpy(x), 1)
    assert np.abs(OnnxRuntimeRunner(r.path)(x) - ref.numpy()).max() <= 1e-4


def test_noise_maps_are_exported_and_checked(exports, k2_maps_onnx):
    w = ckpt.random_weights(blocks=2, seed=0)  # k2_maps_onnx's weights, in the authors' layout for the reference
    sd = ckpt.ours_to_official(w.state_dict)
    r = exports(w, ex.ExportSpec(stages=2, noise_maps=True), name="k2_maps.onnx")
    assert {c.output for c in r.checks} == {"denoised", "noise_map_1", "noise_map_2"}
    x = np.random.default_rng(1).random((1, 3, 32, 32), dtype=np.float32)
    outs = OnnxRuntimeRunner(r.path).run(x)
    _, maps = official_forward(sd, torch.from_numpy(x), 2)
    assert len(outs) == 3
    for got, ref in zip(outs[1:], maps):
        assert np.abs(got - ref.numpy()).max() <= 1e-4


@needs_data
def test_real_sidd_crops_are_part_of_the_check(exported):
    r = exported[1]
    real = [c for c in r.checks if c.case.startswith("real noise")]
    assert len(real) == 4 and all(c.shape == (1, 3, 256, 256) and c.max_abs <= 1e-4 for c in real)


@pytest.mark.slow
def test_cli_export_json_and_failure_exit_code(capsys, tmp_path, monkeypatch):
    code = main(["export", "--stages", "1", "--random-seed", "0", "--blocks", "1", "-o", str(tmp_path), "--json"])
    out, err = capsys.readouterr()
    assert code == 0, err
    data = json.loads(out)
    assert data["weights"] == "random-seed-0" and data["exports"][0]["max_abs"] <= 1e-4
    assert (tmp_path / "scaoednet_k1_t1_fp32.onnx").is_file()

    def fails(*a, **k):  # the verification failure itself is test_the_exporters_optimiser_drops_the_epsilon_...'s
        raise VerificationError("ONNX Runtime disagrees with eager (made to fail here)")

    monkeypatch.setattr(ex, "torch_export", fails)
    code = main(["export", "--stages", "1", "--random-seed", "0", "--blocks", "1", "-o", str(tmp_path / "bad")])
    _, err = capsys.readouterr()
    assert code == 3 and "Traceback" not in err and not (tmp_path / "bad").exists()
    assert err.strip().splitlines()[-1].startswith("error: ")
