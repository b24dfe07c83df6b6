"""Training: a tiny run learns, resumes exactly, and never touches the SIDD crops."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from conftest import DATA
from PIL import Image

from scaoed_deploy.cli import main
from scaoed_deploy.errors import ScaoedError
from scaoed_deploy.train import TrainConfig, state_path, train


@pytest.fixture
def clean_dir(tmp_path):
    """Smooth synthetic 'photos': gradients and blobs, so a few steps of denoising can help."""
    rng = np.random.default_rng(0)
    folder = tmp_path / "clean"
    folder.mkdir()
    yy, xx = np.mgrid[0:64, 0:64] / 64.0
    for i in range(6):
        c = rng.random(3)
        img = np.stack([np.clip(c[k] * 0.6 + 0.3 * np.sin(3 * xx + k + i) * yy, 0, 1) for k in range(3)], 2)
        Image.fromarray((img * 255).astype(np.uint8)).save(folder / f"{i}.png")
    return folder


def _cfg(clean_dir, steps, **kw):
    return TrainConfig(
        clean=[str(clean_dir)],
        stages=2,
        blocks=1,
        patch=32,
        batch=4,
        steps=steps,
        lr=1e-3,
        val_every=5,
        save_every=5,
        val_images=2,
        **kw,
    )


@pytest.mark.slow
def test_a_tiny_run_lowers_the_loss(clean_dir, tmp_path):
    r = train(_cfg(clean_dir, 40), tmp_path / "w.safetensors")
    h = r["history"]
    assert [e["step"] for e in h] == [5, 10, 15, 20, 25, 30, 35, 40]
    assert h[-1]["val_psnr_synthetic"] > h[0]["val_psnr_synthetic"] + 1.0
    config = json.loads((tmp_path / "w.json").read_text())
    assert config["stages"] == 2 and config["blocks"] == 1 and config["provenance"]["steps"] == 40
    assert config["provenance"]["demo_weights"] is True and "Poisson-Gaussian" in config["provenance"]["noise_model"]


class _Stop(Exception):
    pass


@pytest.mark.slow
def test_resume_continues_exactly(clean_dir, tmp_path):
    from safetensors.torch import load_file

    straight = train(_cfg(clean_dir, 10), tmp_path / "a.safetensors")

    def die_after_checkpoint(d):
        if d["step"] == 7:
            raise _Stop  # killed: the last state saved is step 5

    with pytest.raises(_Stop):
        train(_cfg(clean_dir, 10), tmp_path / "b.safetensors", report=die_after_checkpoint)
    assert torch.load(state_path(tmp_path / "b.safetensors"), weights_only=True)["step"] == 5
    resumed = train(_cfg(clean_dir, 10), tmp_path / "b.safetensors", resume=state_path(tmp_path / "b.safetensors"))
    a, b = load_file(tmp_path / "a.safetensors"), load_file(tmp_path / "b.safetensors")
    assert all(torch.equal(a[k], b[k]) for k in a)
    assert resumed["last"]["loss"] == straight["last"]["loss"]
    assert json.loads((tmp_path / "b.json").read_text())["provenance"]["resumed_from_step"] == 5
    assert json.loads((tmp_path / "a.json").read_text())["provenance"]["resumed_from_step"] is None


@pytest.mark.slow
def test_a_time_budget_stops_saves_and_resumes_exactly(clean_dir, tmp_path, capsys):
    from safetensors.torch import load_file

    train(_cfg(clean_dir, 10), tmp_path / "a.safetensors")
    part = train(_cfg(clean_dir, 10), tmp_path / "b.safetensors", max_seconds=0)  # spent after the first step
    assert part["steps"] == 1 and part["complete"] is False and "val_psnr_synthetic" in part["history"][-1]
    state = state_path(tmp_path / "b.safetensors")
    assert torch.load(state, weights_only=True)["step"] == 1
    prov = json.loads((tmp_path / "b.json").read_text())["provenance"]
    assert prov["steps"] == 1 and prov["planned_steps"] == 10
    done = train(_cfg(clean_dir, 10), tmp_path / "b.safetensors", resume=state)
    assert done["complete"] is True and done["steps"] == 10
    a, b = load_file(tmp_path / "a.safetensors"), load_file(tmp_path / "b.safetensors")
    assert all(torch.equal(a[k], b[k]) for k in a)

    args = [
        "train",
        "--clean",
        str(clean_dir),
        "--stages",
        "1",
        "--blocks",
        "1",
        "--patch",
        "32",
        "--batch",
        "2",
        "--steps",
        "3",
        "-o",
        str(tmp_path / "c.safetensors"),
    ]
    assert main(args + ["--max-minutes", "0"]) == 0
    out, err = capsys.readouterr()
    assert "stopped by --max-minutes at step 1 of 3" in out and "--resume" in out
    assert "step 1/3 (" in err and "val " in err  # stderr is no terminal here: a progress line per validation
    assert main(args + ["--max-minutes", "-1"]) == 2


def test_the_sidd_crops_are_never_training_data(tmp_path, clean_dir):
    sidd = DATA / "sidd"
    if not sidd.is_dir():
        sidd = tmp_path / "sidd"
        (sidd / "noisy").mkdir(parents=True)
    with pytest.raises(ScaoedError, match="evaluation data"):
        train(TrainConfig(clean=[str(sidd)], blocks=1, steps=1), tmp_path / "w.safetensors")
    with pytest.raises(ScaoedError, match="evaluation data"):
        train(_cfg(clean_dir, 1, pairs=[str(sidd)]), tmp_path / "w.safetensors")


def test_cli_train_json(clean_dir, tmp_path, capsys):
    code = main(
        [
            "train",
            "--clean",
            str(clean_dir),
            "--stages",
            "1",
            "--blocks",
            "1",
            "--patch",
            "32",
            "--batch",
            "2",
            "--steps",
            "3",
            "--val-every",
            "3",
            "-o",
            str(tmp_path / "w.safetensors"),
            "--json",
        ]
    )
    out, err = capsys.readouterr()
    assert code == 0, err
    assert json.loads(out)["steps"] == 3 and (tmp_path / "w.safetensors").is_file()
    code = main(["train", "--clean", str(tmp_path / "nope"), "--steps", "1", "-o", str(tmp_path / "x.safetensors")])
    _, err = capsys.readouterr()
    assert code == 1 and "clean image folder not found" in err


def test_bf16_autocast_trains_float32_weights(clean_dir, tmp_path):
    from safetensors.torch import load_file

    r = train(_cfg(clean_dir, 3, amp="bf16"), tmp_path / "w.safetensors")
    assert np.isfinite(r["last"]["loss"])
    assert all(t.dtype == torch.float32 for t in load_file(tmp_path / "w.safetensors").values())
    with pytest.raises(ScaoedError, match="unknown amp mode"):
        train(_cfg(clean_dir, 1, amp="fp8"), tmp_path / "x.safetensors")


@pytest.mark.slow
def test_fine_tune_with_k_drawn_per_batch_starts_from_init_and_resumes_exactly(clean_dir, tmp_path, monkeypatch):
    from safetensors.torch import load_file

    from scaoed_deploy.model import ScaoedNet

    base = train(_cfg(clean_dir, 3), tmp_path / "base.safetensors")["weights"]
    seen = []
    real_forward = ScaoedNet.forward

    def spy(self, *a, **k):
        seen.append(self.stages)
        return real_forward(self, *a, **k)

    monkeypatch.setattr(ScaoedNet, "forward", spy)
    cfg = dict(init=base, stage_choices=[1, 3])
    straight = train(_cfg(clean_dir, 8, **cfg), tmp_path / "ft.safetensors")
    trained_ks = set(seen)
    assert {1, 3} <= trained_ks  # K drawn per batch (validation runs at the default K=2)
    prov = json.loads((tmp_path / "ft.json").read_text())["provenance"]
    assert prov["stages_trained"] == [1, 3] and prov["init"] == "base.safetensors"

    def die(d):
        if d["step"] == 6:
            raise _Stop

    with pytest.raises(_Stop):
        train(_cfg(clean_dir, 8, **cfg), tmp_path / "ft2.safetensors", report=die)
    train(_cfg(clean_dir, 8, **cfg), tmp_path / "ft2.safetensors", resume=state_path(tmp_path / "ft2.safetensors"))
    a, b = load_file(tmp_path / "ft.safetensors"), load_file(tmp_path / "ft2.safetensors")
    assert all(torch.equal(a[k], b[k]) for k in a) and straight["steps"] == 8
    with pytest.raises(ScaoedError, match="stage choices"):
        train(_cfg(clean_dir, 1, stage_choices=[9]), tmp_path / "bad.safetensors")
