"""optimize: the choice against brute force, parity as a gate, pruning before building, and the package.

One real run (T = 1 seeded weights, K = 1 and 2, 32 x 32, torch / ONNX Runtime / OpenVINO fp32) is shared by the
tests that read a package; the choice rules are also checked on random synthetic figures against a brute-force
reading of their definitions."""

from __future__ import annotations

import base64
import html
import io
import json
import os
import random
import shutil
from html.parser import HTMLParser
from pathlib import Path

import numpy as np
import pytest
from conftest import DATA, needs_data
from references import one_error

from scaoed_deploy.cli import main
from scaoed_deploy.optimize import Candidate, Constraint, NothingMeets, choose, pareto_front
from scaoed_deploy.optimize.choose import NEAR_BEST_DB, PSNR_TIE_DB, latency_prune, quality_prune

BACKENDS = "torch,onnxruntime"


def _cands(points) -> list[Candidate]:
    return [
        Candidate(
            f"c{i}", k=1 + i % 3, backend=f"b{i % 4}", precision="fp32", status="built", latency_ms=lat, psnr=psnr
        )
        for i, (lat, psnr) in enumerate(points)
    ]


def _random_points(rng: random.Random, n: int):
    lats = [rng.choice([5.0, 10.0, 20.0]) if rng.random() < 0.3 else rng.uniform(1, 50) for _ in range(n)]
    psnrs = [rng.choice([28.0, 29.0]) if rng.random() < 0.3 else rng.uniform(27, 30) for _ in range(n)]
    return list(zip(lats, psnrs))


# ---------------------------------------------------------------------------- brute force
def brute_front(cands):
    """Every point that no other point dominates: none as fast or faster that scores as high or higher, within the
    PSNR tie (and better on one of the two)."""
    return {
        c.id
        for c in cands
        if not any(
            d.latency_ms <= c.latency_ms
            and d.psnr >= c.psnr - PSNR_TIE_DB
            and (d.latency_ms < c.latency_ms or d.psnr > c.psnr)
            for d in cands
        )
    }


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
        value = {
            "max_latency_ms": rng.uniform(1, 50),
            "min_psnr": rng.uniform(27, 30),
            "max_dpsnr": rng.uniform(0, 1),
            None: None,
        }[kind]
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
    args = [
        "optimize",
        "--res",
        "32",
        "--stages",
        "1,2",
        "--backends",
        BACKENDS,
        "--checkpoint",
        str(tiny_checkpoint),
        "--threads",
        "1",
        "--iters",
        "3",
        "--warmup",
        "0",
        "--export-dir",
        str(export),
        "--data",
        str(data),
    ]
    code = main([*args, "-o", str(root / "pkg"), "--json"])
    assert code == 0
    return {
        "root": root,
        "export": export,
        "args": args,
        "pkg": root / "pkg",
        "sel": json.loads((root / "pkg" / "selection.json").read_text()),
    }


@needs_data
def test_selection_json_holds_every_candidate_and_the_choice(run):
    sel = run["sel"]
    assert set(sel) >= {"constraint", "candidates", "pareto", "chosen"}
    assert sel["constraint"] == {"kind": None, "value": None}
    ids = [c["id"] for c in sel["candidates"]]
    assert ids == [f"k{k}-{b}" for k in (1, 2) for b in BACKENDS.split(",")]
    for c in sel["candidates"]:
        assert {
            "id",
            "k",
            "backend",
            "precision",
            "artifact",
            "latency_ms",
            "psnr",
            "dpsnr",
            "parity",
            "status",
            "reason",
        } <= set(c)
        if c["status"] == "pruned":  # the tiny weights score lower at K = 2 than at K = 1: dominated from K = 1
            assert c["k"] == 2 and c["backend"] != "torch" and "off the front, never chosen" in c["reason"], c
            continue
        assert c["status"] == "built" and c["parity"]["passed"], c
        assert (c["artifact"] is None) == (c["backend"] == "torch")
        assert c["peak_rss_mb"]["candidate"] >= c["peak_memory_mb"] - 1  # its own peak covers its timing's
    # the same figures give the same choice and front by brute force
    cands = [Candidate(**c) for c in sel["candidates"] if c["status"] == "built"]
    assert set(sel["pareto"]) == brute_front(cands)
    assert sel["chosen"] == brute_choice(cands, None, None)
    # the chosen artifact and its parity record are in the package, and the record is of exactly that file
    chosen = next(c for c in sel["candidates"] if c["id"] == sel["chosen"])
    for name in sel["shipped"]:
        assert (run["pkg"] / name).is_file()
    if chosen["artifact"]:
        from scaoed_deploy.util.files import sha256_of

        shipped = run["pkg"] / chosen["artifact"].rsplit("/", 1)[-1]
        record = json.loads(shipped.with_name(shipped.stem + ".parity.json").read_text())
        assert record["sha256"] == sha256_of(shipped) and record["passed"]
    script = (run["pkg"] / "reproduce.sh").read_text()
    assert script.startswith("#!/bin/sh") and "scaoed-deploy optimize" in script and "--checkpoint" in script


@needs_data
def test_reproduce_sh_of_a_package_made_with_o_runs_to_the_end_and_says_whether_it_matches(run, tmp_path):
    """The script remakes the artifact and the whole selection into a fresh folder (the package's own -o exists),
    then compares: the same choice and each artifact identical or equivalent -> exit 0 and "matches"; a different
    choice (timings of two runs) -> exit 1 and "differs"; nothing else stops it."""
    import subprocess
    import sys

    env = dict(os.environ, PATH=f"{Path(sys.executable).parent}:{os.environ['PATH']}")
    done = subprocess.run(
        ["sh", str(run["pkg"] / "reproduce.sh")], cwd=tmp_path, env=env, capture_output=True, text=True, timeout=600
    )
    last = done.stdout.strip().splitlines()[-1]
    if done.returncode == 0:
        assert last.startswith("matches: ") and f"the same choice: {run['sel']['chosen']}" in done.stdout
        assert "differs" not in done.stdout and ("identical" in done.stdout or "equivalent" in done.stdout)
    else:
        assert done.returncode == 1 and last.startswith("does not match: "), done.stderr[-2000:]
        assert "differs: this package chose" in done.stdout


def test_two_packages_compare_by_choice_and_by_what_their_artifacts_hold(tmp_path):
    from scaoed_deploy.optimize.package import compare_packages

    a, b = tmp_path / "a", tmp_path / "b"
    for d, ir in ((a, 'name="Convolution_12"'), (b, 'name="Convolution_977"')):
        d.mkdir()
        shipped = ["m.xml", "m.bin", "r.json"]
        (d / "selection.json").write_text(json.dumps({"chosen": "k1-openvino", "shipped": shipped}))
        (d / "m.xml").write_text(
            f'<net><layer id="0" {ir} type="Convolution"/><rt_info><x value="{d.name}"/></rt_info></net>'
        )
        (d / "m.bin").write_bytes(b"weights")
        (d / "r.json").write_text(d.name)  # a record with its own time: not compared
    same, lines = compare_packages(a, b)
    assert same and lines[1] == "m.xml: equivalent (the same graph and weights; only auto-numbered layer names differ)"
    (b / "m.bin").write_bytes(b"other weights")
    assert compare_packages(a, b) == (False, ["the same choice: k1-openvino", "m.xml: differs"])
    (b / "selection.json").write_text(json.dumps({"chosen": "k1-torch", "shipped": []}))
    same, lines = compare_packages(a, b)
    assert not same and lines[0].startswith("differs: this package chose k1-openvino, the remade one k1-torch")


@needs_data
def test_the_measured_figures_choose_as_brute_force_does_under_every_constraint(run):
    cands = [Candidate(**c) for c in run["sel"]["candidates"] if c["status"] == "built"]
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
def test_report_html_says_what_report_md_says_and_reads_at_phone_width(run):
    """Every sentence and table cell of report.md is on the page (the busy warning, the runs column and the notes
    among them); a viewport tag, images scaled to the page, the table in a box that scrolls; each preview's PSNR
    against clean in its caption; the zoomed area outlined on the full images."""
    import re

    from scaoed_deploy.optimize.html import MARK, panels, report_html, zoom_box
    from scaoed_deploy.optimize.report import markdown

    sel = json.loads(json.dumps(run["sel"]))
    sel["load"] = dict(sel.get("load") or {}, busy=True, other_processes_cores=1.25)
    sel["candidates"][1]["extra"]["timing_stopped"] = "dominated: a note | with a bar"
    rng = np.random.default_rng(0)
    clean = rng.random((40, 48, 3), dtype=np.float32)
    noisy = np.clip(clean + rng.normal(0, 0.1, clean.shape), 0, 1).astype(np.float32)
    page = report_html(
        sel, [{"name": "x.png", "noisy": noisy, "clean": clean, "reference": clean * 0.99, "chosen": clean * 0.98}]
    )
    text = re.sub(r"<[^>]+>", " ", page)
    words = lambda t: re.sub(r"[*`|]|\s+", " ", t).split()  # noqa: E731
    md_words, page_words = words(markdown(sel)), words(html.unescape(text))
    missing = [w for w in set(md_words) if w not in page_words and not set(w) <= set("-:#")]  # markup alone
    assert missing == [] and "Busy machine" in page and 'class="warn"' in page
    assert '<meta name="viewport" content="width=device-width, initial-scale=1">' in page
    assert "img{max-width:100%;height:auto}" in page and 'class="scroll"' in page
    assert "<th>runs</th>" in page and "dominated: a note / with a bar" in page
    assert re.search(r"<figcaption>noisy input: \d+\.\d\d dB</figcaption>", page)
    assert re.search(r"<figcaption>chosen: \d+\.\d\d dB</figcaption>", page)
    full = panels(noisy, clean, clean)["noisy input"]
    y, x, h, w = zoom_box(40, 48)
    assert np.allclose(full[y, x + w // 2], MARK) and np.allclose(full[y + h // 2, x], MARK)
    assert np.allclose(full[0, 0], noisy[0, 0])  # outside the box: the image itself


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
    assert (
        status["k1-onnxruntime"][0] == "excluded"
        and "failed parity (tensor: max abs error" in status["k1-onnxruntime"][1]
    )
    assert sel["chosen"] == "k1-torch" and sel["pareto"] == ["k1-torch"]


@needs_data
def test_an_impossible_budget_exits_1_naming_the_closest_and_pruned_candidates_are_never_built(
    run, tmp_path, capsys, monkeypatch
):
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
    from scaoed_deploy.serve.config import read_config

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
    assert (
        eta.add(Candidate("k1-onnxruntime", 1, "onnxruntime", "fp32", status="built", extra={"wall_s": 15.0})) is False
    )
    eta.add(Candidate("k1-tensorrt", 1, "tensorrt", "fp32", status="skipped"))
    # 20 s for 20 GMAC; left: K = 2's torch and onnxruntime (20 GMAC each), not its tensorrt
    assert eta.text() == ", about 40 s left"
    eta.at -= 15  # 15 s into the next step: the estimate counts down, it does not stand still
    assert eta.text() == ", about 25 s left"
    eta.at -= 100
    assert eta.text() == ", about 0 s left"


def test_a_long_step_says_a_line_in_30_s_in_a_log_and_every_tick_on_a_terminal(monkeypatch):
    """eta.long_step ticks every 2 s; the step of optimize, bench and build-engine (cli.common.Steps) lets one tick
    in 30 s through to a log (the README's promise; optimize's own step used to write every one)."""
    import time

    from scaoed_deploy.cli.common import TICK_LOG_S, Steps

    clock = [1000.0]
    monkeypatch.setattr(time, "monotonic", lambda: clock[0])
    lines = []
    steps = Steps(lines.append, tick_every=TICK_LOG_S)
    steps("AutoCast: 0 s spent")
    for i in range(1, 61):  # two minutes of ticks, one each 2 s
        clock[0] += 2
        steps.tick(f"AutoCast: {2 * i} s spent")
    assert lines == [
        "AutoCast: 0 s spent",
        "AutoCast: 30 s spent",
        "AutoCast: 60 s spent",
        "AutoCast: 90 s spent",
        "AutoCast: 120 s spent",
    ]


# ---------------------------------------------------------------------------- racing, against brute force
class _Simulated:
    """A search whose candidates are synthetic: true latencies at least 1.25 x apart (a backend's rate times a
    K's MACs, powers of 1.25), each timed call 0-10 % slower than true (noise only slows), PSNRs within each
    precision's parity margin of fp32's at that K, a backend's dPSNR alike at every K within 0.01 dB."""

    def __init__(self, rng: random.Random, constraint, iters: int = 5):
        from scaoed_deploy.optimize.choose import margin_db
        from scaoed_deploy.optimize.search import OptimizeConfig, Search

        ks, precisions = [1, 2, 3], {"torch": "fp32", "a-fp32": "fp32", "b-bf16": "bf16", "c-int8": "int8"}
        rate = dict(zip(precisions, rng.sample(range(5), 4)))
        self.gmacs = {k: 1.25 ** (5 * i) for i, k in enumerate(ks)}
        fp32 = {k: rng.uniform(27, 30) for k in ks}
        loss = {b: rng.uniform(-margin_db(p), margin_db(p)) for b, p in precisions.items()}
        self.truth, self.calls = {}, 0
        cands = []
        for k in ks:
            for b, p in precisions.items():
                c = Candidate(f"k{k}-{b}", k, b, p)
                true_ms = 1.25 ** rate[b] * self.gmacs[k]
                # a backend's dPSNR alike at every K within 0.01 dB (as measured; choose.likely_reach relies on it)
                jitter = min(margin_db(p), max(-margin_db(p), loss[b] + rng.uniform(-0.01, 0.01)))
                d = 0.0 if b == "torch" else jitter
                self.truth[c.id] = {
                    "latency_ms": true_ms,
                    "psnr": fp32[k] + d,
                    "dpsnr": d,
                    "times_s": [true_ms * (1 + rng.uniform(0, 0.1)) / 1000 for _ in range(iters)],
                }
                cands.append(c)
        sim = self

        class Search_(Search):
            def __init__(self):  # the real run(), measure() and racing; opening, parity and the clock simulated
                self.cfg = OptimizeConfig(
                    resolutions=[(64, 64)], backends=list(precisions), stages=ks, constraint=constraint, iters=iters
                )
                self.step, self.advance = (lambda s: None), (lambda c, g: None)
                self.cands, self.gmacs = cands, sim.gmacs
                self.fp32 = {k: {"psnr": v, "ssim": None} for k, v in fp32.items()}
                self.backends = type(
                    "B", (), {"open": lambda _, b, k: type("F", (), {"close": lambda _: None})(), "build_peaks": {}}
                )()

            def fp32_quality(self):
                pass

            def verify(self, c, fn):
                return {"passed": True, "source": "simulated", "mean_dpsnr_db": sim.truth[c.id]["dpsnr"]}

            def time(self, c, fn, t0, until):
                from scaoed_deploy.bench import Measurement, latency_stats

                times, stopped = [], None
                for t in sim.truth[c.id]["times_s"]:
                    times.append(t)
                    sim.calls += 1
                    stopped = until(times) if len(times) < iters else None
                    if stopped:
                        break
                return Measurement(latency_stats(times), 0.0, "simulated", 0.0, stopped)

        self.search = Search_()

    def truth_cands(self) -> list[Candidate]:
        return [
            Candidate(
                c.id,
                c.k,
                c.backend,
                c.precision,
                status="built",
                latency_ms=self.truth[c.id]["latency_ms"],
                psnr=self.truth[c.id]["psnr"],
            )
            for c in self.search.cands
        ]


@pytest.mark.parametrize("kind", ["max_latency_ms", "min_psnr", "max_dpsnr", None])
def test_racing_and_dominance_pruning_choose_what_brute_force_chooses_on_every_candidate_fully_timed(kind):
    rng = random.Random(7)
    calls = full = pruned = raced = 0
    for _ in range(150):
        seed = rng.random()
        probe = _Simulated(random.Random(seed), Constraint())
        lats = sorted(t["latency_ms"] for t in probe.truth.values())
        psnrs = sorted(t["psnr"] for t in probe.truth.values())
        value = {
            "max_latency_ms": rng.choice(lats) * 1.12,
            "min_psnr": rng.choice(psnrs) - 1e-9,
            "max_dpsnr": rng.uniform(0, 0.5),
            None: None,
        }[kind]  # budgets between measured and the next true
        sim = _Simulated(random.Random(seed), Constraint(kind, value))
        sim.search.run()
        cands = sim.search.cands
        want = brute_choice(sim.truth_cands(), kind, value)
        try:
            got = choose(cands, Constraint(kind, value)).id
        except NothingMeets:
            got = None
        assert got == want, [(c.id, c.status, c.latency_ms, c.psnr, c.reason) for c in cands]
        for c in (c for c in cands if c.backend == "torch"):  # eager is every ratio's baseline: never raced
            assert "off the front" not in c.reason and c.extra.get("timing_stopped", "stable").startswith("stable"), c
        calls += sim.calls
        full += 5 * sum(c.status == "built" or "off the front" in c.reason for c in cands)
        pruned += sum("off the front" in c.reason for c in cands)
        raced += sum(c.extra.get("timing_stopped", "").startswith(("dominated", "over the budget")) for c in cands)
    assert pruned > 50 and raced > 50 and calls < 0.8 * full  # both rules did work: the test is not vacuous


def test_racing_stops_only_past_its_margins():
    from scaoed_deploy.optimize.choose import dominance_prune
    from scaoed_deploy.optimize.race import SINGLE_CALL

    def stop_timing(*a, **k):  # the single-call rules (race.SINGLE_CALL); tests/test_optimize_race.py has the rest
        from scaoed_deploy.optimize.race import stop_timing

        return stop_timing(*a, **{"policy": SINGLE_CALL, **k})

    d = Candidate("k1-d", 1, "d", "int8", status="built", latency_ms=100.0, psnr=29.0)
    none = Constraint()
    assert stop_timing(29.0, [114.0], [d], none) is None  # within RACE_FACTOR (1.15) of an as-good candidate
    assert stop_timing(29.0, [116.0, 90.0], [d], none) is None  # its fastest call counts
    assert stop_timing(29.0, [116.0], [d], none).startswith("dominated: 116.0 ms at best in 1 call(s) against k1-d's")
    assert stop_timing(29.01, [200.0], [d], none) is None  # scores higher: may be on the front
    assert stop_timing(29.0, [200.0], [d], none, race=False) is None  # eager: never raced
    assert stop_timing(29.5, [116.0], [d], Constraint("max_latency_ms", 100)).startswith("over the budget")
    assert stop_timing(29.5, [114.0], [d], Constraint("max_latency_ms", 100)) is None
    assert stop_timing(29.5, [300.0, 100.0, 104.0, 102.0], [d], none, race=False).startswith("stable")  # 4 % apart
    assert stop_timing(29.5, [100.0, 106.0, 103.0], [d], none, race=False) is None  # 6 % apart
    low = Candidate("k1-x", 1, "x", "fp32", status="built", latency_ms=50.0, psnr=28.0)
    gmacs = {1: 1.0, 2: 2.0}  # x at K = 2: about 100 ms
    fast = Candidate("k2-y", 2, "y", "int8", status="built", latency_ms=89.0, psnr=29.0)
    assert "off the front, never chosen" in dominance_prune(Candidate("k2-x", 2, "x", "fp32"), [low, fast], gmacs, 29.0)
    assert dominance_prune(Candidate("k2-x", 2, "x", "fp32"), [low, fast], gmacs, 29.001) is None  # may score more
    fast.latency_ms = 91.0  # not faster than 0.9 of the prediction
    assert dominance_prune(Candidate("k2-x", 2, "x", "fp32"), [low, fast], gmacs, 29.0) is None


def test_the_chart_writes_one_k_label_for_a_huddle_of_points_and_keeps_the_fronts():
    """Points of one K within 15 % in latency and 3 % of the PSNR range share one label (the front's point keeps
    its own); another K, or the same K further off, is labelled."""
    from scaoed_deploy.optimize.report import labelled_points

    def pt(cid, k, ms, psnr):
        return {"id": cid, "k": k, "latency_ms": ms, "psnr": psnr}

    done = [
        pt("a", 1, 1000, 29.00),  # on the front
        pt("b", 1, 1050, 29.01),  # huddles with a: no label of its own
        pt("c", 3, 1080, 29.01),  # another K: labelled
        pt("d", 1, 1300, 29.00),  # 30 % slower than a: labelled
        pt("e", 1, 1010, 29.50),  # far above (the range is 0.5 dB): labelled
        pt("f", 1, 1320, 29.001),  # huddles with d
    ]
    assert sorted(c["id"] for c in labelled_points(done, ["b"])) == ["b", "c", "d", "e"]  # a huddles with b
    assert sorted(c["id"] for c in labelled_points(done, ["a"])) == ["a", "c", "d", "e"]
