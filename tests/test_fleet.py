"""One package for a fleet of CPUs (``optimize --cpus``, ``fleet.pick``): a choice per CPU class, each picked
where it runs.

The rules are checked on packages written here, against CPUs read from cpuinfo texts: the entry of the CPU's
own class when the machine it was measured on had nothing this CPU lacks, else one error line, or with
``allow_fallback`` the nearest lower class it covers. The package ``optimize --cpus native,avx2`` makes on this
machine is checked end to end: each class's file verified on that class, ``denoise -m PACKAGE`` masked and
unmasked equal to a direct run of the artifact it says it took, pixel for pixel.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from references import one_error

from scaoed_deploy.artifact import load_artifact
from scaoed_deploy.cpu import read_cpu, this_cpu
from scaoed_deploy.errors import ScaoedError
from scaoed_deploy.fleet import pick

ISA = {
    "amx": "avx2 avx512f avx512_vnni avx512_bf16 avx512_fp16 amx_bf16 amx_int8",
    "avx512-vnni": "avx2 avx512f avx512_vnni avx512_bf16",
    "icelake": "avx2 avx512f avx512_vnni",  # class avx512-vnni, no BF16
    "avx512": "avx2 avx512f",
    "avx2": "avx2",
}


def _cpu(kind: str):
    return read_cpu(f"model name\t: {kind} CPU\nflags\t\t: sse4_2 fma {ISA[kind]}\n")


def _package(folder: Path, classes: dict[str, str]) -> Path:
    """A package whose class CLASS chose a file measured on a CPU of ``classes[CLASS]``'s ISA."""
    by_cpu = {}
    for cls, kind in classes.items():
        rel = f"by_cpu/{cls}/m.onnx"
        (folder / rel).parent.mkdir(parents=True, exist_ok=True)
        (folder / rel).write_bytes(b"model of " + cls.encode())
        by_cpu[cls] = {
            "chosen": f"k1-{cls}",
            "machine": _cpu(kind).to_dict(),
            "shipped": [rel],
            "run": {"artifact": rel, "backend": "onnxruntime-int8", "k": 1, "candidate": f"k1-{cls}"},
        }
    (folder / "selection.json").write_text(json.dumps({"chosen": "x", "by_cpu": by_cpu}))
    return folder


def test_each_cpu_takes_its_own_class_and_a_lesser_one_is_refused_or_falls_back(tmp_path):
    pkg = _package(tmp_path, {"avx512-vnni": "avx512-vnni", "avx2": "avx2"})
    assert pick(pkg, _cpu("avx512-vnni")).cpu_class == "avx512-vnni"
    chosen = pick(pkg, _cpu("avx2"))
    assert (chosen.cpu_class, chosen.fallback, chosen.warning()) == ("avx2", False, None)
    assert chosen.artifact == pkg / "by_cpu/avx2/m.onnx"
    for kind, nearest in (("avx512", "avx2"), ("amx", "avx512-vnni"), ("icelake", "avx2")):
        with pytest.raises(ScaoedError) as e:
            pick(pkg, _cpu(kind))  # a class the package lacks; an Ice Lake lacks the BF16 its entry was measured with
        assert "\n" not in str(e.value) and f"--allow-cpu-fallback runs its {nearest} entry" in str(e.value)
        fell = pick(pkg, _cpu(kind), allow_fallback=True)
        assert (fell.cpu_class, fell.fallback) == (nearest, True) and "not on this CPU's" in fell.warning()


def test_a_cpu_no_entry_covers_is_refused_even_with_fallback(tmp_path):
    pkg = _package(tmp_path, {"avx512-vnni": "avx512-vnni"})
    with pytest.raises(ScaoedError, match="no entry it holds runs on this CPU as verified"):
        pick(pkg, _cpu("avx2"), allow_fallback=True)


def test_a_package_without_by_cpu_is_one_class_its_machine(tmp_path):
    (tmp_path / "m.onnx").write_bytes(b"x")
    cand = {"id": "k1-onnxruntime", "k": 1, "backend": "onnxruntime"}
    sel = {"chosen": cand["id"], "candidates": [cand], "shipped": ["m.onnx"], "machine": _cpu("avx2").to_dict()}
    (tmp_path / "selection.json").write_text(json.dumps(sel))
    assert pick(tmp_path, _cpu("avx2")).artifact == tmp_path / "m.onnx"
    with pytest.raises(ScaoedError, match="no entry for this CPU's class avx512"):
        pick(tmp_path, _cpu("avx512"))


def test_a_broken_package_is_one_line(tmp_path, capsys):
    from scaoed_deploy.cli import main
    from scaoed_deploy.images import Image, write_image

    write_image(tmp_path / "in.png", Image(rgb=np.zeros((8, 8, 3), np.float32)))
    (tmp_path / "pkg").mkdir()
    (tmp_path / "pkg" / "selection.json").write_text("{not json")
    assert main(["denoise", str(tmp_path / "in.png"), str(tmp_path / "out.png"), "-m", str(tmp_path / "pkg")]) == 1
    assert "cannot be read as JSON" in one_error(capsys.readouterr().err)
    assert not (tmp_path / "out.png").exists()


# ------------------------------------------------------------------ the package optimize --cpus makes here
def _denoise(args: list[str], as_cpu: str | None = None) -> tuple[int, dict, str]:
    masked = ["--as-cpu", as_cpu] if as_cpu else []
    r = subprocess.run(
        [sys.executable, "-m", "scaoed_deploy.cli", *masked, "denoise", *args, "--json"],
        capture_output=True,
        text=True,
        timeout=300,
    )
    return r.returncode, (json.loads(r.stdout) if r.returncode == 0 else {}), r.stderr


def _read(path: Path) -> np.ndarray:
    from PIL import Image

    return np.asarray(Image.open(path))


def test_the_package_holds_a_choice_per_class_each_verified_on_it(fleet_package):
    sel = json.loads((fleet_package / "selection.json").read_text())
    native = this_cpu().isa_class
    assert list(sel["by_cpu"]) == [native, "avx2"] and sel["by_cpu"][native]["chosen"] == sel["chosen"]
    for cls, entry in sel["by_cpu"].items():
        assert entry["machine"]["isa_class"] == cls and entry["chosen"] and entry["constraint"]["kind"] == "max_dpsnr"
        model = fleet_package / entry["run"]["artifact"]
        assert model.is_file() and all((fleet_package / f).is_file() for f in entry["shipped"])
        assert (model.parent == fleet_package) == (cls == native)  # another class's files under by_cpu/CLASS/
        record = next(fleet_package / f for f in entry["shipped"] if f.endswith(".parity.json"))
        assert json.loads(record.read_text())["passed"]
        if model.suffix == ".onnx":  # the INT8 file (eager may be faster on a busy machine: then it ships)
            detail = json.loads(load_artifact(model).metadata["precision_detail"])
            assert detail["int8_format"]["checked_on"]["isa_class"] == cls
            assert detail["int8_format"]["reduce_range"] == (cls == "avx2" or not this_cpu().vnni)
    avx2 = sel["by_cpu"]["avx2"]["chosen"]
    script = (fleet_package / "reproduce.sh").read_text()
    assert f"# class avx2: {avx2}" in script
    if avx2.endswith("int8"):
        assert "scaoed-deploy --as-cpu avx2 build-engine --int8 --target onnxruntime-cpu" in script
    assert "--cpus native,avx2" in script
    assert sel["by_cpu"]["avx2"]["machine"]["isa_capped_by"].startswith("--as-cpu avx2")
    assert sel["by_cpu"][native]["machine"]["isa_capped_by"] is None
    report = (fleet_package / "report.md").read_text()
    assert "| class avx2 | --as-cpu avx2 (CPUID masked for every library) |" in report
    html = (fleet_package / "report.html").read_text()
    assert all(f"class {c}" in html for c in sel["by_cpu"])


def test_the_python_api_opens_a_package_as_the_cli_does(fleet_package):
    from scaoed_deploy import Denoiser

    sel = json.loads((fleet_package / "selection.json").read_text())
    native = this_cpu().isa_class
    with Denoiser.open(fleet_package) as d:
        picked = d.runner.package_pick
        assert (picked.cpu_class, picked.fallback) == (native, False)
        assert picked.artifact == fleet_package / sel["by_cpu"][native]["run"]["artifact"]
        x = np.random.default_rng(2).random((1, 3, 32, 32), dtype=np.float32)
        with Denoiser.open(picked.artifact) as direct:
            np.testing.assert_array_equal(d.runner(x), direct.runner(x))


@pytest.mark.slow  # a masked and an unmasked denoise each, and their direct runs
@pytest.mark.parametrize("as_cpu", [None, "avx2"])
def test_denoise_m_package_picks_its_class_and_equals_a_direct_run(fleet_package, tmp_path, as_cpu):
    src = sorted((Path(__file__).resolve().parents[2] / "shared/data/sidd/noisy").iterdir())[0]
    code, out, err = _denoise([str(src), str(tmp_path / "p.png"), "-m", str(fleet_package)], as_cpu)
    assert code == 0, err
    cls = as_cpu or this_cpu().isa_class
    entry = json.loads((fleet_package / "selection.json").read_text())["by_cpu"][cls]
    assert out["cpu_class"] == cls and out["artifact"] == str(fleet_package / entry["run"]["artifact"])
    assert f"the {cls} entry (this CPU's class)" in err
    code, _, err = _denoise([str(src), str(tmp_path / "d.png"), "-m", out["artifact"]], as_cpu)
    assert code == 0, err
    assert np.array_equal(_read(tmp_path / "p.png"), _read(tmp_path / "d.png"))


@pytest.mark.slow
def test_a_class_the_package_lacks_is_refused_unless_fallback_which_warns(fleet_package, tmp_path):
    from scaoed_deploy.cpu import mask_refusal

    if mask_refusal("avx512"):
        pytest.skip(mask_refusal("avx512"))
    src = sorted((Path(__file__).resolve().parents[2] / "shared/data/sidd/noisy").iterdir())[0]
    args = [str(src), str(tmp_path / "p.png"), "-m", str(fleet_package)]
    code, _, err = _denoise(args, "avx512")
    assert code == 1 and "no entry for this CPU's class avx512" in one_error(err)
    assert not (tmp_path / "p.png").exists()
    code, out, err = _denoise([*args, "--allow-cpu-fallback"], "avx512")
    assert code == 0 and out["cpu_class"] == "avx2" and out["package"]["fallback"] is True
    assert "warning: k1-onnxruntime-int8 was chosen and timed on class avx2" in err


@pytest.mark.slow  # two servers, one of them masked
def test_a_served_package_picks_per_server(fleet_package, tmp_path):
    """``triton-repo PACKAGE --python-backend``: one model; a server started as this CPU serves this class's
    choice and one started as an AVX2-only CPU the avx2 class's, each equal to a direct run of that artifact. The
    masked server is stopped by SIGTERM to the ``--as-cpu`` wrapper, which passes it on."""
    import signal

    from scaoed_deploy.cli import main
    from scaoed_deploy.serve import bundled_server, free_port

    try:
        bundled_server()
    except ScaoedError as e:
        pytest.skip(str(e))
    sel = json.loads((fleet_package / "selection.json").read_text())
    if any(e["run"]["artifact"].endswith(".safetensors") for e in sel["by_cpu"].values()):
        pytest.skip("eager fp32 was the fastest of a class here (a busy machine): Triton serves files, not weights")
    repo = tmp_path / "repo"
    assert main(["triton-repo", str(fleet_package), "-o", str(repo), "--python-backend", "--json"]) == 0
    (model,) = [p.name for p in repo.iterdir()]
    x = np.random.default_rng(5).random((1, 3, 32, 48), dtype=np.float32)
    for as_cpu in (None, "avx2"):
        cls = as_cpu or this_cpu().isa_class
        masked = ["--as-cpu", as_cpu] if as_cpu else []
        port, log = free_port(), tmp_path / f"{cls}.log"
        ports = ["--http-port", str(port), "--grpc-port", str(free_port()), "--metrics-port", str(free_port())]
        cmd = [sys.executable, "-m", "scaoed_deploy.cli", *masked, "serve", str(repo), *ports]
        proc = subprocess.Popen([*cmd, "--address", "127.0.0.1", "--log", str(log), "--json"], stdout=subprocess.PIPE)
        try:
            line = proc.stdout.readline()  # serve --json prints its facts once the server is ready
            while line and line != b"}\n":
                line = proc.stdout.readline()
            assert line, f"serve {as_cpu or ''} exited ({proc.wait(10)}) before it was ready"
            served = _served(f"http://127.0.0.1:{port}", model, x)
            proc.send_signal(signal.SIGTERM)
            assert proc.wait(60) == 0
        finally:
            if proc.poll() is None:
                proc.kill()
        entry = sel["by_cpu"][cls]
        assert f"the {cls} entry (this CPU's class): {entry['chosen']}" in log.read_text()
        direct = _direct(fleet_package / entry["run"]["artifact"], x, as_cpu, tmp_path / cls)
        np.testing.assert_array_equal(served, direct)


def _served(url: str, model: str, x: np.ndarray) -> np.ndarray:
    from scaoed_deploy.runtime.triton_client import TritonRunner

    with TritonRunner(url, model) as runner:
        return runner(x)


def _direct(artifact: Path, x: np.ndarray, as_cpu: str | None, d: Path) -> np.ndarray:
    """``artifact``'s output for ``x`` from ONNX Runtime in a process that sees ``as_cpu``'s CPU."""
    from scaoed_deploy import cpumask

    code = (
        "import sys, numpy as np, onnxruntime as ort; x = np.load(sys.argv[2]); "
        "s = ort.InferenceSession(sys.argv[1], providers=['CPUExecutionProvider']); "
        "np.save(sys.argv[3], s.run(None, {s.get_inputs()[0].name: x})[0])"
    )
    d.mkdir()
    np.save(d / "x.npy", x)
    env = cpumask.environment(as_cpu) if as_cpu else None
    subprocess.run([sys.executable, "-c", code, str(artifact), str(d / "x.npy"), str(d / "y.npy")], env=env, check=True)
    return np.load(d / "y.npy")
