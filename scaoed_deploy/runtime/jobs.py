"""Which files a denoise run reads and writes, decided before any model loads.

``plan_jobs(src, dst, reference, overwrite)``: the (input, output, reference) of each image, for
a single file, a folder (its images, not recursively) or a text file of paths (``.txt``: one image
path a line, relative to the list's folder, ``#`` comments); outputs that exist are skipped unless
``overwrite`` (so a run resumes), and every rule that would make a run write a wrong file is
checked here: an output that is its own input, a folder written over itself, two inputs of one
name into one output folder, a reference folder that lacks an image, an output format that
cannot be written. Temporary files that a killed write left in the output folder (``atomic_path``'s
naming, their writer gone) are removed, and are never taken as inputs. Local ``denoise`` and the
cluster run (``cluster/``) plan with this one function.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from ..errors import ScaoedError, sweep_stale_temporaries
from ..images import READ_SUFFIXES, check_writable_suffix, list_images

LIST_SUFFIXES = {".txt", ".lst"}


@dataclass
class Job:
    src: Path
    dst: Path
    ref: Path | None = None


@dataclass
class Plan:
    jobs: list[Job]
    single: bool  # one file in, one file out: its errors end the run as they are
    skipped: list[str] = field(default_factory=list)  # outputs that exist (not redone without overwrite)
    swept: list[str] = field(default_factory=list)  # stale temporary files removed from the output folder


def _listed(path: Path) -> list[Path]:
    """The image paths a text file lists (relative ones from the list's folder)."""
    try:
        lines = path.read_text(encoding="utf-8").splitlines()
    except (OSError, UnicodeDecodeError) as e:
        raise ScaoedError(f"{path}: cannot read the list of images ({e})") from e
    out = []
    for line in (ln.strip() for ln in lines):
        if line and not line.startswith("#"):
            p = Path(line)
            out.append(p if p.is_absolute() else path.parent / p)
    return out


def plan_jobs(src: str | Path, dst: str | Path, reference: str | Path | None = None,
              overwrite: bool = False) -> Plan:
    """The jobs of a run (see the module doc); raises ScaoedError for a run that must not start."""
    src_p, dst_p = Path(src), Path(dst)
    if src_p.is_file() and src_p.suffix.lower() not in LIST_SUFFIXES:
        dst_p = dst_p / src_p.name if dst_p.is_dir() else dst_p
        check_writable_suffix(dst_p)
        if dst_p.exists() and not overwrite:
            same = dst_p.resolve() == src_p.resolve()
            raise ScaoedError(f"{dst_p} is the input itself; --overwrite to replace it" if same else
                              f"{dst_p} exists; --overwrite to replace it")
        swept = [str(t) for t in sweep_stale_temporaries(dst_p.parent)]
        return Plan([Job(src_p, dst_p, Path(reference) if reference else None)], single=True, swept=swept)
    if dst_p.exists() and not dst_p.is_dir():
        raise ScaoedError(f"{dst_p} is a file; a folder or list in needs a folder out")
    if src_p.is_dir():
        if dst_p.exists() and dst_p.resolve() == src_p.resolve():
            raise ScaoedError(f"{dst_p} is the input folder: a folder run never writes over its own inputs; "
                              "name another output folder")
        inputs = list_images(src_p)
        if not inputs:
            raise ScaoedError(f"no images in {src_p} (looked for {' '.join(sorted(READ_SUFFIXES))})")
    elif src_p.is_file():
        inputs = _listed(src_p)
        if not inputs:
            raise ScaoedError(f"{src_p} lists no images")
        names: dict[str, Path] = {}
        for p in inputs:
            if p.name in names and names[p.name] != p:
                raise ScaoedError(f"{src_p} lists two images named {p.name} ({names[p.name]} and {p}): their outputs "
                                  f"would be one file in {dst_p}")
            names[p.name] = p
        inputs = list(dict.fromkeys(inputs))
    else:
        raise ScaoedError(f"input not found: {src_p}")
    into_inputs = [p for p in inputs if (dst_p / p.name).resolve() == p.resolve()]
    if into_inputs:
        raise ScaoedError(f"{dst_p / into_inputs[0].name} would be written over its own input; name another output "
                          "folder")
    jobs = [Job(p, dst_p / p.name, Path(reference) / p.name if reference else None) for p in inputs]
    if reference:
        missing = [str(j.ref) for j in jobs if not j.ref.is_file()]
        if missing:
            raise ScaoedError(f"reference folder lacks {len(missing)} image(s): {', '.join(missing[:3])}")
    skipped = [] if overwrite else [str(j.dst) for j in jobs if j.dst.exists()]
    swept = [str(t) for t in sweep_stale_temporaries(dst_p)]
    return Plan([j for j in jobs if overwrite or not j.dst.exists()], single=False, skipped=skipped, swept=swept)
