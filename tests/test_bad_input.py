"""The bad-input table of docs/errors.md, run row by row: each case gives one stderr line with the text the table
quotes, the exit code it gives, and no traceback. Ctrl-C cases follow: nothing half-written, a folder resumes."""

from __future__ import annotations

import json
import re
import shutil
import subprocess
from pathlib import Path

import numpy as np
import pytest
import tifffile
import torch
from PIL import Image as PILImage
from references import edited, foreign_onnx, one_error, sealed_onnx, tiny_conv_onnx

from scaoed_deploy import checkpoint as ckpt
from scaoed_deploy.cli import main
from scaoed_deploy.images import Image, write_image
from scaoed_deploy.serve import RepoOptions, free_port, make_repository

README = Path(__file__).resolve().parents[1] / "docs" / "errors.md"


def _table() -> list[tuple[str, int, str]]:
    """(case, exit code, quoted text) from the 'Bad input' table of docs/errors.md."""
    text = README.read_text()
    section = text[text.index("### Bad input") :]
    section = section.split("\n## ")[0]
    rows = []
    for line in section.splitlines():
        cells = [c.strip() for c in line.strip().strip("|").split("|")]
        if len(cells) == 3 and cells[1].isdigit():
            rows.append((cells[0], int(cells[1]), cells[2].strip("`")))
    return rows


ROWS = _table()


def _png(path: Path, h: int = 20, w: int = 24) -> Path:
    write_image(path, Image(rgb=np.random.default_rng(0).random((h, w, 3), dtype=np.float32)))
    return path


def full_tmpfs(at: Path, cleanup: list) -> Path:
    """A 200 KiB tmpfs mounted at ``at`` and filled to the last byte (the test skips where mounting is refused)."""
    at.mkdir()
    if subprocess.run(["mount", "-t", "tmpfs", "-o", "size=200k", "tmpfs", str(at)], capture_output=True).returncode:
        pytest.skip("cannot mount a tmpfs here (needs root)")
    cleanup.append(lambda: subprocess.run(["umount", "-l", str(at)], capture_output=True))
    with open(at / "filler", "wb", buffering=0) as f:  # fill it: writes fail with ENOSPC from the first byte
        try:
            while True:
                f.write(b"\0" * 4096)
        except OSError:
            pass
    return at


def _model(d: Path, name: str, **how) -> list[str]:
    return ["denoise", str(_png(d / "good.png")), str(d / "out.png"), "-m", str(foreign_onnx(d / name, **how))]


def _case(name: str, d: Path, checkpoint: Path, cleanup: list) -> list[str]:
    """The command line for one row of the table, with the files it needs made in ``d``."""
    good = _png(d / "good.png")
    run = ["denoise", "IN", str(d / "out.png"), "-c", str(checkpoint), "--stages", "1"]

    def denoise(src: Path) -> list[str]:
        return [str(src) if a == "IN" else a for a in run]

    if name == "verified ONNX with one weight edited to NaN":
        return ["denoise", str(good), str(d / "out.png"), "-m", str(edited(sealed_onnx(d / "e.onnx"), nan=True))]
    if name == "`triton-repo` on that file":
        return ["triton-repo", str(edited(sealed_onnx(d / "e.onnx"), nan=True)), "-o", str(d / "repo")]
    if name == "full disk (a 200 KiB tmpfs, full)":
        return [
            "denoise",
            str(good),
            str(full_tmpfs(d / "full", cleanup) / "out.png"),
            "-c",
            str(checkpoint),
            "--stages",
            "1",
        ]
    if name == "reference of another size":
        return denoise(good) + ["-r", str(_png(d / "small.png", 10, 12))]
    if name == "reference that cannot be read":
        (d / "r.png").write_text("not an image")
        return denoise(good) + ["-r", str(d / "r.png")]
    if name == "ONNX of another network (half-size output)":
        return _model(d, "half.onnx", stride=2, output_dims=("N", 3, "H2", "W2"))
    if name == "ONNX of another network (one output channel)":
        return _model(d, "gray.onnx", out_channels=1, output_dims=("N", 1, "H", "W"))
    if name == "ONNX whose input is not `noisy`":
        return _model(d, "x.onnx", input_name="x")
    if name == "ONNX whose output shape shows only when run":
        return _model(d, "late.onnx", stride=2, output_dims=("N", 3, None, None))
    if name in ("engine sidecar that is a JSON list", "engine sidecar that is not UTF-8"):
        stem = "l" if "list" in name else "u"
        (d / f"{stem}.engine").write_bytes(b"plan bytes")
        (d / f"{stem}.json").write_bytes(b"[1, 2, 3]" if stem == "l" else b"\xff\xfe{}")
        return ["denoise", str(good), str(d / "out.png"), "-m", str(d / f"{stem}.engine")]
    if name == "`.xml` that is not an OpenVINO IR":
        (d / "x.xml").write_text('<?xml version="1.0"?><graph><node/></graph>')
        (d / "x.bin").write_bytes(b"")
        return ["denoise", str(good), str(d / "out.png"), "-m", str(d / "x.xml")]
    if name == "truncated OpenVINO IR":
        (d / "t.xml").write_text('<?xml version="1.0"?><net name="m" version="11"><layers><layer id="0"')
        (d / "t.bin").write_bytes(b"")
        return ["denoise", str(good), str(d / "out.png"), "-m", str(d / "t.xml")]
    if name == "animated PNG":
        frames = [PILImage.new("RGB", (8, 8), (60 * i, 0, 0)) for i in range(3)]
        frames[0].save(d / "anim.png", save_all=True, append_images=frames[1:])
        return denoise(d / "anim.png")
    if name == "multi-page TIFF":
        frames = [PILImage.new("RGB", (8, 8), (60 * i, 0, 0)) for i in range(3)]
        frames[0].save(d / "pages.tif", save_all=True, append_images=frames[1:])
        return denoise(d / "pages.tif")
    if name == "CMYK TIFF":
        cmyk = np.zeros((20, 24, 4), np.uint8)
        cmyk[..., 1] = 200
        tifffile.imwrite(d / "cmyk.tif", cmyk, photometric="separated")
        return denoise(d / "cmyk.tif")
    if name == "`convert` on a PNG":
        return ["convert", str(_png(d / "x.png")), str(d / "x.safetensors")]
    if name == "checkpoint with int8 tensors":
        w = ckpt.read_checkpoint(checkpoint)
        ckpt.save_safetensors(w, d / "i8.safetensors", stages=1, dtype=torch.int8)
        return ["denoise", str(good), str(d / "out.png"), "-m", str(d / "i8.safetensors")]
    if name == "output file is the input":
        return ["denoise", str(good), str(good), "-c", str(checkpoint), "--stages", "1"]
    if name == "output folder is the input folder":
        (d / "in").mkdir()
        _png(d / "in" / "a.png")
        return ["denoise", str(d / "in"), str(d / "in"), "-c", str(checkpoint), "--stages", "1", "--overwrite"]
    if name == "`--overlap` of half the tile":
        return denoise(good) + ["--tile", "64", "--overlap", "32"]

    if name == "16-bit PNG declaring 13400 x 13400 (a bomb)":
        from test_images import _png_bomb

        return denoise(_png_bomb(d / "b.png", 13400, 13400))
    if name == "deflate TIFF declaring 14000 x 14000 (a bomb)":
        from test_images import _tiff_bomb

        return denoise(_tiff_bomb(d / "b.tif", 14000))
    if name == "YCbCr TIFF":
        tifffile.imwrite(d / "y.tif", np.zeros((20, 24, 3), np.uint8), photometric="ycbcr", subsampling=(1, 1))
        return denoise(d / "y.tif")
    if name == "TIFF with a NaN sample":
        x = np.full((20, 24, 3), 0.5, np.float32)
        x[3, 4, 0] = np.nan
        tifffile.imwrite(d / "n.tif", x, photometric="rgb")
        return denoise(d / "n.tif")
    if name == "output format that cannot be written":
        return ["denoise", str(good), str(d / "out.gif"), "-c", str(checkpoint), "--stages", "1"]
    if name.startswith("checkpoint config with"):
        key, value = json.loads("{" + name.split("`")[1] + "}").popitem()
        w = ckpt.read_checkpoint(checkpoint)
        ckpt.save_safetensors(w, d / "s.safetensors", stages=1)
        config = json.loads((d / "s.json").read_text())
        (d / "s.json").write_text(json.dumps({**config, key: value}))
        return ["denoise", str(good), str(d / "out.png"), "-m", str(d / "s.safetensors")]
    if name == "`bench --backends ''`":
        return ["bench", "--backends", "", "--res", "16", "--stages", "1"]
    if name == "`optimize --backends ,,`":
        return ["optimize", "--backends", ",,", "--res", "16", "--stages", "1", "-o", str(d / "opt")]
    if name == "`bench --res 8192` (a forward pass larger than the memory free)":
        return [
            "bench",
            "--res",
            "8192",
            "--stages",
            "1",
            "--backends",
            "torch",
            "--random-seed",
            "0",
            "--blocks",
            "1",
            "--no-quality",
            "-o",
            str(d / "runs"),
        ]
    if name == "`denoise --server URL --stages 1`":
        return [
            "denoise",
            str(good),
            str(d / "out.png"),
            "--server",
            f"http://127.0.0.1:{free_port()}",
            "--stages",
            "1",
        ]
    if name == "16-bit PNG with an `sBIT` chunk":
        import png
        from test_images import _png_chunks

        png.from_array(np.full((20, 24 * 3), 4096, np.uint16), "RGB;16").save(str(d / "s.png"))
        _png_chunks(d / "s.png", [(b"sBIT", bytes([12, 12, 12]))])
        return denoise(d / "s.png")
    if name == "planar RGB TIFF 4 wide x 40 high":
        tifffile.imwrite(d / "p.tif", np.zeros((3, 40, 4), np.uint8), photometric="rgb", planarconfig="separate")
        return denoise(d / "p.tif")
    if name == "MinIsWhite TIFF":
        tifffile.imwrite(d / "w.tif", np.zeros((20, 24), np.uint8), photometric="miniswhite")
        return denoise(d / "w.tif")
    if name == "palette TIFF":
        cmap = np.tile(np.arange(256, dtype=np.uint16) * 257, (3, 1))
        tifffile.imwrite(d / "p.tif", np.zeros((20, 24), np.uint8), photometric="palette", colormap=cmap)
        return denoise(d / "p.tif")
    if name == "CMYK JPEG with a CMYK ICC profile":
        from test_images import _icc

        PILImage.new("CMYK", (24, 20), (10, 200, 30, 0)).save(d / "c.jpg", icc_profile=_icc(b"CMYK"))
        return denoise(d / "c.jpg")
    if name == "float TIFF with samples above 1":
        tifffile.imwrite(d / "h.tif", np.full((20, 24, 3), 1.5, np.float32), photometric="rgb")
        return denoise(d / "h.tif")
    if name in ("WebP image", "BMP image"):
        suffix = ".webp" if name.startswith("WebP") else ".bmp"
        PILImage.open(good).save(d / f"in{suffix}")
        return [str(d / f"out{suffix}") if a == str(d / "out.png") else a for a in denoise(d / f"in{suffix}")]

    if name == "truncated image":
        data = good.read_bytes()
        (d / "t.png").write_bytes(data[: len(data) // 2])
        return denoise(d / "t.png")
    if name == "empty image file":
        (d / "e.png").write_bytes(b"")
        return denoise(d / "e.png")
    if name == "not an image":
        (d / "n.png").write_text("hello")
        return denoise(d / "n.png")
    if name == "1-pixel image":
        return denoise(_png(d / "one.png", 1, 1))
    if name == "decompression bomb":
        PILImage.new("1", (20000, 20000)).save(d / "bomb.png")  # 400 M pixels, a few kB on disk
        return denoise(d / "bomb.png")
    if name == "CMYK JPEG":
        PILImage.new("CMYK", (24, 20), (10, 200, 30, 0)).save(d / "cmyk.jpg")
        return denoise(d / "cmyk.jpg")
    if name.startswith("`optimize --cpus"):
        cpus = "native,amx" if "amx" in name else "avx2"
        return ["optimize", "--res", "32", "--stages", "1", "--cpus", cpus, "-o", str(d / "pkg")]
    if name == "`denoise -m PACKAGE` whose only class this CPU is not":
        from scaoed_deploy.cpu import ISA_FLAGS

        (d / "pkg").mkdir()  # an entry measured on a CPU with every instruction set there is: none has them all
        what = {"artifact": "m.onnx", "backend": "onnxruntime", "k": 1, "candidate": "k1-onnxruntime"}
        entry = {"chosen": "k1-onnxruntime", "machine": {"isa": list(ISA_FLAGS), "isa_class": "amx"}, "run": what}
        (d / "pkg" / "selection.json").write_text(json.dumps({"chosen": "k1-onnxruntime", "by_cpu": {"amx": entry}}))
        return denoise(good)[:3] + ["-m", str(d / "pkg")]
    if name == "checkpoint with a pickled object":
        torch.save({"x": torch.zeros(1), "obj": Path("/")}, d / "p.pth")
        return ["denoise", str(good), str(d / "out.png"), "-c", str(d / "p.pth")]
    if name == "checkpoint with other keys":
        torch.save({"conv.weight": torch.zeros(1)}, d / "k.pth")
        return ["denoise", str(good), str(d / "out.png"), "-c", str(d / "k.pth")]
    if name == "truncated checkpoint":
        data = Path(checkpoint).read_bytes()
        (d / "t.pth").write_bytes(data[: len(data) // 2])
        return ["denoise", str(good), str(d / "out.png"), "-c", str(d / "t.pth")]
    if name == "checkpoint with NaN":
        w = ckpt.read_checkpoint(checkpoint)
        w.state_dict["z_net.tail.weight"][0, 0, 0, 0] = float("nan")
        ckpt.save_safetensors(w, d / "nan.safetensors", stages=1)
        return ["denoise", str(good), str(d / "out.png"), "-m", str(d / "nan.safetensors")]
    if name == "corrupt ONNX":
        (d / "c.onnx").write_bytes(b"\x08\x07garbage")
        return ["denoise", str(good), str(d / "out.png"), "-m", str(d / "c.onnx")]
    if name == "engine whose sidecar does not match":
        (d / "m.engine").write_bytes(b"plan bytes")
        (d / "m.json").write_text(json.dumps({"built": True, "engine_sha256": "0" * 64, "tensorrt": "11.0"}))
        return ["denoise", str(good), str(d / "out.png"), "-m", str(d / "m.engine")]
    if name == "unwritable output":
        (d / "afile").write_text("")
        return ["denoise", str(good), str(d / "afile" / "out.png"), "-c", str(checkpoint), "--stages", "1"]
    if name == "`--server` where no server listens":
        return ["denoise", str(good), str(d / "out.png"), "--server", f"http://127.0.0.1:{free_port()}"]
    if name == "`triton-repo` on an ONNX that records no verification":
        return ["triton-repo", str(tiny_conv_onnx(d / "f.onnx")), "-o", str(d / "repo")]
    if name == "`serve` on a repository the bundled server cannot run":
        make_repository([tiny_conv_onnx(d / "f.onnx")], d / "repo", RepoOptions(allow_unverified=True))
        return ["serve", str(d / "repo")]
    if name == "unknown option":
        return ["denoise", str(good), str(d / "out.png"), "--tile-size", "3"]
    raise AssertionError(f"README row {name!r} has no case here")


@pytest.fixture
def cleanup():
    done: list = []
    yield done
    for undo in reversed(done):
        undo()


@pytest.mark.parametrize("name, code, quoted", ROWS, ids=[r[0] for r in ROWS])
def test_each_row_of_the_readme_table(name, code, quoted, tmp_path, tiny_checkpoint, capsys, cleanup):
    args = _case(name, tmp_path, tiny_checkpoint, cleanup)
    before = _files(tmp_path)
    got = main(args)
    out, err = capsys.readouterr()
    assert got == code, err
    pattern = re.escape(quoted).replace(re.escape("..."), ".*")
    if code == 0:  # the line may be a result (stdout) or a warning (stderr)
        assert list(tmp_path.glob("out.*")) and re.search(pattern, out + err), out + err
        return
    line = one_error(err)
    assert re.search(pattern, line), line
    assert _files(tmp_path) == before  # nothing written, nothing half-written (no temporary file left)


def _files(d: Path) -> dict[str, float]:
    return {str(p.relative_to(d)): p.stat().st_mtime for p in d.rglob("*") if p.is_file()}


def test_the_table_covers_the_issue_list():
    assert {r[0] for r in ROWS} >= {
        "truncated image",
        "empty image file",
        "not an image",
        "1-pixel image",
        "decompression bomb",
        "CMYK JPEG",
        "checkpoint with a pickled object",
        "checkpoint with other keys",
        "truncated checkpoint",
        "checkpoint with NaN",
        "corrupt ONNX",
        "engine whose sidecar does not match",
        "unwritable output",
    }


def test_ctrl_c_during_export_leaves_nothing(tmp_path, capsys, monkeypatch):
    from scaoed_deploy import export as ex

    def interrupted(model, spec):
        raise KeyboardInterrupt

    monkeypatch.setattr(ex, "torch_export", interrupted)
    code = main(["export", "--stages", "1", "--random-seed", "0", "--blocks", "1", "-o", str(tmp_path / "out")])
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 130 and err[-1] == "error: interrupted"
    assert not (tmp_path / "out").exists() or not list((tmp_path / "out").iterdir())


def test_ctrl_c_during_a_folder_run_keeps_what_was_done_and_the_run_resumes(
    tmp_path, tiny_checkpoint, capsys, monkeypatch
):
    from scaoed_deploy.cli import denoise as cli_denoise

    src, dst = tmp_path / "in", tmp_path / "out"
    src.mkdir()
    for i in range(3):
        _png(src / f"{i}.png")
    real, calls = cli_denoise.denoise_file, []

    def second_call_interrupted(*a, **k):
        calls.append(a[1])
        if len(calls) == 2:
            raise KeyboardInterrupt
        return real(*a, **k)

    monkeypatch.setattr(cli_denoise, "denoise_file", second_call_interrupted)
    args = ["denoise", str(src), str(dst), "-c", str(tiny_checkpoint), "--stages", "1"]
    assert main(args) == 130
    assert sorted(p.name for p in dst.iterdir()) == ["0.png"]  # done before Ctrl-C, nothing half-written
    monkeypatch.setattr(cli_denoise, "denoise_file", real)
    capsys.readouterr()
    assert main(args) == 0
    assert "skipped 1 image(s) whose output exists" in capsys.readouterr().out
    assert sorted(p.name for p in dst.iterdir()) == ["0.png", "1.png", "2.png"]
    shutil.rmtree(dst)


def _folder(d: Path, n: int = 3) -> Path:
    d.mkdir()
    for i in range(n):
        _png(d / f"{i}.png")
    return d


def test_a_folder_run_on_a_full_disk_stops_cleanly_and_leaves_nothing_partial(
    tmp_path, tiny_checkpoint, capsys, cleanup
):
    src = _folder(tmp_path / "in")
    out = full_tmpfs(tmp_path / "full", cleanup)
    code = main(["denoise", str(src), str(out), "-c", str(tiny_checkpoint), "--stages", "1"])
    line = one_error(capsys.readouterr().err)
    assert code == 1 and "No space left on device" in line and "stopped after 0 of 3 image(s)" in line
    assert "run the same command again to resume" in line
    assert sorted(p.name for p in out.iterdir()) == ["filler"]  # no image, no temporary file


def test_a_failed_reference_writes_nothing_and_a_rerun_redoes_the_image(tmp_path, tiny_checkpoint, capsys):
    src, refs, out = _folder(tmp_path / "in", 2), tmp_path / "refs", tmp_path / "out"
    refs.mkdir()
    _png(refs / "0.png")
    _png(refs / "1.png", 10, 12)  # another size
    args = ["denoise", str(src), str(out), "-c", str(tiny_checkpoint), "--stages", "1", "-r", str(refs)]
    assert main(args) == 1
    out_, err = capsys.readouterr()
    assert "the reference is 12x10" in err and sorted(p.name for p in out.iterdir()) == ["0.png"]
    _png(refs / "1.png")  # the reference fixed: the rerun does the image it failed, and skips the other
    assert main(args) == 0
    assert "skipped 1 image(s)" in capsys.readouterr().out and sorted(p.name for p in out.iterdir()) == [
        "0.png",
        "1.png",
    ]


@pytest.mark.parametrize("extra", [["--tile", "16", "--overlap", "4"], ["--ensemble"]], ids=["tiled", "ensemble"])
def test_a_model_of_another_network_is_refused_when_tiled_or_ensembled_too(tmp_path, capsys, extra):
    model = foreign_onnx(tmp_path / "late.onnx", stride=2, output_dims=("N", 3, None, None))
    src = _folder(tmp_path / "in", 2)
    code = main(["denoise", str(src), str(tmp_path / "out"), "-m", str(model), *extra])
    line = one_error(capsys.readouterr().err)
    assert code == 1 and "is not a ScaoedNet denoiser" in line and "stopped after 0 of 2 image(s)" in line
    assert not (tmp_path / "out").exists() or not list((tmp_path / "out").iterdir())


def test_sigterm_ends_a_folder_run_like_ctrl_c(tmp_path, tiny_checkpoint, capsys, monkeypatch):
    import os
    import signal

    from scaoed_deploy.cli import denoise as cli_denoise

    src, dst = _folder(tmp_path / "in"), tmp_path / "out"
    real, calls = cli_denoise.denoise_file, []

    def terminated_on_the_second(*a, **k):
        calls.append(a[1])
        if len(calls) == 2:
            os.kill(os.getpid(), signal.SIGTERM)  # a real signal, as `kill PID` sends it
        return real(*a, **k)

    monkeypatch.setattr(cli_denoise, "denoise_file", terminated_on_the_second)
    code = main(["denoise", str(src), str(dst), "-c", str(tiny_checkpoint), "--stages", "1"])
    assert code == 143 and one_error(capsys.readouterr().err) == "error: terminated"
    assert sorted(p.name for p in dst.iterdir()) == ["0.png"]
    assert signal.getsignal(signal.SIGTERM) is signal.SIG_DFL  # the handler is gone after the command


def test_a_cmyk_tiff_is_converted_like_a_cmyk_jpeg_not_read_as_rgb_and_alpha(tmp_path):
    from scaoed_deploy.images import read_image

    cmyk = np.random.default_rng(1).integers(0, 256, (6, 8, 4), dtype=np.uint8)
    tifffile.imwrite(tmp_path / "c.tif", cmyk, photometric="separated")
    image = read_image(tmp_path / "c.tif")
    want = np.asarray(PILImage.fromarray(cmyk, "CMYK").convert("RGB"))
    assert image.alpha is None and np.array_equal(np.round(image.rgb * 255).astype(np.uint8), want)
