"""The README's bad-input table, run row by row: each case gives one stderr line with the text the table
quotes, the exit code it gives, and no traceback. Ctrl-C cases follow: nothing half-written, a folder resumes."""

from __future__ import annotations

import json
import re
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image as PILImage
from references import one_error, tiny_conv_onnx

from scaoed_deploy import checkpoint as ckpt
from scaoed_deploy.cli import main
from scaoed_deploy.images import Image, write_image
from scaoed_deploy.serve import RepoOptions, free_port, make_repository

README = Path(__file__).resolve().parents[1] / "README.md"


def _table() -> list[tuple[str, int, str]]:
    """(case, exit code, quoted text) from the README's 'Bad input' table."""
    text = README.read_text()
    section = text[text.index("### Bad input"):]
    section = section[: section.index("\n## ")]
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


def _case(name: str, d: Path, checkpoint: Path) -> list[str]:
    """The command line for one row of the table, with the files it needs made in ``d``."""
    good = _png(d / "good.png")
    run = ["denoise", "IN", str(d / "out.png"), "-c", str(checkpoint), "--stages", "1"]

    def denoise(src: Path) -> list[str]:
        return [str(src) if a == "IN" else a for a in run]

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


@pytest.mark.parametrize("name, code, quoted", ROWS, ids=[r[0] for r in ROWS])
def test_each_row_of_the_readme_table(name, code, quoted, tmp_path, tiny_checkpoint, capsys):
    args = _case(name, tmp_path, tiny_checkpoint)
    got = main(args)
    out, err = capsys.readouterr()
    assert got == code, err
    if code == 0:
        assert (tmp_path / "out.png").is_file() and quoted in out
        return
    line = one_error(err)
    pattern = re.escape(quoted).replace(re.escape("..."), ".*")
    assert re.search(pattern, line), line
    assert not (tmp_path / "out.png").exists() and not list(tmp_path.rglob(".*tmp*"))


def test_the_table_covers_the_issue_list():
    assert {r[0] for r in ROWS} >= {"truncated image", "empty image file", "not an image", "1-pixel image",
                                    "decompression bomb", "CMYK JPEG", "checkpoint with a pickled object",
                                    "checkpoint with other keys", "truncated checkpoint", "checkpoint with NaN",
                                    "corrupt ONNX", "engine whose sidecar does not match", "unwritable output"}


def test_ctrl_c_during_export_leaves_nothing(tmp_path, capsys, monkeypatch):
    from scaoed_deploy import export as ex

    def interrupted(model, spec):
        raise KeyboardInterrupt

    monkeypatch.setattr(ex, "torch_export", interrupted)
    code = main(["export", "--stages", "1", "--random-seed", "0", "--blocks", "1", "-o", str(tmp_path / "out")])
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 130 and err[-1] == "error: interrupted"
    assert not (tmp_path / "out").exists() or not list((tmp_path / "out").iterdir())


def test_ctrl_c_during_a_folder_run_keeps_what_was_done_and_the_run_resumes(tmp_path, tiny_checkpoint, capsys,
                                                                             monkeypatch):
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
