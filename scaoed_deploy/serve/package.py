"""An optimize package as one Triton model: every CPU class's choice in its version folder, picked per server.

``triton-repo PACKAGE_DIR`` (and ``optimize --cpus ... --triton``) writes one python-backend model whose ``1/``
holds the package's ``selection.json`` and each class's files at their package paths; ``triton_model.py`` opens
that folder through the runner registry, which takes the entry of the CPU the server runs on (``fleet.pick``),
so one repository serves a fleet of mixed CPUs, each server its own verified artifact. The classes' models
must take and give the same tensors (every ScaoedNet artifact does); a class whose choice runs on torch (a
weights file, not an artifact) cannot be served this way.
"""

from __future__ import annotations

import re
from dataclasses import replace
from pathlib import Path

from ..errors import ScaoedError
from ..fleet import PACKAGE_FILE, entries, read_package


def plan_package(folder: Path, options, plan_model) -> object:
    """The ModelEntry serving package ``folder`` (``plan_model``: the repository's per-artifact plan)."""
    if not options.python_backend:
        raise ScaoedError(
            f"{folder} is an optimize package: it is served by the python backend (--python-backend), which picks "
            "the artifact of the server's CPU class when the model loads"
        )
    by_class = {c: e for c, e in entries(read_package(folder)).items() if e.get("chosen") and e.get("run")}
    if not by_class:
        raise ScaoedError(f"package {folder} holds no choice: nothing to serve")
    planned = {}
    for cls, e in by_class.items():
        if not e["run"].get("artifact") or e["run"]["artifact"].endswith(".safetensors"):
            raise ScaoedError(
                f"package {folder}: its {cls} choice {e['chosen']} runs on the torch runner: Triton serves ONNX, IR "
                "or engine files"
            )
        planned[cls] = plan_model(folder / e["run"]["artifact"], options)
    first_cls, first = next(iter(planned.items()))
    for cls, p in planned.items():
        if (p.inputs, p.outputs, p.max_batch) != (first.inputs, first.outputs, first.max_batch):
            raise ScaoedError(
                f"package {folder}: its {cls} and {first_cls} choices take different tensors or batches; serve them "
                "as separate models"
            )
    files = {"model.py": first.files["model.py"], PACKAGE_FILE: folder / PACKAGE_FILE}
    for e in by_class.values():
        files.update({rel: folder / rel for rel in e["shipped"]})
    keep = {k: v for k, v in first.parameters.items() if k in ("threads", "max_side", "allow_unverified", "made_with")}
    params = {
        **keep,
        "kind": "package",
        "artifact": ".",  # the version folder: the registry opens it as a package and picks
        "backend": "",
        "classes": ",".join(by_class),
        **{f"choice_{c}": e["chosen"] for c, e in by_class.items()},
    }
    name = re.sub(r"[^A-Za-z0-9_-]", "_", folder.resolve().name) or "package"
    return replace(first, name=name, parameters=params, files=files)
