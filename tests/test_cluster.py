"""denoise --ray on a real two-node Ray cluster (a head and a second raylet on 127.0.0.1), started by the test inside
a private network and PID namespace, so that it talks to loopback only and nothing of it outlives the test:
outputs pixel-identical to local denoise, a corrupt image listed as failed, a worker SIGKILLed mid-run and every
image still right, the driver interrupted and the same command doing only the rest."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

import numpy as np
import pytest
from PIL import Image as PILImage
from references import one_error, tiny_conv_onnx

from scaoed_deploy.cli import main
from scaoed_deploy.cluster.manifest import NAME as MANIFEST
from scaoed_deploy.images import Image, read_image, write_image

HERE = Path(__file__).resolve().parent
NAMESPACE = ["unshare", "--net", "--pid", "--fork", "--mount-proc", "--"]


def _namespace_or_skip() -> None:
    pytest.importorskip("ray.data", reason="Ray Data is not installed (pip install 'scaoed-deploy[ray]')")
    if not (shutil.which("unshare") and shutil.which("ip")):
        pytest.skip("unshare and ip are needed for a private network namespace")
    probe = subprocess.run(NAMESPACE + ["sh", "-c", "ip link set lo up"], capture_output=True, text=True)
    if probe.returncode:
        pytest.skip(f"cannot make a private network namespace here: {probe.stderr.strip()[:200]}")


def _mixed_folder(d: Path) -> Path:
    """8- and 16-bit PNG, TIFF, RGBA, gray, odd sizes, and one corrupt file."""
    d.mkdir()
    rng = np.random.default_rng(3)
    write_image(d / "a8.png", Image(rgb=rng.random((40, 56, 3), dtype=np.float32)))
    write_image(d / "b16.png", Image(rgb=rng.random((32, 48, 3), dtype=np.float32), bit_depth=16))
    write_image(d / "c.tif", Image(rgb=rng.random((30, 44, 3), dtype=np.float32), bit_depth=16))
    write_image(
        d / "d_rgba.png",
        Image(rgb=rng.random((36, 36, 3), dtype=np.float32), alpha=rng.random((36, 36), dtype=np.float32)),
    )
    write_image(d / "e_odd.png", Image(rgb=rng.random((33, 47, 3), dtype=np.float32)))
    PILImage.fromarray((rng.random((26, 30)) * 255).astype(np.uint8), "L").save(d / "f_gray.png")
    (d / "g_corrupt.png").write_bytes(b"\x89PNG\r\n\x1a\n not really")
    return d


def _folder(d: Path, n: int, size: int) -> Path:
    d.mkdir(exist_ok=True)
    rng = np.random.default_rng(4)
    for i in range(n):
        write_image(d / f"{i:02d}.png", Image(rgb=rng.random((size, size, 3), dtype=np.float32)))
    return d


@pytest.fixture(scope="module")
def cluster(request, tmp_path_factory, tiny_checkpoint, tiny_k1_onnx):
    """Every scenario, run once inside one namespace against one cluster started by the README's steps;
    (what each saw, the folders)."""
    _namespace_or_skip()
    if not (Path(sys.executable).parent / "moto_server").is_file():
        pytest.skip("moto's server is not installed (the test extra has it)")
    d = tmp_path_factory.mktemp("cluster")
    onnx = tiny_conv_onnx(d / "tiny.onnx")
    mixed = _folder(_mixed_folder(d / "mixed"), 10, 160)  # the mixed files, and enough work to kill a worker in
    slow = _folder(d / "slow", 10, 320)  # each image long enough that Ctrl-C lands between the first and the last
    lose = _folder(d / "lose", 12, 192)  # long enough that a node dies with work left
    ray = ["--ray", "127.0.0.1:6379", "--threads", "1", "--json"]
    model = ["-c", str(tiny_checkpoint), "--stages", "1"]
    for home in ("home_a", "home_b"):
        (d / home).mkdir()
    cases = {
        "storage": {
            "port": 5420,
            "bucket": "archive",
            "upload": {f"in/{p.name}": str(p) for p in sorted(mixed.iterdir())},
        },
        "cluster": {
            "homes": {"a": str(d / "home_a"), "b": str(d / "home_b")},
            "files": {
                "/data/archive": str(_folder(d / "readme_in", 4, 64)),
                "/data/denoised": str(d / "readme_out"),
                "/data/scaoednet_k1_t16_fp32.onnx": str(tiny_k1_onnx),
            },
        },
        "kill": {
            "kind": "kill",
            "out": str(d / "mixed_ray"),
            "args": ["denoise", str(mixed), str(d / "mixed_ray"), *model, *ray],
        },
        "interrupt": {
            "kind": "interrupt",
            "out": str(d / "int_ray"),
            "args": ["denoise", str(slow), str(d / "int_ray"), *model, *ray],
        },
        "s3": {"kind": "run", "args": ["denoise", "s3://archive/in/", "s3://archive/out/", *model, *ray]},
        "s3_again": {"kind": "run", "args": ["denoise", "s3://archive/in/", "s3://archive/out/", *model, *ray]},
        "s3_fetch": {"kind": "fetch", "prefix": "archive/out", "out": str(d / "s3_out")},
        **_fleet_case(request, d, ray),
        "lose": {
            "kind": "lose_node",
            "out": str(d / "lose_ray"),
            "args": ["denoise", str(lose), str(d / "lose_ray"), *model, *ray],
        },  # last: one node fewer after
    }
    (d / "cases.json").write_text(json.dumps(cases))
    # every Ray process of the run names this folder; a short one: Ray's socket paths under it must stay within
    # AF_UNIX's 107 bytes, which a pytest folder (/tmp/pytest-of-root/pytest-NNN/cluster0/...) can pass
    ray_tmp = Path(tempfile.mkdtemp(prefix="sr", dir="/tmp"))
    env = dict(os.environ, RAY_TMPDIR=str(ray_tmp))
    script = (
        f"ip link set lo up && exec {sys.executable} {HERE / 'ray_netns.py'} {d / 'cases.json'} {d / 'result.json'}"
    )
    try:
        proc = subprocess.run(NAMESPACE + ["sh", "-c", script], capture_output=True, text=True, env=env, timeout=1800)
        assert (d / "result.json").is_file(), proc.stderr[-3000:]
        result = json.loads((d / "result.json").read_text())
        assert "error" not in result, result["error"]
        result["ray_tmp"] = str(ray_tmp)
        yield result, d, onnx
    finally:
        shutil.rmtree(ray_tmp, ignore_errors=True)


def _fleet_case(request, d: Path, ray: list[str]) -> dict:
    """A run of the two-class package (this CPU's and avx2's) with a third node that joins as an AVX2-only CPU,
    where the mask and the package can be made here."""
    try:
        package = request.getfixturevalue("fleet_package")
    except pytest.skip.Exception:
        return {}
    args = ["denoise", str(_folder(d / "fleet_in", 12, 128)), str(d / "fleet_ray"), "-m", str(package), *ray]
    return {"fleet": {"kind": "masked_node", "mask": "avx2", "home": str(d / "home_b"), "args": args}}


def test_the_cluster_has_two_nodes_on_loopback_and_nothing_of_it_outlives_the_test(cluster):
    result, d, _ = cluster
    assert result["cluster"]["nodes"] == 2 and result["cluster"]["addresses"] == ["127.0.0.1"]
    left = [p for p in Path("/proc").glob("[0-9]*/cmdline") if result["ray_tmp"].encode() in _read(p)]
    assert left == []


def _read(p: Path) -> bytes:
    try:
        return p.read_bytes()
    except OSError:
        return b""


def test_a_mixed_folder_on_ray_equals_local_denoise_and_lists_the_corrupt_image(cluster, tiny_checkpoint, capsys):
    result, d, _ = cluster
    run = result["kill"]
    assert run["code"] == 1, run["stderr"]  # one image failed
    summary = json.loads(run["stdout"])
    assert summary["done"] == 16 and summary["failed"] == 1
    assert summary["failures"][0]["input"].endswith("g_corrupt.png")
    assert summary["workers"] == 2 and summary["threads_per_worker"] == 1
    # every image done is counted once, by the worker process (host:pid) that returned it; which worker that was
    # is up to Ray (a killed worker's images may all go to the one left while its replacement starts)
    assert sum(summary["per_worker"].values()) == 16 and all(":" in w for w in summary["per_worker"])
    assert (
        main(
            [
                "denoise",
                str(d / "mixed"),
                str(d / "mixed_local"),
                "-c",
                str(tiny_checkpoint),
                "--stages",
                "1",
                "--threads",
                "1",
                "--json",
            ]
        )
        == 1
    )
    local = {r["input"]: r for r in json.loads(capsys.readouterr().out)["results"]}
    for r in summary["results"]:  # --json says the same of each image either way (the run's own facts aside)
        same = {k: v for k, v in local[r["input"]].items() if k not in ("output", "peak_rss_mb")}
        assert {k: r[k] for k in same} == same, r["input"]
    names = sorted(p.name for p in (d / "mixed_local").iterdir())
    ray_names = sorted(p.name for p in (d / "mixed_ray").iterdir() if p.name != MANIFEST)
    assert names == ray_names and len(names) == 16  # no temporary file
    for name in names:
        a, b = read_image(d / "mixed_local" / name), read_image(d / "mixed_ray" / name)
        assert a.bit_depth == b.bit_depth and a.gray == b.gray and (a.alpha is None) == (b.alpha is None)
        assert np.array_equal(a.rgb, b.rgb), name  # pixel-identical: same model, backend and threads
        if a.alpha is not None:
            assert np.array_equal(a.alpha, b.alpha)


def _same_images(a_folder: Path, b_folder: Path, names) -> None:
    for name in names:
        a, b = read_image(a_folder / name), read_image(b_folder / name)
        assert a.bit_depth == b.bit_depth and a.gray == b.gray and (a.alpha is None) == (b.alpha is None), name
        assert np.array_equal(a.rgb, b.rgb), name
        assert a.icc_profile == b.icc_profile and a.exif == b.exif, name


def test_the_readmes_cluster_steps_run_as_written_with_a_private_token(cluster):
    """tests/ray_netns.py ran the README's lines (two homes on 127.0.0.1, scp as cp, the test's node options): the
    token made before the head started, 0600 on both machines, the second node joined with it, and the README's
    own denoise command did its images."""
    result, d, _ = cluster
    steps = result["cluster"]["steps"]
    assert [s["command"].split()[0] for s in steps] == ["(umask", "ray", "mkdir", "ray", "scaoed-deploy"]
    assert all(s["code"] == 0 for s in steps), steps
    assert "Token authentication is disabled" not in "".join(s["stderr"] for s in steps)
    assert result["cluster"]["token_modes"] == {"a": "0o600", "b": "0o600"}
    assert sorted(p.name for p in (d / "readme_out").iterdir() if p.name != MANIFEST) == sorted(
        p.name for p in (d / "readme_in").iterdir()
    )


def test_object_storage_in_and_out_on_the_cluster_equals_local_and_resumes(cluster):
    """s3:// in and out through the bucket of a real S3 server (moto) on the namespace's loopback: the same images
    as the local folder run (16-bit, alpha, gray), the corrupt object a failed row, the manifest put beside them;
    the same command again skips every output and retries only the failed one, which the manifest named."""
    result, d, _ = cluster
    run = result["s3"]
    assert run["code"] == 1, run["stderr"][-2000:]
    summary = json.loads(run["stdout"])
    assert summary["done"] == 16 and summary["failed"] == 1, summary["failures"]
    assert summary["failures"][0]["input"] == "s3://archive/in/g_corrupt.png"
    assert all(r["output"].startswith("s3://archive/out/") for r in summary["results"])
    names = sorted(p.name for p in (d / "mixed_local").iterdir())
    assert result["s3_fetch"]["names"] == sorted(names + [MANIFEST])
    _same_images(d / "mixed_local", d / "s3_out", names)
    again = json.loads(result["s3_again"]["stdout"])
    assert again["skipped"] == 16 and again["done"] == 0 and again["failed"] == 1
    assert any("retrying 1 image(s) the manifest lists as failed" in n for n in again["notes"])


def test_a_node_lost_mid_run_costs_only_its_images(cluster, tiny_checkpoint):
    """The second node's raylet SIGKILLed after the first output: the run goes on with the head and ends with every
    image written, pixel-identical to a local run."""
    result, d, _ = cluster
    run = result["lose"]
    assert run["killed"], "no raylet was killed"
    assert run["code"] == 0, run["stderr"][-3000:]
    summary = json.loads(run["stdout"])
    assert summary["done"] == 12 and summary["failed"] == 0
    assert (
        main(
            [
                "denoise",
                str(d / "lose"),
                str(d / "lose_local"),
                "-c",
                str(tiny_checkpoint),
                "--stages",
                "1",
                "--threads",
                "1",
            ]
        )
        == 0
    )
    names = sorted(p.name for p in (d / "lose").iterdir())
    assert sorted(p.name for p in (d / "lose_ray").iterdir() if p.name != MANIFEST) == names
    _same_images(d / "lose_local", d / "lose_ray", names)


def test_a_worker_killed_mid_run_is_replaced_and_every_image_is_done(cluster):
    """The run above had one of its workers SIGKILLed after its first output: its images were done again by the
    replacement, so every image is there and equal to local (the test above), and the run was not stopped."""
    result, d, _ = cluster
    run = result["kill"]
    assert run["killed"], "no worker was killed mid-run"
    written = {p.name for p in (d / "mixed_ray").iterdir()} - {MANIFEST}
    assert written == {p.name for p in (d / "mixed").iterdir()} - {"g_corrupt.png"}


def test_an_interrupted_driver_leaves_complete_files_and_the_same_command_does_the_rest(cluster):
    result, d, _ = cluster
    run = result["interrupt"]
    assert run["first_code"] == 130, run["first_stderr"]
    kept = [n for n in run["after_interrupt"] if not n.startswith(".")]  # complete files (the driver removed its
    assert 1 <= len(kept) < 10  # temporaries; one a killed worker wrote after that goes with the next run)
    summary = json.loads(run["stdout"])
    assert run["code"] == 0 and summary["skipped"] == len(kept) and summary["done"] == 10 - len(kept)
    assert sorted(p.name for p in (d / "int_ray").iterdir() if p.name != MANIFEST) == sorted(
        p.name for p in (d / "slow").iterdir()
    )
    # the manifest names each image once over both runs: done with its worker and node, or (written by the first
    # run after its driver stopped listening) found existing by the second
    lines = [json.loads(ln) for ln in (d / "int_ray" / MANIFEST).read_text().splitlines()]
    assert sorted(e["input"] for e in lines) == sorted(str(p) for p in (d / "slow").iterdir())
    assert all(e["status"] == "done" and e["worker"] and e["node"] or e["status"] == "exists" for e in lines)
    assert sum(e["status"] == "done" for e in lines) >= summary["done"]


def test_without_ray_the_option_says_how_to_install_it(monkeypatch, tmp_path, capsys):
    import builtins

    real = builtins.__import__

    def no_ray(name, *a, **k):
        if name == "ray" or name.startswith("ray."):
            raise ImportError("No module named 'ray'")
        return real(name, *a, **k)

    monkeypatch.setattr(builtins, "__import__", no_ray)
    write_image(tmp_path / "in.png", Image(rgb=np.zeros((8, 8, 3), np.float32)))
    assert main(["denoise", str(tmp_path / "in.png"), str(tmp_path / "out.png"), "--ray", "local"]) == 1
    err = capsys.readouterr().err
    assert "--ray needs Ray: pip install 'scaoed-deploy[ray]'" in err and not (tmp_path / "out.png").exists()


def test_a_corrupt_or_edited_model_is_one_line_before_ray_starts(tmp_path, capsys, monkeypatch):
    from references import edited, sealed_onnx

    import scaoed_deploy.cluster.ray_run as ray_run

    monkeypatch.setattr(ray_run, "require_ray", lambda: pytest.fail("Ray was started for a model that cannot run"))
    write_image(tmp_path / "in.png", Image(rgb=np.zeros((8, 8, 3), np.float32)))
    (tmp_path / "c.onnx").write_bytes(b"\x08\x07garbage")
    for model, says, code in (
        (tmp_path / "c.onnx", "not a valid ONNX model", 1),
        (edited(sealed_onnx(tmp_path / "e.onnx")), "edited after verification", 3),
    ):
        assert (
            main(["denoise", str(tmp_path / "in.png"), str(tmp_path / "out.png"), "-m", str(model), "--ray", "local"])
            == code
        )
        assert says in one_error(capsys.readouterr().err)
    assert not (tmp_path / "out.png").exists()


@pytest.mark.parametrize("address", ["127.0.0.1:{port}", "ray://127.0.0.1:{port}"])
def test_an_address_where_nothing_listens_is_one_line_within_15_s(tmp_path, capsys, address):
    import time

    from references import one_error

    from scaoed_deploy.serve import free_port

    write_image(tmp_path / "in.png", Image(rgb=np.zeros((8, 8, 3), np.float32)))
    address = address.format(port=free_port())
    t0 = time.monotonic()
    code = main(["denoise", str(tmp_path / "in.png"), str(tmp_path / "out.png"), "--ray", address])
    line = one_error(capsys.readouterr().err)
    assert time.monotonic() - t0 < 15 and code == 1
    assert f"cannot reach a Ray cluster at '{address}'" in line and "Connection refused" in line
    assert not (tmp_path / "out.png").exists()


def test_the_pool_is_what_the_live_nodes_hold_and_says_so_when_asked_for_more():
    from scaoed_deploy.cluster.connect import pool_size
    from scaoed_deploy.errors import ScaoedError

    two = [{"cpus": 1, "gpus": 0}, {"cpus": 1, "gpus": 0}]
    assert pool_size(two, None, None, False) == {"workers": 2, "threads": 1, "asked": 2, "warning": None}
    three = pool_size(two, 3, 1, False)
    assert three["workers"] == 2 and three["asked"] == 3 and "hold 2 at once, so 2 run" in three["warning"]
    assert pool_size([{"cpus": 4, "gpus": 0}, {"cpus": 3, "gpus": 0}], None, 2, False)["workers"] == 3  # 2 + 1
    with pytest.raises(ScaoedError, match="no node of this cluster has 2 CPUs"):
        pool_size(two, None, 2, False)
    with pytest.raises(ScaoedError, match="needs GPUs"):
        pool_size(two, None, None, True)


def test_blocks_hold_many_paths_but_every_worker_gets_several():
    from scaoed_deploy.cluster.ray_run import MAX_PATHS_PER_BLOCK, paths_per_block

    for jobs, workers in ((1, 1), (44, 2), (1000, 4), (100_000, 2), (100_000, 64)):
        per = paths_per_block(jobs, workers)
        blocks = -(-jobs // per)
        assert 1 <= per <= MAX_PATHS_PER_BLOCK
        assert blocks >= min(jobs, workers * 8) or per == MAX_PATHS_PER_BLOCK, (jobs, workers)  # 8+ a worker


def test_the_manifest_keeps_the_last_word_on_each_image_and_survives_a_torn_line(tmp_path):
    from scaoed_deploy.cluster.manifest import Manifest

    m = Manifest(tmp_path)
    m.add({"input": "a.png", "output": "o/a.png", "status": "failed", "error": "bad", "seconds": 0.1})
    m.add({"input": "b.png", "output": "o/b.png", "status": "done", "error": "", "seconds": 0.2})
    m.close()
    with (tmp_path / MANIFEST).open("a") as f:
        f.write('{"input": "c.png", "stat')  # a driver killed mid-line
    again = Manifest(tmp_path)
    assert again.failed_before == {"a.png": "bad"} and again.known == {"a.png", "b.png"}
    again.add({"input": "a.png", "output": "o/a.png", "status": "done", "error": ""})
    again.add_existing(["b.png", "d.png"], ["o/b.png", "o/d.png"])  # b has its line already
    again.close()
    third = Manifest(tmp_path)
    assert third.failed_before == {} and third.known == {"a.png", "b.png", "d.png"}


def _fake_ray(nodes, mapped):
    """A stand-in for the parts of Ray the driver's rounds use: ``nodes()`` as ray.nodes() gives them, and a dataset
    whose map_batches gives ``mapped(items)`` (its iter_rows plays the run)."""
    from types import SimpleNamespace

    def from_items(items, override_num_blocks):
        return SimpleNamespace(map_batches=lambda *a, **k: mapped(items))

    data = SimpleNamespace(
        DataContext=SimpleNamespace(get_current=SimpleNamespace),
        from_items=from_items,
        ActorPoolStrategy=lambda **k: None,
    )
    return SimpleNamespace(nodes=nodes, data=data)


def test_where_ray_gives_up_after_a_node_is_lost_the_driver_redoes_only_what_is_missing(tmp_path):
    """A stand-in for Ray whose first pass returns two rows, writes a third output without returning it, then fails
    as Ray does when it gives up on a lost node (one node fewer); the second pass must get only the rest."""
    from scaoed_deploy.cluster import ray_run
    from scaoed_deploy.runtime.denoiser import DenoiseOptions
    from scaoed_deploy.runtime.jobs import plan_jobs

    src = _folder(tmp_path / "in", 6, 8)
    plan = plan_jobs(src, tmp_path / "out")
    (tmp_path / "out").mkdir()
    nodes = [
        [
            {"NodeID": "head", "NodeManagerAddress": "x", "Alive": True, "Resources": {"CPU": 1}},
            {"NodeID": "second", "NodeManagerAddress": "x", "Alive": True, "Resources": {"CPU": 1}},
        ]
    ]
    passes = []

    def row(item):
        return {
            "src": item["src"],
            "dst": item["dst"],
            "ref": "",
            "status": "done",
            "error": "",
            "worker": "w",
            "node": "n",
            "cpu_class": "avx2",
            "artifact": "",
            "seconds": 0.0,
            "width": 8,
            "height": 8,
            "bit_depth_out": 8,
            "bit_depth_in": 8,
            "channels_out": 3,
            "peak_rss_mb": 1,
            "metadata_kept": "",
            "warnings": "",
            "psnr": float("nan"),
            "ssim": float("nan"),
            "psnr_in": float("nan"),
            "ssim_in": float("nan"),
        }

    class Mapped:
        def __init__(self, items):
            self.items = items

        def iter_rows(self):
            passes.append([Path(i["src"]).name for i in self.items])
            if len(passes) == 1:
                yield row(self.items[0])
                yield row(self.items[1])
                Path(self.items[2]["dst"]).write_bytes(b"written, its row lost")
                nodes[0] = nodes[0][:1]  # the second node is gone
                raise RuntimeError("The actor is unavailable: Connection refused")
            for item in self.items:
                yield row(item)

    fake = _fake_ray(lambda: nodes[0], Mapped)
    seen = []
    summary = ray_run._run(
        fake, plan, DenoiseOptions(device="cpu", threads=1), None, None, lambda *a: seen.append(a), {}
    )
    assert passes == [[f"{i:02d}.png" for i in range(6)], ["03.png", "04.png", "05.png"]]
    assert summary["done"] == 6 and summary["failed"] == 0 and summary["nodes_lost"] == ["second"]
    assert summary["written_before_a_node_was_lost"] == [str(tmp_path / "out" / "02.png")]
    assert any(n and "a node was lost" in n and "3 image(s) left, going on with 1 node(s)" in n for *_, n in seen)


def test_where_ray_fails_with_no_node_lost_and_nothing_done_it_is_one_line(tmp_path):
    from scaoed_deploy.cluster import ray_run
    from scaoed_deploy.errors import ScaoedError
    from scaoed_deploy.runtime.denoiser import DenoiseOptions
    from scaoed_deploy.runtime.jobs import plan_jobs

    plan = plan_jobs(_folder(tmp_path / "in", 2, 8), tmp_path / "out")

    class Mapped:
        def __init__(self, items):
            pass

        def iter_rows(self):
            raise RuntimeError("outer") from ScaoedError("model not found: /gone.onnx")
            yield

    node = {"NodeID": "head", "NodeManagerAddress": "x", "Alive": True, "Resources": {"CPU": 2}}
    fake = _fake_ray(lambda: [node], Mapped)
    with pytest.raises(ScaoedError, match="the Ray job failed: model not found: /gone.onnx"):
        ray_run._run(fake, plan, DenoiseOptions(device="cpu", threads=1), None, None, lambda *a: None, {})


def test_an_address_where_something_else_answers_is_one_line_within_15_s(tmp_path, capsys):
    """A port that accepts connections but is no Ray head: Ray's own connect retries without end; the command ends
    in one line within 15 s, both where the port is on 127.0.0.1 only (Ray dials the machine's own address for it,
    where nothing listens) and where it listens on every address (it answers, but not as gRPC)."""
    import socket
    import time

    pytest.importorskip("ray.data", reason="Ray Data is not installed (pip install 'scaoed-deploy[ray]')")
    from scaoed_deploy.cluster.connect import dialled

    write_image(tmp_path / "in.png", Image(rgb=np.zeros((8, 8, 3), np.float32)))
    for bind, says in (("127.0.0.1", "Connection refused"), ("0.0.0.0", "what answers there is not a Ray head")):
        with socket.socket() as listener:
            listener.bind((bind, 0))
            listener.listen(16)
            address = f"127.0.0.1:{listener.getsockname()[1]}"
            if bind == "127.0.0.1" and dialled("127.0.0.1", 1) == "127.0.0.1":
                continue  # a machine whose own address is loopback: nothing to rewrite
            t0 = time.monotonic()
            code = main(["denoise", str(tmp_path / "in.png"), str(tmp_path / "out.png"), "--ray", address])
            seconds = time.monotonic() - t0
        line = one_error(capsys.readouterr().err)
        assert code == 1 and seconds < 15, seconds
        assert f"cannot reach a Ray cluster at '{address}'" in line and says in line, line
    assert not (tmp_path / "out.png").exists()


def test_a_package_on_mixed_nodes_runs_each_workers_own_class(cluster, fleet_package):
    """Each worker of a Ray run over this CPU's nodes and one node masked as AVX2-only takes its own class's entry
    of the package, and each image equals a direct run of the artifact its worker named, on a CPU of that class."""
    result, d, _ = cluster
    if "fleet" not in result:
        pytest.skip("no fleet package here")
    run = result["fleet"]
    assert run["code"] == 0, run["stderr"][-2000:]
    summary = json.loads(run["stdout"])
    sel = json.loads((fleet_package / "selection.json").read_text())
    native = next(iter(sel["by_cpu"]))
    assert summary["done"] == 12 and set(summary["per_cpu_class"]) == {native, "avx2"}, summary["per_cpu_class"]
    for cls in (native, "avx2"):
        rows = [r for r in summary["results"] if r["cpu_class"] == cls]
        artifact = str(fleet_package / sel["by_cpu"][cls]["run"]["artifact"])
        assert {r["artifact"] for r in rows} == {artifact}
        listed = d / f"fleet_{cls}.txt"
        listed.write_text("\n".join(r["input"] for r in rows) + "\n")
        masked = ["--as-cpu", cls] if cls != native else []
        cmd = [sys.executable, "-m", "scaoed_deploy.cli", *masked, "denoise", str(listed), str(d / f"fleet_{cls}")]
        subprocess.run([*cmd, "-m", artifact, "--threads", "1"], check=True, capture_output=True)
        _same_images(d / f"fleet_{cls}", d / "fleet_ray", [Path(r["output"]).name for r in rows])
