"""optimize: the choice against brute force, parity as a gate, pruning before building, and the package.

One real run (T = 1 seeded weights, K = 1 and 2, 32 x 32, torch / ONNX Runtime / OpenVINO fp32) is shared by the
tests that read a package; the choice rules are also checked on random synthetic figures against a brute-force
reading of their definitions."""

from __future__ import annotations

import base64
import io
import json
import random
import shutil
from html.parser import HTMLParser

import pytest
from conftest import DATA, needs_data
from references import one_error

from scaoed_deploy.cli import main
from scaoed_deploy.optimize import (
    Candidate,
    Constraint,
    NothingMeets,
    choose,
    pareto_front,
)
from scaoed_deploy.optimize.choose import (
    NEAR_BEST_DB,
    PSNR_TIE_DB,
    latency_prune,
    quality_prune,
)

BACKENDS = "torch,onnxruntime"


def _cands(points) -> list[Candidate]:
    return [Candidate(f"c{i}", k=1 + i % 3, backend=f"b{i % 4}", precision="fp32", status="built", latency_ms=lat,
                      psnr=psnr) for i, (lat, psnr) in enumerate(points)]


def _random_points(rng: random.Random, n: int):
    lats = [rng.choice([5.0, 10.0, 20.0]) if rng.random() < 0.3 else rng.uniform(1, 50) for _ in range(n)]
    psnrs = [rng.choice([28.0, 29.0]) if rng.random() < 0.3 else rng.uniform(27, 30) for _ in range(n)]
    return list(zip(lats, psnrs))


# ---------------------------------------------------------------------------- brute force
def brute_front(cands):
    """Every point that no other point dominates (no worse on both, better on one)."""
    return {c.id for c in cands if not any(d.latency_ms <= c.latency_ms and d.psnr >= c.psnr and
                                           (d.latency_ms < c.latency_ms or d.psnr > c.psnr) for d in cands)}


def brute_choice(cands, kind, value):
    """The definitions, read literally over every candidate."""
    faster = lambda a, b: (a.latency_ms, -a.psnr, a.id) < (b.latency_ms, -b.psnr, b.id)  # noqa: E731
    if kind == "max_latency_ms":
        ok = [c for c in cands if c.latency_ms <= value]
        # the highest PSNR within the budget, where PSNRs within the tie of the highest tie and the faster wins
        tied = [c for c in ok if all(c.psnr >= d.psnr - PSNR_TIE_DB for d in ok)]
        winners = [c for c in tied if all(not faster(d, c) for d in tied)]
        return winners[0].id if winners else None
    best = max(c.psnr for c in cands)
    if kind == "min_psnr":
        ok = [c for c in cands if c.psnr >= value]
    elif kind == "max_dpsnr":
        ok = [c for c in cands if best - c.psnr <= value]
    else:
        front = brute_front(cands)
        ok = [c for c in cands if c.id in front and best - c.psnr <= NEAR_BEST_DB]
    winners = [c for c in ok if all(not faster(d, c) for d in ok)]
    return winners[0].id if winners else None


def test_the_front_is_the_brute_force_front():
    rng = random.Random(0)
    for n in [1, 2, 3, 5, 8, 13, 21] * 20:
        cands = _cands(_random_points(rng, n))
        assert set(pareto_front(cands)) == brute_front(cands)


@pytest.mark.parametrize("kind", ["max_latency_ms", "min_psnr", "max_dpsnr", None])
def test_each_constraint_chooses_what_brute_force_chooses(kind):
    rng = random.Random(1)
    checked = 0
    for _ in range(300):
        cands = _cands(_random_points(rng, rng.randint(1, 12)))
        value = {"max_latency_ms": rng.uniform(1, 50), "min_psnr": rng.uniform(27, 30), "max_dpsnr": rng.uniform(0, 1),
                 None: None}[kind]
        want = brute_choice(cands, kind, value)
        try:
            got = choose(cands, Constraint(kind, value)).id
        except NothingMeets:
            got = None
        assert got == want, (kind, value, [(c.id, c.latency_ms, c.psnr) for c in cands])
        checked += want is not None
    assert checked > 100  # most draws had a feasible candidate


def test_latency_pruning_scales_the_lower_k_by_the_macs_and_quality_pruning_keeps_the_parity_margin():
    gmacs = {1: 10.0, 3: 30.0}
    low = Candidate("k1-x", 1, "x", "int8", status="built", latency_ms=40.0, psnr=29.0)
    high = Candidate("k3-x", 3, "x", "int8")
    assert latency_prune(high, [low], gmacs, Constraint("max_latency_ms", 200)) is None  # about 120 ms: might fit
    why = latency_prune(high, [low], gmacs, Constraint("max_latency_ms", 100))
    assert "about 120 ms" in why and "K=1" in why
    fp32 = {1: 28.0, 3: 29.0}
    assert quality_prune(Candidate("a", 1, "x", "int8"), fp32, Constraint("min_psnr", 28.25)) is None  # within 0.3
    assert "below --min-psnr 28.5" in quality_prune(Candidate("a", 1, "x", "int8"), fp32, Constraint("min_psnr", 28.5))
    assert quality_prune(Candidate("a", 1, "torch", "fp32"), fp32, Constraint("max_dpsnr", 0.5)) is not None
    assert quality_prune(Candidate("a", 3, "torch", "fp32"), fp32, Constraint("max_dpsnr", 0.0)) is None


# ---------------------------------------------------------------------------- one real run
@pytest.fixture(scope="module")
def run(tmp_path_factory, tiny_checkpoint, tiny_k1_onnx, exports):
    """optimize with no constraint on the session's tiny checkpoint (T = 2), its export folder holding the
    session's K = 1 and K = 2 exports of it (test_export's: nothing is exported again), scored on two SIDD pairs."""
    from scaoed_deploy import checkpoint as ckpt
    from scaoed_deploy import export as ex

    root = tmp_path_factory.mktemp("optimize")
    export, data = root / "export", root / "data"
    export.mkdir()
    k2 = exports(ckpt.read_checkpoint(tiny_checkpoint), ex.ExportSpec(stages=2)).path
    for path in (tiny_k1_onnx, k2):
        shutil.copyfile(path, export / path.name)
    for sub in ("noisy", "clean"):  # two pairs: the report's two images, half the scoring time
        (data / sub).mkdir(parents=True)
        for name in sorted(p.name for p in (DATA / "sidd" / "noisy").iterdir())[:2]:
            (data / sub / name).symlink_to(DATA / "sidd" / sub / name)
    args = ["optimize", "--res", "32", "--stages", "1,2", "--backends", BACKENDS, "--checkpoint", str(tiny_checkpoint),
            "--threads", "1", "--iters", "3", "--warmup", "0", "--export-dir", str(export), "--data", str(data)]
    code = main([*args, "-o", str(root / "pkg"), "--json"])
    assert code == 0
    return {"root": root, "export": export, "args": args, "pkg": root / "pkg",
            "sel": json.loads((root / "pkg" / "selection.json").read_text())}


@needs_data
def test_selection_json_holds_every_candidate_and_the_choice(run):
    sel = run["sel"]
    assert set(sel) >= {"constraint", "candidates", "pareto", "chosen"}
    assert sel["constraint"] == {"kind": None, "value": None}
    ids = [c["id"] for c in sel["candidates"]]
    assert ids == [f"k{k}-{b}" for k in (1, 2) for b in BACKENDS.split(",")]
    for c in sel["candidates"]:
        assert {"id", "k", "backend", "precision", "artifact", "latency_ms", "psnr", "dpsnr", "parity", "status",
                "reason"} <= set(c)
        assert c["status"] == "built" and c["parity"]["passed"], c
        assert (c["artifact"] is None) == (c["backend"] == "torch")
    # the same figures give the same choice and front by brute force
    cands = [Candidate(**{k: v for k, v in c.items()}) for c in sel["candidates"]]
    assert set(sel["pareto"]) == brute_front(cands)
    assert sel["chosen"] == brute_choice(cands, None, None)
    # the chosen artifact and its parity record are in the package, and the record is of exactly that file
    chosen = next(c for c in sel["candidates"] if c["id"] == sel["chosen"])
    for name in sel["shipped"]:
        assert (run["pkg"] / name).is_file()
    if chosen["artifact"]:
        from scaoed_deploy.checkpoint import sha256_of

        shipped = run["pkg"] / chosen["artifact"].rsplit("/", 1)[-1]
        record = json.loads(shipped.with_name(shipped.stem + ".parity.json").read_text())
        assert record["sha256"] == sha256_of(shipped) and record["passed"]
    script = (run["pkg"] / "reproduce.sh").read_text()
    assert script.startswith("#!/bin/sh") and "scaoed-deploy optimize" in script and "--checkpoint" in script


@needs_data
def test_the_measured_figures_choose_as_brute_force_does_under_every_constraint(run):
    cands = [Candidate(**c) for c in run["sel"]["candidates"]]
    lats = sorted(c.latency_ms for c in cands)
    psnrs = sorted(c.psnr for c in cands)
    for kind, values in (("max_latency_ms", lats), ("min_psnr", psnrs), ("max_dpsnr", [0.0, 0.001, 0.05, 1.0])):
        for value in values:
            want = brute_choice(cands, kind, value)
            assert choose(cands, Constraint(kind, value)).id == want


class _Images(HTMLParser):
    def __init__(self):
        super().__init__()
        self.srcs, self.tables = [], 0

    def handle_starttag(self, tag, attrs):
        if tag == "img":
            self.srcs.append(dict(attrs)["src"])
        self.tables += tag == "table"


@needs_data
def test_report_html_is_one_page_with_every_image_embedded_and_decodable(run):
    from PIL import Image

    page = _Images()
    page.feed((run["pkg"] / "report.html").read_text())
    assert page.tables == 1 and len(page.srcs) == 1 + 2 * 8  # the chart; 2 images x (4 panels + 4 zooms)
    sizes = []
    for src in page.srcs:
        assert src.startswith("data:image/png;base64,")  # nothing outside the page
        img = Image.open(io.BytesIO(base64.b64decode(src.split(",", 1)[1])))
        img.load()
        sizes.append(img.size)
    assert sizes[1] == (256, 256) and sizes[5] == (256, 256)  # full SIDD crops; the zooms are as large
    text = (run["pkg"] / "report.html").read_text()
    assert f"chosen: {run['sel']['chosen']}" in text and text.count("<tr") == 1 + len(run["sel"]["candidates"])


@needs_data
def test_a_sabotaged_artifact_fails_parity_is_excluded_and_never_chosen(run, tmp_path):
    import onnx
    from onnx import numpy_helper

    from scaoed_deploy.seal import seal_onnx

    export = tmp_path / "export"
    shutil.copytree(run["export"], export)
    for path in export.rglob("scaoednet_k1_*_fp32.onnx"):  # a wrong file that looks right: scaled weights, resealed
        proto = onnx.load(str(path))
        init = next(t for t in proto.graph.initializer if len(t.dims) == 4)
        init.CopyFrom(numpy_helper.from_array(numpy_helper.to_array(init) * 1.5, init.name))
        seal_onnx(proto)
        onnx.save(proto, str(path))
    args = [a if a != str(run["export"]) else str(export) for a in run["args"]]
    args[args.index("--backends") + 1] = "onnxruntime"
    args[args.index("--stages") + 1] = "1"
    code = main([*args, "--max-dpsnr", "10", "-o", str(tmp_path / "pkg"), "--json"])
    assert code == 0
    sel = json.loads((tmp_path / "pkg" / "selection.json").read_text())
    status = {c["id"]: (c["status"], c["reason"]) for c in sel["candidates"]}
    assert status["k1-onnxruntime"][0] == "excluded" and "failed parity (tensor: max abs error" in status["k1-onnxruntime"][1]
    assert sel["chosen"] == "k1-torch" and sel["pareto"] == ["k1-torch"]


@needs_data
def test_an_impossible_budget_exits_1_naming_the_closest_and_pruned_candidates_are_never_built(run, tmp_path,
                                                                                               capsys, monkeypatch):
    from scaoed_deploy.bench import Backends

    made, real = [], Backends.make
    monkeypatch.setattr(Backends, "make", lambda self, name, k: made.append((name, k)) or real(self, name, k))
    code = main([*run["args"], "--max-latency-ms", "0.001", "-o", str(tmp_path / "pkg")])
    err = capsys.readouterr().err
    line = one_error(err)
    assert code == 1 and line.startswith("error: no candidate meets --max-latency-ms 0.001: the closest is k1-")
    assert " ms (" in line
    assert made and all(k == 1 for _, k in made)  # K = 2 was pruned from K = 1's latency: nothing made or opened
    sel = json.loads((tmp_path / "pkg" / "selection.json").read_text())
    assert sel["chosen"] is None and not (tmp_path / "pkg" / "reproduce.sh").exists()
    for c in sel["candidates"]:
        assert (c["status"], c["k"]) in {("built", 1), ("pruned", 2)}
        if c["k"] == 2:
            assert "scaled by the MACs" in c["reason"] and c["latency_ms"] is None


@needs_data
def test_a_psnr_floor_no_candidate_can_reach_prunes_everything_before_any_work(run, tmp_path, capsys, monkeypatch):
    from scaoed_deploy.bench import Backends

    monkeypatch.setattr(Backends, "make", lambda *a: pytest.fail("a pruned candidate was made"))
    code = main([*run["args"], "--min-psnr", "99", "-o", str(tmp_path / "pkg")])
    line = one_error(capsys.readouterr().err)
    assert code == 1 and "no candidate meets --min-psnr 99: the closest is k" in line and "pruned" in line


def test_bad_constraints_are_one_line(tmp_path, capsys):
    code = main(["optimize", "--max-latency-ms", "10", "--min-psnr", "30", "--random-seed", "0", "--blocks", "1"])
    assert code == 2 and "give one constraint" in one_error(capsys.readouterr().err)
    (tmp_path / "full").mkdir()
    (tmp_path / "full" / "x").write_text("")
    code = main(["optimize", "-o", str(tmp_path / "full"), "--random-seed", "0", "--blocks", "1"])
    assert code == 1 and "not an empty folder" in one_error(capsys.readouterr().err)
    code = main(["optimize", "--res", "32,64", "--random-seed", "0", "--blocks", "1"])
    assert code == 2 and "one resolution" in one_error(capsys.readouterr().err)


def test_brute_force_helpers_are_not_vacuous():
    """The brute force itself against hand-worked cases (so agreement above means something)."""
    cands = _cands([(10, 29.0), (5, 28.0), (20, 29.5), (12, 28.5), (5, 28.0)])
    assert brute_front(cands) == {"c0", "c1", "c2", "c4"}
    assert brute_choice(cands, "max_latency_ms", 11) == "c0"
    assert brute_choice(cands, "min_psnr", 28.9) == "c0"
    assert brute_choice(cands, "max_dpsnr", 2.0) == "c1"
    assert brute_choice(cands, None, None) == "c2"


@needs_data
def test_triton_adds_a_model_repository_of_the_shipped_choice(run, tmp_path):
    from scaoed_deploy.optimize.package import triton_repository
    from scaoed_deploy.serve.repository import read_config

    pkg = tmp_path / "pkg"
    shutil.copytree(run["pkg"], pkg)
    sel = json.loads((pkg / "selection.json").read_text())
    chosen = next(c for c in sel["candidates"] if c["id"] == sel["chosen"])
    out = triton_repository(sel, pkg)
    if not chosen["artifact"]:
        assert "torch runner" in out["skipped"]
        return
    (model,) = out["models"]
    config = read_config(pkg / "triton" / model / "config.pbtxt")
    assert config.backend == "python" and config.max_batch_size >= 1


def test_time_left_counts_the_measured_seconds_per_gmac_and_drops_backends_that_were_skipped():
    from scaoed_deploy.cli.optimize import TimeLeft

    plan = [(k, b) for k in (1, 2) for b in ("torch", "onnxruntime", "tensorrt")]
    eta = TimeLeft(plan, {1: 10.0, 2: 20.0})
    assert eta.text() == ""  # nothing measured yet: no guess
    c = Candidate("k1-torch", 1, "torch", "fp32", status="built", extra={"wall_s": 5.0})
    assert eta.add(c) is True  # the first measured candidate: the estimate is said
    assert eta.add(Candidate("k1-onnxruntime", 1, "onnxruntime", "fp32", status="built", extra={"wall_s": 15.0})) is False
    eta.add(Candidate("k1-tensorrt", 1, "tensorrt", "fp32", status="skipped"))
    # 20 s for 20 GMAC; left: K = 2's torch and onnxruntime (20 GMAC each), not its tensorrt
    assert eta.text() == ", about 40 s left"
