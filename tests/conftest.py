from __future__ import annotations

import sys
from pathlib import Path

import pytest
import torch

sys.path.insert(0, str(Path(__file__).parent))

from references import SHARED, TSV, official_state_dict  # noqa: E402

DATA = SHARED / "data"

needs_reference = pytest.mark.skipif(not TSV.is_file(), reason="../shared/reference is absent")
needs_data = pytest.mark.skipif(not (DATA / "sidd").is_dir(), reason="../shared/data is absent")


@pytest.fixture(autouse=True)
def _few_threads():
    torch.set_num_threads(2)


@pytest.fixture(scope="session")
def official_sd_t2():
    """Authors'-layout weights with T = 2 blocks, from the key table."""
    if not TSV.is_file():
        pytest.skip("../shared/reference is absent")
    return official_state_dict(blocks=2, seed=0)


@pytest.fixture(scope="session")
def random_k1_onnx(tmp_path_factory):
    """A K=1, T=1 export of seeded random weights (seed 0): the small graph the precision and engine tests share."""
    from scaoed_deploy import checkpoint as ckpt
    from scaoed_deploy import export as ex

    path = tmp_path_factory.mktemp("random_k1") / "k1.onnx"
    ex.export_onnx(ckpt.random_weights(blocks=1, seed=0), ex.ExportSpec(stages=1), path)
    return path


@pytest.fixture
def tiny_checkpoint(tmp_path, official_sd_t2):
    """A T = 2 checkpoint in the authors' layout, wrapped and prefixed as DataParallel saves it."""
    path = tmp_path / "tiny.pth"
    torch.save({"state_dict": {f"module.{k}": v for k, v in official_sd_t2.items()}}, path)
    return path
