"""Object storage in and out (storage/): denoise between s3:// prefixes, lists of s3:// URLs, and the errors a user
meets (no bucket, a refused key, an endpoint that does not answer), against a real S3 server: moto's, started on
127.0.0.1 for this module. Outputs are compared with a local run of the same files: pixel-identical, bit depth,
alpha, ICC profile and EXIF alike."""

from __future__ import annotations

import json
import os
import time
from pathlib import Path

import numpy as np
import pytest
from PIL import Image as PILImage
from PIL import ImageCms
from references import one_error
from s3_server import MOTO, aws_env, start

from scaoed_deploy.cli import main
from scaoed_deploy.images import Image, read_image, write_image
from scaoed_deploy.serve import free_port
from scaoed_deploy.storage import objects

pytestmark = pytest.mark.slow  # starts a server of its own
BUCKET = "archive"


@pytest.fixture(scope="module")
def s3(tmp_path_factory):
    """A bucket on a moto S3 server of this module's own (ended by PID at the end), the AWS variables pointing at
    it, and a pyarrow filesystem to look at it with."""
    if not MOTO.is_file():
        pytest.skip("moto's server is not installed (the test extra has it)")
    port = free_port()
    server = start(port)
    env = aws_env(port)
    saved = {k: os.environ.get(k) for k in env}
    os.environ.update(env)
    objects.filesystem.cache_clear()
    from pyarrow import fs

    look = fs.S3FileSystem(endpoint_override=env["AWS_ENDPOINT_URL"], allow_bucket_creation=True)
    look.create_dir(BUCKET)
    try:
        yield look
    finally:
        server.kill()
        server.wait(10)
        for k, v in saved.items():
            os.environ.pop(k) if v is None else os.environ.__setitem__(k, v)
        objects.filesystem.cache_clear()


def _put(look, key: str, path: Path) -> None:
    with look.open_output_stream(f"{BUCKET}/{key}") as f:
        f.write(path.read_bytes())


def _get(look, key: str, path: Path) -> Path:
    with look.open_input_stream(f"{BUCKET}/{key}") as f:
        path.write_bytes(f.read())
    return path


def _keys(look, prefix: str) -> list[str]:
    from pyarrow import fs

    return sorted(i.base_name for i in look.get_file_info(fs.FileSelector(f"{BUCKET}/{prefix}", allow_not_found=True)))


def _inputs(d: Path) -> Path:
    """A 16-bit PNG, an 8-bit JPEG with an ICC profile and EXIF orientation, an RGBA PNG, a corrupt PNG."""
    d.mkdir()
    rng = np.random.default_rng(11)
    write_image(d / "a16.png", Image(rgb=rng.random((36, 44, 3), dtype=np.float32), bit_depth=16))
    im = PILImage.fromarray((rng.random((30, 40, 3)) * 255).astype(np.uint8))
    exif = im.getexif()
    exif[0x0112] = 6
    icc = ImageCms.ImageCmsProfile(ImageCms.createProfile("sRGB")).tobytes()
    im.save(d / "b.jpg", icc_profile=icc, exif=exif.tobytes(), quality=95)
    write_image(
        d / "c_rgba.png",
        Image(rgb=rng.random((28, 28, 3), dtype=np.float32), alpha=rng.random((28, 28), dtype=np.float32)),
    )
    (d / "d_corrupt.png").write_bytes(b"\x89PNG\r\n\x1a\n not really")
    return d


def _same(a_path: Path, b_path: Path) -> None:
    a, b = read_image(a_path), read_image(b_path)
    assert a.bit_depth == b.bit_depth and (a.alpha is None) == (b.alpha is None), a_path.name
    assert np.array_equal(a.rgb, b.rgb) and a.icc_profile == b.icc_profile and a.exif == b.exif, a_path.name


def test_a_prefix_in_and_out_equals_local_denoise_resumes_and_lists_the_corrupt_object(
    s3, tmp_path, tiny_checkpoint, capsys
):
    local_in = _inputs(tmp_path / "in")
    for p in local_in.iterdir():
        _put(s3, f"in/{p.name}", p)
    model = ["-c", str(tiny_checkpoint), "--stages", "1", "--threads", "1", "--json"]
    assert main(["denoise", str(local_in), str(tmp_path / "local"), *model]) == 1
    capsys.readouterr()
    assert main(["denoise", f"s3://{BUCKET}/in/", f"s3://{BUCKET}/out/", *model]) == 1
    summary = json.loads(capsys.readouterr().out)
    assert [f["input"] for f in summary["failures"]] == [f"s3://{BUCKET}/in/d_corrupt.png"]
    assert "not a PNG" in summary["failures"][0]["error"] and "/tmp" not in summary["failures"][0]["error"]
    assert sorted(r["output"] for r in summary["results"]) == [
        f"s3://{BUCKET}/out/{n}" for n in ("a16.png", "b.jpg", "c_rgba.png")
    ]
    assert _keys(s3, "out") == ["a16.png", "b.jpg", "c_rgba.png"]  # nothing for the corrupt one, no temporary
    for name in _keys(s3, "out"):
        _same(tmp_path / "local" / name, _get(s3, f"out/{name}", tmp_path / f"got_{name}"))
    assert main(["denoise", f"s3://{BUCKET}/in/", f"s3://{BUCKET}/out/", *model]) == 1  # again: only the corrupt one
    again = json.loads(capsys.readouterr().out)
    assert len(again["skipped_existing"]) == 3 and again["results"] == [] and len(again["failures"]) == 1


def test_a_list_of_urls_into_a_local_folder_and_one_object_into_one_file(s3, tmp_path, tiny_checkpoint, capsys):
    src = _inputs(tmp_path / "in")
    for p in src.iterdir():
        _put(s3, f"list/{p.name}", p)
    listing = tmp_path / "urls.txt"
    listing.write_text(f"# two objects\ns3://{BUCKET}/list/a16.png\ns3://{BUCKET}/list/c_rgba.png\n")
    model = ["-c", str(tiny_checkpoint), "--stages", "1", "--threads", "1"]
    assert main(["denoise", str(listing), str(tmp_path / "out"), *model]) == 0
    assert main(["denoise", str(src), str(tmp_path / "local"), *model]) == 1
    assert sorted(p.name for p in (tmp_path / "out").iterdir()) == ["a16.png", "c_rgba.png"]
    for name in ("a16.png", "c_rgba.png"):
        _same(tmp_path / "local" / name, tmp_path / "out" / name)
    assert main(["denoise", f"s3://{BUCKET}/list/b.jpg", str(tmp_path / "one.jpg"), *model]) == 0
    _same(tmp_path / "local" / "b.jpg", tmp_path / "one.jpg")
    capsys.readouterr()
    assert main(["denoise", str(tmp_path / "one.jpg"), f"s3://{BUCKET}/list/b.jpg", *model]) == 1
    assert one_error(capsys.readouterr().err) == f"error: s3://{BUCKET}/list/b.jpg exists; --overwrite to replace it"


def test_no_bucket_a_refused_key_or_no_server_is_one_line_before_any_work(s3, tmp_path, monkeypatch, capsys):
    from scaoed_deploy.runtime import Denoiser

    monkeypatch.setattr(Denoiser, "open", lambda *a, **k: pytest.fail("a model was opened for a run that cannot be"))
    write_image(tmp_path / "in.png", Image(rgb=np.zeros((8, 8, 3), np.float32)))
    assert main(["denoise", "s3://no-such-bucket/in/", str(tmp_path / "out")]) == 1
    assert "s3://no-such-bucket/in/: no bucket named 'no-such-bucket'" in one_error(capsys.readouterr().err)
    assert main(["denoise", str(tmp_path / "in.png"), "s3://no-such-bucket/out/"]) == 1
    assert "no bucket named 'no-such-bucket'" in one_error(capsys.readouterr().err)
    assert not (tmp_path / "out").exists()

    port = free_port()  # a server that checks keys (moto's IAM on from the first request): this key is unknown
    strict = start(port, INITIAL_NO_AUTH_ACTION_COUNT="0")
    try:
        monkeypatch.setenv("AWS_ENDPOINT_URL", f"http://127.0.0.1:{port}")
        objects.filesystem.cache_clear()
        assert main(["denoise", f"s3://{BUCKET}/in/", str(tmp_path / "out")]) == 1
        line = one_error(capsys.readouterr().err)
        assert "ACCESS_DENIED" in line and "check AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY" in line
    finally:
        strict.kill()
        strict.wait(10)
    monkeypatch.setenv("AWS_ENDPOINT_URL", f"http://127.0.0.1:{free_port()}")  # nothing listens there
    objects.filesystem.cache_clear()
    t0 = time.monotonic()
    assert main(["denoise", f"s3://{BUCKET}/in/", str(tmp_path / "out")]) == 1
    line = one_error(capsys.readouterr().err)
    assert "Could not connect" in line and "check AWS_ENDPOINT_URL" in line and time.monotonic() - t0 < 30
    assert not (tmp_path / "out").exists()
    monkeypatch.undo()
    objects.filesystem.cache_clear()  # the module's server again for whatever runs next
