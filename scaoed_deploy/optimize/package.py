"""The package ``optimize`` leaves: ``selection.json``, the chosen artifact with its parity record, the commands
that remake it (``reproduce.sh``), ``report.md``, ``report.html`` and, with ``--triton``, a model repository.

Everything is checked and made in memory or in a temporary folder first; the folder appears (renamed into
place) only when every file is written, so a failed run leaves no half package.
"""

from __future__ import annotations

import os
import shlex
import shutil
import tempfile
from pathlib import Path

import scaoed_deploy

from ..checkpoint import Weights, save_safetensors
from ..errors import ScaoedError
from ..jsonio import dumps
from ..parity.report import parity_record_path
from ..serve.repository import RepoOptions, make_repository
from .html import report_html
from .report import chosen_of, markdown

#: build-engine's flags that remake each backend's artifact (torch rows ship the weights file itself).
BUILD_FLAGS = {"onnxruntime-fp16": "--fp16", "onnxruntime-bf16": "--bf16", "onnxruntime-int8": "--int8 --target onnxruntime-cpu",
               "openvino": "--fp32 --target openvino", "openvino-bf16": "--bf16 --target openvino",
               "openvino-int8": "--int8 --target openvino", "tensorrt": "--fp32", "tensorrt-fp16": "--fp16",
               "tensorrt-int8": "--int8"}


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


def reproduce_script(selection: dict, weights: Weights) -> str:
    """Shell commands that remake the chosen artifact, then the whole selection."""
    c = chosen_of(selection)
    cfg, w = selection["config"], weights_args(weights)
    lines = ["#!/bin/sh", f"# Remakes {c['id']} (K={c['k']}, {c['backend']}, {c['precision']}) from the weights "
             f"{weights.identity}, then the whole selection.", "set -e"]
    data = f" --data {shlex.quote(cfg['data'])}" if cfg.get("data") else ""
    if c["backend"] in BUILD_FLAGS:
        lines.append(f"scaoed-deploy export --stages {c['k']} {w}".rstrip())
        build = (f"scaoed-deploy build-engine {BUILD_FLAGS[c['backend']]} --stages {c['k']} {w}".rstrip()
                 + (f" --calib-count {cfg['calib_count']}" if c["precision"] == "int8" else "") + data)
        tensorrt_target = "--target" not in BUILD_FLAGS[c["backend"]]
        lines.append(build + ("  || test $? -eq 4  # 4: no TensorRT here; the precision ONNX is made" if tensorrt_target else ""))
    elif c["backend"] == "onnxruntime":
        lines.append(f"scaoed-deploy export --stages {c['k']} {w}".rstrip())
    elif weights.is_random:
        lines.append(f"# {c['backend']} runs the weights themselves; seeded random ones are in the shipped safetensors")
    else:
        name = f"scaoednet_k{c['k']}_t{weights.blocks}.safetensors"
        lines.append(f"scaoed-deploy convert {shlex.quote(str(Path(weights.source).resolve()))} {name} --stages {c['k']}"
                     f"  # run with the {c['backend']} runner")
    lines.append(selection.get("command") or "")
    return "\n".join(lines).rstrip() + "\n"


def write_package(selection: dict, previews: list[dict], weights: Weights, out_dir: str | Path,
                  triton: bool = False, step=lambda s: None) -> list[Path]:
    """Write the package into ``out_dir`` (which must not exist yet, or be empty); returns its files."""
    out_dir = Path(out_dir)
    if out_dir.exists() and (not out_dir.is_dir() or any(out_dir.iterdir())):
        raise ScaoedError(f"{out_dir} exists and is not an empty folder; choose another -o")
    out_dir.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{out_dir.name}.", dir=out_dir.parent))
    try:
        if selection["chosen"]:
            selection["shipped"] = ship_chosen(selection, weights, tmp)
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


def triton_repository(selection: dict, folder: Path, step=lambda s: None) -> dict:
    """A Triton model repository of the shipped artifact (triton-repo's code); torch candidates have none."""
    c = chosen_of(selection)
    if not c["artifact"]:
        return {"skipped": f"{c['id']} runs on the torch runner: Triton serves ONNX, IR or engine files"}
    shipped = folder / Path(c["artifact"]).name
    out = make_repository([shipped], folder / "triton", RepoOptions(python_backend=True), step)
    return {"repository": "triton", "models": [m["name"] for m in out["models"]]}


def default_output(root: Path = Path("optimize")) -> Path:
    import datetime

    return root / datetime.datetime.now().strftime("%Y%m%d-%H%M%S")

