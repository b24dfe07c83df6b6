"""The package ``optimize`` leaves: ``selection.json``, the chosen artifact with its parity record, the commands
that remake it (``reproduce.sh``), ``report.md``, ``report.html`` and, with ``--triton``, a model repository.

Everything is checked and made in memory or in a temporary folder first; the folder appears (renamed into
place) only when every file is written, so a failed run leaves no half package.
"""

from __future__ import annotations

import json
import os
import re
import shlex
import shutil
import tempfile
from pathlib import Path

import scaoed_deploy

from ..checkpoint import Weights, save_safetensors
from ..errors import ScaoedError
from ..fleet import CLASS_FOLDER, PACKAGE_FILE, class_entry
from ..parity.report import parity_record_path
from ..runtime.variants import VARIANTS
from ..seal import content_digest
from ..serve.repository import RepoOptions, make_repository
from ..util.jsonio import dumps
from .classes import ClassRun, class_files
from .html import report_html
from .report import chosen_of, markdown

#: build-engine's flags that remake each backend's artifact (torch rows ship the weights file itself).
BUILD_FLAGS = {name: v.build_flags for name, v in VARIANTS.items() if v.build_flags}


def weights_args(weights: Weights) -> str:
    """The flags that name these weights to another command ('' for the shipped demo weights)."""
    if weights.is_random:
        return f"--random-seed {weights.source.rsplit('-', 1)[-1]} --blocks {weights.blocks}"
    source = Path(weights.source)
    if Path(scaoed_deploy.__file__).parent in source.resolve().parents:
        return ""  # the demo weights: every command's default
    return f"--checkpoint {shlex.quote(str(source.resolve()))}"


def _link_or_copy(src: Path, dst: Path) -> None:
    try:
        os.link(src, dst)
    except OSError:  # another file system, or links refused: a copy
        shutil.copyfile(src, dst)


def ship_chosen(selection: dict, weights: Weights, folder: Path) -> list[str]:
    """The chosen candidate's artifact (a hard link or a copy; an OpenVINO IR with its .bin) and its parity
    record into ``folder``; a torch candidate ships its weights as a safetensors file at its K."""
    c = chosen_of(selection)
    names = []
    if c["artifact"]:
        src = Path(c["artifact"])
        parts = [src] + ([src.with_suffix(".bin")] if src.suffix == ".xml" else [])
        record = Path(c["parity"].get("record") or parity_record_path(src))
        for p in [*parts, record]:
            _link_or_copy(p, folder / p.name)
            names.append(p.name)
    else:
        name = f"scaoednet_k{c['k']}_t{weights.blocks}.safetensors"
        save_safetensors(weights, folder / name, stages=c["k"])
        names += [name, Path(name).with_suffix(".json").name]
        record = folder / f"{c['id']}.parity.json"
        record.write_text(dumps({"candidate": c["id"], "backend": c["backend"], **c["parity"]}) + "\n")
        names.append(record.name)
    return names


def remake_lines(c: dict, cfg: dict, weights: Weights, as_cpu: str | None = None) -> list[str]:
    """The commands that remake candidate ``c``'s artifact (``as_cpu``: under that class's mask)."""
    w = weights_args(weights)
    scaoed = "scaoed-deploy" + (f" --as-cpu {as_cpu}" if as_cpu else "")
    data = f" --data {shlex.quote(cfg['data'])}" if cfg.get("data") else ""
    lines = []
    if c["backend"] in BUILD_FLAGS:
        lines.append(f"{scaoed} export --stages {c['k']} {w}".rstrip())
        build = (
            f"{scaoed} build-engine {BUILD_FLAGS[c['backend']]} --stages {c['k']} {w}".rstrip()
            + (f" --calib-count {cfg['calib_count']}" if c["precision"] == "int8" else "")
            + data
        )
        tensorrt_target = "--target" not in BUILD_FLAGS[c["backend"]]
        lines.append(
            build + ("  || test $? -eq 4  # 4: no TensorRT here; the precision ONNX is made" if tensorrt_target else "")
        )
    elif c["backend"] == "onnxruntime":
        lines.append(f"{scaoed} export --stages {c['k']} {w}".rstrip())
    elif weights.is_random:
        lines.append(f"# {c['backend']} runs the weights themselves; seeded random ones are in the shipped safetensors")
    else:
        name = f"scaoednet_k{c['k']}_t{weights.blocks}.safetensors"
        lines.append(
            f"scaoed-deploy convert {shlex.quote(str(Path(weights.source).resolve()))} {name} --stages {c['k']}"
            f"  # run with the {c['backend']} runner"
        )
    return lines


def reproduce_script(selection: dict, weights: Weights) -> str:
    """Shell commands that remake the chosen artifact (and each other CPU class's, under its mask), then the whole
    selection into a fresh folder, then say whether it matches this package (``say_same``)."""
    c = chosen_of(selection)
    cfg = selection["config"]
    lines = [
        "#!/bin/sh",
        f"# Remakes {c['id']} (K={c['k']}, {c['backend']}, {c['precision']}) from the weights "
        f"{weights.identity}, then the whole selection.",
        "set -e",
        *remake_lines(c, cfg, weights),
    ]
    native = selection["machine"].get("isa_class")
    for cls, entry in (selection.get("by_cpu") or {}).items():
        other = next((d for d in entry["candidates"] if d["id"] == entry["chosen"]), None)
        if cls != native and other:
            lines += [f"# class {cls}: {other['id']}", *remake_lines(other, cfg, weights, as_cpu=cls)]
    lines += [
        'here=$(cd "$(dirname "$0")" && pwd)',
        "remade=$(mktemp -d)",
        _remade_command(selection.get("command") or "scaoed-deploy optimize") + ' -o "$remade"',
        "python3 -c 'import sys; from scaoed_deploy.optimize.package import say_same; "
        'sys.exit(say_same(sys.argv[1], sys.argv[2]))\' "$here" "$remade"',
    ]
    return "\n".join(lines).rstrip() + "\n"


def _remade_command(command: str) -> str:
    """The selection's command without its ``-o``/``--output``: the script names a fresh folder instead (the
    package's own exists, and a package is never written into a folder that is not empty)."""
    words, out, skip = shlex.split(command), [], False
    for w in words:
        if skip:
            skip = False
        elif w in ("-o", "--output"):
            skip = True
        elif not w.startswith("--output="):
            out.append(w)
    return shlex.join(out)


ARTIFACT_SUFFIXES = (".onnx", ".xml", ".safetensors", ".engine")


def compare_packages(shipped: str | Path, remade: str | Path) -> tuple[bool, list[str]]:
    """(whether the remade package holds what this one ships, a line per artifact): the same choice, and each
    shipped artifact identical, or equivalent: the same graph and weights (an ONNX file or IR with another
    metadata or other auto-numbered layer names, a weights file with other metadata)."""
    a, b = (json.loads((Path(p) / "selection.json").read_text()) for p in (shipped, remade))
    choices = [(None, a["chosen"], b["chosen"])] + [
        (cls, e["chosen"], ((b.get("by_cpu") or {}).get(cls) or {}).get("chosen"))
        for cls, e in (a.get("by_cpu") or {}).items()
    ]
    for cls, mine, theirs in choices:
        if mine != theirs:
            where = f" for class {cls}" if cls else ""
            return False, [
                f"differs: this package chose {mine}{where}, the remade one {theirs} (the timings of two "
                "runs differ; see both report.md)"
            ]
    lines, same = [f"the same choice: {a['chosen']}"], True
    lines += [f"the same choice for class {cls}: {mine}" for cls, mine, _ in choices[1:]]
    names = list(a.get("shipped", [])) + [
        n for e in (a.get("by_cpu") or {}).values() for n in e.get("shipped", []) if n.startswith(CLASS_FOLDER + "/")
    ]
    for name in (n for n in names if n.endswith(ARTIFACT_SUFFIXES)):
        verdict = _same_artifact(Path(shipped) / name, Path(remade) / name)
        same &= verdict != "differs"
        lines.append(f"{name}: {verdict}")
    return same, lines


def _same_artifact(x: Path, y: Path) -> str:
    if not y.is_file():
        return "differs (not in the remade package)"
    if x.read_bytes() == y.read_bytes():
        return "identical"
    if x.suffix == ".onnx" and content_digest(x) == content_digest(y):
        return "equivalent (the same graph and weights; metadata differs)"
    if x.suffix == ".xml" and x.with_suffix(".bin").read_bytes() == y.with_suffix(".bin").read_bytes():

        def plain(p: Path) -> str:  # without metadata and without the names OpenVINO numbers per process
            text = re.sub(r"<rt_info>.*?</rt_info>", "", p.read_text(), flags=re.S)
            return re.sub(r' (name|names)="[^"]*"', "", text)

        if plain(x) == plain(y):
            return "equivalent (the same graph and weights; only auto-numbered layer names differ)"
    if x.suffix == ".safetensors":
        from safetensors.numpy import load_file

        tx, ty = load_file(str(x)), load_file(str(y))
        if tx.keys() == ty.keys() and all((tx[k] == ty[k]).all() for k in tx):
            return "equivalent (the same weights; metadata differs)"
    return "differs"


def say_same(shipped: str, remade: str) -> int:
    """reproduce.sh's last step: print the comparison; 0 when the remade package holds the same, 1 otherwise."""
    same, lines = compare_packages(shipped, remade)
    print("\n".join(lines))
    print(("matches: " if same else "does not match: ") + f"{remade} against {shipped}")
    return 0 if same else 1


def write_package(
    selection: dict,
    previews: list[dict],
    weights: Weights,
    out_dir: str | Path,
    triton: bool = False,
    step=lambda s: None,
    classes: list[ClassRun] = (),
) -> list[Path]:
    """Write the package into ``out_dir`` (which must not exist yet, or be empty); returns its files. ``classes``:
    the other CPU classes' searches (``optimize --cpus``): their files under ``by_cpu/CLASS/``, ``by_cpu`` in
    ``selection.json``."""
    out_dir = Path(out_dir)
    if out_dir.exists() and (not out_dir.is_dir() or any(out_dir.iterdir())):
        raise ScaoedError(f"{out_dir} exists and is not an empty folder; choose another -o")
    out_dir.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{out_dir.name}.", dir=out_dir.parent))
    try:
        if selection["chosen"]:
            selection["shipped"] = ship_chosen(selection, weights, tmp)
        if classes:
            selection["by_cpu"] = by_cpu(selection, classes, tmp)
        if selection["chosen"]:
            script = tmp / "reproduce.sh"
            script.write_text(reproduce_script(selection, weights))
            script.chmod(0o755)
            if triton:
                selection["triton"] = triton_repository(selection, tmp, step)
        (tmp / "report.md").write_text(markdown(selection))
        (tmp / "report.html").write_text(report_html(selection, previews))
        (tmp / "selection.json").write_text(dumps(selection) + "\n")
        tmp.chmod(0o755)  # mkdtemp's folder is private; the package is not
        if out_dir.exists():
            out_dir.rmdir()
        tmp.rename(out_dir)
    except OSError as e:
        shutil.rmtree(tmp, ignore_errors=True)
        raise ScaoedError(f"cannot write {out_dir}: {e.strerror or e}") from e
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return sorted(p for p in out_dir.rglob("*") if p.is_file())


def by_cpu(selection: dict, classes: list[ClassRun], folder: Path) -> dict:
    """``selection.json``'s ``by_cpu``: this CPU's class (its files at the top), then each other class's, its files
    linked into ``folder/by_cpu/CLASS/``."""
    out = {selection["machine"]["isa_class"]: class_entry(selection)}
    for run in classes:
        files = class_files(run)
        for src, rel in files:
            (folder / rel).parent.mkdir(parents=True, exist_ok=True)
            _link_or_copy(src, folder / rel)
        out[run.cpu_class] = {**class_entry(run.selection, [rel for _, rel in files]), "command": run.command}
    return out


def triton_repository(selection: dict, folder: Path, step=lambda s: None) -> dict:
    """A Triton model repository of the shipped artifact (triton-repo's code); torch candidates have none. With
    ``by_cpu``: one model of every class's choice, picked per server (``serve.package``)."""
    if selection.get("by_cpu"):
        (folder / PACKAGE_FILE).write_text(dumps(selection) + "\n")  # what the model's folder is read as
        try:
            out = make_repository([folder], folder / "triton", RepoOptions(python_backend=True), step)
        except ScaoedError as e:
            return {"skipped": str(e)}
        return {"repository": "triton", "models": [m["name"] for m in out["models"]]}
    c = chosen_of(selection)
    if not c["artifact"]:
        return {"skipped": f"{c['id']} runs on the torch runner: Triton serves ONNX, IR or engine files"}
    shipped = folder / Path(c["artifact"]).name
    out = make_repository([shipped], folder / "triton", RepoOptions(python_backend=True), step)
    return {"repository": "triton", "models": [m["name"] for m in out["models"]]}


def default_output(root: Path = Path("optimize")) -> Path:
    import datetime

    return root / datetime.datetime.now().strftime("%Y%m%d-%H%M%S")
