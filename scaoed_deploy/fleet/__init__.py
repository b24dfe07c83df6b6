"""One package for a fleet of CPUs: which of a package's verified choices the CPU it runs on takes.

``optimize --cpus native,avx2`` leaves one package with a choice per CPU class (``isa_class``: amx, avx512-vnni,
avx512, avx2): ``selection.json``'s ``by_cpu`` maps each class to its constraint, candidates, Pareto front,
choice, the machine it was measured on (under ``--as-cpu`` for a class below the machine's own) and the files
it ships, relative to the package (the native class's at the top, as a one-class package has them; another
class's under ``by_cpu/CLASS/``). A package without ``by_cpu`` (made by ``optimize`` without ``--cpus``) is one
class: the machine it was measured on.

``pick(PACKAGE_DIR)`` takes the entry of this CPU's class whose measuring machine had nothing this CPU lacks
(an Ice Lake Xeon is class avx512-vnni but has no BF16: an avx512-vnni choice measured on a BF16 CPU is not
its own). A CPU whose class the package lacks is refused in one line, unless ``allow_fallback``: then the
nearest lower class it covers, with a warning (the choice runs correctly there; it was not timed there). The
denoise CLI, ``Denoiser.open``, every ``denoise --ray`` worker and a served package model call it where they
run, so each machine of a mixed fleet runs its own verified artifact.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

from ..cpu import CLASSES, CPU, this_cpu
from ..errors import ScaoedError

PACKAGE_FILE = "selection.json"
#: Where a class other than the native one ships its files, inside the package.
CLASS_FOLDER = "by_cpu"


def is_package(path: str | Path | None) -> bool:
    """Whether ``path`` is an optimize package (a folder with ``selection.json``)."""
    return path is not None and (Path(path) / PACKAGE_FILE).is_file()


def read_package(folder: str | Path) -> dict:
    """The package's ``selection.json`` (one error line when it is not one, or unreadable)."""
    path = Path(folder) / PACKAGE_FILE
    try:
        sel = json.loads(path.read_text())
    except FileNotFoundError as e:
        raise ScaoedError(f"{folder} is a folder without {PACKAGE_FILE}: not an optimize package") from e
    except (OSError, ValueError) as e:
        raise ScaoedError(f"{path} cannot be read as JSON ({e}): remake the package with optimize") from e
    if not isinstance(sel, dict) or "chosen" not in sel:
        raise ScaoedError(f"{path} is not an optimize selection (no 'chosen'): remake the package with optimize")
    return sel


def class_entry(sel: dict, files: list[str] | None = None) -> dict:
    """A selection's ``by_cpu`` entry: what was chosen on its machine and the files it ships (relative)."""
    chosen = next((c for c in sel.get("candidates", []) if c["id"] == sel.get("chosen")), None)
    shipped = list(sel.get("shipped", []) if files is None else files)
    return {
        "constraint": sel.get("constraint"),
        "candidates": sel.get("candidates", []),
        "pareto": sel.get("pareto", []),
        "chosen": sel.get("chosen"),
        "error": sel.get("error"),
        "best_psnr": sel.get("best_psnr"),
        "machine": sel.get("machine", {}),
        "shipped": shipped,
        "run": run_of(chosen, shipped) if chosen else None,
    }


def run_of(chosen: dict, shipped: list[str]) -> dict:
    """What runs a class's choice: its file among ``shipped`` (an ONNX file, IR or safetensors), the variant (a
    bench/optimize backend name) and K."""
    suffixes = (".onnx", ".xml", ".engine", ".safetensors")
    model = next((f for f in shipped if f.endswith(suffixes)), None)
    return {"artifact": model, "backend": chosen["backend"], "k": chosen["k"], "candidate": chosen["id"]}


def entries(sel: dict) -> dict[str, dict]:
    """Class: entry; a package without ``by_cpu`` is one class, that of the machine it was measured on."""
    if sel.get("by_cpu"):
        return dict(sel["by_cpu"])
    cls = (sel.get("machine") or {}).get("isa_class", "other")
    return {cls: class_entry(sel)} if sel.get("chosen") else {}


@dataclass(frozen=True)
class Pick:
    """The entry a CPU takes from a package."""

    package: Path
    cpu_class: str  # the entry's class
    candidate: str  # its choice: k3-openvino-bf16
    backend: str  # the variant (optimize's backend name)
    k: int
    artifact: Path  # the file it runs, inside the package
    cpu: CPU  # the CPU it runs on
    fallback: bool = False  # a lower class than this CPU's own, by --allow-cpu-fallback

    def line(self) -> str:
        how = (
            f"this CPU's class {self.cpu.isa_class} is not in it: the nearest lower class it covers, "
            "--allow-cpu-fallback"
            if self.fallback
            else "this CPU's class"
        )
        return (
            f"package {self.package}: the {self.cpu_class} entry ({how}): {self.candidate}, "
            f"{self.artifact.relative_to(self.package)}"
        )

    def warning(self) -> str | None:
        if not self.fallback:
            return None
        return (
            f"{self.candidate} was chosen and timed on class {self.cpu_class}, not on this CPU's "
            f"({self.cpu.isa_class}): it was verified on that class, whose instructions this CPU has, but neither "
            "verified nor timed here (`scaoed-deploy optimize --cpus native` on this machine makes its own)"
        )

    def to_dict(self) -> dict:
        return {
            "cpu_class": self.cpu_class,
            "artifact": str(self.artifact),
            "candidate": self.candidate,
            "backend": self.backend,
            "k": self.k,
            "fallback": self.fallback,
            "this_cpu_class": self.cpu.isa_class,
        }


def covers(entry: dict, cpu: CPU) -> bool:
    """Whether ``cpu`` has every instruction set the entry's machine had (the entry then runs here as verified)."""
    return set((entry.get("machine") or {}).get("isa", [])) <= set(cpu.isa)


def _rank(cls: str) -> int:
    return CLASSES.index(cls) if cls in CLASSES else len(CLASSES)


def pick(folder: str | Path, cpu: CPU | None = None, allow_fallback: bool = False) -> Pick:
    """The entry of ``folder``'s package that ``cpu`` (this one) runs (see the module doc)."""
    folder = Path(folder)
    cpu = cpu or this_cpu()
    sel = read_package(folder)
    by_class = {c: e for c, e in entries(sel).items() if e.get("chosen") and e.get("run")}
    if not by_class:
        raise ScaoedError(f"package {folder} holds no choice (its optimize run chose nothing): nothing to run")
    own = by_class.get(cpu.isa_class)
    if own and covers(own, cpu):
        cls, fallback = cpu.isa_class, False
    else:
        lower = sorted(
            (c for c, e in by_class.items() if _rank(c) > _rank(cpu.isa_class) and covers(e, cpu)), key=_rank
        )
        if not allow_fallback or not lower:
            have = ", ".join(sorted(by_class, key=_rank))
            why = (
                f"its {cpu.isa_class} entry was measured on a CPU with what this one lacks"
                if own
                else f"it has no entry for this CPU's class {cpu.isa_class}"
            )
            hint = (
                f"--allow-cpu-fallback runs its {lower[0]} entry"
                if lower
                else "no entry it holds runs on this CPU as verified"
            )
            raise ScaoedError(
                f"package {folder} has choices for {have}; {why} ({cpu.describe()}): {hint}, or make one here with "
                "`scaoed-deploy optimize --cpus native`"
            )
        cls, fallback = lower[0], True
    run = by_class[cls]["run"]
    if not run.get("artifact"):
        raise ScaoedError(f"package {folder}: its {cls} entry ships no model file")
    artifact = folder / run["artifact"]
    if not artifact.is_file():
        raise ScaoedError(f"package {folder}: its {cls} entry's file {run['artifact']} is missing")
    return Pick(folder, cls, run["candidate"], run["backend"], int(run["k"]), artifact, cpu, fallback)
