from __future__ import annotations

import dataclasses
import os
import shutil

import pytest
import torch
from references import SHARED, TSV, official_state_dict

DATA = SHARED / "data"

needs_reference = pytest.mark.skipif(not TSV.is_file(), reason="../shared/reference is absent")
needs_data = pytest.mark.skipif(not (DATA / "sidd").is_dir(), reason="../shared/data is absent")


@pytest.fixture(autouse=True)
def _few_threads():
    torch.set_num_threads(2)


@pytest.fixture(autouse=True, scope="session")
def _own_cache(tmp_path_factory):
    """Learned step times go to a folder of this run, never the user's cache (subprocesses inherit it)."""
    old = os.environ.get("SCAOED_DEPLOY_CACHE")
    os.environ["SCAOED_DEPLOY_CACHE"] = str(tmp_path_factory.mktemp("cache"))
    yield
    if old is None:
        os.environ.pop("SCAOED_DEPLOY_CACHE", None)
    else:
        os.environ["SCAOED_DEPLOY_CACHE"] = old


@pytest.fixture(scope="session")
def official_sd_t2():
    """Authors'-layout weights with T = 2 blocks, from the key table."""
    if not TSV.is_file():
        pytest.skip("../shared/reference is absent")
    return official_state_dict(blocks=2, seed=0)


@pytest.fixture(scope="session")
def exports(tmp_path_factory):
    """exports(weights, spec) -> ExportResult: each (weights, spec, data) exported once per pytest run.

    A dynamo export takes seconds on 2 cores; tests that only read an export share this cache. Tests of
    the export itself (failures, monkeypatched steps) call export_onnx directly."""
    from scaoed_deploy import export as ex

    root = tmp_path_factory.mktemp("exports")
    made = {}

    def get(weights, spec, data_dir=None, name=None):
        """The export of ``weights`` as ``spec`` says, named ``name`` (default: export's own file name)."""
        key = (weights.identity, weights.blocks, repr(spec), str(data_dir))
        name = name or ex.default_filename(spec.stages, weights.blocks, spec)
        if key not in made:
            folder = root / str(len(made))
            made[key] = ex.export_onnx(weights, spec, folder / name, data_dir)
        result = made[key]
        if result.path.name != name:  # the same export under the name a test expects
            path = result.path.with_name(name)
            if not path.exists():
                shutil.copyfile(result.path, path)
            result = dataclasses.replace(result, path=path)
        return result

    return get


@pytest.fixture(scope="session")
def random_k1_onnx(exports):
    """A K=1, T=1 export of seeded random weights (seed 0): the small graph the precision and engine tests share."""
    from scaoed_deploy import checkpoint as ckpt
    from scaoed_deploy import export as ex

    return exports(ckpt.random_weights(blocks=1, seed=0), ex.ExportSpec(stages=1), name="k1.onnx").path


@pytest.fixture(scope="session")
def tiny_checkpoint(tmp_path_factory, official_sd_t2):
    """A T = 2 checkpoint in the authors' layout, wrapped and prefixed as DataParallel saves it (read only)."""
    path = tmp_path_factory.mktemp("tiny") / "tiny.pth"
    torch.save({"state_dict": {f"module.{k}": v for k, v in official_sd_t2.items()}}, path)
    return path


@pytest.fixture(scope="session")
def tiny_k1_onnx(tiny_checkpoint, exports):
    """The K = 1 export of ``tiny_checkpoint`` under export's default name (scaoednet_k1_t2_fp32.onnx)."""
    from scaoed_deploy import checkpoint as ckpt
    from scaoed_deploy import export as ex

    sidd = DATA / "sidd" if (DATA / "sidd").is_dir() else None  # checked on the real crops too: test_export's K = 1
    return exports(ckpt.read_checkpoint(tiny_checkpoint), ex.ExportSpec(stages=1), data_dir=sidd).path


@pytest.fixture(scope="session")
def k2_maps_onnx(exports):
    """A K = 2, T = 2 export with its noise maps, of ``random_weights(blocks=2, seed=0)``."""
    from scaoed_deploy import checkpoint as ckpt
    from scaoed_deploy import export as ex

    return exports(
        ckpt.random_weights(blocks=2, seed=0), ex.ExportSpec(stages=2, noise_maps=True), name="k2_maps.onnx"
    ).path


def pytest_collection_modifyitems(items):
    """A test that needs a dynamo export (the ``exports`` cache, directly or through a fixture), a Ray cluster
    (test_cluster's ``cluster``) or a running Triton server (test_serve's ``server``, test_serve_faults' ``served``)
    is ``slow``: ``pytest -m "not slow"`` is the quick loop, with none of them in it."""
    for item in items:
        if {"exports", "cluster", "server", "served"} & set(getattr(item, "fixturenames", ())):
            item.add_marker(pytest.mark.slow)


@pytest.fixture(scope="session")
def calib_dir(tmp_path_factory):
    """Two 80 x 80 smooth noisy images: a calibration folder for INT8 builds (not SIDD)."""
    import numpy as np

    from scaoed_deploy.images import Image, write_image

    d = tmp_path_factory.mktemp("calib")
    rng = np.random.default_rng(1)
    for i in range(2):
        yy, xx = np.mgrid[0:80, 0:80] / 80.0
        base = np.stack([xx, yy, 0.5 + 0.3 * np.sin(5 * xx * yy + i)], axis=2)
        write_image(
            d / f"c{i}.png", Image(rgb=np.clip(base + rng.normal(0, 0.04, base.shape), 0, 1).astype(np.float32))
        )
    return d


@pytest.fixture(scope="session")
def fleet_package(tmp_path_factory, exports):
    """``optimize --cpus native,avx2`` of seeded random weights (T = 1, seed 0; their K = 1 export the session's
    ``random_k1_onnx``) at K = 1, ONNX Runtime INT8 against eager, scored on two SIDD pairs: one package with this
    CPU's choice and the avx2 class's."""
    from scaoed_deploy import checkpoint as ckpt
    from scaoed_deploy import cpumask
    from scaoed_deploy import export as ex
    from scaoed_deploy.cli import main
    from scaoed_deploy.cpu import mask_refusal

    if not (DATA / "sidd").is_dir():
        pytest.skip("../shared/data is absent")
    why = cpumask.unsupported() or mask_refusal("avx2")
    if why:
        pytest.skip(why)
    root = tmp_path_factory.mktemp("fleet")
    export, data = root / "export", root / "data"
    export.mkdir()
    k1 = exports(ckpt.random_weights(blocks=1, seed=0), ex.ExportSpec(stages=1)).path
    shutil.copyfile(k1, export / k1.name)
    for sub in ("noisy", "clean"):
        (data / sub).mkdir(parents=True)
        for name in sorted(p.name for p in (DATA / "sidd" / "noisy").iterdir())[:2]:
            (data / sub / name).symlink_to(DATA / "sidd" / sub / name)
    args = ["optimize", "--res", "32", "--stages", "1", "--backends", "onnxruntime-int8", "--random-seed", "0"]
    args += ["--blocks", "1", "--threads", "1", "--iters", "2", "--warmup", "0", "--calib-count", "4"]
    args += ["--export-dir", str(export), "--data", str(data), "--max-dpsnr", "10", "--cpus", "native,avx2"]
    assert main([*args, "-o", str(root / "pkg"), "--json"]) == 0
    return root / "pkg"
