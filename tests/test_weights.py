"""The shipped demo weights: they load, say what they are, and denoise real noise."""

from __future__ import annotations

import json

import numpy as np
import pytest
from conftest import DATA, needs_data

from scaoed_deploy.images import read_image, to_uint8
from scaoed_deploy.quality import psnr_ssim
from scaoed_deploy.runtime import Denoiser, TorchRunner
from scaoed_deploy.weights import DEMO_PATH, demo_weights

pytestmark = pytest.mark.skipif(not DEMO_PATH.is_file(), reason="this checkout has no demo weights")


def test_demo_weights_load_with_their_provenance():
    w = demo_weights()
    assert w.blocks == 16 and 1 <= w.stages <= 5 and w.layout == "ours"
    assert all(v.dtype.is_floating_point and v.dtype.itemsize == 4 for v in w.state_dict.values())
    config = json.loads(DEMO_PATH.with_suffix(".json").read_text())
    assert config["storage"] == "float16"
    prov = config["provenance"]
    assert prov["demo_weights"] is True and "not the paper's" in prov["notice"]
    trained = prov["stages_trained"] if isinstance(prov["stages_trained"], list) else [prov["stages_trained"]]
    assert prov["steps"] > 0 and trained and min(trained) >= 1 and "sidd" not in " ".join(prov["data"]).lower()


@pytest.mark.slow
@needs_data
def test_demo_weights_beat_the_noisy_input_on_a_sidd_crop():
    w = demo_weights()
    noisy, clean = read_image(DATA / "sidd/noisy/44.png"), read_image(DATA / "sidd/clean/44.png")
    out = Denoiser(TorchRunner(w, device="cpu")).denoise_image(noisy)
    ref = to_uint8(clean.rgb)
    psnr_in, _ = psnr_ssim(to_uint8(noisy.rgb), ref)
    psnr_out, ssim_out = psnr_ssim(to_uint8(out.rgb), ref)
    assert psnr_out > psnr_in + 5.0 and np.isfinite(ssim_out)
