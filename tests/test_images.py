"""Image I/O: bit depths, channel layouts, atomic writes and the paper's metrics."""

from __future__ import annotations

import numpy as np
import pytest
import tifffile
from PIL import Image as PILImage

from scaoed_deploy.errors import ImageError, ScaoedError
from scaoed_deploy.images import Image, read_image, to_uint8, write_image
from scaoed_deploy.quality import psnr_ssim
from scaoed_deploy.util.files import atomic_path


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
    np.testing.assert_array_equal(
        to_uint8(np.array([-0.5, 0.4 / 255, 0.6 / 255, 0.499, 1.0, 2.0])), [0, 0, 1, 127, 255, 255]
    )


# ---------------------------------------------------------------- images off the common path
def _png_chunks(path, extra_before_idat=()):
    """Rewrite a PNG with extra chunks before its image data (pypng's own chunk writer)."""
    import png

    chunks = list(png.Reader(filename=str(path)).chunks())
    at = next(i for i, (kind, _) in enumerate(chunks) if kind == b"IDAT")
    with open(path, "wb") as f:
        png.write_chunks(f, chunks[:at] + list(extra_before_idat) + chunks[at:])


def test_a_16_bit_png_with_an_sbit_chunk_reads_as_stored(tmp_path, rng):
    """sBIT says 12 significant bits; the samples are still full-range 16-bit values (PNG spec 12.5)."""
    import png

    arr = (rng.integers(0, 4096, (6, 7, 3), dtype=np.uint16) * 16).astype(np.uint16)  # 12-bit values, shifted up
    png.from_array(arr.reshape(6, -1), "RGB;16").save(str(tmp_path / "plain.png"))
    png.from_array(arr.reshape(6, -1), "RGB;16").save(str(tmp_path / "sbit.png"))
    _png_chunks(tmp_path / "sbit.png", [(b"sBIT", bytes([12, 12, 12]))])
    plain, sbit = read_image(tmp_path / "plain.png"), read_image(tmp_path / "sbit.png")
    np.testing.assert_array_equal(sbit.rgb, plain.rgb)
    np.testing.assert_allclose(sbit.rgb, arr / 65535.0, atol=1e-7)


def _png_bomb(path, width, height):
    """A 16-bit PNG whose header declares width x height; its data holds only a few rows."""
    import struct
    import zlib

    import png

    row = b"\0" + b"\0" * (width * 6)
    chunks = [
        (b"IHDR", struct.pack(">IIBBBBB", width, height, 16, 2, 0, 0, 0)),
        (b"IDAT", zlib.compress(row * 8)),
        (b"IEND", b""),
    ]
    with open(path, "wb") as f:
        png.write_chunks(f, chunks)
    return path


def _tiff_bomb(path, side):
    """A deflate TIFF whose tags declare side x side, with one small strip."""
    tifffile.imwrite(path, np.zeros((16, 16), np.uint8), compression="zlib")
    with tifffile.TiffFile(path, mode="r+b") as tif:
        tags = tif.pages[0].tags
        for name in ("ImageWidth", "ImageLength", "RowsPerStrip"):
            tags[name].overwrite(side)
    return path


@pytest.mark.parametrize(
    "make",
    [lambda p: _png_bomb(p / "b.png", 13400, 13400), lambda p: _tiff_bomb(p / "b.tif", 14000)],
    ids=["16-bit PNG", "deflate TIFF"],
)
def test_a_bomb_is_refused_from_its_header_before_decoding(tmp_path, make):
    import resource

    path = make(tmp_path)
    before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    with pytest.raises(ImageError, match="exceeds limit of 89478485 pixels"):
        read_image(path)
    assert resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - before < 200_000  # KiB: nothing was decoded


def test_one_pixel_limit_for_every_reader(tmp_path, monkeypatch):
    """The limit is Pillow's, for pypng and tifffile too: lowered, a 40 x 30 image is refused by each reader."""
    import png

    monkeypatch.setattr(PILImage, "MAX_IMAGE_PIXELS", 1000)
    arr = np.zeros((30, 40, 3), np.uint16)
    png.from_array(arr.reshape(30, -1), "RGB;16").save(str(tmp_path / "a.png"))
    tifffile.imwrite(tmp_path / "a.tif", arr, photometric="rgb")
    PILImage.new("RGB", (40, 30)).save(tmp_path / "a.jpg")
    for name in ("a.png", "a.tif", "a.jpg"):
        with pytest.raises(ImageError, match="declares 40x30 = 1200 pixels, which exceeds limit of 1000"):
            read_image(tmp_path / name)


@pytest.mark.parametrize("h, w", [(4, 40), (3, 5), (40, 4)])
def test_a_planar_tiff_is_interleaved_by_its_own_layout(tmp_path, rng, h, w):
    arr = rng.integers(0, 256, (h, w, 3), dtype=np.uint8)
    tifffile.imwrite(tmp_path / "p.tif", np.moveaxis(arr, -1, 0), photometric="rgb", planarconfig="separate")
    tifffile.imwrite(tmp_path / "c.tif", arr, photometric="rgb", planarconfig="contig")
    for name in ("p.tif", "c.tif"):
        img = read_image(tmp_path / name)
        assert img.alpha is None and img.rgb.shape == (h, w, 3)
        np.testing.assert_array_equal(np.round(img.rgb * 255).astype(np.uint8), arr)


def test_a_miniswhite_tiff_is_inverted(tmp_path, rng):
    stored = rng.integers(0, 256, (6, 9), dtype=np.uint8)
    tifffile.imwrite(tmp_path / "w.tif", stored, photometric="miniswhite")
    img = read_image(tmp_path / "w.tif")
    assert img.gray
    np.testing.assert_array_equal(np.round(img.rgb[..., 0] * 255).astype(np.uint8), 255 - stored)


def test_a_palette_tiff_is_looked_up_in_its_colour_map(tmp_path, rng):
    cmap = (rng.integers(0, 256, (3, 256)) * 257).astype(np.uint16)
    idx = rng.integers(0, 256, (6, 9), dtype=np.uint8)
    tifffile.imwrite(tmp_path / "p.tif", idx, photometric="palette", colormap=cmap)
    img = read_image(tmp_path / "p.tif")
    want = np.asarray(PILImage.open(tmp_path / "p.tif").convert("RGB"))  # an independent reader
    assert img.bit_depth == 8 and not img.gray
    np.testing.assert_array_equal(np.round(img.rgb * 255).astype(np.uint8), want)
    np.testing.assert_array_equal(want, (cmap[:, idx] // 257).transpose(1, 2, 0))


def test_a_ycbcr_tiff_is_refused_in_one_line(tmp_path, rng):
    tifffile.imwrite(
        tmp_path / "y.tif", rng.integers(0, 256, (8, 10, 3), dtype=np.uint8), photometric="ycbcr", subsampling=(1, 1)
    )
    with pytest.raises(ImageError, match="a YCBCR TIFF is not supported"):
        read_image(tmp_path / "y.tif")


def test_a_float_tiff_outside_0_1_is_clipped_with_a_warning_and_nan_refused_naming_the_input(tmp_path, rng):
    hdr = rng.random((10, 10, 3), dtype=np.float32) * 2.0
    tifffile.imwrite(tmp_path / "h.tif", hdr, photometric="rgb")
    img = read_image(tmp_path / "h.tif")
    frac = 100 * np.count_nonzero(hdr > 1) / hdr.size
    assert len(img.warnings) == 1 and f"{frac:.1f} % of its float samples are outside [0, 1]" in img.warnings[0]
    np.testing.assert_allclose(img.rgb, np.clip(hdr, 0, 1))
    hdr[2, 3, 1] = np.nan
    tifffile.imwrite(tmp_path / "n.tif", hdr, photometric="rgb")
    with pytest.raises(ImageError, match=r"n\.tif: the input image holds 1 NaN/Inf sample"):
        read_image(tmp_path / "n.tif")


def _icc(space: bytes) -> bytes:
    """An ICC profile header naming ``space`` as its data colour space (the rest zeros: enough for a reader)."""
    head = bytearray(128)
    head[0:4] = (128).to_bytes(4, "big")
    head[12:16], head[16:20], head[36:40] = b"prtr", space, b"acsp"
    return bytes(head)


def test_a_cmyk_profile_is_dropped_from_the_rgb_output_with_a_warning(tmp_path):
    PILImage.new("CMYK", (12, 10), (10, 200, 30, 0)).save(tmp_path / "c.jpg", icc_profile=_icc(b"CMYK"))
    img = read_image(tmp_path / "c.jpg")
    assert img.icc_profile is None and "its CMYK ICC profile was dropped" in img.warnings[0]
    write_image(tmp_path / "o.png", img)
    assert PILImage.open(tmp_path / "o.png").info.get("icc_profile") is None
    PILImage.new("RGB", (12, 10)).save(tmp_path / "r.jpg", icc_profile=_icc(b"RGB "))
    kept = read_image(tmp_path / "r.jpg")
    assert kept.icc_profile == _icc(b"RGB ") and not kept.warnings  # an RGB profile on RGB output stays


def test_a_tiff_output_keeps_the_exif_orientation_the_pixels_were_not_turned_by(tmp_path, rng):
    from PIL import ImageOps

    exif = PILImage.Exif()
    exif[274] = 6  # rotate 90 degrees clockwise to display
    PILImage.fromarray(rng.integers(0, 256, (10, 16, 3), dtype=np.uint8)).save(tmp_path / "r.jpg", exif=exif)
    written = write_image(tmp_path / "o.tif", read_image(tmp_path / "r.jpg"))
    assert "orientation" in written["metadata"]
    with PILImage.open(tmp_path / "o.tif") as out, PILImage.open(tmp_path / "r.jpg") as src:
        assert out.getexif().get(274) == 6
        assert ImageOps.exif_transpose(out).size == ImageOps.exif_transpose(src).size == (10, 16)


@pytest.mark.parametrize("suffix", [".webp", ".bmp"])
def test_every_format_read_is_written_back_exactly_at_8_bits(tmp_path, rng, suffix):
    arr = rng.integers(0, 256, (6, 9, 3), dtype=np.uint8)
    PILImage.fromarray(arr).save(tmp_path / f"a{suffix}", **({"lossless": True} if suffix == ".webp" else {}))
    img = read_image(tmp_path / f"a{suffix}")
    written = write_image(tmp_path / f"o{suffix}", img)
    assert written["bit_depth"] == 8
    np.testing.assert_array_equal(np.asarray(PILImage.open(tmp_path / f"o{suffix}").convert("RGB")), arr)


def test_a_killed_writers_temporary_file_is_never_an_input_and_is_swept(tmp_path):
    """A real kill -9 in the middle of an atomic write: the temporary file stays; the next plan removes it (its
    writer is gone) and never lists it as an image."""
    import os
    import signal
    import subprocess
    import sys

    from scaoed_deploy.images import list_images
    from scaoed_deploy.runtime.jobs import plan_jobs

    src, out = tmp_path / "in", tmp_path / "out"
    src.mkdir()
    write_image(src / "a.png", Image(rgb=np.zeros((4, 4, 3), np.float32)))
    code = (
        "import sys, time\nfrom scaoed_deploy.util.files import atomic_path\n"
        "with atomic_path(sys.argv[1]) as t:\n    t.write_bytes(b'half')\n    print('in', flush=True)\n"
        "    time.sleep(60)\n"
    )
    child = subprocess.Popen([sys.executable, "-c", code, str(out / "a.png")], stdout=subprocess.PIPE, text=True)
    assert child.stdout.readline().strip() == "in"
    os.kill(child.pid, signal.SIGKILL)
    child.wait()
    left = [p for p in out.iterdir()]
    assert len(left) == 1 and left[0].name.startswith(".a.tmp-")
    assert list_images(out) == []  # never an input
    other_host = out / ".b.tmp-00000000-1-xyz.png"  # another machine's writer: not ours to judge
    other_host.write_bytes(b"x")
    plan = plan_jobs(src, out)
    assert plan.swept == [str(left[0])] and sorted(p.name for p in out.iterdir()) == [other_host.name]
    assert [j.src.name for j in plan.jobs] == ["a.png"]


def test_a_bilevel_miniswhite_tiff_reads_black_on_white(tmp_path, rng):
    """Its 1-bit samples fill the range, then MinIsWhite inverts them (a fax)."""
    bits = rng.integers(0, 2, (5, 8)).astype(bool)
    tifffile.imwrite(tmp_path / "fax.tif", bits, photometric="miniswhite")
    np.testing.assert_array_equal(read_image(tmp_path / "fax.tif").rgb[..., 0], np.where(bits, 0.0, 1.0))
