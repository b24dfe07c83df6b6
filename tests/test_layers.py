"""The package's own import graph: imports point one way along the pipeline.

Read from the source with ``ast``: every import of a scaoed_deploy module sits at the top of its file
(lazy imports are for heavy third-party libraries only), no module imports another's ``_private``
names, and neither the modules nor the subsystems (``parity``, ``precision``, ``runtime``, ...) form a cycle.
"""

from __future__ import annotations

import ast
from pathlib import Path

import scaoed_deploy

ROOT = Path(scaoed_deploy.__file__).parent


def _modules() -> dict[str, Path]:
    out = {}
    for p in ROOT.rglob("*.py"):
        parts = list(p.relative_to(ROOT.parent).with_suffix("").parts)
        if parts[-1] == "__init__":
            parts = parts[:-1]
        out[".".join(parts)] = p
    return out


MODULES = _modules()


def _own_imports(name: str, path: Path):
    """(target module, imported names, at top level?) for each import of the package's own modules."""
    tree = ast.parse(path.read_text())
    package = name if path.name == "__init__.py" else name.rsplit(".", 1)[0]
    top = set(map(id, tree.body))
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.split(".")[: len(package.split(".")) - node.level + 1]
                target = ".".join(base + ([node.module] if node.module else []))
            elif (node.module or "").startswith("scaoed_deploy"):
                target = node.module
            else:
                continue
            names = [a.name for a in node.names]
            submodules = [f"{target}.{n}" for n in names if f"{target}.{n}" in MODULES]
            others = [n for n in names if f"{target}.{n}" not in MODULES]
            if others or not submodules:  # "from . import a, b" of submodules alone imports just those
                yield target, others, id(node) in top
            for sub in submodules:
                yield sub, [], id(node) in top
        elif isinstance(node, ast.Import):
            for a in node.names:
                if a.name.startswith("scaoed_deploy"):
                    yield a.name, [], id(node) in top


def _graph(key=lambda m: m) -> dict[str, set[str]]:
    edges: dict[str, set[str]] = {}
    for name, path in MODULES.items():
        for target, _, _ in _own_imports(name, path):
            if target in MODULES and key(target) != key(name):
                edges.setdefault(key(name), set()).add(key(target))
    return edges


def _cycle(edges: dict[str, set[str]]) -> list[str] | None:
    state: dict[str, int] = {}
    stack: list[str] = []

    def visit(v):
        state[v] = 1
        stack.append(v)
        for w in sorted(edges.get(v, ())):
            if state.get(w) == 1:
                return stack[stack.index(w) :] + [w]
            if w not in state:
                found = visit(w)
                if found:
                    return found
        state[v] = 2
        stack.pop()
        return None

    for v in sorted(edges):
        if v not in state:
            found = visit(v)
            if found:
                return found
    return None


def subsystem(module: str) -> str:
    parts = module.split(".")
    return parts[1] if len(parts) > 1 else parts[0]


def test_the_package_is_read_whole():
    assert {"scaoed_deploy.artifact", "scaoed_deploy.runtime.registry", "scaoed_deploy.parity.harness"} <= set(MODULES)


def test_own_modules_are_imported_at_the_top_of_each_file():
    inside = [
        f"{name}: {target}"
        for name, path in MODULES.items()
        for target, _, at_top in _own_imports(name, path)
        if not at_top
    ]
    assert inside == []


def test_no_private_name_is_imported_across_modules():
    private = [
        f"{name}: {target}.{n}"
        for name, path in MODULES.items()
        for target, names, _ in _own_imports(name, path)
        for n in names
        if n.startswith("_")
    ]
    assert private == []


def test_no_cycle_between_modules_or_subsystems():
    assert _cycle(_graph()) is None
    assert _cycle(_graph(subsystem)) is None


def test_the_bottom_layer_imports_no_pipeline_step():
    steps = {"export", "precision", "parity", "runtime", "build", "bench", "cli", "train"}
    for module in ("scaoed_deploy.artifact", "scaoed_deploy.audit", "scaoed_deploy.compare"):
        assert not {subsystem(t) for t, _, _ in _own_imports(module, MODULES[module])} & steps, module


def test_the_checker_finds_a_cycle():
    assert _cycle({"a": {"b"}, "b": {"c"}, "c": {"a"}}) == ["a", "b", "c", "a"]
    assert _cycle({"a": {"b"}, "b": set()}) is None


def test_utilities_import_nothing_of_the_package_but_errors():
    """``util`` (files, optional imports, the torch device) sits under every step: it may use the error types only."""
    utilities = [m for m in MODULES if subsystem(m) == "util"]
    assert utilities, "no util subpackage"
    for module in utilities:
        used = {t for t, _, _ in _own_imports(module, MODULES[module])}
        assert used <= {"scaoed_deploy.errors"} | set(utilities), (module, used)


def test_autocast_and_int8_never_import_each_other():
    """As in ModelOpt's onnx/: the two converters share ``precision.common`` and nothing else of each other."""
    for a, b in (("autocast", "int8"), ("int8", "autocast")):
        used = {t for t, _, _ in _own_imports(f"scaoed_deploy.precision.{a}", MODULES[f"scaoed_deploy.precision.{a}"])}
        assert f"scaoed_deploy.precision.{b}" not in used
