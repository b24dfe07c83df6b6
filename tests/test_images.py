"""Image I/O: bit depths, channel layouts, atomic writes and the paper's metrics."""

from __future__ import annotations

import numpy as np
import pytest
import tifffile
from PIL import Image as PILImage

from scaoed_deploy.errors import ImageError, ScaoedError, atomic_path
from scaoed_deploy.images import Image, psnr_ssim, read_image, to_uint8, write_image


@pytest.fixture
def rng():
    return np.random.default_rng(0)


@pytest.mark.parametrize("suffix", [".png", ".tif"])
def test_16_bit_colour_round_trips_exactly(tmp_path, rng, suffix):
    arr = rng.integers(0, 65536, size=(7, 9, 3), dtype=np.uint16)
    img = Image(rgb=arr.astype(np.float32) / 65535, bit_depth=16)
    write_image(tmp_path / f"a{suffix}", img)
    back = read_image(tmp_path / f"a{suffix}")
    assert back.bit_depth == 16 and not back.gray and back.alpha is None
    np.testing.assert_array_equal(np.round(back.rgb * 65535).astype(np.uint16), arr)


def test_16_bit_tiff_from_another_writer_is_read(tmp_path, rng):
    arr = rng.integers(0, 65536, size=(6, 5, 3), dtype=np.uint16)
    tifffile.imwrite(tmp_path / "x.tiff", arr, photometric="rgb")
    np.testing.assert_allclose(read_image(tmp_path / "x.tiff").rgb, arr / 65535.0, atol=1e-7)


def test_grayscale_is_three_equal_channels_and_written_back_gray(tmp_path, rng):
    gray = rng.integers(0, 256, size=(6, 8), dtype=np.uint8)
    PILImage.fromarray(gray).save(tmp_path / "g.png")
    img = read_image(tmp_path / "g.png")
    assert img.gray and img.rgb.shape == (6, 8, 3)
    assert np.array_equal(img.rgb[..., 0], img.rgb[..., 2])
    write_image(tmp_path / "out.png", img)
    with PILImage.open(tmp_path / "out.png") as out:
        assert out.mode == "L"
        np.testing.assert_array_equal(np.asarray(out), gray)


def test_16_bit_grayscale_png(tmp_path, rng):
    gray = rng.integers(0, 65536, size=(5, 4), dtype=np.uint16)
    PILImage.fromarray(gray).save(tmp_path / "g16.png")
    img = read_image(tmp_path / "g16.png")
    assert img.gray and img.bit_depth == 16
    write_image(tmp_path / "o16.png", img)
    back = read_image(tmp_path / "o16.png")
    assert back.gray and back.bit_depth == 16
    np.testing.assert_array_equal(np.round(back.rgb[..., 0] * 65535).astype(np.uint16), gray)


def test_alpha_is_carried_through_untouched(tmp_path, rng):
    rgba = rng.integers(0, 256, size=(6, 6, 4), dtype=np.uint8)
    PILImage.fromarray(rgba, "RGBA").save(tmp_path / "a.png")
    img = read_image(tmp_path / "a.png")
    assert img.alpha is not None and img.rgb.shape == (6, 6, 3)
    write_image(tmp_path / "o.png", img.with_rgb(1.0 - img.rgb))
    out = np.asarray(PILImage.open(tmp_path / "o.png"))
    assert out.shape == (6, 6, 4)
    np.testing.assert_array_equal(out[..., 3], rgba[..., 3])
    np.testing.assert_array_equal(out[..., :3], 255 - rgba[..., :3])


def test_jpeg_output_is_8_bit_without_alpha(tmp_path, rng):
    img = Image(rgb=rng.random((8, 8, 3), dtype=np.float32), alpha=np.ones((8, 8), np.float32), bit_depth=16)
    info = write_image(tmp_path / "o.jpg", img)
    assert info["bit_depth"] == 8 and info["channels"] == 3
    assert PILImage.open(tmp_path / "o.jpg").mode == "RGB"


def test_palette_image_becomes_rgb(tmp_path, rng):
    PILImage.fromarray(rng.integers(0, 256, size=(6, 6, 3), dtype=np.uint8)).convert("P").save(tmp_path / "p.png")
    img = read_image(tmp_path / "p.png")
    assert img.rgb.shape == (6, 6, 3) and not img.gray and img.alpha is None


def test_corrupt_and_missing_images_raise_image_error(tmp_path):
    (tmp_path / "bad.png").write_bytes(b"\x89PNG\r\n\x1a\nnot really")
    with pytest.raises(ImageError, match="bad.png"):
        read_image(tmp_path / "bad.png")
    (tmp_path / "bad.jpg").write_bytes(b"garbage")
    with pytest.raises(ImageError, match="cannot read image"):
        read_image(tmp_path / "bad.jpg")
    with pytest.raises(ImageError, match="not found"):
        read_image(tmp_path / "none.png")


def test_unknown_output_format_is_refused(tmp_path):
    with pytest.raises(ImageError, match="cannot write .gif"):
        write_image(tmp_path / "o.gif", Image(rgb=np.zeros((2, 2, 3), np.float32)))
    assert list(tmp_path.iterdir()) == []


def test_atomic_path_leaves_nothing_on_failure(tmp_path):
    target = tmp_path / "out.bin"
    target.write_bytes(b"old")
    with pytest.raises(RuntimeError):
        with atomic_path(target) as tmp:
            tmp.write_bytes(b"half")
            raise RuntimeError("writer died")
    assert target.read_bytes() == b"old"
    assert [p.name for p in tmp_path.iterdir()] == ["out.bin"]


def test_atomic_path_gives_the_usual_permissions(tmp_path):
    import os

    with atomic_path(tmp_path / "f.txt") as tmp:
        tmp.write_text("x")
    mask = os.umask(0)
    os.umask(mask)
    assert (tmp_path / "f.txt").stat().st_mode & 0o777 == 0o666 & ~mask


def test_atomic_path_reports_an_unwritable_folder(tmp_path):
    blocker = tmp_path / "file"
    blocker.write_text("x")
    with pytest.raises(ScaoedError, match="cannot write"):
        with atomic_path(blocker / "sub" / "out.png"):
            pass


def test_metrics_follow_the_paper(rng):
    ref = rng.integers(0, 256, size=(32, 32, 3), dtype=np.uint8)
    noisy = np.clip(ref.astype(int) + rng.integers(-20, 21, size=ref.shape), 0, 255).astype(np.uint8)
    psnr, ssim = psnr_ssim(noisy, ref)
    mse = np.mean((noisy.astype(np.float64) - ref) ** 2)
    assert psnr == pytest.approx(10 * np.log10(255**2 / mse), abs=1e-9)
    assert 0 < ssim < 1
    assert psnr_ssim(ref, ref) == (float("inf"), pytest.approx(1.0))


def test_to_uint8_rounds_and_clamps():
    np.testing.assert_array_equal(to_uint8(np.array([-0.5, 0.4 / 255, 0.6 / 255, 0.499, 1.0, 2.0])), [0, 0, 1, 127, 255, 255])
