"""Deployment runtime: tiling with blending, self-ensemble, artifact limits, backends, folders, metadata."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import numpy as np
import pytest
import torch
from PIL import Image as PILImage
from PIL import ImageCms

from scaoed_deploy import checkpoint as ckpt
from scaoed_deploy.cli import main
from scaoed_deploy.errors import ScaoedError
from scaoed_deploy.images import Image, read_image, write_image
from scaoed_deploy.runtime import Denoiser, Limits, RunOptions, open_runner
from scaoed_deploy.runtime.denoiser import _ramp, tile_starts


class Recorder:
    """A runner with a known answer: records the shapes it is given."""

    def __init__(self, fn):
        self.fn, self.shapes = fn, []

    def __call__(self, x):
        self.shapes.append(x.shape)
        return self.fn(x)


def _local(x):  # per-pixel, so tiling must not change it at all
    return np.tanh(2 * x - 0.3) * 0.7 + x * x


def test_tile_geometry():
    assert tile_starts(100, 100, 8) == [0] and tile_starts(60, 100, 8) == [0]
    starts = tile_starts(1000, 256, 32)
    assert starts[0] == 0 and starts[-1] == 1000 - 256
    assert all(b - a <= 256 - 32 for a, b in zip(starts, starts[1:]))  # every seam has the full overlap
    w = _ramp(64, 16, True, True)
    assert w.min() > 0 and w[16:48].tolist() == [1.0] * 32 and np.allclose(w[:16], w[::-1][:16])
    # Two ramps meeting across an overlap sum to one: a smooth cross-fade.
    up, down = _ramp(64, 16, True, False)[:16], _ramp(64, 16, False, True)[-16:]
    assert np.allclose(up + down, 1.0)


def test_tiled_equals_whole_for_a_local_model_and_batches_tiles():
    rng = np.random.default_rng(0)
    rgb = rng.random((150, 118, 3), dtype=np.float32)
    runner = Recorder(_local)
    tiled = Denoiser(runner, tile=48, overlap=12, tile_batch=5).denoise_array(rgb)
    np.testing.assert_allclose(tiled, _local(rgb), atol=1e-5)
    assert {s[2:] for s in runner.shapes} == {(48, 48)} and max(s[0] for s in runner.shapes) == 5


def test_tiled_and_whole_agree_closely_on_the_model():
    weights = ckpt.random_weights(blocks=1, seed=3)
    runner = open_runner(None, options=RunOptions(weights=weights, stages=1, device="cpu"))
    yy, xx = np.mgrid[0:96, 0:112] / 96.0
    rgb = np.stack([xx, yy, 0.5 + 0.2 * np.sin(6 * xx)], 2) + np.random.default_rng(1).normal(0, 0.05, (96, 112, 3))
    rgb = np.clip(rgb, 0, 1).astype(np.float32)
    whole = Denoiser(runner, tile=None).denoise_array(rgb)
    tiled = Denoiser(runner, tile=64, overlap=24).denoise_array(rgb)
    diff = np.abs(whole - tiled)
    # NFAE normalises with whole-image statistics, so tiles differ a little; seams must not stand out.
    assert diff.mean() < 0.02 and diff.max() < 0.25


def test_ensemble_is_the_mean_of_the_eight_transformed_passes():
    def biased(x):  # not equivariant: depends on row index and channel
        n, c, h, w = x.shape
        return (
            x * 0.9
            + np.arange(h, dtype=np.float32)[None, None, :, None] * 0.01
            + np.arange(c)[None, :, None, None] * 0.1
        )

    rgb = np.random.default_rng(2).random((20, 26, 3), dtype=np.float32)
    got = Denoiser(biased, tile=None, ensemble=True).denoise_array(rgb)
    x = torch.from_numpy(rgb.transpose(2, 0, 1).copy())
    outs = []
    for k in range(4):
        for flip in (False, True):
            t = torch.rot90(x, k, dims=(1, 2))
            t = torch.flip(t, dims=(2,)) if flip else t
            y = torch.from_numpy(biased(t[None].numpy())[0])
            y = torch.flip(y, dims=(2,)) if flip else y
            outs.append(torch.rot90(y, -k, dims=(1, 2)))
    expected = torch.stack(outs).mean(0).numpy().transpose(1, 2, 0)
    np.testing.assert_allclose(got, expected, atol=1e-6)


def test_static_artifacts_get_exact_tiles_and_padding():
    runner = Recorder(_local)
    d = Denoiser(runner, tile=512, overlap=8, limits=Limits((32, 32), (32, 32), 2))
    big = np.random.default_rng(3).random((50, 70, 3), dtype=np.float32)
    np.testing.assert_allclose(d.denoise_array(big), _local(big), atol=1e-5)
    small = np.random.default_rng(4).random((20, 26, 3), dtype=np.float32)
    np.testing.assert_allclose(d.denoise_array(small), _local(small), atol=1e-5)
    flat = np.random.default_rng(5).random((20, 70, 3), dtype=np.float32)  # shorter, but wider than the shape
    np.testing.assert_allclose(d.denoise_array(flat), _local(flat), atol=1e-5)
    assert {s for s in runner.shapes} == {(2, 3, 32, 32)}  # static shape and batch, every call


@pytest.fixture(scope="module")
def checkpoint_and_onnx(tmp_path_factory, tiny_checkpoint, tiny_k1_onnx):
    """A safetensors checkpoint that says K = 1 (the T = 2 tiny weights) and their K = 1 export."""
    path = tmp_path_factory.mktemp("rt") / "w.safetensors"
    ckpt.save_safetensors(ckpt.read_checkpoint(tiny_checkpoint), path, stages=1)
    return path, tiny_k1_onnx


def test_onnx_and_torch_backends_agree_on_the_same_checkpoint(checkpoint_and_onnx):
    path, onnx_path = checkpoint_and_onnx
    rgb = np.random.default_rng(6).random((45, 67, 3), dtype=np.float32)  # odd: padded and cropped back
    a = Denoiser.open(path, device="cpu").denoise_array(rgb)
    b = Denoiser.open(onnx_path).denoise_array(rgb)
    assert a.shape == (45, 67, 3) and np.abs(a - b).max() < 1e-4
    with pytest.raises(ScaoedError, match="ONNX file"):
        Denoiser.open(onnx_path, backend="tensorrt")
    odd = onnx_path.with_suffix(".txt")
    odd.write_text("x")
    with pytest.raises(ScaoedError, match="unknown model type"):
        Denoiser.open(odd)


def _icc():
    # The profile's header carries its creation time: make it once per test and compare with that copy.
    return ImageCms.ImageCmsProfile(ImageCms.createProfile("sRGB")).tobytes()


def test_folder_is_resumable_and_reports_a_corrupt_image(tmp_path, checkpoint_and_onnx, capsys):
    _, onnx_path = checkpoint_and_onnx
    src, dst = tmp_path / "in", tmp_path / "out"
    rng = np.random.default_rng(7)
    for name in ("a.png", "b.png"):
        write_image(src / name, Image(rgb=rng.random((30, 34, 3), dtype=np.float32)))
    (src / "c.png").write_bytes(b"\x89PNG\r\n\x1a\nnot really")
    args = ["denoise", str(src), str(dst), "-m", str(onnx_path), "--json"]
    assert main(args) == 1
    out = json.loads(capsys.readouterr().out)
    assert [f["input"].endswith("c.png") for f in out["failures"]] == [True]
    assert sorted(p.name for p in dst.iterdir()) == ["a.png", "b.png"]
    assert main(args) == 1  # resumes: a and b are skipped, c still fails
    out = json.loads(capsys.readouterr().out)
    assert len(out["skipped_existing"]) == 2 and out["results"] == []
    assert main([*args, "--overwrite"]) == 1
    assert len(json.loads(capsys.readouterr().out)["results"]) == 2


@pytest.mark.parametrize("suffix, depth", [(".png", 8), (".png", 16), (".jpg", 8)])
def test_icc_profile_and_exif_orientation_are_kept(tmp_path, checkpoint_and_onnx, suffix, depth, capsys):
    _, onnx_path = checkpoint_and_onnx
    src = tmp_path / "photo.jpg"
    im = PILImage.fromarray((np.random.default_rng(8).random((24, 32, 3)) * 255).astype(np.uint8))
    exif = im.getexif()
    exif[0x0112] = 6  # orientation: rotate 90 CW to display
    icc = _icc()
    im.save(src, icc_profile=icc, exif=exif.tobytes(), quality=95)
    out = tmp_path / f"out{suffix}"
    assert main(["denoise", str(src), str(out), "-m", str(onnx_path), "--bit-depth", str(depth)]) == 0
    back = read_image(out)
    assert back.icc_profile == icc and back.bit_depth == (8 if suffix == ".jpg" else depth)
    with PILImage.open(out) as q:
        assert q.getexif().get(0x0112) == 6


def test_onnxruntime_runner_never_falls_back_from_cuda_to_cpu_silently(random_k1_onnx):
    """Asked for CUDA, the runner either runs on it or says why not; it never quietly runs on the CPU."""
    from scaoed_deploy.runtime.onnxruntime_backend import OnnxRuntimeRunner

    try:
        runner = OnnxRuntimeRunner(random_k1_onnx, providers=["CUDAExecutionProvider", "CPUExecutionProvider"])
        runner.activate()  # the session is made here (construction is cheap)
    except ScaoedError as e:
        assert "CUDAExecutionProvider" in str(e) and "\n" not in str(e)
    else:
        assert runner.session.get_providers()[0] == "CUDAExecutionProvider"
    assert OnnxRuntimeRunner(random_k1_onnx).session.get_providers() == ["CPUExecutionProvider"]


_FAULTS_SCRIPT = """
import resource, torch
from scaoed_deploy.checkpoint import random_weights
from scaoed_deploy.runtime.cpu_memory import keep_freed_memory
from scaoed_deploy.runtime.torch_backend import TorchRunner

TorchRunner(random_weights(blocks=1), stages=1, device="cpu")  # on the CPU: applies the malloc settings
faults = lambda: resource.getrusage(resource.RUSAGE_SELF).ru_minflt
for _ in range(2):  # warm-up: malloc settles on where the block goes within two rounds
    x = torch.ones(16 * 2**20)  # 64 MiB, one 512 x 512 x 64 activation, written so its pages are touched
    del x
each = []
for _ in range(5):
    before = faults()
    x = torch.ones(16 * 2**20)
    del x
    each.append(faults() - before)
print(sorted(each)[2], keep_freed_memory())  # the median round: one round whose kept pages the kernel reclaimed
"""


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="glibc malloc settings: Linux only")
def test_cpu_runner_keeps_freed_activation_memory_for_the_next_call():
    """The kernel's own fault counter: with glibc's defaults every 64 MiB activation is a fresh mmap faulted in
    page by page (16384 faults per block with 4 KiB pages); once a CPU TorchRunner exists, freed blocks are reused
    and repeats cost (next to) no faults. The median of 5 rounds is compared: a kernel that reclaims idle pages
    (DAMON's reclaim runs on some machines) can take a kept block back between two rounds, once in a while."""

    def run(malloc):
        env = {k: v for k, v in os.environ.items() if not k.startswith("MALLOC_")}
        env["SCAOED_DEPLOY_MALLOC"] = malloc
        out = subprocess.run(
            [sys.executable, "-c", _FAULTS_SCRIPT], env=env, capture_output=True, text=True, check=True
        )
        faults, state = out.stdout.strip().split(" ", 1)
        return int(faults), state

    system, system_state = run("system")
    kept, kept_state = run("")
    assert system_state.startswith("system malloc defaults") and "freed memory kept" in kept_state
    assert kept * 20 < system


def test_a_busy_machine_is_said_in_one_line(monkeypatch):
    import os

    from scaoed_deploy.runtime.base import busy_warning, cpu_threads

    monkeypatch.setattr(os, "getloadavg", lambda: (0.0, 0.0, 0.0))
    assert busy_warning() is None
    monkeypatch.setattr(os, "getloadavg", lambda: (cpu_threads() + 0.5, 0.0, 0.0))
    line = busy_warning(threads=2)
    assert line.startswith("warning: the machine is busy") and "\n" not in line and "--threads" in line
    assert cpu_threads(3) == 3 and cpu_threads() == len(os.sched_getaffinity(0))


def test_auto_tile_takes_the_largest_tile_then_batch_that_fits_half_the_memory_left():
    from scaoed_deploy.errors import ScaoedError
    from scaoed_deploy.runtime.tiling import IMAGE_BYTES_PER_PIXEL, TILE_BYTES_PER_PIXEL, auto_tile

    h, w, gib = 5500, 8000, 2**30  # a 44 MP photo
    assert (auto_tile(h, w, 32, 24 * gib).tile, auto_tile(h, w, 32, 24 * gib).tile_batch) == (1024, 4)
    for available in (4 * gib, 5 * gib, 8 * gib):
        left = available - h * w * IMAGE_BYTES_PER_PIXEL  # the image's own buffers take 3.7 GB of it
        got = auto_tile(h, w, 32, available)
        fits = [
            (t, b)
            for t in (1024, 768, 512, 384, 256, 128, 64)
            for b in (4, 2, 1)
            if b * t * t * TILE_BYTES_PER_PIXEL <= left / 2
        ]
        assert (got.tile, got.tile_batch) == fits[0]  # brute force: the first that fits, largest tile first
    assert auto_tile(100, 60, 8, 4 * gib).tile_batch == 1  # a small image is one run
    with pytest.raises(ScaoedError, match="not enough memory for a 8000x5500 image"):
        auto_tile(h, w, 16, h * w * IMAGE_BYTES_PER_PIXEL + 4 * 2**20)  # 2 MB for tiles: not even 64 x 64


def test_tile_auto_denoises_like_a_fixed_tile_of_the_same_size(tmp_path):
    """The chosen tile is used as given: the output equals a Denoiser with that tile fixed."""
    from scaoed_deploy.runtime.denoiser import Denoiser

    def model(x):  # a local, shape-keeping function: tiles and blending are what is checked
        return x * 0.5 + x[:, ::-1] * 0.25

    rgb = np.random.default_rng(0).random((300, 200, 3), dtype=np.float32)
    auto = Denoiser(model, tile="auto", overlap=8)
    auto.choose_tile(300, 200, available=300 * 200 * 90 + 2 * 2 * 128 * 128 * 1024 + 1)  # room for 2 tiles of 128
    assert (auto.tile, auto.tile_batch) == (128, 2)
    auto.choose_tile = lambda h, w: None  # keep that choice for the run below
    fixed = Denoiser(model, tile=128, overlap=8, tile_batch=2)
    np.testing.assert_allclose(auto.denoise_array(rgb), fixed.denoise_array(rgb), atol=1e-6)


def test_torch_compile_failing_or_giving_nan_at_its_first_call_is_one_error_naming_it(monkeypatch):
    from scaoed_deploy.runtime.torch_backend import TorchRunner

    x = np.zeros((1, 3, 8, 8), np.float32)
    monkeypatch.setattr(torch, "compile", lambda model: lambda t: model(t))  # torch.compile compiles at a call
    r = TorchRunner(ckpt.random_weights(blocks=1, seed=0), stages=1, compile=True)
    assert np.isfinite(r(x)).all()

    def broken(_):
        raise RuntimeError("C++ compile error\ncc1plus: internal compiler error")

    r._forward = broken
    with pytest.raises(ScaoedError, match=r"^torch\.compile failed: C\+\+ compile error$"):
        r(x)
    r._forward, r.check_finite = (lambda t: torch.full_like(t, float("nan"))), True  # as open_runner sets it
    with pytest.raises(ScaoedError, match=r"on torch\.compile \(cpu, K=1\) gave NaN/Inf .*torch\.compile's kernels"):
        r(x)


def test_a_runner_is_cheap_to_make_and_loads_between_activate_and_deactivate(random_k1_onnx):
    """polygraphy's lifecycle: construction does no I/O (a missing file is not looked at yet), ``activate`` loads,
    ``deactivate`` frees, the context manager does both, and ``run`` activates on first use."""
    from scaoed_deploy.runtime.onnxruntime_backend import OnnxRuntimeRunner
    from scaoed_deploy.runtime.torch_backend import TorchRunner

    missing = OnnxRuntimeRunner("/nonexistent/model.onnx")  # nothing read yet
    assert not missing.is_active
    with pytest.raises(ScaoedError, match="ONNX Runtime cannot load /nonexistent/model.onnx"):
        missing.activate()
    assert not missing.is_active
    x = np.random.default_rng(0).random((1, 3, 16, 16), dtype=np.float32)
    for runner in (OnnxRuntimeRunner(random_k1_onnx), TorchRunner(ckpt.random_weights(blocks=1), 1, device="cpu")):
        assert not runner.is_active
        with runner:
            assert runner.is_active
            first = runner(x)
        assert not runner.is_active
        assert np.array_equal(runner(x), first) and runner.is_active  # run activates again
        runner.deactivate()
        runner.deactivate()  # idempotent
        assert not runner.is_active


def test_every_variant_runs_on_a_registry_backend():
    """The variant model names runtimes the registry opens, on every device it lists, with the precisions
    artifacts are made in."""
    from scaoed_deploy.artifact import PRECISIONS
    from scaoed_deploy.runtime.registry import BACKENDS
    from scaoed_deploy.runtime.variants import VARIANTS

    for v in VARIANTS.values():
        assert v.precision in PRECISIONS, v
        assert all(v.registry_name(d) in BACKENDS for d in v.devices), v
