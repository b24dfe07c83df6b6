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

Inputs, outputs and references may also be object storage URLs (``s3://bucket/prefix/``, see
``storage/``), and a list may name them: such a run is planned by ``plan_with_objects``
with the same rules (each folder listed once, however many images it holds); its jobs carry the
URLs as text.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from ..errors import ScaoedError
from ..images import READ_SUFFIXES, check_writable_suffix, list_images
from ..storage import is_url, join, list_objects, name_of, object_names, suffix_of
from ..util.files import is_temporary, sweep_stale_temporaries

LIST_SUFFIXES = {".txt", ".lst"}


@dataclass
class Job:
    src: Path | str  # a URL as text (Path would fold its "//")
    dst: Path | str
    ref: Path | str | None = None


@dataclass
class Plan:
    jobs: list[Job]
    single: bool  # one file in, one file out: its errors end the run as they are
    skipped: list[str] = field(default_factory=list)  # outputs that exist (not redone without overwrite)
    skipped_inputs: list[str] = field(default_factory=list)  # their inputs, in the same order
    swept: list[str] = field(default_factory=list)  # stale temporary files removed from the output folder


def listed(path: Path) -> list[Path | str]:
    """The image paths a text file lists (relative ones from the list's folder; URLs as they are)."""
    try:
        lines = path.read_text(encoding="utf-8").splitlines()
    except (OSError, UnicodeDecodeError) as e:
        raise ScaoedError(f"{path}: cannot read the list of images ({e})") from e
    out = []
    for line in (ln.strip() for ln in lines):
        if is_url(line):
            out.append(line)
        elif line and not line.startswith("#"):
            p = Path(line)
            out.append(p if p.is_absolute() else path.parent / p)
    return out


def plan_jobs(src: str | Path, dst: str | Path, reference: str | Path | None = None, overwrite: bool = False) -> Plan:
    """The jobs of a run (see the module doc); raises ScaoedError for a run that must not start."""
    src_p, dst_p = Path(src), Path(dst)
    listing = listed(src_p) if src_p.suffix.lower() in LIST_SUFFIXES and src_p.is_file() else None  # read once
    if any(is_url(str(x)) for x in (src, dst, reference) if x is not None) or any(map(is_url, listing or [])):
        return plan_with_objects(str(src), str(dst), str(reference) if reference else None, overwrite, listing)
    if src_p.is_file() and src_p.suffix.lower() not in LIST_SUFFIXES:
        dst_p = dst_p / src_p.name if dst_p.is_dir() else dst_p
        check_writable_suffix(dst_p)
        if dst_p.exists() and not overwrite:
            same = dst_p.resolve() == src_p.resolve()
            raise ScaoedError(
                f"{dst_p} is the input itself; --overwrite to replace it"
                if same
                else f"{dst_p} exists; --overwrite to replace it"
            )
        swept = [str(t) for t in sweep_stale_temporaries(dst_p.parent)]
        return Plan([Job(src_p, dst_p, Path(reference) if reference else None)], single=True, swept=swept)
    if dst_p.exists() and not dst_p.is_dir():
        raise ScaoedError(f"{dst_p} is a file; a folder or list in needs a folder out")
    if src_p.is_dir():
        if dst_p.exists() and dst_p.resolve() == src_p.resolve():
            raise ScaoedError(
                f"{dst_p} is the input folder: a folder run never writes over its own inputs; "
                "name another output folder"
            )
        inputs = list_images(src_p)
        if not inputs:
            raise ScaoedError(f"no images in {src_p} (looked for {' '.join(sorted(READ_SUFFIXES))})")
    elif src_p.is_file():
        inputs = listing
        if not inputs:
            raise ScaoedError(f"{src_p} lists no images")
        names: dict[str, Path] = {}
        for p in inputs:
            if p.name in names and names[p.name] != p:
                raise ScaoedError(
                    f"{src_p} lists two images named {p.name} ({names[p.name]} and {p}): their outputs "
                    f"would be one file in {dst_p}"
                )
            names[p.name] = p
        inputs = list(dict.fromkeys(inputs))
    else:
        raise ScaoedError(f"input not found: {src_p}")
    real = {folder: folder.resolve() for folder in {p.parent for p in inputs}}  # each input folder resolved once
    dst_real = dst_p.resolve()
    into_inputs = [p for p in inputs if real[p.parent] == dst_real]  # an output path that is its input's path
    if into_inputs:
        raise ScaoedError(
            f"{dst_p / into_inputs[0].name} would be written over its own input; name another output folder"
        )
    jobs = [Job(p, dst_p / p.name, Path(reference) / p.name if reference else None) for p in inputs]
    if reference:
        missing = [str(j.ref) for j in jobs if not j.ref.is_file()]
        if missing:
            raise ScaoedError(f"reference folder lacks {len(missing)} image(s): {', '.join(missing[:3])}")
    return _folder_plan(jobs, dst_p, overwrite)


def _folder_plan(jobs: list[Job], dst, overwrite: bool) -> Plan:
    """A folder run's plan: the outputs that exist skipped (one listing of the output folder or prefix, not a
    look-up per output), stale temporaries of a local output folder swept."""
    existing = set() if overwrite else names_at(dst)
    done = [j for j in jobs if base_name(j.dst) in existing]
    swept = [] if is_url(dst) else [str(t) for t in sweep_stale_temporaries(dst)]
    return Plan(
        [j for j in jobs if base_name(j.dst) not in existing],
        single=False,
        skipped=[str(j.dst) for j in done],
        skipped_inputs=[str(j.src) for j in done],
        swept=swept,
    )


def _images_at(folder: str) -> list[Path | str]:
    """The images directly under a local folder or a URL prefix."""
    if is_url(folder):
        return [u for u, _ in list_objects(folder) if suffix_of(u) in READ_SUFFIXES and not is_temporary(name_of(u))]
    return list_images(folder)


def names_at(folder) -> set[str]:
    """What already exists directly under a local folder or a URL prefix (one listing)."""
    if is_url(folder):
        return object_names(folder)
    return {p.name for p in Path(folder).iterdir()} if Path(folder).is_dir() else set()


def base_name(item) -> str:
    return name_of(item) if is_url(item) else Path(item).name


def parent_of(item) -> Path | str:
    """The folder (or URL prefix) a path or URL is in."""
    return str(item).rsplit("/", 1)[0] if is_url(item) else Path(item).parent


def _at(folder: str, name: str) -> Path | str:
    return join(folder, name) if is_url(folder) else Path(folder) / name


def plan_with_objects(
    src: str, dst: str, reference: str | None, overwrite: bool, listing: list[Path | str] | None = None
) -> Plan:
    """plan_jobs for a run that reads or writes object storage: the same rules, each folder or prefix listed once;
    a missing bucket or refused credentials is one line here, before any work (every listing checks its
    bucket). ``listing``: the lines of a list ``src``, when the caller has read them."""
    if is_url(src):
        single = suffix_of(src) in READ_SUFFIXES  # one object; else a prefix
    else:
        single = Path(src).is_file() and Path(src).suffix.lower() not in LIST_SUFFIXES  # else a folder or list
    if single:
        inputs: list[Path | str] = [src if is_url(src) else Path(src)]
        names_a_file = suffix_of(dst) in READ_SUFFIXES if is_url(dst) else not Path(dst).is_dir()
        if names_a_file:
            out_folder, out_name = parent_of(dst), base_name(dst)
        else:  # a folder or prefix: the input's name in it
            out_folder, out_name = dst, base_name(src)
        check_writable_suffix(out_name)
        if out_name in names_at(out_folder) and not overwrite:
            raise ScaoedError(f"{_at(out_folder, out_name)} exists; --overwrite to replace it")
        ref = reference if reference is None or is_url(reference) else Path(reference)
        return Plan([Job(inputs[0], _at(out_folder, out_name), ref)], single=True)
    if is_url(src) or Path(src).is_dir():
        if src.rstrip("/") == dst.rstrip("/"):
            raise ScaoedError(
                f"{dst} is the input folder: a folder run never writes over its own inputs; name another output folder"
            )
        inputs = _images_at(src)
        if not inputs:
            raise ScaoedError(f"no images in {src} (looked for {' '.join(sorted(READ_SUFFIXES))})")
    else:
        inputs = list(dict.fromkeys(listed(Path(src)) if listing is None else listing))
        if not inputs:
            raise ScaoedError(f"{src} lists no images")
    names: dict[str, Path | str] = {}
    for item in inputs:
        check_writable_suffix(base_name(item))
        if base_name(item) in names:
            raise ScaoedError(
                f"{src} lists two images named {base_name(item)} ({names[base_name(item)]} and {item}): "
                f"their outputs would be one file in {dst}"
            )
        names[base_name(item)] = item
    if not is_url(dst) and Path(dst).exists() and not Path(dst).is_dir():
        raise ScaoedError(f"{dst} is a file; a folder or list in needs a folder out")
    jobs = [
        Job(item, _at(dst, base_name(item)), _at(reference, base_name(item)) if reference else None) for item in inputs
    ]
    if any(str(j.dst) == str(j.src) for j in jobs):
        raise ScaoedError(
            f"{next(j.dst for j in jobs if str(j.dst) == str(j.src))} would be written over its own "
            "input; name another output folder"
        )
    if reference:
        have = names_at(reference)
        missing = [str(j.ref) for j in jobs if base_name(j.ref) not in have]
        if missing:
            raise ScaoedError(f"reference folder lacks {len(missing)} image(s): {', '.join(missing[:3])}")
    return _folder_plan(jobs, dst, overwrite)
